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
    assert!(chrono::DateTime::parse_from_rfc3339(e.body["occurred_at"].as_str().unwrap()).is_ok());

    // A category move names both categories; becoming featured concerns the
    // featured list.
    let res = app
        .patch(id, &json!({"category": "tablets", "featured": true}), None)
        .await;
    let updated: Value = res.json().await.unwrap();
    let e = events.take(1, WAIT).await.remove(0);
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
