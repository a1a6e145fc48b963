//! Once an event is applied, no list, featured or search page shows the old
//! version.

use serde_json::{Value, json};

use crate::harness::{System, product};

fn ids(body: &Value) -> Vec<i64> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn pages_follow_a_category_move_a_featured_change_and_a_rename() {
    let sys = System::start(1).await;
    let mut p = product("MOVE-1");
    p["featured"] = json!(true);
    let id = sys.admin.create(&p).await["id"].as_i64().unwrap();
    let other = sys.admin.create(&product("STAY-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(id, 1).await;
    // Both creates' generation bumps have landed, so the pages warmed below
    // stay warm.
    sys.until_invalidator_handled(2).await;
    let pages = [
        "/products?category=laptops",
        "/products?category=tablets",
        "/products",
        "/products/featured",
        "/products/search?q=ultrabook",
        "/products/search?q=tower",
    ];
    // Warm every page: stored on the second ask, served from Redis after.
    for page in pages {
        sys.read(0, page).await;
        sys.read(0, page).await;
        assert_eq!(sys.read(0, page).await.1, "HIT-L2", "{page}");
    }
    assert_eq!(ids(&sys.read(0, pages[0]).await.2), [id, other]);
    assert_eq!(ids(&sys.read(0, pages[3]).await.2), [id]);

    sys.admin
        .patch(
            id,
            &json!({"category": "tablets", "featured": false, "name": "Gaming tower"}),
        )
        .await;
    // Wait for the invalidator to apply the event (the product key and the
    // generations move in one pipeline)...
    sys.until_applied(id, 2).await;
    // ...then every page is right at once, without polling.
    let laptops = sys.read(0, pages[0]).await.2;
    assert_eq!(ids(&laptops), [other], "moved out of laptops");
    let tablets = sys.read(0, pages[1]).await.2;
    assert_eq!(ids(&tablets), [id], "moved into tablets");
    assert_eq!(tablets["items"][0]["version"], 2);
    let all = sys.read(0, pages[2]).await.2;
    assert_eq!(all["items"][0]["name"], "Gaming tower");
    assert!(
        ids(&sys.read(0, pages[3]).await.2).is_empty(),
        "no longer featured"
    );
    assert_eq!(
        ids(&sys.read(0, pages[4]).await.2),
        [other],
        "old name no longer matches"
    );
    assert_eq!(
        ids(&sys.read(0, pages[5]).await.2),
        [id],
        "new name matches"
    );
}
