//! Nothing is lost: the outbox holds events while RabbitMQ is away, relays
//! of other (or crashed) instances' rows, and concurrent writers' versions
//! all arrive.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;
use test_support::{Mode, Proxy};

use crate::helpers::{spawn_app, spawn_app_with, spawn_on};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn writes_succeed_while_rabbitmq_is_down_and_events_follow_when_it_returns() {
    let (proxy, url) = Proxy::for_url(&test_support::amqp_url()).await;
    proxy.set(Mode::Down).await;
    let app = spawn_app_with(|s| s.amqp.url = url).await;
    let mut events = app.env.listen().await;

    // Five creates, then five patches: the backlog holds two runs of one
    // type each, which the relay sends as two batch messages.
    let mut expected = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let res = app
            .post_product(&test_support::product(&format!("DOWN-{i}")))
            .await;
        let request = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let id = res.json::<serde_json::Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        expected.insert((id, 1), request);
        ids.push(id);
    }
    for id in ids {
        let res = app.patch(id, &json!({"price_cents": 1}), None).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "writes do not need the broker"
        );
        let request = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        expected.insert((id, 2), request);
    }
    let (_, backlog) = app.counts().await;
    assert_eq!(backlog, 10, "every event waits in the outbox");
    events.assert_quiet(Duration::from_millis(200)).await;

    proxy.set(Mode::Up).await;
    let received = events.take(10, WAIT).await;
    // Every event, each with the request id of its own write, though
    // events of five requests share a message.
    let got: BTreeMap<(i64, i64), String> = received
        .iter()
        .map(|e| {
            let key = (e.event.product_id.get(), e.event.version.get());
            (key, e.correlation_id.clone().unwrap_or_default())
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        received.iter().all(|e| e.events_in_message > 1),
        "a backlog goes out batched: {:?}",
        received
            .iter()
            .map(|e| e.events_in_message)
            .collect::<Vec<_>>()
    );
    test_support::eventually("the outbox to empty", WAIT, || async {
        (app.counts().await.1 == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_broker_that_hangs_mid_publish_gets_the_rows_back_in_one_bound() {
    let (proxy, url) = Proxy::for_url(&test_support::amqp_url()).await;
    let app = spawn_app_with(|s| s.amqp.url = url).await;
    let mut events = app.env.listen().await;
    let id = app.create("HANG-1").await["id"].as_i64().unwrap();
    events.take(1, WAIT).await;
    // Its confirm, too, came back through the proxy.
    test_support::eventually("the outbox to empty", WAIT, || async {
        (app.counts().await.1 == 0).then_some(())
    })
    .await;

    // The relay's connection stays open and hears nothing back: its pass
    // claims the row, publishes, and waits for a confirm that never comes.
    proxy.set(Mode::Hang).await;
    let res = app.patch(id, &json!({"price_cents": 7}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Within the publish bound (plus a margin for a loaded machine) the pass
    // is rolled back: the row is back in the outbox and no relay session
    // is left holding it.
    let released = test_support::eventually("the relay to give the row back", WAIT, || async {
        let held = app
            .env
            .psql(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() \
                 AND application_name = 'write-api-relay' AND state LIKE 'idle in transaction%'",
            )
            .await;
        let free = app
            .env
            .psql("SELECT count(*) FROM (SELECT id FROM outbox FOR UPDATE SKIP LOCKED) claimable")
            .await;
        (held.trim() == "0" && free.trim() == "1").then_some(())
    });
    released.await;
    events.assert_quiet(Duration::from_millis(200)).await;

    proxy.set(Mode::Up).await;
    let got = events.take(1, WAIT).await;
    assert_eq!(got[0].event.version.get(), 2);
    test_support::eventually("the outbox to empty", WAIT, || async {
        (app.counts().await.1 == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn another_instance_publishes_what_a_dead_one_left_behind() {
    let dead_broker = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        test_support::closed_port()
    );
    let first = spawn_app_with(|s| s.amqp.url = dead_broker).await;
    let env = Arc::clone(&first.env);
    let mut events = env.listen().await;
    for i in 0..3 {
        first.create(&format!("LEFT-{i}")).await;
    }
    first.stop().await;
    assert_eq!(env.db().outbox_backlog().await.unwrap().0, 3, "left behind");

    let second = spawn_on(Arc::clone(&env), |_| {}).await;
    let got = events.take(3, WAIT).await;
    assert!(got.iter().all(|e| e.routing_key == "product.created"));
    test_support::eventually("the outbox to empty", WAIT, || async {
        (second.counts().await.1 == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_lose_no_version() {
    const TASKS: i64 = 8;
    const UPDATES: i64 = 50;
    let app = Arc::new(spawn_app().await);
    let mut events = app.env.listen().await;
    let mut ids = Vec::new();
    for t in 0..TASKS {
        ids.push(app.create(&format!("CW-{t}")).await["id"].as_i64().unwrap());
    }
    // 8 tasks × 50 updates, two tasks per product so updates also contend.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let app = Arc::clone(&app);
        let id = ids[usize::try_from(t / 2).unwrap()];
        tasks.push(tokio::spawn(async move {
            for n in 0..UPDATES {
                let res = app
                    .patch(id, &json!({"price_cents": t * 1000 + n}), None)
                    .await;
                assert_eq!(res.status(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = usize::try_from(TASKS + TASKS * UPDATES).unwrap();
    let got = events.take(total, WAIT).await;
    let pairs: BTreeSet<(i64, i64)> = got
        .iter()
        .map(|e| (e.event.product_id.get(), e.event.version.get()))
        .collect();
    let mut expected = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        // Products 0..4 got 100 updates each; 4..8 only their create.
        let versions = if i < 4 { 1 + 2 * UPDATES } else { 1 };
        for v in 1..=versions {
            expected.insert((*id, v));
        }
    }
    assert_eq!(pairs, expected, "every (product, version) is published");
    assert_eq!(got.len(), total, "and each exactly once");
}

#[tokio::test]
async fn two_instances_share_one_outbox_without_duplicates() {
    let a = spawn_app().await;
    let b = spawn_on(Arc::clone(&a.env), |_| {}).await;
    let mut events = a.env.listen().await;
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..30 {
                a.create(&format!("A-{i}")).await;
            }
        },
        async {
            for i in 0..30 {
                b.create(&format!("B-{i}")).await;
            }
        }
    );
    let ((), ()) = (ra, rb);
    let got = events.take(60, WAIT).await;
    let ids: BTreeSet<i64> = got.iter().map(|e| e.event.product_id.get()).collect();
    assert_eq!(ids.len(), 60);
    events.assert_quiet(Duration::from_millis(300)).await;
}

/// With `write_api.relay_linger_ms`, passes are paced: a commit after a
/// quiet spell goes out at once, alone; commits that follow it inside the
/// linger wait for its end and travel together, each event whole and in
/// order. (The linger here is far above the setting's bound, so that the
/// two behaviours are told apart by seconds, not by a loaded machine's
/// milliseconds.)
#[tokio::test]
async fn a_relay_that_lingers_sends_a_lone_commit_at_once_and_the_next_together() {
    const LINGER: Duration = Duration::from_secs(3);
    let app = spawn_app_with(|s| s.write_api.relay_linger_ms = LINGER.as_millis() as u64).await;
    let mut events = app.env.listen().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let res = app
            .post_product(&test_support::product(&format!("LINGER-{i}")))
            .await;
        ids.push(
            res.json::<serde_json::Value>().await.unwrap()["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // The creations are out; then a quiet spell, the condition under test
    // (time itself, not a wait for something to happen).
    events.take(3, WAIT).await;
    tokio::time::sleep(LINGER + Duration::from_millis(200)).await;

    let res = app.patch(ids[0], &json!({"price_cents": 7}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let lone = events.take(1, LINGER / 2).await;
    assert_eq!(
        (lone[0].event.product_id.get(), lone[0].events_in_message),
        (ids[0], 1),
        "after a quiet spell a commit goes out at once, alone"
    );

    for &id in &ids[1..] {
        let res = app.patch(id, &json!({"price_cents": 7}), None).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let received = events.take(2, WAIT).await;
    let got: Vec<(i64, i64, usize)> = received
        .iter()
        .map(|r| {
            (
                r.event.product_id.get(),
                r.event.version.0,
                r.events_in_message,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(ids[1], 2, 2), (ids[2], 2, 2)],
        "commits inside the linger share a message, in commit order"
    );
    events.assert_quiet(Duration::from_millis(200)).await;
}
