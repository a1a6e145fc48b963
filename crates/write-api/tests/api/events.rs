//! Every committed change publishes exactly the contract's message.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn create_update_delete_publish_the_contract_message() {
    let app = spawn_app().await;
    let mut events = app.env.listen().await;

    let created = app.create("EV-1").await;
    let id = created["id"].as_i64().unwrap();
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(e.routing_key, "product.created");
    assert_eq!(e.content_type.as_deref(), Some("application/json"));
    assert_eq!(e.delivery_mode, Some(2), "persistent");
    assert_eq!(
        e.message_id.as_deref(),
        Some(e.body["event_id"].as_str().unwrap())
    );
    let keys: Vec<&str> = e
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "categories",
            "event_id",
            "featured",
            "lsn",
            "occurred_at",
            "product",
            "product_id",
            "type",
            "version"
        ]
    );
    assert_eq!(e.body["type"], "product.created");
    assert_eq!(e.body["product_id"], id);
    assert_eq!(e.body["version"], 1);
    assert_eq!(e.body["categories"], json!(["laptops"]));
    assert_eq!(e.body["featured"], false);
    assert_eq!(
        e.body["product"], created,
        "the full product after the change"
    );
    assert!(uuid::Uuid::parse_str(e.body["event_id"].as_str().unwrap()).is_ok());
    let created_at_lsn = e.event.lsn.expect("a WAL position");
    assert!(chrono::DateTime::parse_from_rfc3339(e.body["occurred_at"].as_str().unwrap()).is_ok());

    // A category move names both categories; becoming featured concerns the
    // featured list. The event carries the request id of the write that
    // caused it, as its AMQP correlation id.
    let res = app
        .patch(id, &json!({"category": "tablets", "featured": true}), None)
        .await;
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let updated: Value = res.json().await.unwrap();
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(e.correlation_id.as_deref(), Some(request_id.as_str()));
    assert!(
        e.event.lsn.unwrap() > created_at_lsn,
        "a later commit, a later WAL position"
    );
    assert_eq!(e.routing_key, "product.updated");
    assert_eq!(e.body["type"], "product.updated");
    assert_eq!(e.body["version"], 2);
    assert_eq!(
        e.body["version"], updated["version"],
        "event version = row version"
    );
    assert_eq!(e.body["categories"], json!(["laptops", "tablets"]));
    assert_eq!(e.body["featured"], true);
    assert_eq!(e.body["product"], updated);

    // Leaving the featured list concerns it too.
    let res = app.patch(id, &json!({"featured": false}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(e.body["featured"], true);
    assert_eq!(e.body["categories"], json!(["tablets"]));
    assert_eq!(e.body["version"], 3);

    // Stock changes publish nothing: the next event is the delete's.
    assert_eq!(
        app.put_stock(id, &json!({"stock": 1})).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.delete(id).await.status(), StatusCode::NO_CONTENT);
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(e.routing_key, "product.deleted");
    assert_eq!(e.body["type"], "product.deleted");
    assert_eq!(
        e.body["version"], 4,
        "a delete fences at the last version + 1"
    );
    assert_eq!(e.body["product"], Value::Null);
    assert_eq!(e.body["categories"], json!(["tablets"]));
}

#[tokio::test]
async fn bulk_create_publishes_one_event_per_product() {
    let app = spawn_app().await;
    let mut events = app.env.listen().await;
    let items: Vec<Value> = (0..50)
        .map(|i| crate::helpers::product(&format!("BE-{i}")))
        .collect();
    let res = app
        .request(reqwest::Method::POST, "/products/bulk")
        .json(&json!({ "products": items }))
        .send()
        .await
        .unwrap();
    let ids: Vec<i64> = res.json::<Value>().await.unwrap()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let got = events.take(50, WAIT).await;
    let mut seen: Vec<i64> = got.iter().map(|e| e.event.product_id.get()).collect();
    seen.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(seen, want);
    assert!(
        got.iter()
            .all(|e| e.routing_key == "product.created" && e.event.version.get() == 1)
    );
}

/// Changes made outside write-api (psql, a batch job, a migration) are
/// versioned and published by the database itself.
#[tokio::test]
async fn changes_made_with_plain_sql_are_versioned_and_published() {
    let app = spawn_app().await;
    let mut events = app.env.listen().await;
    let id = app.create("SQL-1").await["id"].as_i64().unwrap();
    events.take(1, WAIT).await;

    // UPDATE: the version rises by exactly one, whatever the statement says
    // about it, and the event carries the new row.
    app.env
        .psql(&format!(
            "UPDATE products SET price_cents = 12345, version = 99 WHERE id = {id}"
        ))
        .await;
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(e.routing_key, "product.updated");
    assert_eq!(e.event.version.get(), 2);
    assert_eq!(e.event.product.as_ref().unwrap().price_cents, 12345);
    assert_eq!(e.correlation_id, None, "no request made it");
    let row = app.get(id).await.json::<Value>().await.unwrap();
    assert_eq!(
        (row["version"].as_i64(), row["price_cents"].as_i64()),
        (Some(2), Some(12345))
    );

    // An UPDATE that changes nothing raises nothing and publishes nothing.
    app.env
        .psql(&format!(
            "UPDATE products SET price_cents = 12345, updated_at = now() WHERE id = {id}"
        ))
        .await;
    events.assert_quiet(Duration::from_millis(500)).await;
    assert_eq!(
        app.get(id).await.json::<Value>().await.unwrap()["version"],
        2
    );

    // INSERT and DELETE.
    let inserted: i64 = app
        .env
        .psql(
            "INSERT INTO products (sku, name, category, price_cents, currency, version) \
             VALUES ('SQL-2', 'Inserted', 'laptops', 5, 'EUR', 7) RETURNING id",
        )
        .await
        .trim()
        .parse()
        .unwrap();
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(
        (
            e.routing_key.as_str(),
            e.event.product_id.get(),
            e.event.version.get()
        ),
        ("product.created", inserted, 1)
    );
    app.env
        .psql(&format!("DELETE FROM products WHERE id = {id}"))
        .await;
    let e = events.take(1, WAIT).await.remove(0);
    assert_eq!(
        (
            e.routing_key.as_str(),
            e.event.version.get(),
            e.event.product.is_none()
        ),
        ("product.deleted", 3, true)
    );
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_the_version_and_publishes_nothing() {
    let app = spawn_app().await;
    let mut events = app.env.listen().await;
    let created = app.create("NOOP-1").await;
    let id = created["id"].as_i64().unwrap();
    events.take(1, WAIT).await;
    let same = json!({"name": created["name"], "price_cents": created["price_cents"]});
    let res = app.patch(id, &same, Some("\"1\"")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, created, "the unchanged product, updated_at included");
    events.assert_quiet(Duration::from_millis(500)).await;
    // A real change after it is version 2, as if the no-op never happened.
    let res = app
        .patch(id, &json!({"price_cents": 1}), Some("\"1\""))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);
    assert_eq!(events.take(1, WAIT).await[0].event.version.get(), 2);
}

/// A batch job inserting 10,000 rows in one statement: every row gets its
/// event, and the relay keeps up (each pass takes a batch, not a row).
#[tokio::test]
async fn ten_thousand_rows_in_one_statement_each_publish_their_event() {
    let app = spawn_app().await;
    let mut events = app.env.listen().await;
    app.env
        .psql(
            "INSERT INTO products (sku, name, category, price_cents, currency) \
             SELECT 'BULK-' || n, 'Bulk ' || n, 'bulk', n, 'USD' \
             FROM generate_series(1, 10000) AS n",
        )
        .await;
    let got = events.take(10_000, Duration::from_secs(60)).await;
    let ids: std::collections::BTreeSet<i64> =
        got.iter().map(|e| e.event.product_id.get()).collect();
    assert_eq!(ids.len(), 10_000, "one event per row, none twice");
    assert!(got.iter().all(|e| e.routing_key == "product.created"));
    test_support::eventually("the outbox to empty", WAIT, || async {
        (app.counts().await.1 == 0).then_some(())
    })
    .await;
}
