//! write-api: the admin HTTP API. Every change commits to Postgres together
//! with its outbox event; the handler then hands the committed rows to the
//! relay ([`relay`]), which publishes them to RabbitMQ at once; a sweep
//! publishes whatever that misses.
//!
//! The binary is a thin `main`; tests build and run the same
//! [`Application`] in-process on port 0.

mod auth;
mod openapi;
mod relay;
mod routes;

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpResponse, HttpServer, dev::Server, middleware, web};
use anyhow::Context;
use bus::{Publisher, Topology};
use service::{Settings, http};
use store::{Db, PoolSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use relay::RelayHandle;

/// What every handler shares.
pub struct State {
    pub db: Db,
    /// Takes committed outbox rows to publish right away.
    pub relay: RelayHandle,
    pub publisher: Arc<Publisher>,
}

/// A built, bound, not yet running write-api.
pub struct Application {
    port: u16,
    server: Server,
    relay: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Application {
    /// Migrates (if `database.migrate`), connects, binds `write_api.bind`
    /// and starts the outbox relay.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_shutdown(settings, CancellationToken::new()).await
    }

    /// As [`Application::build`], stopping when `shutdown` is cancelled.
    pub async fn build_with_shutdown(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records.
        let _ = service::telemetry::metrics();
        if settings.database.migrate {
            let applied = store::migrate(&settings.database.url)
                .await
                .context("applying database migrations")?;
            tracing::info!(applied, "database migrations are up to date");
        }
        let db = Db::connect(&settings.database.url, &settings.pool_settings("write-api"))
            .context("creating the Postgres pool")?;
        let topology = Topology::new(&settings.namespace);
        let publisher = Arc::new(Publisher::new(&settings.amqp.url, "write-api", topology));
        // The relay's own small pool: its connections are created on the
        // runtime the relay runs on, so its queries never hop threads; and its
        // commits (deleting rows the broker confirmed) need not wait for the
        // WAL flush.
        let relay_db = Db::connect(
            &settings.database.url,
            &PoolSettings {
                max_size: 2,
                durable_commits: false,
                ..settings.pool_settings("write-api-relay")
            },
        )
        .context("creating the relay's Postgres pool")?;
        let (relay, relay_handle) = relay::Relay::new(
            relay_db,
            Arc::clone(&publisher),
            Duration::from_millis(settings.write_api.relay_poll_ms.max(10)),
            settings.write_api.relay_batch.max(1),
        );
        let relay = tokio::spawn(relay.run(shutdown.child_token()));

        let state = web::Data::new(State {
            db,
            relay: relay_handle,
            publisher,
        });
        let tokens = web::Data::new(auth::Tokens::new(&settings.auth.admin_tokens));
        let openapi = web::Data::new(openapi::ApiDoc::openapi().to_json().context("openapi")?);
        let listener = TcpListener::bind(&settings.write_api.bind)
            .with_context(|| format!("binding write_api.bind {}", settings.write_api.bind))?;
        let port = listener.local_addr()?.port();
        let workers = settings.write_api.workers;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(tokens.clone())
                .app_data(openapi.clone())
                .wrap(http::RequestMetrics)
                .wrap(middleware::Compress::default())
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(routes::readyz))
                .route("/metrics", web::get().to(http::metrics))
                .route("/openapi.json", web::get().to(openapi_json))
                .service(
                    web::scope("/products")
                        .wrap(middleware::from_fn(auth::require_token))
                        .service(
                            web::resource("")
                                .route(web::post().to(routes::create))
                                .default_service(http::method_not_allowed("POST")),
                        )
                        .service(
                            web::resource("/bulk")
                                .route(web::post().to(routes::create_bulk))
                                .default_service(http::method_not_allowed("POST")),
                        )
                        .service(
                            web::resource("/{id}")
                                .route(web::get().to(routes::get))
                                .route(web::patch().to(routes::patch))
                                .route(web::delete().to(routes::delete))
                                .default_service(http::method_not_allowed("GET, PATCH, DELETE")),
                        )
                        .service(
                            web::resource("/{id}/stock")
                                .route(web::put().to(routes::put_stock))
                                .default_service(http::method_not_allowed("PUT")),
                        ),
                )
                .default_service(web::to(http::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(10);
        if workers > 0 {
            server = server.workers(workers);
        }
        Ok(Self {
            port,
            server: server.run(),
            relay,
            shutdown,
        })
    }

    /// The bound port (useful with `bind = "127.0.0.1:0"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token stops the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled; then finishes in-flight
    /// requests and lets the relay flush.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        http::serve_then_join(self.server, self.shutdown, vec![self.relay])
            .await
            .context("HTTP server")
    }
}

async fn openapi_json(doc: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.get_ref().clone())
}
