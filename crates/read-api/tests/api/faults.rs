//! Graceful degradation: Redis down or hanging, Postgres down, Postgres
//! saturated, the event subscription lost.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Mode, Proxy};

use crate::helpers::{WAIT, assert_error, product, read_product, spawn_with};

#[tokio::test]
async fn redis_down_serves_from_postgres_and_recovers() {
    let (proxy, url) = Proxy::for_url(&test_support::redis_url()).await;
    let app = spawn_with(|s| {
        s.redis.url = url;
        s.redis.breaker_cooldown_ms = 200;
        // No L1: every read must go through the Redis path.
        s.cache.l1_capacity = 0;
    })
    .await;
    let id = app.admin.create(&product("RD-1")).await["id"]
        .as_i64()
        .unwrap();
    app.product(id).await;
    assert_eq!(app.product(id).await.1, "HIT-L2");

    for mode in [Mode::Down, Mode::Hang] {
        proxy.set(mode).await;
        for _ in 0..20 {
            let started = Instant::now();
            let (status, tier, body) = app.product(id).await;
            assert_eq!(
                (status, tier.as_str()),
                (StatusCode::OK, "MISS"),
                "{mode:?}"
            );
            assert_eq!(body["id"], id);
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{mode:?}: a dead Redis costs at most its timeout, took {:?}",
                started.elapsed()
            );
        }
        // Writes keep flowing and reads see them (straight from Postgres).
        let patched = app.admin.patch(id, &json!({"price_cents": 7})).await;
        assert_eq!(app.product(id).await.2["version"], patched["version"]);
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        assert_eq!(ready["status"], "ready", "Redis is optional: {ready}");
        assert_eq!(ready["checks"]["redis"]["status"], "down");
        proxy.set(Mode::Up).await;
        let (client, base) = (app.client.clone(), app.read.base.clone());
        test_support::eventually("Redis to serve again", WAIT, || {
            let (client, base) = (client.clone(), base.clone());
            async move { (read_product(&client, &base, id).await.1 == "HIT-L2").then_some(()) }
        })
        .await;
    }
}

#[tokio::test]
async fn postgres_down_serves_cached_products_and_misses_get_503() {
    let app = spawn_with(|_| {}).await;
    let (proxy, db_url) = Proxy::for_url(&app.env.settings.database.url).await;
    let mut settings = app.env.settings.clone();
    settings.database.url = db_url;
    settings.database.acquire_timeout_ms = 300;
    let reader = crate::helpers::start_read(settings).await;
    let cached = app.admin.create(&product("PD-1")).await["id"]
        .as_i64()
        .unwrap();
    let uncached = app.admin.create(&product("PD-2")).await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        read_product(&app.client, &reader.base, cached).await.0,
        StatusCode::OK
    );

    proxy.set(Mode::Down).await;
    let (status, tier, body) = read_product(&app.client, &reader.base, cached).await;
    assert_eq!(
        (status, body["id"].as_i64()),
        (StatusCode::OK, Some(cached))
    );
    assert!(tier.starts_with("HIT"), "{tier}");
    let res = app
        .client
        .get(format!("{}/products/{uncached}", reader.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let text = res.text().await.unwrap();
    assert!(
        !text.to_lowercase().contains("postgres://") && !text.contains("SELECT"),
        "no internals: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let res = app
        .client
        .get(format!("{}/products?category=laptops", reader.base))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let res = app
        .client
        .get(format!("{}/readyz", reader.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.set(Mode::Up).await;
    let client = app.client.clone();
    test_support::eventually("Postgres to answer again", WAIT, || {
        let (client, base) = (client.clone(), reader.base.clone());
        async move { (read_product(&client, &base, uncached).await.0 == StatusCode::OK).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_saturated_database_answers_overloaded_instead_of_queueing() {
    let app = spawn_with(|_| {}).await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(
                app.admin.create(&product(&format!("OV-{i}"))).await["id"]
                    .as_i64()
                    .unwrap(),
            );
        }
        ids
    };
    let mut settings = app.env.settings.clone();
    let (proxy, db_url) = Proxy::for_url(&app.env.settings.database.url).await;
    settings.database.url = db_url;
    settings.database.max_concurrency = 1;
    settings.database.acquire_timeout_ms = 100;
    settings.database.statement_timeout_ms = 1000;
    let reader = crate::helpers::start_read(settings).await;
    // Postgres stops answering: the one slot is held by a stuck query.
    proxy.set(Mode::Hang).await;
    let requests = ids.iter().map(|id| {
        let (client, url) = (app.client.clone(), format!("{}/products/{id}", reader.base));
        async move { client.get(url).send().await.unwrap() }
    });
    let responses = futures::future::join_all(requests).await;
    let mut overloaded = 0;
    for res in responses {
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "never 500, never a hang"
        );
        let retry = res.headers().get("retry-after").cloned();
        let body: Value = res.json().await.unwrap();
        if body["error"]["code"] == "overloaded" {
            assert_eq!(retry.unwrap(), "1");
            overloaded += 1;
        } else {
            assert_eq!(body["error"]["code"], "unavailable");
        }
    }
    assert!(
        overloaded >= 4,
        "requests beyond the limit are refused, got {overloaded}"
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", reader.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("db_overloaded_total"));
}

#[tokio::test]
async fn losing_the_event_subscription_clears_l1_and_it_comes_back() {
    let (proxy, amqp_url) = Proxy::for_url(&test_support::amqp_url()).await;
    let app = spawn_with(|_| {}).await;
    let mut settings = app.env.settings.clone();
    settings.amqp.url = amqp_url;
    let reader = crate::helpers::start_read(settings).await;
    let state = reader.state.clone();
    let subscribed = |up: bool| {
        let state = state.clone();
        move || {
            let s = state.clone();
            async move { (s.subscribed.load(std::sync::atomic::Ordering::Acquire) == up).then_some(()) }
        }
    };
    test_support::eventually("subscribed", WAIT, subscribed(true)).await;
    let id = app.admin.create(&product("SUB-1")).await["id"]
        .as_i64()
        .unwrap();
    read_product(&app.client, &reader.base, id).await;
    assert_eq!(
        read_product(&app.client, &reader.base, id).await.1,
        "HIT-L1"
    );

    proxy.set(Mode::Down).await;
    test_support::eventually("the subscription to drop", WAIT, subscribed(false)).await;
    assert_eq!(
        read_product(&app.client, &reader.base, id).await.1,
        "HIT-L2",
        "L1 was cleared"
    );
    proxy.set(Mode::Up).await;
    test_support::eventually("the subscription to return", WAIT, subscribed(true)).await;
    // Events flow again: an update fences L1 and the next read shows it.
    let v = app.admin.patch(id, &json!({"name": "After"})).await["version"]
        .as_i64()
        .unwrap();
    let client = app.client.clone();
    test_support::eventually("the new version", WAIT, || {
        let (client, base) = (client.clone(), reader.base.clone());
        async move { (read_product(&client, &base, id).await.2["version"] == v).then_some(()) }
    })
    .await;
}
