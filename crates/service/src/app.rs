//! The one service scaffold: how read-api, write-api and the invalidator are
//! built, served, supervised and stopped.
//!
//! A service brings only what is its own: its routes, its state, its
//! readiness checks and its background tasks. The scaffold adds the rest,
//! the same everywhere: `/healthz`, `/readyz` (the service's checks plus the
//! state of every supervised task), `/metrics` (the service's own recorder),
//! `/openapi.json`, a request span with a request id, request metrics, the
//! JSON 404 and graceful shutdown.
//!
//! ```text
//! let mut builder = Builder::new("read-api", shutdown)?;
//! builder.spawn("subscriber", subscriber.run(builder.task_token()));
//! builder.serve(Http { routes, probe, .. }, state)   // -> Application<State>
//! ```

use std::{future::Future, net::TcpListener, process::ExitCode, sync::Arc, time::Duration};

use actix_web::{App, HttpResponse, HttpServer, dev::Server, middleware, web};
use anyhow::Context;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::{
    Settings,
    http::{self, Check},
    settings::Role,
    supervise::{Supervisor, TaskExit, TaskHealth, TaskState},
    telemetry::{self, Metrics, RequestSpan},
};

/// How long `/readyz` shows a failed task before the process stops: long
/// enough for a probe or a load balancer to see it.
const FAILURE_GRACE: Duration = Duration::from_secs(2);
/// How long background tasks get to drain at shutdown (each has its own,
/// shorter budget; this bounds them all).
const TASK_DRAIN_BUDGET: Duration = Duration::from_secs(15);
/// How long in-flight HTTP requests get to finish at shutdown.
const HTTP_DRAIN_SECS: u64 = 10;

/// What a service reports in `/readyz`, and samples before `/metrics`.
pub trait Probe: Send + Sync + 'static {
    /// Each dependency and its state.
    fn checks(&self) -> BoxFuture<'_, Vec<(&'static str, Check)>>;

    /// Called before `/metrics` renders: set gauges that are cheaper to
    /// sample than to maintain.
    fn before_scrape(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// How a service is served over HTTP.
pub struct Http {
    /// The settings key of `bind`, for error messages.
    pub bind_key: &'static str,
    pub bind: String,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// The service's own routes.
    pub routes: Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>,
    pub probe: Arc<dyn Probe>,
    /// The OpenAPI document served at `/openapi.json`, if any.
    pub openapi: Option<utoipa::openapi::OpenApi>,
    /// gzip responses when the client asks (the APIs; not worth it for the
    /// invalidator's probes).
    pub compress: bool,
}

/// What the scaffold's own routes share.
struct Scaffold {
    probe: Arc<dyn Probe>,
    tasks: TaskHealth,
    metrics: Metrics,
    openapi: Option<web::Bytes>,
}

/// A service being built: its metrics and its supervised tasks.
pub struct Builder {
    name: &'static str,
    metrics: Metrics,
    supervisor: Supervisor,
    /// Cancelled by the caller (a signal, a test) to stop the service.
    shutdown: CancellationToken,
    /// Cancelled by the scaffold once HTTP has drained, so background tasks
    /// outlive the requests that feed them (the relay's fast path).
    tasks_stop: CancellationToken,
}

impl Builder {
    pub fn new(name: &'static str, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let supervisor = Supervisor::new(name, &metrics)
            .with_context(|| format!("starting {name}'s background-task thread"))?;
        Ok(Self {
            name,
            metrics,
            supervisor,
            shutdown,
            tasks_stop: CancellationToken::new(),
        })
    }

    /// This service's metrics recorder: build the service's parts inside
    /// [`Metrics::scope`] so the handles they register are its own.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The token a background task stops on.
    pub fn task_token(&self) -> CancellationToken {
        self.tasks_stop.child_token()
    }

    /// Runs a background task under supervision (see [`crate::supervise`]).
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.supervisor.spawn(name, task);
    }

    /// Binds and starts serving; requests are answered from now on.
    pub fn serve<S>(self, http: Http, state: S) -> anyhow::Result<Application<S>> {
        let Http {
            bind_key,
            bind,
            workers,
            routes,
            probe,
            openapi,
            compress,
        } = http;
        let openapi = openapi
            .map(|doc| {
                crate::openapi::complete(doc)
                    .to_json()
                    .map(web::Bytes::from)
            })
            .transpose()
            .context("serializing the OpenAPI document")?;
        let scaffold = web::Data::new(Scaffold {
            probe,
            tasks: self.supervisor.health(),
            metrics: self.metrics.clone(),
            openapi,
        });
        let listener =
            TcpListener::bind(&bind).with_context(|| format!("binding {bind_key} {bind}"))?;
        let port = listener.local_addr()?.port();
        let metrics = self.metrics.clone();
        let mut server = HttpServer::new(move || {
            // Runs once on each worker thread, before it serves anything.
            metrics.install_on_this_thread();
            App::new()
                .app_data(scaffold.clone())
                .wrap(http::RequestMetrics)
                .wrap(middleware::from_fn(http::request_id_header))
                .wrap(middleware::Condition::new(
                    compress,
                    middleware::Compress::default(),
                ))
                .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
                .service(read_only("/healthz", http::healthz))
                .service(read_only("/readyz", readyz))
                .service(read_only("/metrics", render_metrics))
                .service(read_only("/openapi.json", openapi_json))
                .configure(|cfg| routes(cfg))
                .default_service(web::to(http::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(HTTP_DRAIN_SECS);
        if workers > 0 {
            server = server.workers(workers);
        }
        Ok(Application {
            name: self.name,
            port,
            server: server.run(),
            supervisor: self.supervisor,
            shutdown: self.shutdown,
            tasks_stop: self.tasks_stop,
            metrics: self.metrics,
            state,
        })
    }
}

/// A built, bound, running-on-first-poll service (zero2prod's shape:
/// `build`, `port`, `run_until_stopped`).
pub struct Application<S> {
    name: &'static str,
    port: u16,
    server: Server,
    supervisor: Supervisor,
    shutdown: CancellationToken,
    tasks_stop: CancellationToken,
    metrics: Metrics,
    state: S,
}

impl<S> Application<S> {
    /// The bound port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling it stops the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The service's shared state (tests drive it directly).
    pub fn state(&self) -> &S {
        &self.state
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Handles that abort a background task as if it had died: for tests
    /// of the supervision itself.
    #[doc(hidden)]
    pub fn task_aborts(&self) -> Vec<(&'static str, tokio::task::AbortHandle)> {
        self.supervisor.abort_handles()
    }

    /// Serves until the shutdown token is cancelled or something stops on
    /// its own; then drains HTTP, stops the background tasks and waits for
    /// them. `Err` when a background task or the server stopped by itself:
    /// the binary then exits with a non-zero status.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            name,
            server,
            mut supervisor,
            shutdown,
            tasks_stop,
            ..
        } = self;
        let stopper = server.handle();
        let mut server = tokio::spawn(server);
        let (exit, server_done) = tokio::select! {
            () = shutdown.cancelled() => (None, false),
            ended = &mut server => {
                let cause = match ended {
                    Ok(Ok(())) => "returned before shutdown".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                (Some(TaskExit { task: "http server", cause }), true)
            }
            exit = supervisor.first_exit() => (Some(exit), false),
        };
        if let Some(exit) = &exit {
            report_exit(name, exit);
            if !server_done {
                // `/readyz` is red now; let probes see it before we go.
                tokio::time::sleep(FAILURE_GRACE).await;
            }
            shutdown.cancel();
        }
        if !server_done {
            stopper.stop(true).await;
            let _ = server.await;
        }
        tasks_stop.cancel();
        supervisor.join(TASK_DRAIN_BUDGET).await;
        match exit {
            None => Ok(()),
            Some(exit) => Err(exit.into()),
        }
    }
}

fn report_exit(service: &str, exit: &TaskExit) {
    tracing::error!(
        service,
        task = exit.task,
        cause = %exit.cause,
        "stopped before shutdown; the service stops so that it is restarted"
    );
}

/// A scaffold route: `GET` and `HEAD`, and the JSON `405` naming them for
/// any other method.
fn read_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(http::get_or_head().to(handler))
        .default_service(http::method_not_allowed("GET, HEAD"))
}

/// `GET /readyz`: the service's checks plus one per supervised task.
async fn readyz(scaffold: web::Data<Scaffold>) -> HttpResponse {
    let mut checks = scaffold.probe.checks().await;
    for (task, state) in scaffold.tasks.snapshot() {
        let check = match state {
            TaskState::Running => Check::up(true),
            TaskState::Failed => Check::down(true, "stopped; the service is shutting down"),
        };
        checks.push((task, check));
    }
    http::readiness(checks)
}

/// `GET /metrics`: this service's own recorder, Prometheus text format.
async fn render_metrics(scaffold: web::Data<Scaffold>) -> HttpResponse {
    scaffold.probe.before_scrape().await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(scaffold.metrics.render())
}

/// `GET /openapi.json`, serialized once at start.
async fn openapi_json(scaffold: web::Data<Scaffold>) -> HttpResponse {
    match &scaffold.openapi {
        Some(doc) => HttpResponse::Ok()
            .content_type("application/json")
            .body(doc.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// A binary's whole `main`: load settings (exit 2 when invalid), set up
/// logging, build the service, run it until SIGTERM or SIGINT. Exits 1 when
/// the service cannot start or something in it stopped by itself.
pub fn run<S, F, Fut>(role: Role, build: F) -> ExitCode
where
    F: FnOnce(Settings, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Application<S>>>,
{
    let settings = Settings::load_or_exit(role);
    telemetry::init_logging(settings.log.format);
    // Before any client exists: the Redis and RabbitMQ clients take rustls'
    // process-wide provider, and this build has ring only.
    tls::install_provider();
    // Its `Debug` masks URL passwords and tokens.
    tracing::debug!(?settings, "configuration loaded");
    let name = role.name();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(service = name, error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = crate::shutdown::on_signal();
        let app = match build(settings, shutdown).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(service = name, error = format!("{e:#}"), "failed to start");
                return ExitCode::FAILURE;
            }
        };
        app.metrics().install_global();
        tracing::info!(service = name, port = app.port(), "listening");
        match app.run_until_stopped().await {
            Ok(()) => {
                tracing::info!(service = name, "stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(
                    service = name,
                    error = format!("{e:#}"),
                    "stopped with an error"
                );
                ExitCode::FAILURE
            }
        }
    })
}
