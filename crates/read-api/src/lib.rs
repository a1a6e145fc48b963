//! read-api: the storefront HTTP API. Reads go L1 (in process) → L2 (Redis)
//! → Postgres under the version invariant ([`read_path`]); lists, featured
//! and search pages are cached under generations ([`pages`]); this
//! instance's L1 is fenced by product events ([`subscriber`]).
//!
//! The binary is a thin `main`; tests build and run the same
//! [`Application`] in-process on port 0.

mod db;
mod limiter;
mod openapi;
pub mod pages;
pub mod read_path;
mod routes;
mod singleflight;
mod subscriber;
mod trending;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use actix_web::web;
use anyhow::Context;
use bus::Topology;
use cache::{Bounds, Floors, L1, L2, L2Config, Lifetimes, ViewCounter};
use futures::{FutureExt, future::BoxFuture};
use service::{
    Builder, Http, Probe, Settings,
    http::{Check, Status},
};
use store::Db;
use tls::Backend;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use db::{Databases, ReplicaState, Seen};
pub use read_path::{ReadPath, Tier};

/// A built read-api; its state is what the handlers share.
pub type Application = service::Application<web::Data<AppState>>;

/// What every handler shares.
pub struct AppState {
    pub read: Arc<ReadPath>,
    pub pages: Arc<pages::Pages>,
    /// The newest change seen per list family (fed by the subscriber).
    pub family_floors: Arc<pages::FamilyFloors>,
    /// Redis for trending, on even when caching is off: trending is data,
    /// not a cache.
    pub redis: L2,
    pub views: Arc<ViewCounter>,
    /// Asks the trending task for a roll-up now (no top list yet).
    pub rollup: Arc<tokio::sync::Notify>,
    /// Whether this instance's event subscription is up.
    pub subscribed: Arc<AtomicBool>,
    /// The broker the subscription connects to (readiness asks it why the
    /// last attempt failed).
    pub broker: bus::Broker,
}

/// Builds read-api: connects lazily (Postgres, Redis and RabbitMQ may be
/// down at start), binds `read_api.bind`, starts the event subscription and
/// the trending flusher. Never migrates.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let mut builder = Builder::new("read-api", shutdown)?;
    let parts = builder.metrics().scope(|| Parts::new(&settings))?;
    let Parts { state, l1 } = parts;

    if l1.enabled() {
        let subscriber = subscriber::Subscriber {
            broker: state.broker.clone(),
            topology: Topology::new(&settings.namespace),
            l1,
            seen: Arc::clone(&state.read.db.seen),
            family_floors: Arc::clone(&state.family_floors),
            connected: Arc::clone(&state.subscribed),
            mode: settings.invalidator.mode,
        };
        builder.spawn("subscriber", subscriber.run(builder.task_token()));
    }
    let trending = trending::Trending {
        redis: state.redis.clone(),
        views: Arc::clone(&state.views),
        nudge: Arc::clone(&state.rollup),
        rollup_every: Duration::from_secs(settings.read_api.trending_rollup_secs),
    };
    builder.spawn("trending", trending.run(builder.task_token()));

    let state = web::Data::new(state);
    let http = Http {
        bind_key: "read_api.bind",
        bind: settings.read_api.bind.clone(),
        workers: http_workers(settings.read_api.workers),
        routes: Arc::new({
            let state = state.clone();
            move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(state.clone());
                routes::configure(cfg);
            }
        }),
        probe: Arc::new(Readiness(state.clone())),
        openapi: Some(openapi::ApiDoc::openapi()),
        compress: true,
    };
    builder.serve(http, state)
}

/// The parts built inside the service's metrics scope.
struct Parts {
    state: AppState,
    l1: L1,
}

impl Parts {
    fn new(settings: &Settings) -> anyhow::Result<Self> {
        let pool = |url: &str, name: &str| {
            Db::connect(url, &settings.pool_settings(name)?)
                .with_context(|| format!("creating the {name} Postgres pool"))
        };
        let primary = pool(&settings.database.url, "read-api")?;
        let replica = settings
            .database
            .replica_url
            .as_deref()
            .map(|url| {
                let db = &settings.database;
                pool(url, "read-api-replica").map(|pool| {
                    db::Replica::new(
                        pool,
                        Duration::from_millis(db.replica_lsn_refresh_ms),
                        Duration::from_millis(db.replica_max_lag_ms),
                    )
                })
            })
            .transpose()?;
        let cache = &settings.cache;
        let redis = L2::new(&L2Config {
            endpoint: settings.redis_endpoint(),
            namespace: settings.namespace.clone(),
            ttl: Duration::from_secs(cache.ttl_secs),
            negative_ttl: Duration::from_secs(cache.negative_ttl_secs),
            timeout: Duration::from_millis(settings.redis.timeout_ms),
            breaker: Some((
                settings.redis.breaker_failures,
                Duration::from_millis(settings.redis.breaker_cooldown_ms),
            )),
            // Readers' fills are acknowledged to no one: no WAIT.
            wait: None,
            tls: settings.redis_tls()?,
        })
        .context("configuring Redis")?;
        let subscribed = Arc::new(AtomicBool::new(false));
        // Caching off is the null objects, not a flag the read path checks.
        let (l1, l2) = if cache.enabled {
            let l1 = L1::new(
                Bounds {
                    entries: cache.l1_capacity,
                    bytes: cache.l1_max_bytes,
                },
                Lifetimes {
                    fenced: Duration::from_secs(cache.ttl_secs),
                    unfenced: Duration::from_secs(cache.l1_ttl_secs),
                    negative: Duration::from_secs(cache.negative_ttl_secs),
                    subscribed: Arc::clone(&subscribed),
                },
                Floors::new(cache.floor_capacity, settings.floor_horizon()),
            );
            (l1, redis.clone())
        } else {
            (L1::off(), L2::off(&settings.namespace))
        };
        let slots = match settings.database.max_concurrency {
            0 => settings.database.pool_size,
            n => n,
        };
        let db = Databases::new(
            primary,
            replica,
            Arc::new(Seen::default()),
            limiter::Limiter::new(slots, settings.acquire_timeout()),
        );
        let read = Arc::new(ReadPath::new(l1.clone(), l2, db));
        let family_floors = Arc::new(pages::FamilyFloors::default());
        Ok(Self {
            state: AppState {
                pages: Arc::new(pages::Pages::new(
                    Arc::clone(&read),
                    Arc::clone(&family_floors),
                )),
                family_floors,
                read,
                redis,
                views: Arc::new(ViewCounter::default()),
                rollup: Arc::new(tokio::sync::Notify::new()),
                subscribed,
                broker: bus::Broker::new(&settings.amqp.url, settings.amqp_tls()?),
            },
            l1,
        })
    }
}

/// `/readyz`: ready while Postgres answers; the replica, Redis and the event
/// subscription are reported but optional.
struct Readiness(web::Data<AppState>);

impl Probe for Readiness {
    fn checks(&self) -> BoxFuture<'_, Vec<(&'static str, Check)>> {
        async move {
            let state = &self.0;
            let db = &state.read.db;
            let mut checks = vec![(
                "postgres",
                Check::from_ping(
                    true,
                    db.primary.ping().await,
                    Backend::Postgres,
                    db.primary.tls_failure(),
                    "not answering",
                ),
            )];
            if let Some(replica) = &db.replica {
                let check = match replica.state() {
                    ReplicaState::Up => match replica.db.ping().await {
                        Ok(()) => Check::up(false),
                        Err(e) => match replica.db.tls_failure() {
                            Some(failure) => {
                                let reason = failure.reason(Backend::Postgres);
                                tracing::warn!(error = %service::http::Chain(&e), reason, "the replica does not answer");
                                Check::with(Status::Degraded, false, reason)
                            }
                            None => {
                                tracing::debug!(error = %e, "the replica does not answer");
                                Check::with(
                                    Status::Degraded,
                                    false,
                                    "not answering; reads go to the primary",
                                )
                            }
                        },
                    },
                    ReplicaState::Lagging => Check::with(
                        Status::Degraded,
                        false,
                        "lagging beyond database.replica_max_lag_ms; reads go to the primary",
                    ),
                    ReplicaState::Unusable => Check::with(
                        Status::Degraded,
                        false,
                        match replica.db.tls_failure() {
                            Some(failure) => failure.reason(Backend::Postgres),
                            None => "not answering as a replica; reads go to the primary",
                        },
                    ),
                };
                checks.push(("postgres_replica", check));
            }
            checks.push((
                "redis",
                Check::from_ping(
                    false,
                    state.redis.ping().await,
                    Backend::Redis,
                    state.redis.tls_failure(),
                    "not answering",
                ),
            ));
            let events = if state.subscribed.load(std::sync::atomic::Ordering::Acquire) {
                Check::up(false)
            } else if let Some(failure) = state.broker.tls_failure() {
                Check::tls(false, Backend::RabbitMq, failure)
            } else {
                Check::with(
                    Status::Down,
                    false,
                    "not subscribed to product events; L1 relies on its short TTL",
                )
            };
            checks.push(("rabbitmq", events));
            checks
        }
        .boxed()
    }

    fn before_scrape(&self) -> BoxFuture<'_, ()> {
        async move {
            let l1 = &self.0.read.l1;
            // moka counts lazily (its bookkeeping runs with later cache
            // operations): settled first, an idle instance reports what it
            // holds, not what it held before its last burst.
            l1.settle().await;
            metrics::gauge!("cache_l1_entries").set(l1.entry_count() as f64);
            metrics::gauge!("cache_l1_bytes").set(l1.weighted_size() as f64);
            metrics::gauge!("cache_floors").set(l1.floor_count() as f64);
        }
        .boxed()
    }
}

/// HTTP workers: `read_api.workers`, or when it is 0 one per core but one,
/// at least one. A worker serving L1 hits keeps its core busy by itself;
/// the instance's other threads (the event subscriber, the Redis and
/// Postgres drivers, the kernel's network stack) need the rest. Measured on
/// 2 cores (docs/benchmarks.md): 1 worker answered more L1 hits than 2,
/// with a lower p99.
fn http_workers(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .saturating_sub(1)
        .max(1)
}
