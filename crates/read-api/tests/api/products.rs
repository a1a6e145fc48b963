//! Single products: tiers, headers, the version floor, negative caching.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{WAIT, assert_error, product, read_product, spawn, spawn_with, start_read};

#[tokio::test]
async fn x_cache_goes_miss_then_l1_and_a_second_instance_hits_l2() {
    let app = spawn().await;
    let id = app.admin.create(&product("XC-1")).await["id"]
        .as_i64()
        .unwrap();
    let (status, tier, body) = app.product(id).await;
    assert_eq!((status, tier.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(body["sku"], "XC-1");
    let (_, tier, again) = app.product(id).await;
    assert_eq!(tier, "HIT-L1");
    assert_eq!(again, body, "byte-identical answers from every tier");
    // Another instance has an empty L1 but shares Redis.
    let other = start_read(app.env.settings.clone()).await;
    let (_, tier, from_l2) = read_product(&app.client, &other.base, id).await;
    assert_eq!(tier, "HIT-L2");
    assert_eq!(from_l2, body);
    let (_, tier, _) = read_product(&app.client, &other.base, id).await;
    assert_eq!(tier, "HIT-L1");
}

#[tokio::test]
async fn etag_and_if_none_match() {
    let app = spawn().await;
    let id = app.admin.create(&product("ET-1")).await["id"]
        .as_i64()
        .unwrap();
    let path = format!("/products/{id}");
    let res = app.get(&path).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(res.headers()["content-type"], "application/json");
    for tag in ["\"1\"", "W/\"1\"", "\"0\", \"1\"", "*"] {
        let res = app.get_with(&path, ("If-None-Match", tag)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(res.headers()["etag"], "\"1\"");
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let res = app.get_with(&path, ("If-None-Match", "\"7\"")).await;
    assert_eq!(res.status(), StatusCode::OK);
    // After an update the old ETag no longer matches.
    app.admin.patch(id, &json!({"name": "Renamed"})).await;
    app.until_version(id, 2).await;
    let res = app.get_with(&path, ("If-None-Match", "\"1\"")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
}

#[tokio::test]
async fn an_event_fences_l1_and_the_floor_skips_the_stale_redis_copy() {
    // No invalidator runs here: Redis keeps version 1 after the update, so
    // only the L1 fence's floor keeps the stale copy from being served.
    let app = spawn().await;
    let id = app.admin.create(&product("FL-1")).await["id"]
        .as_i64()
        .unwrap();
    app.product(id).await; // MISS: fills L2 and L1 at version 1
    let l2 = app.l2();
    let pid = domain::ProductId::new(id).unwrap();
    assert_eq!(l2.get(pid).await.unwrap().unwrap().version.get(), 1);

    app.admin.patch(id, &json!({"price_cents": 1})).await;
    // The event reaches this instance and fences L1 at version 2; the next
    // read finds Redis at 1 < 2 and goes to Postgres.
    test_support::eventually("the L1 fence", WAIT, || {
        let l1 = app.state().read.l1.clone();
        async move {
            l1.get(pid)
                .await
                .filter(|e| e.version.get() == 2)
                .map(|_| ())
        }
    })
    .await;
    let (status, tier, body) = app.product(id).await;
    assert_eq!(
        (status, tier.as_str(), body["version"].as_i64()),
        (StatusCode::OK, "MISS", Some(2))
    );
    // And the fill raised Redis to 2 through the CAS.
    assert_eq!(l2.get(pid).await.unwrap().unwrap().version.get(), 2);
    assert_eq!(app.product(id).await.1, "HIT-L1");
}

#[tokio::test]
async fn min_version_reads_your_writes_past_a_stale_cache() {
    // With no event subscription, L1 does not learn of the update...
    let dead = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        test_support::closed_port()
    );
    let app = spawn_with(|s| s.amqp.url = dead).await;
    let id = app.admin.create(&product("MV-1")).await["id"]
        .as_i64()
        .unwrap();
    app.product(id).await;
    let v2 = app.admin.patch(id, &json!({"price_cents": 5})).await;
    assert_eq!(v2["version"], 2);
    let (_, tier, body) = app.product(id).await;
    assert_eq!(
        (tier.as_str(), body["version"].as_i64()),
        ("HIT-L1", Some(1)),
        "stale until its TTL"
    );
    // ...but a client that just wrote version 2 asks for it and gets it.
    let res = app.get(&format!("/products/{id}?min_version=2")).await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["version"], 2);
    // The fill moved the caches forward: everyone now sees 2.
    assert_eq!(app.product(id).await.2["version"], 2);
    // A min_version Postgres does not have yet: the newest there is.
    let res = app.get(&format!("/products/{id}?min_version=9")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["version"], 2);
}

#[tokio::test]
async fn unknown_ids_are_cached_briefly_and_a_create_overrides_them() {
    let app = spawn().await;
    // A fresh database: the first product will get id 1.
    let (status, tier, body) = app.product(1).await;
    assert_eq!((status, tier.as_str()), (StatusCode::NOT_FOUND, "MISS"));
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(app.product(1).await.1, "HIT-L1", "the 404 is cached");
    let created = app.admin.create(&product("NEG-1")).await;
    assert_eq!(created["id"], 1);
    // The create's event fences the "not found" marker at version 1.
    app.until_version(1, 1).await;
    assert_eq!(app.product(1).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_delete_answers_404_from_the_cache() {
    let app = spawn().await;
    let id = app.admin.create(&product("DEL-1")).await["id"]
        .as_i64()
        .unwrap();
    app.product(id).await;
    app.admin.delete(id).await;
    let (client, base) = (app.client.clone(), app.read.base.clone());
    test_support::eventually("the delete to reach L1", WAIT, || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (status, tier, _) = read_product(&client, &base, id).await;
            (status == StatusCode::NOT_FOUND && tier == "HIT-L1").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn readers_never_see_a_version_go_backwards_and_converge() {
    let app = Arc::new(spawn().await);
    let id = app.admin.create(&product("CONC-1")).await["id"]
        .as_i64()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (client, base, stop) = (app.client.clone(), app.read.base.clone(), Arc::clone(&stop));
        readers.push(tokio::spawn(async move {
            let mut last = 0;
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _, body) = read_product(&client, &base, id).await;
                assert_eq!(status, StatusCode::OK);
                let v = body["version"].as_i64().unwrap();
                assert!(v >= last, "a reader saw version {v} after {last}");
                last = v;
                reads += 1;
            }
            reads
        }));
    }
    let updates = 40;
    for n in 0..updates {
        app.admin.patch(id, &json!({"price_cents": n})).await;
    }
    let last = updates + 1;
    app.until_version(id, last).await;
    // After convergence, every read on every path shows the last version.
    for _ in 0..50 {
        assert_eq!(app.product(id).await.2["version"], last);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    assert!(total > 0);
}

#[tokio::test]
async fn availability_is_live_and_never_cached() {
    let app = spawn().await;
    let id = app.admin.create(&product("AV-1")).await["id"]
        .as_i64()
        .unwrap();
    let res = app.get(&format!("/products/{id}/availability")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        (body["product_id"].as_i64(), body["stock"].as_i64()),
        (Some(id), Some(3))
    );
    app.admin.put_stock(id, 11).await;
    // Immediately, without waiting for any event: stock is read live.
    let body: serde_json::Value = app
        .get(&format!("/products/{id}/availability"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["stock"], 11);
    assert_error(
        app.get("/products/999999/availability").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn caching_off_and_l1_off() {
    let off = spawn_with(|s| s.cache.enabled = false).await;
    let id = off.admin.create(&product("OFF-1")).await["id"]
        .as_i64()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(off.product(id).await.1, "MISS");
    }
    let no_l1 = spawn_with(|s| s.cache.l1_capacity = 0).await;
    let id = no_l1.admin.create(&product("NOL1-1")).await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(no_l1.product(id).await.1, "MISS");
    for _ in 0..3 {
        assert_eq!(no_l1.product(id).await.1, "HIT-L2");
    }
}

#[tokio::test]
async fn in_refresh_mode_an_update_keeps_the_product_hot_in_l1() {
    let app = spawn_with(|s| s.invalidator.mode = cache::InvalidatorMode::Refresh).await;
    let id = app.admin.create(&product("HOT-1")).await["id"]
        .as_i64()
        .unwrap();
    app.product(id).await;
    assert_eq!(app.product(id).await.1, "HIT-L1");
    let updated = app.admin.patch(id, &json!({"name": "Hotter"})).await;
    // The event's snapshot replaces the L1 entry: no miss, the new bytes.
    let (client, base) = (app.client.clone(), app.read.base.clone());
    let body = test_support::eventually("the snapshot in L1", WAIT, || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (_, tier, body) = read_product(&client, &base, id).await;
            (tier == "HIT-L1" && body["version"] == 2).then_some(body)
        }
    })
    .await;
    assert_eq!(body, updated, "byte-for-byte what write-api committed");
    // A product this instance never read gets only a tombstone.
    let other = app.admin.create(&product("COLD-1")).await["id"]
        .as_i64()
        .unwrap();
    let pid = domain::ProductId::new(other).unwrap();
    test_support::eventually("the tombstone", WAIT, || {
        let l1 = app.state().read.l1.clone();
        async move {
            l1.get(pid)
                .await
                .filter(|e| e.state == cache::State::Tombstone)
                .map(|_| ())
        }
    })
    .await;
}
