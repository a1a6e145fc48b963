//! read-api: the storefront HTTP API. Reads go L1 (in process) → L2 (Redis)
//! → Postgres under the version invariant ([`read_path`]); lists, featured
//! and search pages are cached under generations ([`pages`]); this
//! instance's L1 is fenced by product events ([`subscriber`]).
//!
//! The binary is a thin `main`; tests build and run the same
//! [`Application`] in-process on port 0.

mod limiter;
mod openapi;
mod pages;
pub mod read_path;
mod routes;
mod singleflight;
mod subscriber;
mod trending;

use std::{
    net::TcpListener,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use actix_web::{App, HttpResponse, HttpServer, dev::Server, middleware, web};
use anyhow::Context;
use bus::Topology;
use cache::{L1, L2, L2Config, Lifetimes, ViewCounter};
use service::{Settings, http};
use store::Db;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use read_path::{ReadPath, Tier};

/// What every handler shares.
pub struct AppState {
    pub read: Arc<ReadPath>,
    pub pages: Arc<pages::Pages>,
    /// Redis for trending (used even when caching is disabled: trending is
    /// data, not a cache).
    pub trending_l2: L2,
    pub views: Arc<ViewCounter>,
    /// Whether this instance's event subscription is up.
    pub subscribed: Arc<AtomicBool>,
}

/// A built, bound, not yet running read-api.
pub struct Application {
    port: u16,
    server: Server,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    state: web::Data<AppState>,
}

fn pool(url: &str, settings: &Settings, name: &str) -> anyhow::Result<Db> {
    Db::connect(url, &settings.pool_settings(name))
        .with_context(|| format!("creating the {name} Postgres pool"))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_shutdown(settings, CancellationToken::new()).await
    }

    /// Connects lazily (Postgres, Redis and RabbitMQ may be down at start),
    /// binds `read_api.bind`, and starts the event subscription and the
    /// trending flusher. Never migrates.
    pub async fn build_with_shutdown(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let _ = service::telemetry::metrics();
        let primary = pool(&settings.database.url, &settings, "read-api")?;
        let replica = settings
            .database
            .replica_url
            .as_deref()
            .map(|url| pool(url, &settings, "read-api-replica"))
            .transpose()?;
        let cache = &settings.cache;
        let l2 = L2::new(&L2Config {
            url: settings.redis.url.clone(),
            cluster: settings.redis.cluster,
            namespace: settings.namespace.clone(),
            ttl: Duration::from_secs(cache.ttl_secs),
            negative_ttl: Duration::from_secs(cache.negative_ttl_secs.max(1)),
            timeout: Duration::from_millis(settings.redis.timeout_ms.max(1)),
            breaker: Some((
                settings.redis.breaker_failures,
                Duration::from_millis(settings.redis.breaker_cooldown_ms),
            )),
        })
        .context("configuring Redis")?;
        let subscribed = Arc::new(AtomicBool::new(false));
        let l1 = L1::new(
            if cache.enabled { cache.l1_capacity } else { 0 },
            Lifetimes {
                fenced: Duration::from_secs(cache.ttl_secs),
                unfenced: Duration::from_secs(cache.l1_ttl_secs.max(1)),
                negative: Duration::from_secs(cache.negative_ttl_secs.max(1)),
                subscribed: Arc::clone(&subscribed),
            },
        );
        let slots = match settings.database.max_concurrency {
            0 => settings.database.pool_size,
            n => n,
        };
        let limiter = limiter::Limiter::new(slots, settings.acquire_timeout());
        let read = Arc::new(ReadPath::new(
            l1.clone(),
            cache.enabled.then(|| l2.clone()),
            primary,
            replica,
            limiter,
            cache.enabled,
        ));
        let views = Arc::new(ViewCounter::default());
        let state = web::Data::new(AppState {
            pages: Arc::new(pages::Pages::new(Arc::clone(&read))),
            read,
            trending_l2: l2.clone(),
            views: Arc::clone(&views),
            subscribed: Arc::clone(&subscribed),
        });

        let mut tasks = Vec::new();
        if l1.enabled() {
            let subscriber = subscriber::Subscriber {
                amqp_url: settings.amqp.url.clone(),
                topology: Topology::new(&settings.namespace),
                l1,
                connected: subscribed,
                mode: settings.invalidator.mode(),
            };
            tasks.push(tokio::spawn(subscriber.run(shutdown.child_token())));
        }
        tasks.push(tokio::spawn(trending::run(
            l2,
            views,
            Duration::from_secs(settings.read_api.trending_rollup_secs.max(1)),
            shutdown.child_token(),
        )));

        let openapi = web::Data::new(openapi::ApiDoc::openapi().to_json().context("openapi")?);
        let listener = TcpListener::bind(&settings.read_api.bind)
            .with_context(|| format!("binding read_api.bind {}", settings.read_api.bind))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(openapi.clone())
                .wrap(http::RequestMetrics)
                .wrap(middleware::Compress::default())
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(routes::readyz))
                .route("/metrics", web::get().to(metrics))
                .route("/openapi.json", web::get().to(openapi_json))
                .service(
                    web::scope("/products")
                        .service(
                            web::resource("")
                                .route(web::get().to(routes::list))
                                .default_service(http::method_not_allowed("GET")),
                        )
                        .service(
                            web::resource("/search")
                                .route(web::get().to(routes::search))
                                .default_service(http::method_not_allowed("GET")),
                        )
                        .service(
                            web::resource("/featured")
                                .route(web::get().to(routes::featured))
                                .default_service(http::method_not_allowed("GET")),
                        )
                        .service(
                            web::resource("/trending")
                                .route(web::get().to(routes::trending))
                                .default_service(http::method_not_allowed("GET")),
                        )
                        // `/{id}` and `/{id}/availability`, without a regex.
                        .default_service(web::to(routes::by_id)),
                )
                .default_service(web::to(http::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(10);
        if settings.read_api.workers > 0 {
            server = server.workers(settings.read_api.workers);
        }
        Ok(Self {
            port,
            server: server.run(),
            tasks,
            shutdown,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The shared state (tests drive the read path and caches directly).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        http::serve_then_join(self.server, self.shutdown, self.tasks)
            .await
            .context("HTTP server")
    }
}

/// `/metrics`, with the L1 size sampled at scrape time.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("cache_l1_entries").set(state.read.l1.entry_count() as f64);
    http::metrics().await
}

async fn openapi_json(doc: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.get_ref().clone())
}
