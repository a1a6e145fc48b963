//! invalidator: consumes product events from `<namespace>.invalidator` and
//! fences (or refreshes) the product keys in Redis and bumps the generations
//! of every list family the change touches ([`consumer`], [`plan`]); audits
//! the cache against Postgres on the side ([`auditor`]). Its HTTP port
//! serves only health, readiness and metrics.

pub mod auditor;
mod consumer;
pub mod plan;

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use actix_web::{App, HttpResponse, HttpServer, dev::Server, web};
use anyhow::Context;
use bus::Topology;
use cache::{L2, L2Config};
use service::{Settings, http};
use store::{Db, PoolSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A Redis round trip may take this long before the batch is retried; the
/// invalidator prefers waiting to giving up.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

struct Health {
    l2: L2,
    consuming: Arc<AtomicBool>,
}

/// A built, bound, not yet running invalidator.
pub struct Application {
    port: u16,
    server: Server,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_shutdown(settings, CancellationToken::new()).await
    }

    pub async fn build_with_shutdown(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let _ = service::telemetry::metrics();
        let l2 = L2::new(&L2Config {
            url: settings.redis.url.clone(),
            cluster: settings.redis.cluster,
            namespace: settings.namespace.clone(),
            ttl: Duration::from_secs(settings.cache.ttl_secs),
            negative_ttl: Duration::from_secs(settings.cache.negative_ttl_secs.max(1)),
            timeout: REDIS_TIMEOUT,
            breaker: None,
        })
        .context("configuring Redis")?;
        let consuming = Arc::new(AtomicBool::new(false));
        let inv = &settings.invalidator;
        let consumer = consumer::Consumer {
            amqp_url: settings.amqp.url.clone(),
            topology: Topology::new(&settings.namespace),
            l2: l2.clone(),
            mode: inv.mode(),
            max_retries: inv.max_retries,
            prefetch: inv.prefetch,
            connected: Arc::clone(&consuming),
        };
        let mut tasks = vec![tokio::spawn(consumer.run(shutdown.child_token()))];
        if inv.audit_interval_secs > 0 {
            let db = Db::connect(
                &settings.database.url,
                &PoolSettings {
                    max_size: 2,
                    ..settings.pool_settings("invalidator-auditor")
                },
            )
            .context("creating the Postgres pool")?;
            let auditor =
                auditor::Auditor::new(l2.clone(), db, inv.audit_sample_size, inv.audit_repair);
            tasks.push(tokio::spawn(auditor.run(
                Duration::from_secs(inv.audit_interval_secs),
                shutdown.child_token(),
            )));
        }

        let health = web::Data::new(Health { l2, consuming });
        let listener = TcpListener::bind(&inv.bind)
            .with_context(|| format!("binding invalidator.bind {}", inv.bind))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(health.clone())
                .wrap(http::RequestMetrics)
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(http::metrics))
                .default_service(web::to(http::not_found))
        })
        .listen(listener)?
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        Ok(Self {
            port,
            server,
            tasks,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled; the batch in flight is
    /// finished (or left unacked for redelivery) before it returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        http::serve_then_join(self.server, self.shutdown, self.tasks)
            .await
            .context("HTTP server")
    }
}

/// Ready while consuming and Redis answers: both are needed to do the job.
async fn readyz(health: web::Data<Health>) -> HttpResponse {
    use service::http::{Check, readiness};
    let consuming = if health.consuming.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err("not consuming")
    };
    readiness(vec![
        ("rabbitmq", Check::from_result(true, consuming)),
        ("redis", Check::from_result(true, health.l2.ping().await)),
    ])
}
