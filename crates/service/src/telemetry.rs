//! Logging, request spans and metrics.
//!
//! Logs: one global subscriber per process, `RUST_LOG` filters (default
//! `info`), text or JSON lines. Every HTTP request runs in a `request` span
//! carrying a request id; write-api hands that id to the change as its
//! correlation id, which travels with the event (AMQP `correlation_id`) to
//! the invalidator and every read-api instance, so one grep for it follows
//! a write to every cache it fenced.
//!
//! Metrics: each service instance owns its own Prometheus recorder
//! ([`Metrics`]) instead of sharing the process-wide one, installed as the
//! thread default on its HTTP workers and its background-task thread. A
//! process runs one service in production, so this changes nothing there;
//! in tests, where many services share a process, each `/metrics` shows
//! only its own service's numbers, whatever the test runner.

use actix_web::{
    HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::LogFormat;

/// Installs the global tracing subscriber. Later calls do nothing, so tests
/// that start several services in one process can all call it.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().compact()).try_init(),
    };
}

/// Test logging: only when `TEST_LOG` is set, so test output stays readable.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        init_logging(LogFormat::Text);
    }
}

/// The root span of one HTTP request: method, route pattern (never the raw
/// path: it may carry ids without end), request id and final status.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = request.match_pattern().as_deref().unwrap_or("unmatched"),
            request_id = %request_id,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let status = match outcome {
            Ok(res) => res.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        span.record("status", status.as_u16());
    }
}

/// Latency buckets in seconds: fine below a millisecond, where cache hits are.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for histograms counted in versions or items (`_versions`,
/// `_size`).
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 100.0, 1000.0];

/// One service instance's metrics recorder and the handle `/metrics`
/// renders. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// Leaked once per service instance (a few per test process, one in
    /// production): threads keep it as their default for their whole life.
    recorder: &'static PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_versions".into()), COUNT_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), COUNT_BUCKETS));
        // The buckets are constants: the builder cannot refuse them.
        let builder = builder.unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder: &'static PrometheusRecorder = Box::leak(Box::new(builder.build_recorder()));
        Self {
            handle: recorder.handle(),
            recorder,
        }
    }

    /// Makes this recorder the default of the calling thread, for the rest of
    /// the thread's life (an HTTP worker, the background-task thread).
    pub fn install_on_this_thread(&self) {
        // The guard would restore the previous default when dropped; this
        // thread belongs to the service, so it keeps ours until it ends.
        std::mem::forget(metrics::set_default_local_recorder(self.recorder));
    }

    /// Runs `f` with this recorder as the thread default: for metric handles
    /// registered while a service is being built.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder, f)
    }

    /// Also makes it the process-wide recorder (a binary running one
    /// service): whatever is recorded on another thread is kept too.
    pub fn install_global(&self) {
        let recorder = self.recorder;
        let _ = metrics::set_global_recorder(Forward(recorder));
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// A `'static` reference usable as the global recorder.
struct Forward(&'static PrometheusRecorder);

impl metrics::Recorder for Forward {
    fn describe_counter(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.0.describe_counter(k, u, d);
    }
    fn describe_gauge(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.0.describe_gauge(k, u, d);
    }
    fn describe_histogram(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.0.describe_histogram(k, u, d);
    }
    fn register_counter(&self, k: &metrics::Key, m: &metrics::Metadata<'_>) -> metrics::Counter {
        self.0.register_counter(k, m)
    }
    fn register_gauge(&self, k: &metrics::Key, m: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.0.register_gauge(k, m)
    }
    fn register_histogram(
        &self,
        k: &metrics::Key,
        m: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.0.register_histogram(k, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_keeps_its_own_numbers() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.scope(|| metrics::counter!("only_in_a_total").increment(2));
        b.scope(|| metrics::counter!("only_in_b_total").increment(1));
        assert!(a.render().contains("only_in_a_total 2"));
        assert!(!a.render().contains("only_in_b_total"));
        assert!(!b.render().contains("only_in_a_total"));
    }

    #[test]
    fn a_thread_with_the_recorder_installed_records_into_it() {
        let m = Metrics::new();
        let installed = m.clone();
        std::thread::spawn(move || {
            installed.install_on_this_thread();
            metrics::gauge!("thread_gauge").set(7.0);
        })
        .join()
        .unwrap();
        assert!(m.render().contains("thread_gauge 7"));
    }
}
