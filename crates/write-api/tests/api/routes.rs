//! The happy paths and their headers; optimistic concurrency; stock.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_error, product, spawn_app};

#[tokio::test]
async fn create_get_patch_delete() {
    let app = spawn_app().await;
    let res = app.post_product(&product("LAPTOP-42")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(res.headers()["etag"], "\"1\"");
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/products/{id}"));
    for (k, v) in [
        ("sku", json!("LAPTOP-42")),
        ("category", json!("laptops")),
        ("price_cents", json!(99900)),
        ("currency", json!("USD")),
        ("featured", json!(false)),
        ("attributes", json!({"ram_gb": 16})),
        ("version", json!(1)),
    ] {
        assert_eq!(created[k], v, "{k}");
    }
    assert!(
        created.get("stock").is_none(),
        "stock is not part of the product"
    );
    assert_eq!(created["created_at"], created["updated_at"]);

    let res = app.get(id).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(res.json::<Value>().await.unwrap(), created);

    let res = app
        .patch(
            id,
            &json!({"price_cents": 89900, "attributes": {"color": "grey"}}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["price_cents"], 89900);
    assert_eq!(
        patched["attributes"],
        json!({"ram_gb": 16, "color": "grey"}),
        "merge patch"
    );
    assert_eq!(patched["name"], created["name"]);
    assert_eq!(patched["created_at"], created["created_at"]);
    assert!(patched["updated_at"].as_str() > created["updated_at"].as_str());

    // Merge patch: null removes an attribute and resets a defaulted field.
    let res = app
        .patch(
            id,
            &json!({"attributes": {"ram_gb": null}, "description": null}),
            None,
        )
        .await;
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["attributes"], json!({"color": "grey"}));
    assert_eq!(p["description"], "");
    assert_eq!(p["version"], 3);

    let res = app.delete(id).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_error(app.get(id).await, StatusCode::NOT_FOUND, "not_found", None).await;
    assert_error(
        app.delete(id).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn concurrent_patches_with_the_same_if_match_one_wins() {
    let app = spawn_app().await;
    let id = app.create("RACE-1").await["id"].as_i64().unwrap();
    let (body_a, body_b) = (json!({"name": "A"}), json!({"name": "B"}));
    let (a, b) = tokio::join!(
        app.patch(id, &body_a, Some("\"1\"")),
        app.patch(id, &body_b, Some("\"1\"")),
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
    let loser = if a.status() == StatusCode::OK { b } else { a };
    assert_error(
        loser,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        None,
    )
    .await;
    let p: Value = app.get(id).await.json().await.unwrap();
    assert_eq!(p["version"], 2, "exactly one change");
    // A stale If-Match on delete is refused too, and deletes nothing.
    let res = app
        .request(Method::DELETE, &format!("/products/{id}"))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        None,
    )
    .await;
    let res = app
        .request(Method::DELETE, &format!("/products/{id}"))
        .header("If-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn stock_is_set_without_touching_the_version() {
    let app = spawn_app().await;
    let id = app.create("STOCK-1").await["id"].as_i64().unwrap();
    let res = app.put_stock(id, &json!({"stock": 7})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let a: Value = res.json().await.unwrap();
    assert_eq!(a["product_id"], id);
    assert_eq!(a["stock"], 7);
    assert!(a["updated_at"].is_string());
    let p: Value = app.get(id).await.json().await.unwrap();
    assert_eq!(p["version"], 1, "stock does not bump the product version");
    let availability = app
        .env
        .db()
        .availability(domain::ProductId::new(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(availability.stock, 7);
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/products",
        "/products/bulk",
        "/products/{id}",
        "/products/{id}/stock",
    ] {
        assert!(paths.contains_key(p), "{p}");
    }
    assert!(paths["/products/{id}"].get("patch").is_some());
    assert!(paths["/products/bulk"].get("patch").is_some());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.create("M-1").await;
    let _ = app.get(999_999).await;
    let text = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("http_requests_total{method=\"POST\",route=\"/products\",status=\"201\"}"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/products/{id}\",status=\"404\""),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}
