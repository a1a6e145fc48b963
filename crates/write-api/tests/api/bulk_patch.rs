//! `PATCH /products/bulk`: up to 1000 merge patches in one transaction, all
//! or nothing; the first unknown id or stale `if_match`, in request order,
//! fails the whole request and writes nothing.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use test_support::EventListener;

use crate::helpers::{TestApp, assert_error, spawn_app};

const WAIT: Duration = Duration::from_secs(10);

async fn bulk_patch(app: &TestApp, body: &Value) -> Response {
    app.request(Method::PATCH, "/products/bulk")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn product(app: &TestApp, id: i64) -> Value {
    app.get(id).await.json().await.unwrap()
}

/// Three products at version 1, and a listener past their creation events.
async fn three(app: &TestApp, prefix: &str) -> (Vec<i64>, EventListener) {
    let mut events = app.env.listen().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = app.create(&format!("{prefix}-{i}")).await;
        ids.push(created["id"].as_i64().unwrap());
    }
    events.take(3, WAIT).await;
    (ids, events)
}

#[tokio::test]
async fn patches_apply_together_and_answer_versions_in_request_order() {
    let app = spawn_app().await;
    let (ids, mut events) = three(&app, "BP").await;
    let res = app
        .request(Method::PATCH, "/products/bulk")
        .json(&json!({"items": [
            {"id": ids[2], "if_match": 1, "patch": {"price_cents": 500}},
            {"id": ids[0], "patch": {"name": "Renamed", "attributes": {"color": "red"}}},
            // Changes nothing: keeps its version, publishes nothing.
            {"id": ids[1], "if_match": null, "patch": {"currency": "USD"}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"items": [
            {"id": ids[2], "version": 2},
            {"id": ids[0], "version": 2},
            {"id": ids[1], "version": 1},
        ]})
    );
    assert_eq!(product(&app, ids[2]).await["price_cents"], 500);
    let first = product(&app, ids[0]).await;
    assert_eq!(
        (&first["name"], &first["attributes"]),
        (&json!("Renamed"), &json!({"ram_gb": 16, "color": "red"}))
    );

    // One event per changed product, each carrying the request's id.
    let got = events.take(2, WAIT).await;
    let mut changed: Vec<(i64, i64)> = got
        .iter()
        .map(|e| (e.event.product_id.get(), e.event.version.get()))
        .collect();
    changed.sort_unstable();
    let mut want = vec![(ids[0], 2), (ids[2], 2)];
    want.sort_unstable();
    assert_eq!(changed, want);
    assert!(got.iter().all(|e| e.routing_key == "product.updated"
        && e.correlation_id.as_deref() == Some(request_id.as_str())));
    events.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_first_stale_if_match_fails_everything_and_names_its_product() {
    let app = spawn_app().await;
    let (ids, mut events) = three(&app, "BPS").await;
    let res = bulk_patch(
        &app,
        &json!({"items": [
            {"id": ids[0], "if_match": 1, "patch": {"price_cents": 7}},
            {"id": ids[1], "if_match": 4, "patch": {"price_cents": 7}},
            {"id": ids[2], "if_match": 9, "patch": {"price_cents": 7}},
        ]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "precondition_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("product {}", ids[1])) && message.contains('1'),
        "names the first stale item and its current version: {message}"
    );
    for id in &ids {
        let p = product(&app, *id).await;
        assert_eq!(
            (p["version"].as_i64(), p["price_cents"].as_i64()),
            (Some(1), Some(99900))
        );
    }
    events.assert_quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn the_first_unknown_id_fails_everything_and_is_named() {
    let app = spawn_app().await;
    let (ids, mut events) = three(&app, "BPU").await;
    let res = bulk_patch(
        &app,
        &json!({"items": [
            {"id": ids[0], "patch": {"price_cents": 7}},
            {"id": 987_654_321, "patch": {"price_cents": 7}},
            {"id": 987_654_322, "patch": {"price_cents": 7}},
        ]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["message"], "product 987654321 not found");
    assert_eq!(product(&app, ids[0]).await["version"], 1);
    events.assert_quiet(Duration::from_millis(500)).await;

    // A deleted product is as unknown as one that never was.
    assert_eq!(app.delete(ids[1]).await.status(), StatusCode::NO_CONTENT);
    let res = bulk_patch(
        &app,
        &json!({"items": [{"id": ids[1], "patch": {"price_cents": 7}}]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_items_are_named_and_write_nothing() {
    let app = spawn_app().await;
    let (ids, mut events) = three(&app, "BPV").await;
    let item = |id: i64| json!({"id": id, "patch": {"price_cents": 5}});
    let many = |n: i64| json!({"items": (0..n).map(|i| item(ids[0] + i)).collect::<Vec<_>>()});
    for (body, field) in [
        (json!({"items": []}), "items"),
        (many(1001), "items"),
        (json!({"items": item(ids[0])}), "items"),
        (json!({"products": [item(ids[0])]}), "products"),
        (
            json!({"items": [item(ids[0]), {"id": -3, "patch": {}}]}),
            "items[1].id",
        ),
        (
            json!({"items": [item(ids[0]), {"id": ids[1]}]}),
            "items[1].patch",
        ),
        (
            json!({"items": [{"id": ids[0], "if_match": "\"1\"", "patch": {}}]}),
            "items[0].if_match",
        ),
        (
            json!({"items": [{"id": ids[0], "version": 1, "patch": {}}]}),
            "items[0].version",
        ),
        (
            json!({"items": [item(ids[0]), {"id": ids[1], "patch": {"price_cents": -1}}]}),
            "items[1].patch.price_cents",
        ),
        (
            json!({"items": [{"id": ids[2], "patch": {"sku": "NEW"}}]}),
            "items[0].patch.sku",
        ),
        (
            json!({"items": [{"id": ids[2], "patch": {"name": "a\u{0}b"}}]}),
            "items[0].patch.name",
        ),
    ] {
        let res = bulk_patch(&app, &body).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    // A product given twice: each item is valid, together they conflict.
    let res = bulk_patch(
        &app,
        &json!({"items": [item(ids[0]), item(ids[1]), item(ids[0])]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        format!("items[2]: product {} appears twice in this request", ids[0])
    );
    // Attributes whose merge with the stored ones grows past 16 KiB can
    // only be refused against the row: still named, still nothing written.
    let half = "x".repeat(9 * 1024);
    let res = bulk_patch(
        &app,
        &json!({"items": [{"id": ids[0], "patch": {"attributes": {"a": half}}}]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = bulk_patch(
        &app,
        &json!({"items": [
            {"id": ids[1], "patch": {"price_cents": 5}},
            {"id": ids[0], "patch": {"attributes": {"b": half}}},
        ]}),
    )
    .await;
    assert_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("items[1].patch.attributes"),
    )
    .await;
    assert_eq!(product(&app, ids[1]).await["version"], 1);
    assert_eq!(product(&app, ids[0]).await["version"], 2);
    let only = events.take(1, WAIT).await.remove(0);
    assert_eq!(
        (only.event.product_id.get(), only.event.version.get()),
        (ids[0], 2),
        "only the good patch wrote"
    );
    events.assert_quiet(Duration::from_millis(300)).await;

    let res = app
        .request(Method::PATCH, "/products/bulk")
        .header("Content-Type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::BAD_REQUEST, "bad_request", None).await;
}

#[tokio::test]
async fn a_thousand_patches_land_in_one_request_and_their_events_travel_batched() {
    let app = spawn_app().await;
    let mut events = app.env.listen().await;
    let created: Value = app
        .request(Method::POST, "/products/bulk")
        .json(&json!({"products": (0..1000).map(|i| crate::helpers::product(&format!("BPK-{i}"))).collect::<Vec<_>>()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = created["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    events.take(1000, WAIT).await;
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "if_match": 1, "patch": {"price_cents": 10_000 + i}}))
        .collect();
    let res = bulk_patch(&app, &json!({ "items": items })).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let answered = body["items"].as_array().unwrap();
    assert_eq!(answered.len(), 1000);
    assert!(
        answered
            .iter()
            .zip(&ids)
            .all(|(a, id)| a["id"] == *id && a["version"] == 2)
    );
    assert_eq!(product(&app, ids[999]).await["price_cents"], 10_999);

    let got = events.take(1000, WAIT).await;
    let mut changed: Vec<(i64, i64)> = got
        .iter()
        .map(|e| (e.event.product_id.get(), e.event.version.get()))
        .collect();
    changed.sort_unstable();
    let mut want: Vec<(i64, i64)> = ids.iter().map(|id| (*id, 2)).collect();
    want.sort_unstable();
    assert_eq!(changed, want, "every product's event, once");
    let messages: f64 = got.iter().map(|e| 1.0 / e.events_in_message as f64).sum();
    assert!(
        messages.round() < 100.0,
        "1000 events in {messages} messages"
    );
    events.assert_quiet(Duration::from_millis(300)).await;
}
