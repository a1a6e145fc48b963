//! The system on real distributed engines: a Postgres streaming replica
//! that lags, Redis with a replica under Sentinel losing its primary, and a
//! three-node RabbitMQ cluster losing the node that leads the invalidator's
//! queue.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Metrics, PgOptions, PgPair, RabbitCluster, RedisHa, RedisServer};

use crate::harness::{System, WAIT, product, read_api};

/// The system's database on `pair` (created, and on the replica too).
async fn database_on(pair: &PgPair) -> (String, String) {
    let name = format!("catalog_test_{}", uuid::Uuid::new_v4().simple());
    pair.create_database(&name).await;
    (pair.primary_url(&name), pair.replica_url(&name))
}

/// Samples a condition every 20 ms until dropped into [`Watch::finish`],
/// and reports how long it did not hold: the figures of a failover (how
/// long reads went without Redis, how long an instance's event
/// subscription was down). Measured, printed, never asserted: timings
/// belong to docs/benchmarks.md, which quotes these lines.
struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

impl Watch {
    fn start<F, Fut>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut off = Duration::ZERO;
            let mut last = tokio::time::Instant::now();
            while !flag.load(Ordering::Acquire) {
                let holds = probe().await;
                let now = tokio::time::Instant::now();
                if !holds {
                    off += now - last;
                }
                last = now;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            off
        });
        Self { stop, task }
    }

    /// How long the condition did not hold, in all.
    async fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap()
    }
}

/// Whether `check` of an instance's `/readyz` says `ok`.
async fn check_ok(readyz: &str, check: &str) -> bool {
    let body: Option<Value> = async { reqwest::get(readyz).await.ok()?.json().await.ok() }.await;
    body.is_some_and(|b| b["checks"][check]["status"] == "ok")
}

/// A streaming replica 3 s behind: once an instance has a change's event,
/// none of its reads (product, list, search, featured, `min_version`) shows
/// the old version, though the replica still has it; when the replica has
/// caught up it is read again; and losing it costs no errors.
#[tokio::test]
async fn a_lagging_streaming_replica_never_shows_what_an_instance_has_seen_past() {
    let mut pair = PgPair::start(PgOptions {
        replica: Some(Duration::from_secs(3)),
        ..PgOptions::default()
    })
    .await;
    let (primary, replica) = database_on(&pair).await;
    let sys = System::start_with(1, |s| {
        s.database.url.clone_from(&primary);
        s.database.replica_url = Some(replica.clone());
        s.database.migrate = true;
        s.cache.enabled = true;
    })
    .await;
    pair.wait_for_replay(WAIT).await;
    let mut p = product("REP-1");
    p["featured"] = json!(true);
    let id = sys.admin.create(&p).await["id"].as_i64().unwrap();
    sys.converge(id, 1).await;
    pair.wait_for_replay(WAIT).await;
    let pages = [
        "/products?category=laptops",
        "/products/search?q=ultrabook",
        "/products/featured",
    ];
    for page in pages {
        assert_eq!(
            sys.read(0, page).await.2["items"][0]["version"],
            1,
            "{page}"
        );
    }

    sys.admin.patch(id, &json!({"price_cents": 12})).await;
    // This instance has the event; the replica will not have the change for
    // three seconds.
    let reader = &sys.readers[0];
    let pid = domain::ProductId::new(id).unwrap();
    test_support::eventually("the instance to have the event", WAIT, || async {
        (reader.state.read.l1.floor(pid).get() == 2).then_some(())
    })
    .await;
    assert!(pair.replica_replay_lsn().await.unwrap() < pair.primary_lsn().await);
    assert_eq!(sys.version_on(0, id).await, 2);
    for page in pages {
        let (_, _, body) = sys.read(0, page).await;
        assert_eq!(body["items"][0]["version"], 2, "{page}: {body}");
        assert_eq!(body["items"][0]["price_cents"], 12, "{page}");
    }
    let (_, _, body) = sys.read(0, &format!("/products/{id}?min_version=2")).await;
    assert_eq!(body["version"], 2);

    // Caught up, the replica serves again: a product nobody cached is read
    // without a fallback to the primary.
    let other = sys.admin.create(&product("REP-2")).await["id"]
        .as_i64()
        .unwrap();
    test_support::eventually("the instance to have the create", WAIT, || async {
        let pid = domain::ProductId::new(other).unwrap();
        (reader.state.read.l1.floor(pid).get() == 1).then_some(())
    })
    .await;
    pair.wait_for_replay(WAIT).await;
    // (The cached replay position is reused for a few milliseconds.)
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fallbacks = async || {
        let metrics = Metrics::of(&reader.base).await.unwrap();
        metrics.sum("db_replica_fallbacks_total")
    };
    let before = fallbacks().await;
    let (status, tier, _) = sys.read(0, &format!("/products/{other}")).await;
    assert_eq!((status, tier.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(fallbacks().await, before);

    // The replica goes away: reads keep working, readiness says degraded.
    pair.stop_replica().await;
    let third = sys.admin.create(&product("REP-3")).await["id"]
        .as_i64()
        .unwrap();
    for path in [
        format!("/products/{third}"),
        "/products?category=laptops&limit=3".into(),
    ] {
        assert_eq!(sys.read(0, &path).await.0, StatusCode::OK, "{path}");
    }
    let ready = test_support::eventually("readiness to say degraded", WAIT, || async {
        let body: Value = reqwest::get(reader.url("/readyz"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["checks"]["postgres_replica"]["status"] == "degraded").then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "ready", "the replica is optional: {ready}");
}

/// Where Redis has replicas, a fence counts as applied only once a replica
/// has it: with none attached the invalidator holds the batch (blocked), and
/// the fence is acknowledged once a replica is there.
#[tokio::test]
async fn a_fence_is_acknowledged_only_once_a_replica_has_it() {
    let primary = RedisServer::start(&[]).await;
    let url = primary.url();
    let sys = System::start_with(1, |s| {
        s.redis.url.clone_from(&url);
        s.redis.wait_replicas = Some(1);
        s.redis.wait_timeout_ms = 200;
    })
    .await;
    let id = sys.admin.create(&product("WAIT-1")).await["id"]
        .as_i64()
        .unwrap();
    let check = test_support::eventually("the invalidator to be blocked", WAIT, || async {
        let url = sys.invalidator.as_ref().unwrap().url("/readyz");
        let body: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        (body["checks"]["redis"]["status"] == "blocked").then_some(body)
    })
    .await;
    assert_eq!(check["status"], "not_ready", "{check}");
    let topology = sys.env.topology();
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );

    let port = primary.port().to_string();
    let _replica = RedisServer::start(&["--replicaof", "127.0.0.1", &port]).await;
    sys.until_invalidator_handled(1).await;
    assert_eq!(sys.version_on(0, id).await, 1);
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );
}

/// Redis under Sentinel loses its primary while updates flow: reads never
/// fail, no instance ever shows a version older than one it showed before,
/// the invalidator carries on against the promoted replica once that has a
/// replica again (the old primary, restarted), and a fresh
/// instance afterwards serves the last version of every product (no
/// acknowledged fence was lost in the failover).
#[tokio::test]
async fn a_redis_failover_loses_no_acknowledged_fence() {
    let mut ha = RedisHa::start().await;
    let sentinels: Vec<String> = ha
        .sentinel_addrs()
        .iter()
        .map(|a| format!("redis://{a}"))
        .collect();
    let master = ha.master_name().to_owned();
    let sys = Arc::new(
        System::start_with(2, |s| {
            s.redis.sentinel.urls.clone_from(&sentinels);
            s.redis.sentinel.master.clone_from(&master);
            s.redis.breaker_cooldown_ms = 200;
        })
        .await,
    );
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            sys.admin.create(&product(&format!("HA-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    sys.until_invalidator_handled(5).await;

    // Readers: every answer 200, versions never going backwards.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for r in 0..2 {
        for &id in &ids {
            let (sys, stop, errors) = (Arc::clone(&sys), Arc::clone(&stop), Arc::clone(&errors));
            watchers.push(tokio::spawn(async move {
                let mut last = 0;
                while !stop.load(Ordering::Acquire) {
                    let (status, _, body) = sys.read(r, &format!("/products/{id}")).await;
                    if status != StatusCode::OK {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let v = body["version"].as_i64().unwrap();
                    assert!(
                        v >= last,
                        "reader {r}: product {id} went from {last} to {v}"
                    );
                    last = v;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }
    let readyz = sys.readers[0].url("/readyz");
    let with_redis = Watch::start(move || {
        let readyz = readyz.clone();
        async move { check_ok(&readyz, "redis").await }
    });
    let mut last = 1;
    let mut fences_held = Duration::ZERO;
    for round in 0..6 {
        for &id in &ids {
            sys.admin.patch(id, &json!({"price_cents": round})).await;
        }
        last += 1;
        if round == 2 {
            let killed = tokio::time::Instant::now();
            ha.kill_primary();
            ha.wait_for_failover(Duration::from_secs(30)).await;
            // The promoted replica has no replica of its own, and a fence
            // counts only once a replica has it (`wait_replicas`, 1 with
            // Sentinel), so the invalidator holds its batch until one is
            // back: here the old primary, restarted as an orchestrator would
            // restart it and made a replica (as the Sentinels would make it).
            // Then the fences written just before the kill, and every event
            // behind them, land on the new primary.
            ha.restart_old_primary_as_replica().await;
            for &id in &ids {
                sys.until_applied(id, last).await;
            }
            fences_held = killed.elapsed();
        }
    }
    for &id in &ids {
        sys.until_applied(id, last).await;
        sys.converge(id, last).await;
    }
    stop.store(true, Ordering::Release);
    for w in watchers {
        w.await.unwrap();
    }
    let without_redis = with_redis.finish().await;
    eprintln!(
        "redis failover: reads served without Redis for {} ms (L1 and Postgres); \
         the fences of the last writes before the kill landed {} ms after it \
         (failover, then the old primary back as a replica)",
        without_redis.as_millis(),
        fences_held.as_millis()
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no read failed");
    // A new instance, with nothing learned, reads Redis as the failover left
    // it: the last versions.
    let fresh = read_api(sys.settings.clone()).await;
    for &id in &ids {
        let body: Value = reqwest::get(fresh.url(&format!("/products/{id}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["version"], last, "product {id}");
    }
}

/// A three-node RabbitMQ cluster loses the node that leads the invalidator's
/// quorum queue while 300 writes flow: no event is lost, the relay and the
/// consumers move to another node, and every instance converges.
#[tokio::test]
async fn losing_the_leading_rabbitmq_node_under_writes_loses_no_event() {
    let mut cluster = RabbitCluster::start(3).await;
    let amqp = cluster.amqp_urls().join(",");
    let sys = Arc::new(System::start_with(2, |s| s.amqp.url.clone_from(&amqp)).await);
    let queue = sys.env.topology().invalidator_queue();
    // A leader, and a member on every node: losing one node then leaves a
    // majority, and the queue must go on.
    let leader = test_support::eventually("the invalidator queue on all three nodes", WAIT, || {
        let (cluster, queue) = (&cluster, queue.clone());
        async move {
            let status = cluster.queue_status(&queue).await?;
            let online = status["online"].as_array()?.len();
            (online == 3).then_some(())?;
            cluster.queue_leader(&queue).await
        }
    })
    .await;

    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            sys.admin.create(&product(&format!("MQ-{i}"))).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // 300 writes: ten to each product, from a task, while the leader goes.
    let writer = {
        let (sys, ids) = (Arc::clone(&sys), ids.clone());
        tokio::spawn(async move {
            for round in 0..10 {
                for &id in &ids {
                    sys.admin
                        .patch(id, &json!({"price_cents": round + 1}))
                        .await;
                }
            }
        })
    };
    test_support::eventually("writes under way", WAIT, || async {
        let newest: i64 = sys
            .env
            .psql("SELECT max(version) FROM products")
            .await
            .trim()
            .parse()
            .ok()?;
        (newest >= 3).then_some(())
    })
    .await;
    let subscribed: Vec<Watch> = (0..2)
        .map(|r| {
            let base = sys.readers[r].base.clone();
            Watch::start(move || {
                let base = base.clone();
                async move {
                    let metrics = Metrics::of(&base).await;
                    metrics.is_some_and(|m| m.sum("l1_subscription_up") >= 1.0)
                }
            })
        })
        .collect();
    let stopped = tokio::time::Instant::now();
    eprintln!(
        "stopping node {leader}, the queue's leader; the relay's connection is on {:?}",
        cluster.connection_nodes("write-api").await
    );
    cluster.stop_node(leader).await;
    writer.await.unwrap();
    let writes_done = tokio::time::Instant::now();

    let last = 11;
    // Every write's event arrives (the relay retried what an election left
    // unconfirmed; the consumers moved to a live node).
    let db = sys.env.db();
    let l2 = sys.l2();
    let arrived = tokio::time::timeout(Duration::from_secs(90), async {
        // What was last seen, and since when: a pass that sees no progress
        // for 15 s prints what the relay, Postgres and the cluster say.
        let mut last_seen = (usize::MAX, i64::MAX);
        let mut since = tokio::time::Instant::now();
        let mut reported = false;
        loop {
            let mut behind = Vec::new();
            for &id in &ids {
                let pid = domain::ProductId::new(id).unwrap();
                let v = l2
                    .get(pid)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |e| e.version.get());
                if v < last {
                    behind.push((id, v));
                }
            }
            if behind.is_empty() {
                return;
            }
            let backlog = db.outbox_backlog().await.map(|b| b.0).unwrap_or(-1);
            eprintln!(
                "{} products behind (e.g. {:?}), outbox backlog {backlog}",
                behind.len(),
                &behind[..behind.len().min(3)]
            );
            if (behind.len(), backlog) != last_seen {
                last_seen = (behind.len(), backlog);
                since = tokio::time::Instant::now();
            } else if !reported && since.elapsed() > Duration::from_secs(15) {
                reported = true;
                eprintln!("{}", stall_report(&sys, &cluster, &queue).await);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    if arrived.is_err() {
        eprintln!("{}", stall_report(&sys, &cluster, &queue).await);
        panic!("events were lost");
    }
    let all_applied = stopped.elapsed();
    let after_last_write = writes_done.elapsed();
    for &id in &ids {
        sys.converge(id, last).await;
    }
    let mut down = Vec::new();
    for w in subscribed {
        down.push(w.finish().await.as_millis());
    }
    eprintln!(
        "rabbitmq node loss: writes went on for {} ms after the node stopped; every \
         event was applied in Redis {} ms after it ({} ms after the last write's answer); \
         read-api event subscriptions down {down:?} ms",
        (all_applied - after_last_write).as_millis(),
        all_applied.as_millis(),
        after_last_write.as_millis()
    );
    test_support::eventually("the outbox to empty", WAIT, || async {
        (db.outbox_backlog().await.ok()?.0 == 0).then_some(())
    })
    .await;
    let new_leader = cluster.queue_leader(&queue).await;
    assert!(new_leader.is_some_and(|n| n != leader), "{new_leader:?}");
}

/// What the relay, Postgres and the RabbitMQ cluster say when events stop
/// arriving: enough to tell a relay that fails its passes from one that
/// finds nothing to claim, and a queue without a leader from a consumer
/// that is gone.
async fn stall_report(sys: &System, cluster: &RabbitCluster, queue: &str) -> String {
    let relay = match Metrics::of(&sys.write.base).await {
        Some(m) => format!(
            "relay: {} failed passes, {} events in {} messages published",
            m.sum("outbox_publish_failures_total"),
            m.sum("outbox_published_total"),
            m.sum("outbox_messages_published_total"),
        ),
        None => "relay: no metrics".to_owned(),
    };
    let ready = match reqwest::get(sys.write.url("/readyz")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let sessions = sys
        .env
        .psql(
            "SELECT application_name, state, now() - xact_start, wait_event, left(query, 80) \
             FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .await;
    let status = cluster.queue_status(queue).await;
    format!(
        "=== stalled ===\n{relay}\nwrite-api /readyz: {ready}\nsessions:\n{sessions}\n\
         queue: {status:?}\nnode logs:\n{}",
        cluster.log_tails(40)
    )
}
