//! The whole system in one process: write-api, the invalidator and any
//! number of read-api instances on one database and namespace.

use std::{sync::Arc, time::Duration};

use actix_web::web::Data;
use reqwest::StatusCode;
use serde_json::Value;
use service::Settings;
use test_support::{Admin, Metrics, Running, TestEnv};

pub const WAIT: Duration = Duration::from_secs(20);

pub type WriteApi = Running<Data<write_api::State>>;
pub type Invalidator = Running<()>;
pub type ReadApi = Running<Data<read_api::AppState>>;

pub async fn write_api(settings: Settings) -> WriteApi {
    test_support::run(write_api::build, settings).await
}

/// An invalidator, once it is consuming.
pub async fn invalidator(settings: Settings) -> Invalidator {
    let service = test_support::run(invalidator::build, settings).await;
    test_support::until_ready("the invalidator", &service.base).await;
    service
}

/// A read-api instance, once its event subscription is up.
pub async fn read_api(settings: Settings) -> ReadApi {
    let service = test_support::run(read_api::build, settings).await;
    test_support::until_subscribed(&service.base).await;
    service
}

/// The system under test.
pub struct System {
    pub env: Arc<TestEnv>,
    pub write: WriteApi,
    pub invalidator: Option<Invalidator>,
    pub readers: Vec<ReadApi>,
    pub client: reqwest::Client,
    /// Writes through `write`.
    pub admin: Admin,
    /// The settings the services started with (after the test's tweak).
    pub settings: Settings,
}

impl System {
    /// write-api, invalidator and `readers` read-api instances.
    pub async fn start(readers: usize) -> Self {
        Self::start_with(readers, |_| {}).await
    }

    pub async fn start_with(readers: usize, tweak: impl Fn(&mut Settings)) -> Self {
        let env = Arc::new(TestEnv::new().await);
        let mut settings = env.settings.clone();
        tweak(&mut settings);
        let write = write_api(settings.clone()).await;
        let invalidator = Some(invalidator(settings.clone()).await);
        let mut instances = Vec::new();
        for _ in 0..readers {
            instances.push(read_api(settings.clone()).await);
        }
        let client = reqwest::Client::new();
        Self {
            env,
            admin: Admin::new(client.clone(), &write.base),
            write,
            invalidator,
            readers: instances,
            client,
            settings,
        }
    }

    /// Replaces write-api with one on `settings`, waiting for the old one
    /// to stop (its relay flushed) before the next write.
    pub async fn restart_write(&mut self, settings: Settings) {
        let old = std::mem::replace(&mut self.write, write_api(settings).await);
        old.stop().await;
        self.admin = Admin::new(self.client.clone(), &self.write.base);
    }

    /// GET on one read-api instance: (status, X-Cache, body).
    pub async fn read(&self, reader: usize, path: &str) -> (StatusCode, String, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.readers[reader].base))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let tier = res
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, tier, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn version_on(&self, reader: usize, id: i64) -> i64 {
        self.read(reader, &format!("/products/{id}")).await.2["version"]
            .as_i64()
            .unwrap_or(0)
    }

    /// Polls until every reader shows `id` at `version`; returns how long
    /// that took for the slowest reader.
    pub async fn converge(&self, id: i64, version: i64) -> Duration {
        let started = tokio::time::Instant::now();
        for r in 0..self.readers.len() {
            test_support::eventually(
                &format!("reader {r}: product {id} at {version}"),
                WAIT,
                || async move { (self.version_on(r, id).await == version).then_some(()) },
            )
            .await;
        }
        started.elapsed()
    }

    /// Waits until the invalidator has applied the event of `id` at
    /// `version`: Redis holds that version (a tombstone, or the snapshot in
    /// refresh mode). The product key and the generations move in one
    /// pipeline, so pages are right from then on.
    pub async fn until_applied(&self, id: i64, version: i64) {
        let l2 = self.l2();
        let pid = domain::ProductId::new(id).unwrap();
        test_support::eventually(
            &format!("the invalidator to apply product {id} at {version}"),
            WAIT,
            || {
                let l2 = l2.clone();
                async move { (l2.get(pid).await.ok()??.version.get() == version).then_some(()) }
            },
        )
        .await;
    }

    /// Waits until the invalidator has applied (or found already current) at
    /// least `n` events: its own metrics say so.
    pub async fn until_invalidator_handled(&self, n: u64) {
        let base = &self.invalidator.as_ref().unwrap().base;
        test_support::eventually(
            &format!("the invalidator to handle {n} events"),
            WAIT,
            || async move {
                let handled = Metrics::of(base).await?.sum_where(|l| {
                    l.starts_with("invalidator_events_total{") && !l.contains("outcome=\"failed\"")
                });
                (handled >= n as f64).then_some(())
            },
        )
        .await;
    }

    /// Plants what a lost event would leave in Redis: `id` at version 1,
    /// whatever Postgres holds.
    pub async fn plant_stale(&self, id: i64) {
        let l2 = self.l2();
        let key = l2.keys().product(domain::ProductId::new(id).unwrap());
        let planted = cache::Entry::value(domain::Version(1), bytes::Bytes::from_static(b"{}"));
        let () = l2
            .command(
                "test",
                redis::cmd("SET").arg(key).arg(planted.encode()).clone(),
            )
            .await
            .unwrap();
    }

    /// Waits until the invalidator's auditor has reported a stale entry.
    pub async fn audit_reports_stale(&self, within: Duration) {
        let url = format!("{}/metrics", self.invalidator.as_ref().unwrap().base);
        test_support::eventually("the auditor to report a stale entry", within, || {
            let url = url.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                text.lines()
                    .any(|l| l.starts_with("cache_audit_stale_total ") && !l.ends_with(" 0"))
                    .then_some(())
            }
        })
        .await;
    }

    /// An L2 handle on the namespace, on the services' Redis.
    pub fn l2(&self) -> cache::L2 {
        test_support::l2_on(self.settings.redis_endpoint(), &self.env.namespace)
    }
}

pub use test_support::product;
