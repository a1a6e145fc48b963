//! Every validation rule and error code; a failed request writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_error, product, spawn_app};

#[tokio::test]
async fn invalid_products_are_refused_with_the_field_and_nothing_is_written() {
    let app = spawn_app().await;
    let with = |field: &str, value: Value| {
        let mut p = product("OK-1");
        p[field] = value;
        p
    };
    let without = |field: &str| {
        let mut p = product("OK-1");
        p.as_object_mut().unwrap().remove(field);
        p
    };
    let cases = vec![
        ("sku", with("sku", json!(""))),
        ("sku", with("sku", json!("has space"))),
        ("sku", with("sku", json!("s".repeat(65)))),
        ("sku", without("sku")),
        ("name", with("name", json!(""))),
        ("name", with("name", json!("  \t "))),
        ("name", with("name", json!("n".repeat(201)))),
        ("name", without("name")),
        ("description", with("description", json!("d".repeat(5001)))),
        ("category", with("category", json!("Laptops"))),
        ("category", with("category", json!("c".repeat(65)))),
        ("category", without("category")),
        ("price_cents", with("price_cents", json!(-1))),
        (
            "price_cents",
            with("price_cents", json!(1_000_000_000_001_i64)),
        ),
        ("price_cents", with("price_cents", json!(10.5))),
        ("price_cents", with("price_cents", json!("100"))),
        ("price_cents", without("price_cents")),
        ("currency", with("currency", json!("usd"))),
        ("currency", with("currency", json!("US"))),
        ("currency", without("currency")),
        ("featured", with("featured", json!("yes"))),
        ("attributes", with("attributes", json!([1]))),
        (
            "attributes",
            with("attributes", json!({"blob": "x".repeat(16 * 1024)})),
        ),
        ("stock", with("stock", json!(-3))),
        ("color", with("color", json!("red"))),
        ("id", with("id", json!(7))),
        ("version", with("version", json!(9))),
    ];
    for (field, body) in cases {
        let res = app.post_product(&body).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    assert_eq!(
        app.counts().await,
        (0, 0),
        "a refused create writes nothing"
    );
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let app = spawn_app().await;
    for raw in ["{", "not json", "", "{\"sku\": }"] {
        let res = app
            .request(Method::POST, "/products")
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "bad_request", None).await;
    }
    let res = app.post_product(&json!([1, 2])).await;
    assert_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        None,
    )
    .await;
    assert_eq!(app.counts().await, (0, 0));
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let app = spawn_app().await;
    let mut big = product("BIG-1");
    big["description"] = json!("x".repeat(1024 * 1024));
    let res = app.post_product(&big).await;
    assert_error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
    // Also without a Content-Length (chunked): the limit holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..1100).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = app
        .request(Method::POST, "/products")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
    assert_eq!(app.counts().await, (0, 0));
}

#[tokio::test]
async fn duplicate_sku_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    app.create("DUP-1").await;
    let res = app.post_product(&product("DUP-1")).await;
    assert_error(res, StatusCode::CONFLICT, "conflict", None).await;
    assert_eq!(app.counts().await.0, 1);
}

#[tokio::test]
async fn bulk_creates_a_thousand_and_refuses_more() {
    let app = spawn_app().await;
    let batch = |n: usize, prefix: &str| json!({"products": (0..n).map(|i| product(&format!("{prefix}-{i}"))).collect::<Vec<_>>()});
    let res = app
        .request(Method::POST, "/products/bulk")
        .json(&batch(1001, "TOO"))
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("products"),
    )
    .await;
    assert_eq!(app.counts().await, (0, 0));

    let res = app
        .request(Method::POST, "/products/bulk")
        .json(&batch(1000, "OK"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let ids: Vec<i64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000);
    // Ids come back in request order: the 10th id is the product OK-9.
    let tenth: Value = app.get(ids[9]).await.json().await.unwrap();
    assert_eq!(tenth["sku"], "OK-9");
    assert_eq!(app.counts().await.0, 1000);
}

#[tokio::test]
async fn bulk_is_all_or_nothing() {
    let app = spawn_app().await;
    app.create("TAKEN").await;
    // One invalid item: 422 naming it, nothing written.
    let mut items: Vec<Value> = (0..5).map(|i| product(&format!("B-{i}"))).collect();
    items[3]["price_cents"] = json!(-1);
    let res = app
        .request(Method::POST, "/products/bulk")
        .json(&json!({ "products": items }))
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("products[3].price_cents"),
    )
    .await;
    // One sku already taken: 409, nothing written.
    let mut items: Vec<Value> = (0..5).map(|i| product(&format!("B-{i}"))).collect();
    items[4] = product("TAKEN");
    let res = app
        .request(Method::POST, "/products/bulk")
        .json(&json!({ "products": items }))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::CONFLICT, "conflict", None).await;
    assert_eq!(app.counts().await.0, 1, "only the first product exists");
    // Empty and malformed bulk bodies.
    for body in [
        json!({"products": []}),
        json!({"products": "x"}),
        json!({}),
        json!({"products": [], "x": 1}),
    ] {
        let res = app
            .request(Method::POST, "/products/bulk")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}

#[tokio::test]
async fn invalid_patches_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let created = app.create("P-1").await;
    let id = created["id"].as_i64().unwrap();
    let cases = [
        ("name", json!({"name": null})),
        ("name", json!({"name": ""})),
        ("price_cents", json!({"price_cents": -5})),
        ("currency", json!({"currency": "euro"})),
        ("category", json!({"category": "Bad Cat"})),
        ("sku", json!({"sku": "NEW"})),
        ("stock", json!({"stock": 3})),
        ("version", json!({"version": 99})),
        ("bogus", json!({"bogus": 1})),
        ("attributes", json!({"attributes": "flat"})),
        (
            "attributes",
            json!({"attributes": {"blob": "x".repeat(17 * 1024)}}),
        ),
    ];
    for (field, body) in cases {
        let res = app.patch(id, &body, None).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    let now: Value = app.get(id).await.json().await.unwrap();
    assert_eq!(
        now, created,
        "refused patches change nothing (version still 1)"
    );
}

#[tokio::test]
async fn bad_ids_and_unknown_products() {
    let app = spawn_app().await;
    for bad in ["0", "-1", "abc", "1.5", "99999999999999999999", "%20"] {
        let res = app
            .request(Method::GET, &format!("/products/{bad}"))
            .send()
            .await
            .unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "bad_request", Some("id")).await;
        let res = app.patch_raw(bad).await;
        assert_error(res, StatusCode::BAD_REQUEST, "bad_request", Some("id")).await;
    }
    assert_error(
        app.get(424242).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.patch(424242, &json!({"name": "x"}), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.delete(424242).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.put_stock(424242, &json!({"stock": 1})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_eq!(app.counts().await, (0, 0));
}

#[tokio::test]
async fn stock_bodies_are_validated() {
    let app = spawn_app().await;
    let id = app.create("S-1").await["id"].as_i64().unwrap();
    for (body, field) in [
        (json!({"stock": -1}), Some("stock")),
        (json!({"stock": "7"}), Some("stock")),
        (json!({"stock": 1.5}), Some("stock")),
        (json!({}), Some("stock")),
        (json!({"stock": 1, "extra": true}), Some("extra")),
        (json!([]), None),
    ] {
        let res = app.put_stock(id, &body).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            field,
        )
        .await;
    }
}

#[tokio::test]
async fn if_match_must_be_a_quoted_version() {
    let app = spawn_app().await;
    let id = app.create("IM-1").await["id"].as_i64().unwrap();
    for bad in ["1", "W/\"1\"", "\"one\""] {
        let res = app.patch(id, &json!({"name": "x"}), Some(bad)).await;
        assert_error(
            res,
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some("If-Match"),
        )
        .await;
    }
    let v: Value = app.get(id).await.json().await.unwrap();
    assert_eq!(v["version"], 1);
}

impl crate::helpers::TestApp {
    async fn patch_raw(&self, raw_id: &str) -> reqwest::Response {
        self.request(Method::PATCH, &format!("/products/{raw_id}"))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap()
    }
}
