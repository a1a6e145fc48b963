//! Postgres down or hanging: every write answers 503 `unavailable` within
//! the configured deadline, leaks nothing, writes nothing and publishes
//! nothing; writes work again once Postgres is back.

use std::time::{Duration, Instant};

use domain::ProductId;
use reqwest::{Method, Response, StatusCode};
use serde_json::json;
use test_support::{Mode, Proxy};

use crate::helpers::{TestApp, product, spawn_app_with};

const WAIT: Duration = Duration::from_secs(20);

/// A 503 `unavailable` that says nothing about the backend.
async fn assert_unavailable(res: Response, what: &str) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("postgres://") && !text.contains("UPDATE") && !text.contains("INSERT"),
        "{what}: no internals in {text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
}

/// Every kind of write against product `id`, each expected to fail.
async fn every_write_fails(app: &TestApp, id: i64, sku: &str) {
    assert_unavailable(app.post_product(&product(sku)).await, "create").await;
    let bulk = app
        .request(Method::POST, "/products/bulk")
        .json(&json!({ "products": [product(&format!("{sku}-BULK"))] }))
        .send()
        .await
        .unwrap();
    assert_unavailable(bulk, "bulk create").await;
    let bulk = app
        .request(Method::PATCH, "/products/bulk")
        .json(&json!({ "items": [{"id": id, "patch": {"price_cents": 1}}] }))
        .send()
        .await
        .unwrap();
    assert_unavailable(bulk, "bulk patch").await;
    let patch = app.patch(id, &json!({"price_cents": 1}), None).await;
    assert_unavailable(patch, "patch").await;
    assert_unavailable(app.put_stock(id, &json!({"stock": 99})).await, "stock").await;
    assert_unavailable(app.delete(id).await, "delete").await;
    assert_unavailable(app.get(id).await, "get").await;
}

#[tokio::test]
async fn postgres_down_or_hanging_answers_503_and_writes_nothing() {
    let (proxy, _) = Proxy::for_url(&test_support::server_url()).await;
    let app = spawn_app_with(|s| {
        s.database.url = proxy.url_for(&s.database.url);
        // The client-side deadline: pool wait + statement timeout + 1 s.
        s.database.acquire_timeout_ms = 300;
        s.database.statement_timeout_ms = 500;
    })
    .await;
    let mut events = app.env.listen().await;
    let first = app.create("PGF-1").await;
    let id = first["id"].as_i64().unwrap();
    assert_eq!(events.take(1, WAIT).await.len(), 1, "the create's event");
    // ...and its outbox row deleted, so the outbox starts the outage empty.
    let app = &app;
    test_support::eventually("an empty outbox", WAIT, || async move {
        (app.counts().await == (1, 0)).then_some(())
    })
    .await;

    proxy.set(Mode::Down).await;
    every_write_fails(app, id, "PGF-DOWN").await;
    let ready = app.anonymous(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A hanging Postgres is cut off by the deadline, not waited for.
    proxy.set(Mode::Hang).await;
    let started = Instant::now();
    every_write_fails(app, id, "PGF-HANG").await;
    let per_request = started.elapsed() / 6;
    assert!(
        per_request < Duration::from_secs(3),
        "each write gave up within its deadline, took {per_request:?} on average"
    );

    // Nothing reached the database, nothing was published.
    let db = app.env.db();
    let pid = ProductId::new(id).unwrap();
    let row = db.product(pid).await.unwrap().unwrap();
    assert_eq!(row.version.0, 1);
    assert_eq!(row.price_cents, first["price_cents"].as_i64().unwrap());
    assert_eq!(
        db.availability(pid).await.unwrap().unwrap().stock,
        test_support::product("any")["stock"].as_i64().unwrap()
    );
    assert_eq!(app.counts().await, (1, 0));
    events.assert_quiet(Duration::from_millis(300)).await;

    // Back up: the pool replaces its dead connections and writes resume.
    proxy.set(Mode::Up).await;
    test_support::eventually("writes to succeed again", WAIT, || async move {
        let res = app.patch(id, &json!({"price_cents": 2}), None).await;
        (res.status() == StatusCode::OK).then_some(())
    })
    .await;
    let next = events.take(1, WAIT).await;
    assert_eq!(
        (next[0].event.product_id.get(), next[0].event.version.0),
        (id, 2),
        "the first event after the outage is the first write that succeeded"
    );
}
