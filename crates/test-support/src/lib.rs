//! Test isolation for Catalog's integration tests.
//!
//! Each test gets a [`TestEnv`]: its own freshly migrated Postgres database
//! and its own namespace (the prefix of every Redis key, exchange and queue),
//! so tests run in parallel against one Postgres, one Redis and one broker
//! without seeing each other. Dropping the env drops the database and the
//! namespace's queues and exchanges.
//!
//! Backends come from `CATALOG_TEST_DATABASE_URL` (a server URL; the database
//! part is replaced), `CATALOG_TEST_REDIS_URL` and `CATALOG_TEST_AMQP_URL`,
//! defaulting to the local services.
//!
//! What the shared services cannot stage (a crash, a failover, a lagging
//! replica, TLS) gets engines of its own: [`RedisServer`], [`RedisHa`],
//! [`RedisCluster`], [`PgPair`] and [`RabbitCluster`], with certificates from
//! [`TlsFiles`]. Each runs private processes on free loopback ports with
//! their files in `$TMPDIR/catalog-<kind>-<uuid>`, and kills them when
//! dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod certs;
mod cluster;
mod fixture;
mod pg_pair;
mod proxy;
mod rabbit_cluster;
mod redis_ha;
mod redis_server;
mod spawn;

pub use admin::{Admin, product};
pub use certs::{TlsFiles, install_crypto_provider};
pub use cluster::RedisCluster;
pub use domain::fixtures::product as domain_product;
pub use pg_pair::{PgOptions, PgPair};
pub use proxy::{Mode, Proxy};
pub use rabbit_cluster::RabbitCluster;
pub use redis_ha::{MASTER_NAME, RedisHa};
pub use redis_server::{RedisServer, tls_client};
pub use spawn::{Running, run};

use std::time::Duration;

use domain::ChangeEvent;
use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use service::Settings;

/// The admin token every test write-api accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

pub fn server_url() -> String {
    env_or(
        "CATALOG_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

pub fn redis_url() -> String {
    env_or("CATALOG_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

pub fn amqp_url() -> String {
    env_or(
        "CATALOG_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

/// A handle on the test Redis under `namespace`, to inspect or plant
/// entries.
pub fn l2(namespace: &str) -> cache::L2 {
    l2_on(cache::Endpoint::Single(redis_url()), namespace)
}

/// A handle on the Redis at `endpoint` under `namespace`.
pub fn l2_on(endpoint: cache::Endpoint, namespace: &str) -> cache::L2 {
    cache::L2::new(&cache::L2Config {
        endpoint,
        namespace: namespace.to_owned(),
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        breaker: None,
        wait: None,
        tls: tls::ClientTls::default(),
    })
    .expect("a Redis client")
}

/// A URL nothing listens on: for "backend is down" tests.
pub fn closed_port() -> u16 {
    // Bind then drop: the port was free a moment ago and nothing we start
    // listens there.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One test's private database and namespace.
pub struct TestEnv {
    pub settings: Settings,
    pub db_name: String,
    pub namespace: String,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("db", &self.db_name)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl TestEnv {
    /// Creates and migrates a fresh database, picks a fresh namespace, and
    /// returns settings for every service pointing at them (all binds on port
    /// 0, the auditor off, small pools).
    pub async fn new() -> Self {
        service::telemetry::init_test_logging();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("catalog_test_{id}");
        let namespace = format!("test_{}", &id[..12]);
        let server = server_url();
        store::admin::create_database(&server, &Default::default(), &db_name)
            .await
            .expect("create test database");
        let db_url = with_database(&server, &db_name);
        store::migrate(&db_url, &Default::default())
            .await
            .expect("migrate test database");

        let mut settings = Settings::default();
        settings.database.url = db_url;
        settings.database.pool_size = 4;
        settings.database.migrate = false;
        settings.redis.url = redis_url();
        settings.amqp.url = amqp_url();
        settings.namespace.clone_from(&namespace);
        settings.read_api.bind = "127.0.0.1:0".into();
        settings.read_api.workers = 2;
        settings.write_api.bind = "127.0.0.1:0".into();
        settings.write_api.relay_poll_ms = 100;
        settings.invalidator.bind = "127.0.0.1:0".into();
        settings.invalidator.audit_interval_secs = 0;
        settings.auth.admin_tokens = vec![ADMIN_TOKEN.to_owned()];
        Self {
            settings,
            db_name,
            namespace,
        }
    }

    /// A handle on the test Redis under this test's namespace.
    pub fn l2(&self) -> cache::L2 {
        l2(&self.namespace)
    }

    /// A pool on this test's database, for assertions straight from the source.
    pub fn db(&self) -> store::Db {
        store::Db::connect(&self.settings.database.url, &store::PoolSettings::default()).unwrap()
    }

    /// Runs SQL on this test's database with the real `psql`, as an
    /// operator would, and returns what it printed (unaligned, tuples only).
    pub async fn psql(&self, sql: &str) -> String {
        let out = tokio::process::Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(&self.settings.database.url)
            .output()
            .await
            .expect("psql runs (install postgresql-client)");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn topology(&self) -> bus::Topology {
        bus::Topology::new(&self.namespace)
    }

    /// A publisher (with confirms) to this test's events exchange on the
    /// shared broker: what tests use to send events as the relay would.
    pub fn publisher(&self) -> bus::Publisher {
        bus::Publisher::new(
            bus::Broker::new(&amqp_url(), Default::default()),
            "test",
            self.topology(),
        )
    }

    /// Starts listening to every event on this namespace's exchange.
    pub async fn listen(&self) -> EventListener {
        EventListener::bind(&self.topology()).await
    }
}

/// `server` (a Postgres or Redis URL) with its path set to database `db`.
pub fn with_database(server: &str, db: &str) -> String {
    let mut url = url_parse(server);
    url.set_path(&format!("/{db}"));
    url.to_string()
}

fn url_parse(s: &str) -> reqwest::Url {
    reqwest::Url::parse(s).expect("valid URL")
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let db = self.db_name.clone();
        let topology = self.topology();
        // Drop runs inside the test's runtime: clean up on a thread of our
        // own with a runtime of its own, and wait for it.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let budget = Duration::from_secs(10);
                let _ = tokio::time::timeout(
                    budget,
                    store::admin::drop_database(&server_url(), &Default::default(), &db),
                )
                .await;
                let _ = tokio::time::timeout(budget, delete_topology(&topology)).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn delete_topology(topology: &bus::Topology) {
    let Ok(conn) = bus::connect(&amqp_url(), "test-cleanup").await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in [topology.invalidator_queue(), topology.dead_letter_queue()] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [topology.events_exchange(), topology.dead_letter_exchange()] {
        let _ = ch
            .exchange_delete(
                x.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// One event as received by a test consumer.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: Option<String>,
    /// The request id of the write that caused it.
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    /// The event's raw JSON, for exact-format assertions.
    pub body: serde_json::Value,
    pub event: ChangeEvent,
    /// How many events the message carrying this one held (1 unless the
    /// relay batched it with others of its type).
    pub events_in_message: usize,
}

/// A private queue bound to every event of a namespace. Batch messages are
/// taken apart: each event is received on its own, in order.
pub struct EventListener {
    _conn: lapin::Connection,
    consumer: lapin::Consumer,
    pending: std::collections::VecDeque<Received>,
}

impl EventListener {
    pub async fn bind(topology: &bus::Topology) -> Self {
        let conn = bus::connect(&amqp_url(), "test-listener")
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.unwrap();
        bus::declare_topology(&ch, topology).await.unwrap();
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            queue.name().clone(),
            topology.events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _conn: conn,
            consumer,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The next event, or None after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        if let Some(r) = self.pending.pop_front() {
            return Some(r);
        }
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let p = &delivery.properties;
        let events = ChangeEvent::many_from_slice(&delivery.data).expect("events are valid");
        let bodies = match serde_json::from_slice(&delivery.data).expect("events are JSON") {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        let correlation_ids = bus::correlation_ids(&delivery, events.len());
        let n = events.len();
        for ((event, body), correlation_id) in events.into_iter().zip(bodies).zip(correlation_ids) {
            self.pending.push_back(Received {
                routing_key: delivery.routing_key.to_string(),
                message_id: p.message_id().as_ref().map(ToString::to_string),
                correlation_id,
                content_type: p.content_type().as_ref().map(ToString::to_string),
                delivery_mode: *p.delivery_mode(),
                body,
                event,
                events_in_message: n,
            });
        }
        self.pending.pop_front()
    }

    /// Exactly `n` events (panics if they do not arrive within `timeout`).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(r) => out.push(r),
                None => panic!("expected {n} events, got {} within {timeout:?}", out.len()),
            }
        }
        out
    }

    /// Asserts that no event arrives within `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Some(r) = self.next(quiet).await {
            panic!("unexpected event: {} {:?}", r.routing_key, r.event);
        }
    }
}

/// Messages ready in a queue of the test broker right now.
pub async fn queue_len(name: &str) -> u32 {
    let conn = bus::connect(&amqp_url(), "test-probe").await.expect("amqp");
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

/// Polls `check` every 10 ms until it returns `Some`, or panics after
/// `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A service's `/metrics` page, as Prometheus text.
pub struct Metrics(String);

impl Metrics {
    /// Fetches `{base}/metrics`; `None` while the service does not answer.
    pub async fn of(base: &str) -> Option<Self> {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(Self(text))
    }

    /// The sum of the samples whose line starts with `series`: a metric's
    /// name, or its name and the start of its labels
    /// (`cache_misses_total{tier="l2_page"`).
    pub fn sum(&self, series: &str) -> f64 {
        self.sum_where(|line| line.starts_with(series))
    }

    /// The sum of the samples whose line `keep` keeps.
    pub fn sum_where(&self, keep: impl Fn(&str) -> bool) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#') && keep(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The page itself, for assertions that name a whole line.
    pub fn text(&self) -> &str {
        &self.0
    }
}

/// How long a service started in-process gets to become ready.
const READY_WAIT: Duration = Duration::from_secs(20);

/// Polls `{base}/readyz` until the service at `base` says it is ready (2xx).
pub async fn until_ready(what: &str, base: &str) {
    let url = format!("{base}/readyz");
    eventually(&format!("{what} to be ready"), READY_WAIT, || {
        let url = url.clone();
        async move {
            let res = reqwest::get(url).await.ok()?;
            res.status().is_success().then_some(())
        }
    })
    .await;
}

/// Polls `{base}/readyz` until the service is ready with every one of its
/// checks up. Not one snapshot: a check is one command under its budget,
/// and on a busy machine one can miss it and say "not answering" for a
/// moment. Each different answer that is not all up is printed, so a
/// timeout shows what stayed down.
pub async fn until_all_up(base: &str) {
    let url = format!("{base}/readyz");
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    eventually(&format!("every check of {url} up"), READY_WAIT, || {
        let (url, last) = (url.clone(), &last);
        async move {
            let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let all_up = body["status"] == "ready"
                && body["checks"]
                    .as_object()?
                    .values()
                    .all(|check| check["status"] == "up");
            let mut last = last.lock().unwrap();
            if !all_up && *last != body {
                eprintln!("{url}, not yet: {body}");
                *last = body;
            }
            all_up.then_some(())
        }
    })
    .await;
}

/// Polls read-api's `{base}/readyz` until its event subscription is up: its
/// L1 sees every change committed from then on.
pub async fn until_subscribed(base: &str) {
    let url = format!("{base}/readyz");
    eventually("read-api's event subscription", READY_WAIT, || {
        let url = url.clone();
        async move {
            let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (body["checks"]["rabbitmq"]["status"] == "up").then_some(())
        }
    })
    .await;
}
