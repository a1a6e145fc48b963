//! Freshness under ordinary operations: a slow deploy of the invalidator,
//! changes made with plain SQL, and a page load that began before a change.

use std::time::Duration;

use cache::InvalidatorMode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Mode, Proxy};

use crate::harness::{ReadApi, System, WAIT, invalidator, product, read_api};

/// What this reader has learned about `id`.
fn floor(reader: &ReadApi, id: i64) -> i64 {
    let pid = domain::ProductId::new(id).unwrap();
    reader.state.read.l1.floor(pid).get()
}

/// The invalidator is stopped for longer than an L1 tombstone lives: every
/// instance still serves the new version at once, before the invalidator
/// is back, and after it (design rule 7: a floor outlives the entries).
async fn a_slow_invalidator_deploy_never_pins_the_old_version(mode: InvalidatorMode) {
    let mut sys = System::start_with(2, |s| {
        s.invalidator.mode = mode;
        s.cache.l1_ttl_secs = 1;
    })
    .await;
    let id = sys.admin.create(&product("DEPLOY-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.until_invalidator_handled(1).await;
    for r in 0..2 {
        // Redis holds version 1...
        sys.read(r, &format!("/products/{id}")).await;
        assert_eq!(sys.version_on(r, id).await, 1);
    }
    for reader in &sys.readers {
        // ...and no instance holds the product in L1 (in refresh mode an
        // L1 that held it would get the event's snapshot, and never look
        // at Redis).
        reader.state.read.l1.clear();
    }

    sys.invalidator.take().unwrap().stop().await;
    sys.admin.patch(id, &json!({"price_cents": 2})).await;
    let pid = domain::ProductId::new(id).unwrap();
    for reader in &sys.readers {
        // The event reached the instance (its own subscription)...
        test_support::eventually("the instance to learn version 2", WAIT, || async {
            (floor(reader, id) == 2).then_some(())
        })
        .await;
        // ...and its short-lived L1 tombstone has expired since.
        test_support::eventually("the L1 tombstone to expire", WAIT, || async {
            reader.state.read.l1.get(pid).await.is_none().then_some(())
        })
        .await;
    }
    // Redis still holds version 1: nobody fenced it. Every instance reads
    // past it.
    assert_eq!(sys.l2().get(pid).await.unwrap().unwrap().version.get(), 1);
    for r in 0..2 {
        for _ in 0..3 {
            assert_eq!(sys.version_on(r, id).await, 2, "reader {r}, {mode:?}");
        }
    }

    sys.invalidator = Some(invalidator(sys.settings.clone()).await);
    sys.until_invalidator_handled(1).await;
    for r in 0..2 {
        test_support::eventually(
            "version 2 within a second of the invalidator's return",
            Duration::from_secs(1),
            || async { (sys.version_on(r, id).await == 2).then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_slow_invalidator_deploy_never_pins_the_old_version_in_evict_mode() {
    a_slow_invalidator_deploy_never_pins_the_old_version(InvalidatorMode::Evict).await;
}

#[tokio::test]
async fn a_slow_invalidator_deploy_never_pins_the_old_version_in_refresh_mode() {
    a_slow_invalidator_deploy_never_pins_the_old_version(InvalidatorMode::Refresh).await;
}

/// An operator's UPDATE, DELETE and INSERT in psql reach every instance,
/// with the version raised by the database.
#[tokio::test]
async fn changes_made_in_psql_reach_every_instance() {
    let sys = System::start(2).await;
    let id = sys.admin.create(&product("PSQL-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(id, 1).await;
    let bound = Duration::from_secs(5);

    sys.env
        .psql(&format!(
            "UPDATE products SET price_cents = 4242 WHERE id = {id}"
        ))
        .await;
    for r in 0..2 {
        let body = test_support::eventually("the new price everywhere", bound, || async {
            let (_, _, body) = sys.read(r, &format!("/products/{id}")).await;
            (body["version"] == 2).then_some(body)
        })
        .await;
        assert_eq!(body["price_cents"], 4242);
    }

    // A product nobody has yet is cached as "not found"; its INSERT's event
    // overrides that everywhere.
    let next = id + 1;
    for r in 0..2 {
        assert_eq!(
            sys.read(r, &format!("/products/{next}")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let inserted: i64 = sys
        .env
        .psql(
            "INSERT INTO products (sku, name, category, price_cents, currency) \
             VALUES ('PSQL-2', 'From psql', 'laptops', 1, 'USD') RETURNING id",
        )
        .await
        .trim()
        .parse()
        .unwrap();
    assert_eq!(inserted, next);
    for r in 0..2 {
        test_support::eventually("the inserted product everywhere", bound, || async {
            (sys.read(r, &format!("/products/{next}")).await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }

    sys.env
        .psql(&format!("DELETE FROM products WHERE id = {id}"))
        .await;
    for r in 0..2 {
        test_support::eventually("the delete everywhere", bound, || async {
            (sys.read(r, &format!("/products/{id}")).await.0 == StatusCode::NOT_FOUND).then_some(())
        })
        .await;
    }
}

/// A page load that began before a change is slow to come back. A request
/// that arrives after the change's generation bump does not share it (it
/// gets the new version), and the slow load's old page is not cached.
#[tokio::test]
async fn a_page_read_before_a_change_is_neither_shared_nor_cached_after_it() {
    let sys = System::start(0).await;
    let (proxy, db_url) = Proxy::for_url(&sys.settings.database.url).await;
    let mut settings = sys.settings.clone();
    settings.database.url = db_url;
    let reader = read_api(settings).await;
    let id = sys.admin.create(&product("SLOW-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.until_invalidator_handled(1).await;
    let page = reader.url("/products?category=laptops");
    let get = |url: String| async move {
        let res = reqwest::get(url).await.unwrap();
        let tier = res.headers()["x-cache"].to_str().unwrap().to_owned();
        (tier, res.json::<Value>().await.unwrap())
    };

    // A page of another category first: the leader's query then finds an
    // open connection with its statement prepared, and reaches Postgres in
    // one round trip (opening or preparing takes more, each delayed below).
    get(reader.url("/products?category=warm-up")).await;
    let before = sys.env.psql("SELECT clock_timestamp()").await;

    // The leader's query reaches Postgres at once, before the change; its
    // answer is held in the proxy while the change lands.
    proxy.set(Mode::Delay(Duration::from_millis(1500))).await;
    let leader = tokio::spawn(get(page.clone()));
    // Postgres has run the leader's query once a backend shows a category
    // query begun since `before`.
    let ran = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND query LIKE '%\"category\" =%' AND query_start > '{}'",
        before.trim()
    );
    test_support::eventually("the leader's query to reach Postgres", WAIT, || async {
        (sys.env.psql(&ran).await.trim() != "0").then_some(())
    })
    .await;
    sys.admin
        .patch(id, &json!({"name": "Renamed meanwhile"}))
        .await;
    sys.until_invalidator_handled(2).await;
    proxy.set(Mode::Up).await;

    let (_, follower) = get(page.clone()).await;
    assert_eq!(
        follower["items"][0]["name"], "Renamed meanwhile",
        "a request that saw the new generation is not answered from the old load"
    );
    let (_, led) = leader.await.unwrap();
    assert_eq!(
        led["items"][0]["version"], 1,
        "the leader's load predates the change"
    );
    for _ in 0..3 {
        let (tier, body) = get(page.clone()).await;
        assert_eq!(
            body["items"][0]["version"], 2,
            "{tier}: the old page was not cached"
        );
    }
}
