//! HEAD on every read route: the GET's status and headers, no body.

use reqwest::{Method, Response, StatusCode};

use crate::helpers::{TestApp, product, spawn};

/// Headers a HEAD must repeat from its GET, when the GET has them.
const SAME: &[&str] = &[
    "etag",
    "x-cache",
    "cache-control",
    "content-type",
    "allow",
    "x-degraded",
];

async fn send(app: &TestApp, method: Method, path: &str) -> Response {
    app.client
        .request(method, format!("{}{path}", app.read.base))
        .send()
        .await
        .unwrap()
}

/// GET then HEAD: the same status and headers; HEAD's `Content-Length` is
/// the GET body's, and it has no body. Two GETs first warm the caches (a
/// page is stored on its second ask), so the third GET and the HEAD are
/// answered by the same tier.
async fn same_as_get(app: &TestApp, path: &str, length_is_stable: bool) {
    send(app, Method::GET, path).await;
    send(app, Method::GET, path).await;
    let get = send(app, Method::GET, path).await;
    let head = send(app, Method::HEAD, path).await;
    assert_eq!(head.status(), get.status(), "{path}");
    for name in SAME {
        assert_eq!(
            head.headers().get(*name),
            get.headers().get(*name),
            "{path}: {name}"
        );
    }
    assert!(head.headers().contains_key("x-request-id"), "{path}");
    let head_length = head.headers().get("content-length").cloned();
    assert!(head.bytes().await.unwrap().is_empty(), "{path}: no body");
    let body = get.bytes().await.unwrap();
    if length_is_stable {
        assert_eq!(
            head_length.and_then(|v| v.to_str().ok()?.parse::<usize>().ok()),
            Some(body.len()),
            "{path}: Content-Length of the GET body"
        );
    }
}

#[tokio::test]
async fn head_answers_every_read_route_like_get_without_a_body() {
    let app = spawn().await;
    let created = app.admin.create(&product("HEAD-1")).await;
    let id = created["id"].as_i64().unwrap();
    app.admin
        .patch(id, &serde_json::json!({"featured": true}))
        .await;
    app.until_version(id, 2).await;
    for path in [
        format!("/products/{id}"),
        format!("/products/{id}/availability"),
        "/products?limit=5".to_owned(),
        "/products?category=laptops".to_owned(),
        "/products/search?q=ultrabook".to_owned(),
        "/products/featured".to_owned(),
        "/healthz".to_owned(),
        "/openapi.json".to_owned(),
        // Errors too: a 404 (cached as absent) and a 400.
        "/products/424242".to_owned(),
        "/products/0".to_owned(),
        "/products?limit=0".to_owned(),
    ] {
        same_as_get(&app, &path, true).await;
    }
    // Bodies that may change between two requests: status and headers only
    // (a trending roll-up may land in between).
    same_as_get(&app, "/products/trending", false).await;
    same_as_get(&app, "/readyz", false).await;
    same_as_get(&app, "/metrics", false).await;

    // A conditional HEAD, as a cache revalidating: 304 with the ETag.
    let head = app
        .client
        .head(format!("{}/products/{id}", app.read.base))
        .header("If-None-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(head.headers()["etag"], "\"2\"");

    // Other methods: 405 naming both.
    for path in ["/products/1", "/products", "/healthz", "/openapi.json"] {
        let res = send(&app, Method::PUT, path).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(res.headers()["allow"], "GET, HEAD", "{path}");
    }
}
