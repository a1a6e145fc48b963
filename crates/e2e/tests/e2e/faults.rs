//! Nothing is lost when RabbitMQ goes away or the invalidator stops, and the
//! auditor's findings reach the metrics.

use std::time::Duration;

use serde_json::json;
use test_support::{Mode, Proxy};

use crate::harness::{System, WAIT, invalidator, product};

#[tokio::test]
async fn a_broker_outage_for_writer_and_invalidator_delays_but_loses_nothing() {
    let (proxy, via_proxy) = Proxy::for_url(&test_support::amqp_url()).await;
    let mut sys = System::start(2).await;
    // Restart write-api and the invalidator behind the proxy (readers stay
    // directly connected), waiting for the old ones to stop: the old relay
    // would otherwise publish the new instance's outbox rows.
    let mut settings = sys.env.settings.clone();
    settings.amqp.url = via_proxy;
    sys.restart_write(settings.clone()).await;
    if let Some(old) = sys.invalidator.replace(invalidator(settings).await) {
        old.stop().await;
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            sys.admin.create(&product(&format!("OUT-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    for &id in &ids {
        sys.converge(id, 1).await;
    }
    // A reader shows version 1 from Postgres whether or not the create's
    // event has left the outbox yet: wait for that before the outage.
    let db = sys.env.db();
    test_support::eventually("the create events to be published", WAIT, || async {
        (db.outbox_backlog().await.ok()?.0 == 0).then_some(())
    })
    .await;
    proxy.set(Mode::Down).await;
    for n in 0..5 {
        for &id in &ids {
            // Writes succeed without the broker.
            sys.admin.patch(id, &json!({"price_cents": n})).await;
        }
    }
    let (backlog, _) = sys.env.db().outbox_backlog().await.unwrap();
    assert_eq!(backlog, 20, "the events wait in the outbox");
    proxy.set(Mode::Up).await;
    for &id in &ids {
        let lag = sys.converge(id, 6).await;
        println!("product {id} converged {lag:?} after the broker returned");
    }
    let l2 = sys.l2();
    for &id in &ids {
        let e = l2
            .get(domain::ProductId::new(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.version.get(), 6);
    }
}

#[tokio::test]
async fn updates_made_while_the_invalidator_is_stopped_are_applied_when_it_returns() {
    let mut sys = System::start(1).await;
    let id = sys.admin.create(&product("INV-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(id, 1).await;
    sys.invalidator.take().unwrap().stop().await;
    for n in 0..10 {
        sys.admin.patch(id, &json!({"price_cents": n})).await;
    }
    // The reader's own L1 subscription still sees the events...
    sys.converge(id, 11).await;
    // ...but Redis is fenced only by the invalidator, which is away.
    let l2 = sys.l2();
    let pid = domain::ProductId::new(id).unwrap();
    let held = l2.get(pid).await.unwrap().unwrap().version.get();
    assert!(held <= 11);
    let _back = invalidator(sys.env.settings.clone()).await;
    test_support::eventually("the invalidator to catch up", WAIT, || {
        let l2 = l2.clone();
        async move { (l2.get(pid).await.ok()??.version.get() == 11).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_running_auditor_reports_a_planted_stale_entry() {
    let sys = System::start_with(1, |s| {
        s.invalidator.audit_interval_secs = 1;
        // The test Redis is shared (and may hold a benchmark's 100k keys):
        // visit enough of it per audit to reach this test's keys.
        s.invalidator.audit_sample_size = 20_000;
    })
    .await;
    let id = sys.admin.create(&product("AUDIT-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.admin.patch(id, &json!({"price_cents": 1})).await;
    sys.converge(id, 2).await;
    // The invalidator has applied the change (else its late fence would
    // overwrite the plant); now plant what a lost event would leave:
    // version 1 over the fence.
    sys.until_invalidator_handled(2).await;
    sys.plant_stale(id).await;
    sys.audit_reports_stale(Duration::from_secs(15)).await;
}
