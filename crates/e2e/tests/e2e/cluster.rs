//! The whole system on a three-node Redis Cluster: reads fill it, events
//! fence it, pages follow their generations, the auditor walks its slots.

use std::time::Duration;

use serde_json::json;
use test_support::RedisCluster;

use crate::harness::{System, product};

#[tokio::test]
async fn the_whole_system_runs_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let sys = System::start_with(2, |s| {
        s.redis.url.clone_from(&cluster.url);
        s.redis.cluster = true;
        s.invalidator.audit_interval_secs = 1;
    })
    .await;
    // Enough products that their keys land on every node.
    let mut ids = Vec::new();
    for i in 0..24 {
        ids.push(
            sys.admin.create(&product(&format!("CL-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // Reader 0 fills Redis; reader 1 finds each product there.
    let path = |id: i64| format!("/products/{id}");
    for &id in &ids {
        assert_eq!(sys.read(0, &path(id)).await.1, "MISS", "product {id}");
        assert_eq!(sys.read(1, &path(id)).await.1, "HIT-L2", "product {id}");
    }

    // Updates fence the cluster's keys and both readers' L1.
    for &id in &ids {
        sys.admin.patch(id, &json!({"price_cents": 1})).await;
    }
    for &id in &ids {
        sys.converge(id, 2).await;
    }

    // A page, cached in the cluster, follows a category move.
    let laptops = "/products?category=laptops&limit=100";
    // Asked twice, the page is stored (admission); the third ask hits.
    sys.read(0, laptops).await;
    sys.read(0, laptops).await;
    assert_eq!(sys.read(0, laptops).await.1, "HIT-L2");
    let moved = ids[0];
    sys.admin
        .patch(moved, &json!({"category": "tablets"}))
        .await;
    sys.until_applied(moved, 3).await;
    let page = sys.read(0, laptops).await.2;
    let listed: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, ids[1..], "moved out of laptops");

    // The auditor walks every node's slots and finds a planted stale entry.
    sys.plant_stale(ids[ids.len() - 1]).await;
    sys.audit_reports_stale(Duration::from_secs(30)).await;
}
