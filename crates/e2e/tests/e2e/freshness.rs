//! A committed change reaches every reader, and no reader goes backwards.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use bus::Outgoing;
use rand::seq::SliceRandom;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{System, product};

#[tokio::test]
async fn an_update_is_visible_on_every_reader_shortly_after_commit() {
    let sys = System::start(2).await;
    let id = sys.admin.create(&product("FR-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(id, 1).await;
    for r in 0..2 {
        // Warm both tiers on both instances.
        assert_eq!(sys.read(r, &format!("/products/{id}")).await.1, "HIT-L1");
    }
    let mut lags = Vec::new();
    for n in 0..10 {
        let v = sys.admin.patch(id, &json!({"price_cents": n})).await["version"]
            .as_i64()
            .unwrap();
        lags.push(sys.converge(id, v).await);
    }
    lags.sort();
    println!(
        "freshness over 10 updates, 2 readers: median {:?}, max {:?} (write-api 200 to both readers showing it)",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    // After convergence, nothing serves the old version, from any tier.
    for r in 0..2 {
        for _ in 0..50 {
            assert_eq!(sys.version_on(r, id).await, 11);
        }
    }
    let entry = sys
        .l2()
        .get(domain::ProductId::new(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.version.get(),
        11,
        "Redis holds the last version or its fence"
    );
}

/// A bulk change travels as a few batch messages; every event in them
/// fences every reader's L1 and Redis, so no product, and no list page,
/// is served at its old price afterwards.
#[tokio::test]
async fn a_bulk_change_reaches_every_reader_for_every_product() {
    let sys = System::start(2).await;
    let products: Vec<_> = (0..300).map(|i| product(&format!("BULK-{i}"))).collect();
    let ids = sys.admin.create_bulk(&products).await;
    let page = "/products?category=laptops&limit=100";
    for r in 0..2 {
        for id in &ids {
            sys.read(r, &format!("/products/{id}")).await;
            let (_, tier, _) = sys.read(r, &format!("/products/{id}")).await;
            assert_eq!(tier, "HIT-L1");
        }
        // Twice: a page is stored on its second ask.
        sys.read(r, page).await;
        sys.read(r, page).await;
    }
    let items: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "if_match": 1, "patch": {"price_cents": 7}}))
        .collect();
    let answered = sys.admin.patch_bulk(&items).await;
    assert!(answered.iter().all(|a| a["version"] == 2));
    for id in &ids {
        sys.converge(*id, 2).await;
    }
    for r in 0..2 {
        for id in &ids {
            let (_, _, body) = sys.read(r, &format!("/products/{id}")).await;
            assert_eq!(
                (body["version"].as_i64(), body["price_cents"].as_i64()),
                (Some(2), Some(7))
            );
        }
        let (_, _, body) = sys.read(r, page).await;
        let listed = body["items"].as_array().unwrap();
        assert_eq!(listed.len(), 100);
        assert!(
            listed.iter().all(|p| p["price_cents"] == 7),
            "reader {r}: a page shows an old price"
        );
    }
}

#[tokio::test]
async fn readers_on_two_instances_never_regress_while_updates_stream_in() {
    let sys = Arc::new(System::start(2).await);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            sys.admin.create(&product(&format!("RG-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..2 {
        for &id in &ids {
            let (sys, stop) = (Arc::clone(&sys), Arc::clone(&stop));
            readers.push(tokio::spawn(async move {
                let mut last = 0;
                let mut reads = 0_u32;
                while !stop.load(Ordering::Relaxed) {
                    let v = sys.version_on(r, id).await;
                    assert!(
                        v >= last,
                        "reader {r} saw product {id} go from {last} back to {v}"
                    );
                    last = v;
                    reads += 1;
                }
                reads
            }));
        }
    }
    let mut last = 1;
    for n in 0..20 {
        for &id in &ids {
            last = sys.admin.patch(id, &json!({"price_cents": n})).await["version"]
                .as_i64()
                .unwrap();
        }
    }
    for &id in &ids {
        sys.converge(id, last).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn redelivered_old_events_in_any_order_change_nothing() {
    let sys = System::start(2).await;
    let mut listener = sys.env.listen().await;
    let id = sys.admin.create(&product("DUP-1")).await["id"]
        .as_i64()
        .unwrap();
    for n in 0..5 {
        sys.admin.patch(id, &json!({"price_cents": n})).await;
    }
    sys.converge(id, 6).await;
    let mut old = listener.take(6, crate::harness::WAIT).await;
    // Every old event again, twice, shuffled.
    old.extend(old.clone());
    old.shuffle(&mut rand::rng());
    let publisher = sys.env.publisher();
    let bodies: Vec<(String, String, Vec<u8>)> = old
        .iter()
        .map(|r| {
            (
                r.routing_key.clone(),
                r.event.event_id.to_string(),
                serde_json::to_vec(&r.body).unwrap(),
            )
        })
        .collect();
    let out: Vec<Outgoing<'_>> = bodies
        .iter()
        .map(|(rk, mid, body)| Outgoing {
            routing_key: rk,
            message_id: mid,
            correlation_id: None,
            correlation_ids: &[],
            payload: body,
        })
        .collect();
    assert!(publisher.publish(&out).await.unwrap().iter().all(|ok| *ok));
    // A fresh change to another product, published after them: once every
    // reader shows it, the redeliveries before it have been applied too.
    let marker = sys.admin.create(&product("DUP-MARK")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(marker, 1).await;
    for r in 0..2 {
        assert_eq!(sys.version_on(r, id).await, 6);
        let (status, _, _) = sys.read(r, &format!("/products/{id}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        sys.l2()
            .get(domain::ProductId::new(id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .version
            .get(),
        6
    );
}
