//! invalidator: consumes product events from `<namespace>.invalidator` and
//! fences (or refreshes) the product keys in Redis and bumps the generations
//! of every list family the change touches ([`consumer`], planned by
//! `cache::plan`); audits the cache against Postgres on the side
//! ([`auditor`]). Its HTTP port serves only health, readiness and metrics.

pub mod auditor;
mod consumer;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use bus::Topology;
use cache::{L2, L2Config, Unavailable};
use futures::{FutureExt, future::BoxFuture};
use service::{
    Builder, Http, Probe, Settings,
    http::{Check, Status},
};
use store::{Db, PoolSettings};
use tls::Backend;
use tokio_util::sync::CancellationToken;

/// A Redis round trip may take this long before the batch is retried; the
/// invalidator prefers waiting to giving up.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A built invalidator.
pub type Application = service::Application<()>;

/// Builds the invalidator: the consumer, the auditor (unless
/// `invalidator.audit_interval_secs = 0`), and the health port.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let mut builder = Builder::new("invalidator", shutdown)?;
    let inv = &settings.invalidator;
    let l2 = builder.metrics().scope(|| {
        L2::new(&L2Config {
            endpoint: settings.redis_endpoint(),
            namespace: settings.namespace.clone(),
            ttl: Duration::from_secs(settings.cache.ttl_secs),
            negative_ttl: Duration::from_secs(settings.cache.negative_ttl_secs),
            timeout: REDIS_TIMEOUT,
            breaker: None,
            wait: settings.redis_wait(),
            tls: settings.redis_tls()?,
        })
        .context("configuring Redis")
    })?;
    let broker = bus::Broker::new(&settings.amqp.url, settings.amqp_tls()?);
    let consuming = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(consumer::Blocked::default());
    let consumer = consumer::Consumer {
        broker: broker.clone(),
        topology: Topology::new(&settings.namespace),
        l2: l2.clone(),
        mode: inv.mode,
        max_retries: inv.max_retries,
        prefetch: inv.prefetch,
        connected: Arc::clone(&consuming),
        blocked: Arc::clone(&blocked),
        retries: parking_lot::Mutex::default(),
    };
    builder.spawn("consumer", consumer.run(builder.task_token()));
    if inv.audit_interval_secs > 0 {
        let db = Db::connect(
            &settings.database.url,
            &PoolSettings {
                max_size: 2,
                ..settings.pool_settings("invalidator-auditor")?
            },
        )
        .context("creating the Postgres pool")?;
        let auditor =
            auditor::Auditor::new(l2.clone(), db, inv.audit_sample_size, inv.audit_repair);
        let interval = Duration::from_secs(inv.audit_interval_secs);
        builder.spawn("auditor", auditor.run(interval, builder.task_token()));
    }
    let http = Http {
        bind_key: "invalidator.bind",
        bind: inv.bind.clone(),
        // Probes and metrics only.
        workers: 1,
        routes: Arc::new(|_: &mut actix_web::web::ServiceConfig| {}),
        probe: Arc::new(Readiness {
            l2,
            consuming,
            blocked,
            broker,
        }),
        openapi: None,
        compress: false,
    };
    builder.serve(http, ())
}

/// Ready while consuming and Redis takes the batches: both are needed to do
/// the job. "Blocked" when Redis answers but refuses the writes (OOM,
/// READONLY, LOADING, BUSY...): the events are held, none is lost.
struct Readiness {
    l2: L2,
    consuming: Arc<AtomicBool>,
    blocked: Arc<consumer::Blocked>,
    broker: bus::Broker,
}

impl Probe for Readiness {
    fn checks(&self) -> BoxFuture<'_, Vec<(&'static str, Check)>> {
        async move {
            let rabbitmq = if self.consuming.load(Ordering::Acquire) {
                Check::up(true)
            } else if let Some(failure) = self.broker.tls_failure() {
                Check::tls(true, Backend::RabbitMq, failure)
            } else {
                Check::down(true, "not consuming")
            };
            let redis = match self.blocked.reason() {
                Some(Unavailable::Tls(failure)) => Check::tls(true, Backend::Redis, failure),
                Some(kind) if kind.refuses_writes() => Check::with(
                    Status::Blocked,
                    true,
                    "redis refuses writes; events are held until it takes them",
                ),
                Some(_) => Check::down(true, "not answering; events are held"),
                None => Check::from_ping(
                    true,
                    self.l2.ping().await,
                    Backend::Redis,
                    self.l2.tls_failure(),
                    "not answering",
                ),
            };
            vec![("rabbitmq", rabbitmq), ("redis", redis)]
        }
        .boxed()
    }
}
