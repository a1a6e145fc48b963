//! Trending: views counted, flushed in batches, ranked; degraded without Redis.

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Mode, Proxy};

use crate::helpers::{WAIT, product, spawn_with};

#[tokio::test]
async fn most_viewed_products_rank_first() {
    let app = spawn_with(|s| s.read_api.trending_rollup_secs = 1).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.admin.create(&product(&format!("T-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    for (id, views) in [(ids[1], 5), (ids[0], 3), (ids[2], 1)] {
        for _ in 0..views {
            assert_eq!(app.product(id).await.0, StatusCode::OK);
        }
    }
    let expected = json!([[ids[1], 5], [ids[0], 3], [ids[2], 1]]);
    let client = app.client.clone();
    let base = app.read.base.clone();
    let body: Value = test_support::eventually("views to be flushed and ranked", WAIT, || {
        let (client, base, expected) = (client.clone(), base.clone(), expected.clone());
        async move {
            let res = client
                .get(format!("{base}/products/trending"))
                .send()
                .await
                .unwrap();
            assert!(res.headers().get("x-degraded").is_none());
            let body: Value = res.json().await.unwrap();
            let ranked: Value = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| json!([i["product"]["id"], i["views"]]))
                .collect();
            (ranked == expected).then_some(body)
        }
    })
    .await;
    assert_eq!(body["items"][0]["product"]["sku"], "T-1", "full products");
    let one: Value = app
        .get("/products/trending?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    // A deleted product drops out of the list.
    app.admin.delete(ids[1]).await;
    let client = app.client.clone();
    test_support::eventually("the deleted product to drop out", WAIT, || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body: Value = client
                .get(format!("{base}/products/trending"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body["items"].as_array().unwrap().len() == 2).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn without_redis_trending_degrades_to_featured() {
    let (proxy, url) = Proxy::for_url(&test_support::redis_url()).await;
    let app = spawn_with(|s| s.redis.url = url).await;
    let mut p = product("DG-1");
    p["featured"] = json!(true);
    let id = app.admin.create(&p).await["id"].as_i64().unwrap();
    app.admin.create(&product("DG-2")).await;
    proxy.set(Mode::Down).await;
    let res = app.get("/products/trending").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-degraded"], "trending");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["product"]["id"], id);
    assert_eq!(body["items"][0]["views"], 0);
}
