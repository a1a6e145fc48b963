//! Bad parameters on every route get 400 JSON; nothing answers 500.

use reqwest::StatusCode;

use crate::helpers::{assert_error, spawn};

#[tokio::test]
async fn bad_parameters_are_400_json() {
    let app = spawn().await;
    let cases = [
        "/products/0",
        "/products/-4",
        "/products/abc",
        "/products/1.5",
        "/products/99999999999999999999",
        "/products/1?min_version=0",
        "/products/1?min_version=x",
        "/products/1?min_version=1&min_version=2",
        "/products/0/availability",
        "/products/x/availability",
        "/products?limit=0",
        "/products?limit=101",
        "/products?limit=ten",
        "/products?after=-1",
        "/products?after=x",
        "/products?category=Bad%20Category",
        "/products?category=",
        "/products/search",
        "/products/search?q=",
        "/products/search?q=%20%20",
        &format!("/products/search?q={}", "a".repeat(201)),
        "/products/search?q=x&limit=0",
        "/products/featured?limit=1000",
        "/products/trending?limit=-1",
    ];
    for path in cases {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_error(
        app.get("/nowhere").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for path in [
        "/products/1",
        "/products/1/availability",
        "/products",
        "/products/search",
    ] {
        let res = app
            .client
            .post(format!("{}{path}", app.read.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], "GET, HEAD", "{path}");
        assert_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }
    // Boundaries that are valid.
    for path in [
        "/products?limit=1",
        "/products?limit=100",
        "/products?after=0",
        &format!("/products/search?q={}", "a".repeat(200)),
        "/products/search?q=%22unterminated",
        "/products/search?q=%26%7C%21%3A*()",
    ] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn operational_routes() {
    let app = spawn().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    for dep in ["postgres", "redis", "rabbitmq"] {
        assert_eq!(ready["checks"][dep]["status"], "up", "{dep}: {ready}");
    }
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    for p in [
        "/products",
        "/products/{id}",
        "/products/search",
        "/products/featured",
        "/products/trending",
        "/products/{id}/availability",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p}");
    }
    let id = app.admin.create(&crate::helpers::product("M-1")).await["id"]
        .as_i64()
        .unwrap();
    app.product(id).await;
    app.product(id).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for needle in [
        "http_requests_total{method=\"GET\",route=\"/products/{id}\",status=\"200\"}",
        "http_request_duration_seconds_bucket",
        "cache_hits_total{tier=\"l1\"}",
        "cache_misses_total{tier=\"l2\"}",
        "catalog_db_queries_total{query=\"product\"}",
        "cache_breaker_state",
        "cache_l1_entries",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}
