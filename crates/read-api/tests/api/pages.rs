//! Lists, featured and search: cached under generations, correct pages.

use futures::StreamExt;
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
    app.until_seen(id, 1).await;
    let res = app.get("/products?category=laptops").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    // Stored on the second ask (admission), a hit from the third.
    let res = app.get("/products?category=laptops").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    let res = app.get("/products?category=laptops").await;
    assert_eq!(res.headers()["x-cache"], "HIT-L2");
    let cached: Value = res.json().await.unwrap();
    assert_eq!(cached["items"][0]["version"], 1);
    // A change plus the generation bump the invalidator would make (at the
    // change's WAL position, which this instance has from the event).
    app.admin.patch(id, &json!({"name": "Renamed"})).await;
    app.until_seen(id, 2).await;
    app.l2()
        .bump(&[cache::Bump {
            family: cache::Family::Category("laptops".into()),
            lsn: app.state().read.db.seen.get(),
        }])
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
    let c = app.admin.create(&product("S-3")).await["id"]
        .as_i64()
        .unwrap();
    app.until_seen(c, 1).await;
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
    // The same query (normalized) asked a second time is stored, a third
    // time served from Redis.
    let res = app.get("/products/search?q=headphone").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    let res = app.get("/products/search?q=Headphone").await;
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

/// Anonymous clients asking for pages nobody asks for twice (categories that
/// do not exist, random searches, random cursors) leave nothing in Redis.
#[tokio::test]
async fn pages_nobody_asks_for_twice_leave_nothing_in_redis() {
    let app = spawn().await;
    app.admin.create(&product("K-1")).await;
    let requests = (0..1000).map(|n| {
        let path = match n % 3 {
            0 => format!("/products?category=no-such-{n}"),
            1 => format!("/products/search?q=nothing{n}"),
            _ => format!("/products?after={}", 1_000_000 + n),
        };
        let (client, url) = (app.client.clone(), format!("{}{path}", app.read.base));
        async move { client.get(url).send().await.unwrap().status() }
    });
    // A few at a time: a thousand at once would meet the database limiter,
    // which answers 503 by design (tested in faults.rs), not what this is about.
    let statuses: Vec<StatusCode> = futures::stream::iter(requests)
        .buffer_unordered(8)
        .collect()
        .await;
    for status in statuses {
        assert_eq!(status, StatusCode::OK);
    }
    let l2 = app.l2();
    let keys: Vec<String> = l2
        .command(
            "test",
            redis::cmd("KEYS")
                .arg(format!("{}:[gl]:*", app.env.namespace))
                .clone(),
        )
        .await
        .unwrap();
    assert!(
        keys.is_empty(),
        "1,000 one-off pages left {} keys: {keys:?}",
        keys.len()
    );
}
