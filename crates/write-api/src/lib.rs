//! write-api: the admin HTTP API. Every change commits to Postgres together
//! with its outbox event (written by the database's triggers); the handler
//! then wakes the relay ([`relay`]), which publishes the new rows to RabbitMQ
//! at once.
//!
//! The binary is a thin `main`; tests build and run the same
//! [`Application`] in-process on port 0.

mod auth;
mod openapi;
mod relay;
mod routes;

use std::{sync::Arc, time::Duration};

use actix_web::web;
use anyhow::Context;
use bus::{Publisher, Topology};
use futures::{FutureExt, future::BoxFuture};
use service::{
    Builder, Http, Probe, Settings,
    http::{Check, Status},
};
use store::{Db, PoolSettings};
use tls::Backend;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use relay::RelayHandle;

/// A built write-api; its state is what the handlers share.
pub type Application = service::Application<web::Data<State>>;

/// What every handler shares.
pub struct State {
    pub db: Db,
    /// Wakes the outbox relay after a commit.
    pub relay: RelayHandle,
    pub publisher: Arc<Publisher>,
}

/// Builds write-api: migrates (if `database.migrate`), connects lazily,
/// binds `write_api.bind` and starts the outbox relay.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    if settings.database.migrate {
        let applied = store::migrate(&settings.database.url, &settings.database_tls()?)
            .await
            .context("applying database migrations")?;
        tracing::info!(applied, "database migrations are up to date");
    }
    let mut builder = Builder::new("write-api", shutdown)?;
    let (state, relay) = builder.metrics().scope(|| parts(&settings))?;
    builder.spawn("relay", relay.run(builder.task_token()));

    let state = web::Data::new(state);
    let tokens = web::Data::new(auth::Tokens::new(&settings.auth.admin_tokens));
    let http = Http {
        bind_key: "write_api.bind",
        bind: settings.write_api.bind.clone(),
        workers: settings.write_api.workers,
        routes: Arc::new({
            let state = state.clone();
            move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(state.clone()).app_data(tokens.clone());
                routes::configure(cfg);
            }
        }),
        probe: Arc::new(Readiness(state.clone())),
        openapi: Some(openapi::ApiDoc::openapi()),
        compress: true,
    };
    builder.serve(http, state)
}

/// The handlers' state and the relay, built inside the service's metrics
/// scope.
fn parts(settings: &Settings) -> anyhow::Result<(State, relay::Relay)> {
    // Every write wakes the relay below, so its transactions need not
    // notify the listening relays too.
    let db = Db::connect(
        &settings.database.url,
        &PoolSettings {
            wakes_own_relay: true,
            ..settings.pool_settings("write-api")?
        },
    )
    .context("creating the Postgres pool")?;
    let topology = Topology::new(&settings.namespace);
    let broker = bus::Broker::new(&settings.amqp.url, settings.amqp_tls()?);
    let publisher = Arc::new(Publisher::new(broker, "write-api", topology));
    // The relay's own small pool: its commits (deleting rows the broker
    // confirmed) need not wait for the WAL flush: losing one in a crash only
    // republishes an event.
    let relay_db = Db::connect(
        &settings.database.url,
        &PoolSettings {
            max_size: 2,
            durable_commits: false,
            index_scans: true,
            ..settings.pool_settings("write-api-relay")?
        },
    )
    .context("creating the relay's Postgres pool")?;
    let (relay, handle) = relay::Relay::new(
        relay_db,
        (&settings.database.url, settings.database_tls()?),
        Arc::clone(&publisher),
        relay::Timing {
            poll: Duration::from_millis(settings.write_api.relay_poll_ms),
            linger: Duration::from_millis(settings.write_api.relay_linger_ms),
        },
        settings.write_api.relay_batch,
    );
    let state = State {
        db,
        relay: handle,
        publisher,
    };
    Ok((state, relay))
}

/// `/readyz`: Postgres is required; RabbitMQ is reported but optional, since
/// writes succeed without it (events wait in the outbox). The broker's state
/// is the relay's connection as of its last pass, read without I/O so a
/// black-holed broker cannot slow the probe down.
struct Readiness(web::Data<State>);

impl Probe for Readiness {
    fn checks(&self) -> BoxFuture<'_, Vec<(&'static str, Check)>> {
        async move {
            let postgres = Check::from_ping(
                true,
                self.0.db.ping().await,
                Backend::Postgres,
                self.0.db.tls_failure(),
                "not answering",
            );
            let rabbitmq = if self.0.publisher.is_connected() {
                Check::up(false)
            } else if let Some(failure) = self.0.publisher.tls_failure() {
                Check::tls(false, Backend::RabbitMq, failure)
            } else {
                Check::with(
                    Status::Down,
                    false,
                    "the outbox relay is not connected; events wait in the outbox",
                )
            };
            vec![("postgres", postgres), ("rabbitmq", rabbitmq)]
        }
        .boxed()
    }
}
