//! Lists, featured and search: cached under generations, correct pages.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{product, spawn};

fn ids(body: &Value) -> Vec<i64> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn keyset_pages_by_category() {
    let app = spawn().await;
    let mut laptops = Vec::new();
    for i in 0..5 {
        laptops.push(
            app.admin.create(&product(&format!("L-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
        let mut phone = product(&format!("P-{i}"));
        phone["category"] = json!("phones");
        app.admin.create(&phone).await;
    }
    let first: Value = app
        .get("/products?category=laptops&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&first), laptops[..2]);
    assert_eq!(first["next_after"], laptops[1]);
    let second: Value = app
        .get(&format!(
            "/products?category=laptops&limit=2&after={}",
            laptops[1]
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&second), laptops[2..4]);
    let last: Value = app
        .get(&format!(
            "/products?category=laptops&limit=2&after={}",
            laptops[3]
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&last), laptops[4..]);
    assert_eq!(last["next_after"], Value::Null);
    let all: Value = app.get("/products?limit=100").await.json().await.unwrap();
    assert_eq!(ids(&all).len(), 10);
    let default: Value = app.get("/products").await.json().await.unwrap();
    assert_eq!(ids(&default).len(), 10);
    let none: Value = app
        .get("/products?category=nothing-here")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!({"items": [], "next_after": null}));
}

#[tokio::test]
async fn pages_are_served_from_redis_until_their_generation_moves() {
    let app = spawn().await;
    let id = app.admin.create(&product("G-1")).await["id"]
        .as_i64()
        .unwrap();
    let res = app.get("/products?category=laptops").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    let res = app.get("/products?category=laptops").await;
    assert_eq!(res.headers()["x-cache"], "HIT-L2");
    let cached: Value = res.json().await.unwrap();
    assert_eq!(cached["items"][0]["version"], 1);
    // A change plus the generation bump the invalidator would make.
    app.admin.patch(id, &json!({"name": "Renamed"})).await;
    app.l2()
        .bump(&[cache::Family::Category("laptops".into())])
        .await
        .unwrap();
    let res = app.get("/products?category=laptops").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    let fresh: Value = res.json().await.unwrap();
    assert_eq!(fresh["items"][0]["version"], 2);
    assert_eq!(fresh["items"][0]["name"], "Renamed");
}

#[tokio::test]
async fn featured_lists_only_featured_products() {
    let app = spawn().await;
    let mut featured = Vec::new();
    for i in 0..4 {
        let mut p = product(&format!("F-{i}"));
        p["featured"] = json!(i % 2 == 0);
        let id = app.admin.create(&p).await["id"].as_i64().unwrap();
        if i % 2 == 0 {
            featured.push(id);
        }
    }
    let body: Value = app.get("/products/featured").await.json().await.unwrap();
    assert_eq!(ids(&body), featured);
    let one: Value = app
        .get("/products/featured?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&one), featured[..1]);
    assert!(one.get("next_after").is_none());
}

#[tokio::test]
async fn search_ranks_full_text_matches() {
    let app = spawn().await;
    let mut a = product("S-1");
    a["name"] = json!("Noise cancelling headphones");
    a["category"] = json!("headphones");
    a["description"] = json!("Over-ear, wireless, 30 hours of battery");
    let a = app.admin.create(&a).await["id"].as_i64().unwrap();
    let mut b = product("S-2");
    b["name"] = json!("Travel adapter");
    b["description"] = json!("Works with headphones and phones");
    let b = app.admin.create(&b).await["id"].as_i64().unwrap();
    app.admin.create(&product("S-3")).await;
    let res = app.get("/products/search?q=headphones").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        ids(&body),
        [a, b],
        "a name match ranks above a description match"
    );
    // Stemming and case: "Headphone" finds the same; the cache key ignores case.
    let body: Value = app
        .get("/products/search?q=HEADPHONE")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [a, b]);
    let res = app.get("/products/search?q=headphone").await;
    assert_eq!(res.headers()["x-cache"], "HIT-L2");
    let body: Value = app
        .get("/products/search?q=%22battery%22%20-adapter")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [a]);
    let body: Value = app
        .get("/products/search?q=zeppelin")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"items": []}));
}
