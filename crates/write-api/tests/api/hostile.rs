//! Input Postgres would refuse, and what the old OpenAPI document allowed
//! but the server refused: each case is a clear JSON error naming the field,
//! and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, product, spawn_app};

/// A create whose body is this raw text, for escapes `serde_json::json!`
/// cannot write (an unpaired surrogate).
async fn post_raw(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.request(Method::POST, path)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn nul_in_any_string_of_a_create_is_422_naming_it() {
    let app = spawn_app().await;
    let with = |field: &str, value: Value| {
        let mut p = product("NUL-1");
        p[field] = value;
        p
    };
    let cases = [
        ("name", with("name", json!("a\u{0}b"))),
        ("sku", with("sku", json!("NUL\u{0}"))),
        ("description", with("description", json!("\u{0}"))),
        ("category", with("category", json!("laptops\u{0}"))),
        ("currency", with("currency", json!("US\u{0}"))),
        (
            "attributes.ports[1]",
            with("attributes", json!({"ports": ["usb", "\u{0}"]})),
        ),
        (
            "attributes.screen.panel",
            with("attributes", json!({"screen": {"panel": "ips\u{0}"}})),
        ),
        // A NUL in a key names the object holding it.
        ("attributes", with("attributes", json!({"ram\u{0}": 16}))),
        (
            "attributes.screen",
            with("attributes", json!({"screen": {"k\u{0}": 1}})),
        ),
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
    let mut second = product("NUL-3");
    second["name"] = json!("x\u{0}");
    let bulk = json!({"products": [product("NUL-2"), second]});
    let res = app
        .request(Method::POST, "/products/bulk")
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("products[1].name"),
    )
    .await;
    assert_eq!(app.counts().await, (0, 0), "nothing written");
}

#[tokio::test]
async fn nul_in_a_patch_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create("NULP-1").await;
    let id = created["id"].as_i64().unwrap();
    for (field, body) in [
        ("name", json!({"name": "a\u{0}"})),
        ("description", json!({"description": "\u{0}"})),
        (
            "attributes.ram_gb",
            json!({"attributes": {"ram_gb": "\u{0}"}}),
        ),
        // Even a key the patch would remove.
        ("attributes", json!({"attributes": {"gone\u{0}": null}})),
    ] {
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
    assert_eq!(now, created, "unchanged, still version 1");
}

#[tokio::test]
async fn unpaired_surrogates_are_422_naming_the_member() {
    let app = spawn_app().await;
    let good = r#""sku": "S-1", "category": "laptops", "price_cents": 1, "currency": "USD""#;
    for (body, field) in [
        (format!(r#"{{{good}, "name": "a\ud800b"}}"#), "name"),
        (format!(r#"{{{good}, "name": "\udc00"}}"#), "name"),
        (format!(r#"{{{good}, "name": "\ud800\u0041"}}"#), "name"),
        (
            format!(r#"{{{good}, "name": "n", "attributes": {{"k": ["\ud83d"]}}}}"#),
            "attributes.k[0]",
        ),
    ] {
        let res = post_raw(&app, "/products", &body).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    let bulk = format!(r#"{{"products": [{{{good}, "name": "\ud800"}}]}}"#);
    let res = post_raw(&app, "/products/bulk", &bulk).await;
    assert_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("products[0].name"),
    )
    .await;
    // A pair is one character, and fine.
    let pair = format!(r#"{{{good}, "name": "\ud83d\ude00"}}"#);
    let res = post_raw(&app, "/products", &pair).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "\u{1F600}");
    assert_eq!(app.counts().await.0, 1, "only the good one");
}

#[tokio::test]
async fn what_the_old_document_allowed_is_refused_clearly() {
    let app = spawn_app().await;
    let id = app.create("OLD-1").await["id"].as_i64().unwrap();
    // Stock below zero, extra properties in the stock body.
    for (body, field) in [
        (json!({"stock": -9_223_372_036_854_775_807_i64}), "stock"),
        (json!({"stock": 1, "extra": true}), "extra"),
    ] {
        let res = app.put_stock(id, &body).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    // Empty strings in a patch.
    for field in ["name", "category", "currency"] {
        let res = app.patch(id, &json!({ field: "" }), None).await;
        assert_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    // `If-Match: null` on a delete.
    let res = app
        .request(Method::DELETE, &format!("/products/{id}"))
        .header("If-Match", "null")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        StatusCode::BAD_REQUEST,
        "bad_request",
        Some("If-Match"),
    )
    .await;
    // Ids out of range.
    for bad in ["-9223372036854775807", "9223372036854775808"] {
        let res = app.delete_raw(bad).await;
        assert_error(res, StatusCode::BAD_REQUEST, "bad_request", Some("id")).await;
    }
    let now: Value = app.get(id).await.json().await.unwrap();
    assert_eq!(now["version"], 1, "nothing changed");

    // What the document allows is accepted: the largest stock, and an
    // integer written as a number with a zero fraction (JSON Schema's
    // `integer`).
    let res = app.put_stock(id, &json!({"stock": i64::MAX})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut p = product("OLD-2");
    p["price_cents"] = json!(1250.0);
    let res = app.post_product(&p).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["price_cents"], 1250);
}

#[tokio::test]
async fn a_sku_twice_in_one_bulk_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    let bulk = json!({"products": [product("TWICE"), product("OTHER"), product("TWICE")]});
    let res = app
        .request(Method::POST, "/products/bulk")
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("products[2]") && message.contains("TWICE"),
        "{message}"
    );
    assert_eq!(app.counts().await, (0, 0));
}

#[tokio::test]
async fn head_is_get_without_a_body_and_needs_the_token() {
    let app = spawn_app().await;
    let id = app.create("HEAD-W").await["id"].as_i64().unwrap();
    let path = format!("/products/{id}");
    let get = app.request(Method::GET, &path).send().await.unwrap();
    let head = app.request(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    for name in ["etag", "content-type", "content-length"] {
        assert_eq!(head.headers().get(name), get.headers().get(name), "{name}");
    }
    assert!(head.bytes().await.unwrap().is_empty());
    let head = app
        .request(Method::HEAD, "/products/424242")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    // Without the token: 401, with the request id every answer carries.
    let res = app.anonymous(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("x-request-id"));
    let res = app
        .anonymous(Method::POST, "/products")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    assert_error(res, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let res = app.anonymous(Method::HEAD, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}

impl TestApp {
    async fn delete_raw(&self, raw_id: &str) -> reqwest::Response {
        self.request(Method::DELETE, &format!("/products/{raw_id}"))
            .send()
            .await
            .unwrap()
    }
}
