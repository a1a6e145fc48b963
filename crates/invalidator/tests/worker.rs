//! The invalidator against real RabbitMQ, Redis and Postgres: events fence
//! keys and bump generations, redeliveries are harmless, poison is
//! dead-lettered, a Redis outage loses nothing, the auditor finds planted
//! staleness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bus::{Outgoing, Publisher};
use bytes::Bytes;
use cache::InvalidatorMode;
use cache::{Entry, Family, L2, ListHit};
use chrono::Utc;
use domain::{ChangeEvent, NewProduct, Product, ProductId, Version};
use serde_json::json;
use service::Settings;
use test_support::{Mode, Proxy, Running, TestEnv};

const WAIT: Duration = Duration::from_secs(15);

type Worker = Running<()>;

/// Starts an invalidator; consuming once readiness says so.
async fn start(settings: Settings) -> Worker {
    let worker = test_support::run(invalidator::build, settings).await;
    test_support::until_ready("the invalidator", &worker.base).await;
    worker
}

fn l2(env: &TestEnv) -> L2 {
    env.l2()
}

/// The Redis database the auditor tests keep their keys in.
const AUDIT_DB: &str = "15";

/// The auditor SCANs a bounded number of steps per audit, so on the shared
/// database the keys other suites (or a benchmark) left there could crowd
/// this test's few out of the sample. A Redis database of their own keeps
/// the audits to the keys the tests planted.
fn audit_l2(env: &TestEnv) -> L2 {
    let url = test_support::with_database(&test_support::redis_url(), AUDIT_DB);
    test_support::l2_on(cache::Endpoint::Single(url), &env.namespace)
}

fn product(id: i64, version: i64, category: &str, featured: bool) -> Product {
    test_support::domain_product(id, version, category, featured)
}

fn update(id: i64, version: i64) -> ChangeEvent {
    let before = product(id, version - 1, "laptops", false);
    ChangeEvent::upserted(
        Some(&before),
        &product(id, version, "laptops", false),
        Utc::now(),
    )
}

async fn publish(env: &TestEnv, events: &[ChangeEvent]) {
    let publisher = env.publisher();
    let bodies: Vec<(String, String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            (
                e.kind.routing_key().to_owned(),
                e.event_id.to_string(),
                serde_json::to_vec(e).unwrap(),
            )
        })
        .collect();
    publish_raw(&publisher, &bodies).await;
}

async fn publish_raw(publisher: &Publisher, bodies: &[(String, String, Vec<u8>)]) {
    let out: Vec<Outgoing<'_>> = bodies
        .iter()
        .map(|(rk, id, body)| Outgoing {
            routing_key: rk,
            message_id: id,
            correlation_id: None,
            correlation_ids: &[],
            payload: body,
        })
        .collect();
    let confirmed = publisher.publish(&out).await.unwrap();
    assert!(confirmed.iter().all(|c| *c));
}

use test_support::queue_len;

async fn entry(l2: &L2, id: i64) -> Option<Entry> {
    l2.get(ProductId::new(id).unwrap()).await.unwrap()
}

async fn until_entry(l2: &L2, id: i64, want: Entry) {
    test_support::eventually(&format!("product {id} to hold {want:?}"), WAIT, || {
        let (l2, want) = (l2.clone(), want.clone());
        async move { (entry(&l2, id).await == Some(want)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn events_fence_products_and_bump_every_touched_family() {
    let env = TestEnv::new().await;
    let cache = l2(&env);
    let _worker = start(env.settings.clone()).await;
    // Pages cached for the families a move from laptops to tablets touches,
    // and one for an untouched family.
    let families = [
        Family::Category("laptops".into()),
        Family::Category("tablets".into()),
        Family::All,
        Family::Search,
        Family::Featured,
        Family::Category("phones".into()),
    ];
    for f in &families {
        let ListHit::Miss(g) = cache.list_get(f, "p", domain::Lsn(0)).await.unwrap() else {
            panic!()
        };
        assert!(
            cache
                .list_fill(
                    f,
                    "p",
                    g.as_deref(),
                    domain::Lsn(u64::MAX),
                    domain::Lsn(0),
                    b"old"
                )
                .await
                .unwrap()
        );
    }
    let before = product(7, 3, "laptops", false);
    let after = product(7, 4, "tablets", true);
    publish(
        &env,
        &[ChangeEvent::upserted(Some(&before), &after, Utc::now())],
    )
    .await;
    until_entry(&cache, 7, Entry::tombstone(Version(4))).await;
    for f in &families[..5] {
        assert!(
            matches!(
                cache.list_get(f, "p", domain::Lsn(0)).await.unwrap(),
                ListHit::Miss(_)
            ),
            "{f:?} bumped"
        );
    }
    assert_eq!(
        cache
            .list_get(&families[5], "p", domain::Lsn(0))
            .await
            .unwrap(),
        ListHit::Hit(Bytes::from_static(b"old")),
        "untouched family keeps its pages"
    );
    // A delete fences with a deleted marker.
    publish(&env, &[ChangeEvent::deleted(&after, Utc::now())]).await;
    until_entry(&cache, 7, Entry::deleted(Version(5))).await;
}

#[tokio::test]
async fn refresh_mode_writes_the_snapshot_through_the_cas() {
    let env = TestEnv::new().await;
    let cache = l2(&env);
    let mut settings = env.settings.clone();
    settings.invalidator.mode = InvalidatorMode::Refresh;
    let _worker = start(settings).await;
    let e = update(9, 2);
    publish(&env, std::slice::from_ref(&e)).await;
    let json = Bytes::from(serde_json::to_vec(e.product.as_ref().unwrap()).unwrap());
    until_entry(&cache, 9, Entry::value(Version(2), json)).await;
}

#[tokio::test]
async fn duplicated_and_reordered_deliveries_leave_the_highest_version() {
    for mode in [InvalidatorMode::Evict, InvalidatorMode::Refresh] {
        let env = TestEnv::new().await;
        let cache = l2(&env);
        let mut settings = env.settings.clone();
        settings.invalidator.mode = mode;
        let worker = start(settings).await;
        let events: Vec<ChangeEvent> = [5, 3, 4, 5, 2, 5, 1, 4]
            .iter()
            .map(|v| update(11, *v))
            .collect();
        publish(&env, &events).await;
        // A marker event after them: once it is applied, so are they.
        publish(&env, &[update(12, 2)]).await;
        let marker = match mode {
            InvalidatorMode::Evict => Entry::tombstone(Version(2)),
            InvalidatorMode::Refresh => {
                let e = update(12, 2);
                Entry::value(
                    Version(2),
                    Bytes::from(serde_json::to_vec(e.product.as_ref().unwrap()).unwrap()),
                )
            }
        };
        until_entry(&cache, 12, marker).await;
        let held = entry(&cache, 11).await.unwrap();
        assert_eq!(held.version, Version(5), "{mode:?}: {held:?}");
        worker.stop().await;
    }
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_at_once_and_poison_after_the_retries() {
    let env = TestEnv::new().await;
    let cache = l2(&env);
    let mut settings = env.settings.clone();
    settings.invalidator.max_retries = 3;
    let worker = start(settings).await;
    let topology = env.topology();
    let publisher = env.publisher();
    publish_raw(
        &publisher,
        &[(
            "product.updated".into(),
            "junk-1".into(),
            b"{not json".to_vec(),
        )],
    )
    .await;
    test_support::eventually("the malformed message in the DLQ", WAIT, || async {
        (queue_len(&topology.dead_letter_queue()).await == 1).then_some(())
    })
    .await;

    // Poison: the product's key holds a list, so its script fails with
    // WRONGTYPE on every delivery.
    let poisoned = ProductId::new(66).unwrap();
    let _: i64 = cache
        .command(
            "test",
            redis::cmd("RPUSH")
                .arg(cache.keys().product(poisoned))
                .arg("x")
                .clone(),
        )
        .await
        .unwrap();
    publish(&env, &[update(66, 2)]).await;
    // Good messages keep flowing meanwhile.
    for v in 2..=6 {
        publish(&env, &[update(67, v)]).await;
        until_entry(&cache, 67, Entry::tombstone(Version(v))).await;
    }
    test_support::eventually("the poison message in the DLQ", WAIT, || async {
        (queue_len(&topology.dead_letter_queue()).await == 2).then_some(())
    })
    .await;
    assert_eq!(
        queue_len(&topology.invalidator_queue()).await,
        0,
        "nothing stuck"
    );
    let metrics = test_support::Metrics::of(&worker.base).await.unwrap();
    let failed = metrics.sum_where(|l| {
        l.starts_with("invalidator_events_total{") && l.contains("outcome=\"failed\"")
    });
    assert_eq!(
        failed, 3.0,
        "processed exactly max_retries times before dead-lettering"
    );
    let metrics = metrics.text();
    assert!(
        metrics.contains("invalidator_dead_lettered_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("invalidator_dead_lettered_total{reason=\"retries_exhausted\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("invalidator_lag_seconds_bucket"));
}

/// Several events in one message, as the relay sends a run of one type:
/// every event applies; a message Redis refuses one event of is retried
/// and dead-lettered as a whole, its other events applied meanwhile.
#[tokio::test]
async fn a_batch_message_applies_every_event_and_settles_as_one() {
    let env = TestEnv::new().await;
    let cache = l2(&env);
    let mut settings = env.settings.clone();
    settings.invalidator.max_retries = 2;
    let _worker = start(settings).await;
    let topology = env.topology();
    let publisher = env.publisher();
    let batch = |events: &[ChangeEvent]| {
        (
            "product.updated".to_owned(),
            events[0].event_id.to_string(),
            serde_json::to_vec(events).unwrap(),
        )
    };
    publish_raw(
        &publisher,
        &[batch(&[update(80, 2), update(81, 5), update(82, 3)])],
    )
    .await;
    until_entry(&cache, 80, Entry::tombstone(Version(2))).await;
    until_entry(&cache, 81, Entry::tombstone(Version(5))).await;
    until_entry(&cache, 82, Entry::tombstone(Version(3))).await;

    let poisoned = ProductId::new(84).unwrap();
    let _: i64 = cache
        .command(
            "test",
            redis::cmd("RPUSH")
                .arg(cache.keys().product(poisoned))
                .arg("x")
                .clone(),
        )
        .await
        .unwrap();
    publish_raw(&publisher, &[batch(&[update(83, 2), update(84, 2)])]).await;
    until_entry(&cache, 83, Entry::tombstone(Version(2))).await;
    test_support::eventually("the refused batch in the DLQ", WAIT, || async {
        (queue_len(&topology.dead_letter_queue()).await == 1).then_some(())
    })
    .await;
    assert_eq!(queue_len(&topology.invalidator_queue()).await, 0);
}

#[tokio::test]
async fn a_redis_outage_holds_events_and_loses_none() {
    let env = TestEnv::new().await;
    let cache = l2(&env);
    let (proxy, redis_url) = Proxy::for_url(&test_support::redis_url()).await;
    let mut settings = env.settings.clone();
    settings.redis.url = redis_url;
    let worker = start(settings).await;
    proxy.set(Mode::Down).await;
    let events: Vec<ChangeEvent> = (1..=20).map(|id| update(id, 3)).collect();
    publish(&env, &events).await;
    // Held, not acked, not dead-lettered: the readiness probe says Redis is down.
    test_support::eventually("readiness to report Redis down", WAIT, || async {
        let res = reqwest::get(format!("{}/readyz", worker.base)).await.ok()?;
        (res.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    assert!(entry(&cache, 1).await.is_none());
    proxy.set(Mode::Up).await;
    for id in 1..=20 {
        until_entry(&cache, id, Entry::tombstone(Version(3))).await;
    }
    assert_eq!(queue_len(&env.topology().dead_letter_queue()).await, 0);
    assert_eq!(queue_len(&env.topology().invalidator_queue()).await, 0);
}

#[tokio::test]
async fn events_published_while_the_worker_is_down_are_applied_on_restart() {
    let env = TestEnv::new().await;
    let cache = l2(&env);
    let worker = start(env.settings.clone()).await;
    publish(&env, &[update(1, 2)]).await;
    until_entry(&cache, 1, Entry::tombstone(Version(2))).await;
    worker.stop().await;
    let events: Vec<ChangeEvent> = (2..=30).map(|id| update(id, 2)).collect();
    publish(&env, &events).await;
    assert_eq!(
        queue_len(&env.topology().invalidator_queue()).await,
        29,
        "waiting in the durable queue"
    );
    let _again = start(env.settings.clone()).await;
    for id in 2..=30 {
        until_entry(&cache, id, Entry::tombstone(Version(2))).await;
    }
}

#[tokio::test]
async fn the_auditor_finds_a_planted_stale_entry_and_can_repair_it() {
    let env = TestEnv::new().await;
    let cache = audit_l2(&env);
    let db = env.db();
    let new = NewProduct::from_json(&json!({
        "sku": "AUD-1", "name": "Audited", "category": "laptops", "price_cents": 1, "currency": "USD"
    }))
    .unwrap();
    let p = db.create(&new, None).await.unwrap();
    let fresh = db.create(&NewProduct::from_json(&json!({
        "sku": "AUD-2", "name": "Fresh", "category": "laptops", "price_cents": 1, "currency": "USD"
    })).unwrap(), None).await.unwrap();
    let patch = domain::ProductPatch::from_json(&json!({"price_cents": 2})).unwrap();
    db.update(p.id, &patch, None, None).await.unwrap();
    // The cache serves version 1 of AUD-1 (as if its event had been lost)
    // and a current copy of AUD-2.
    cache
        .fill(p.id, &Entry::value(Version(1), Bytes::from_static(b"{}")))
        .await
        .unwrap();
    cache
        .fill(
            fresh.id,
            &Entry::value(Version(1), Bytes::from_static(b"{}")),
        )
        .await
        .unwrap();
    let mut auditor = invalidator::auditor::Auditor::new(cache.clone(), db.clone(), 100, false);
    let report = auditor.audit(Duration::from_millis(50)).await.unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(
        report.stale,
        vec![invalidator::auditor::Stale {
            id: p.id,
            cached: Some(Version(1)),
            current: Some(Version(2))
        }]
    );
    assert_eq!(report.repaired, 0);
    assert_eq!(
        cache.get(p.id).await.unwrap().unwrap().version,
        Version(1),
        "report only"
    );

    let mut repairing = invalidator::auditor::Auditor::new(cache.clone(), db, 100, true);
    let report = repairing.audit(Duration::from_millis(50)).await.unwrap();
    assert_eq!((report.stale.len(), report.repaired), (1, 1));
    assert_eq!(
        cache.get(p.id).await.unwrap().unwrap(),
        Entry::tombstone(Version(2))
    );
    let report = repairing.audit(Duration::from_millis(50)).await.unwrap();
    assert!(report.stale.is_empty(), "repaired for good");
}

#[tokio::test]
async fn the_auditor_flags_a_cached_not_found_for_an_existing_product() {
    let env = TestEnv::new().await;
    let cache = audit_l2(&env);
    let db = env.db();
    let p = db
        .create(&NewProduct::from_json(&json!({
            "sku": "AUD-3", "name": "Exists", "category": "laptops", "price_cents": 1, "currency": "USD"
        })).unwrap(), None)
        .await
        .unwrap();
    cache.fill(p.id, &Entry::absent()).await.unwrap();
    let mut auditor = invalidator::auditor::Auditor::new(cache.clone(), db, 10, true);
    let report = auditor.audit(Duration::from_millis(50)).await.unwrap();
    assert_eq!(
        report.stale,
        vec![invalidator::auditor::Stale {
            id: p.id,
            cached: None,
            current: Some(Version(1))
        }]
    );
    assert_eq!(
        cache.get(p.id).await.unwrap().unwrap(),
        Entry::tombstone(Version(1))
    );
}
