//! The real binary, killed with SIGKILL in the middle of a stream of events
//! and started again: every event is applied, none is dead-lettered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Stdio, time::Duration};

use bus::Outgoing;
use chrono::Utc;
use domain::{ChangeEvent, ProductId, Version};
use test_support::TestEnv;
use tokio::process::{Child, Command};

const PRODUCTS: i64 = 40;
const VERSIONS: i64 = 30;

fn spawn(env: &TestEnv, port: u16) -> Child {
    let s = &env.settings;
    Command::new(env!("CARGO_BIN_EXE_invalidator"))
        .env("CATALOG__DATABASE__URL", &s.database.url)
        .env("CATALOG__REDIS__URL", &s.redis.url)
        .env("CATALOG__AMQP__URL", &s.amqp.url)
        .env("CATALOG__NAMESPACE", &s.namespace)
        .env("CATALOG__INVALIDATOR__BIND", format!("127.0.0.1:{port}"))
        .env("CATALOG__INVALIDATOR__AUDIT_INTERVAL_SECS", "0")
        .env("CATALOG__INVALIDATOR__PREFETCH", "32")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn ready(port: u16) {
    test_support::until_ready(
        "the invalidator process",
        &format!("http://127.0.0.1:{port}"),
    )
    .await;
}

fn event(id: i64, version: i64) -> ChangeEvent {
    let product = |v: i64| test_support::domain_product(id, v, "c", false);
    ChangeEvent::upserted(Some(&product(version - 1)), &product(version), Utc::now())
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing() {
    let env = TestEnv::new().await;
    let port = test_support::closed_port();
    let mut first = spawn(&env, port);
    ready(port).await;

    let publisher = env.publisher();
    let publish = |events: Vec<ChangeEvent>| {
        let publisher = &publisher;
        async move {
            let bodies: Vec<(String, Vec<u8>)> = events
                .iter()
                .map(|e| (e.event_id.to_string(), serde_json::to_vec(e).unwrap()))
                .collect();
            let out: Vec<Outgoing<'_>> = bodies
                .iter()
                .map(|(mid, body)| Outgoing {
                    routing_key: "product.updated",
                    message_id: mid,
                    correlation_id: None,
                    correlation_ids: &[],
                    payload: body,
                })
                .collect();
            assert!(publisher.publish(&out).await.unwrap().iter().all(|ok| *ok));
            out.len()
        }
    };
    // Before the kill: every version of products 1-20 (so their last events
    // must survive it), the first half of products 21-40.
    let half = PRODUCTS / 2;
    let mut published = 0;
    for version in 2..=VERSIONS {
        let mut events: Vec<ChangeEvent> = (1..=half).map(|id| event(id, version)).collect();
        if version <= VERSIONS / 2 {
            events.extend((half + 1..=PRODUCTS).map(|id| event(id, version)));
        }
        published += publish(events).await;
    }
    // Kill it while it is working through them: no graceful anything.
    let l2 = env.l2();
    let probe = ProductId::new(1).unwrap();
    test_support::eventually(
        "the first process to be consuming",
        Duration::from_secs(20),
        || {
            let l2 = l2.clone();
            async move { l2.get(probe).await.ok()?.map(|_| ()) }
        },
    )
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    for version in VERSIONS / 2 + 1..=VERSIONS {
        published += publish((half + 1..=PRODUCTS).map(|id| event(id, version)).collect()).await;
    }
    let mut second = spawn(&env, port);
    ready(port).await;
    for id in 1..=PRODUCTS {
        let pid = ProductId::new(id).unwrap();
        test_support::eventually(
            &format!("product {id} fenced at the last version"),
            Duration::from_secs(30),
            || {
                let l2 = l2.clone();
                async move { (l2.get(pid).await.ok()??.version == Version(VERSIONS)).then_some(()) }
            },
        )
        .await;
    }
    println!(
        "{published} events, invalidator SIGKILLed while consuming: all applied after restart"
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}
