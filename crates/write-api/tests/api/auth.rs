//! Every protected route answers 401 without a valid bearer token, before
//! looking at the body; the open routes stay open.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, product, spawn_app};

#[tokio::test]
async fn protected_routes_need_a_valid_token() {
    let app = spawn_app().await;
    let id = app.create("AUTH-1").await["id"].as_i64().unwrap();
    let routes = [
        (Method::POST, "/products".to_owned()),
        (Method::POST, "/products/bulk".to_owned()),
        (Method::PATCH, "/products/bulk".to_owned()),
        (Method::GET, format!("/products/{id}")),
        (Method::PATCH, format!("/products/{id}")),
        (Method::DELETE, format!("/products/{id}")),
        (Method::PUT, format!("/products/{id}/stock")),
    ];
    let bad_headers = [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Basic {}", test_support::ADMIN_TOKEN)),
        Some(format!("Bearer{}", test_support::ADMIN_TOKEN)),
        Some("Bearer ".to_owned()),
        Some(format!("Bearer {}x", test_support::ADMIN_TOKEN)),
    ];
    for (method, path) in &routes {
        for header in &bad_headers {
            let mut req = app.anonymous(method.clone(), path).json(&product("AUTH-2"));
            if let Some(h) = header {
                req = req.header("Authorization", h);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
            assert_error(res, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
        }
    }
    // A valid token beside a wrong one, in either order, is refused.
    let valid = format!("Bearer {}", test_support::ADMIN_TOKEN);
    for pair in [
        [valid.as_str(), "Bearer wrong"],
        ["Bearer wrong", valid.as_str()],
    ] {
        let res = app
            .anonymous(Method::DELETE, &format!("/products/{id}"))
            .header("Authorization", pair[0])
            .header("Authorization", pair[1])
            .send()
            .await
            .unwrap();
        assert_error(res, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    }
    // Nothing changed: the product is still version 1 and AUTH-2 does not exist.
    let p: serde_json::Value = app.get(id).await.json().await.unwrap();
    assert_eq!(p["version"], 1);
    assert_eq!(app.counts().await.0, 1);
    // The scheme is case-insensitive, the token is not.
    let res = app
        .anonymous(Method::GET, &format!("/products/{id}"))
        .header(
            "Authorization",
            format!("bearer {}", test_support::ADMIN_TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn any_configured_token_is_accepted() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.auth.admin_tokens = vec!["first".into(), "second".into()];
    })
    .await;
    for token in ["first", "second"] {
        let res = app
            .anonymous(Method::POST, "/products")
            .bearer_auth(token)
            .json(&product(&format!("T-{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn operational_routes_are_open() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let res = app.anonymous(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = app.anonymous(Method::GET, "/nowhere").send().await.unwrap();
    assert_error(res, StatusCode::NOT_FOUND, "not_found", None).await;
    for (path, allowed) in [
        ("/products", "POST"),
        ("/products/bulk", "POST, PATCH"),
        ("/products/1", "GET, HEAD, PATCH, DELETE"),
        ("/products/1/stock", "PUT"),
    ] {
        let res = app
            .request(Method::OPTIONS, path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], allowed, "{path}");
        assert_error(
            res,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        )
        .await;
    }
}
