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

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod cluster;
mod proxy;

pub use admin::{Admin, product};
pub use cluster::RedisCluster;
pub use proxy::{Mode, Proxy};

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
        store::admin::create_database(&server, &db_name)
            .await
            .expect("create test database");
        let db_url = with_database(&server, &db_name);
        store::migrate(&db_url)
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

    /// A pool on this test's database, for assertions straight from the source.
    pub fn db(&self) -> store::Db {
        store::Db::connect(&self.settings.database.url, &store::PoolSettings::default()).unwrap()
    }

    pub fn topology(&self) -> bus::Topology {
        bus::Topology::new(&self.namespace)
    }

    /// Starts listening to every event on this namespace's exchange.
    pub async fn listen(&self) -> EventListener {
        EventListener::bind(&self.topology()).await
    }
}

fn with_database(server: &str, db: &str) -> String {
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
                let _ =
                    tokio::time::timeout(budget, store::admin::drop_database(&server_url(), &db))
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
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    /// The raw body, for exact-format assertions.
    pub body: serde_json::Value,
    pub event: ChangeEvent,
}

/// A private queue bound to every event of a namespace.
pub struct EventListener {
    _conn: lapin::Connection,
    consumer: lapin::Consumer,
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
        }
    }

    /// The next event, or None after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let p = &delivery.properties;
        Some(Received {
            routing_key: delivery.routing_key.to_string(),
            message_id: p.message_id().as_ref().map(ToString::to_string),
            content_type: p.content_type().as_ref().map(ToString::to_string),
            delivery_mode: *p.delivery_mode(),
            body: serde_json::from_slice(&delivery.data).expect("event is JSON"),
            event: ChangeEvent::from_slice(&delivery.data).expect("event is valid"),
        })
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
