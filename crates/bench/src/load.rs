//! `load`: HTTP load over keep-alive connections, with an optional write mix.
//!
//! `connections` tasks each own one connection per read URL (requests
//! rotate over the URLs) and, when writes are mixed in, one to write-api.
//! Each task records into histograms of its own; they are merged at the end,
//! so the hot loop takes no lock and shares nothing but a padded counter for
//! the progress bar.
//!
//! Two modes:
//! - closed loop (default): each task sends its next request as soon as the
//!   previous one is answered; latency is the request's own time.
//! - open loop (`rate`): request `n` of the whole run is due at
//!   `start + n / rate`, and task `k` sends requests `k, k + C, k + 2C, …`.
//!   Latency counts from the *intended* send time, so a stalled server is
//!   charged for the requests it kept waiting (no coordinated omission). The
//!   request's own service time is reported beside it.
//!
//! Only requests whose (intended) start falls inside the measured window are
//! recorded; warm-up requests warm the caches and connections, nothing more.
//! The window lasts `duration` ([`run`]), or until the caller cancels a
//! token ([`run_until`]) when the load accompanies work of unknown length.
//! Around the window, the client's CPU time is sampled at its edges, and each
//! read URL's `/metrics` is scraped at its start and again once the last
//! request has been answered, so the Postgres query delta covers the window
//! (give or take one warm-up request in flight per connection).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    HeaderMap, Method, Request, Uri,
    header::{self, HeaderValue},
};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    cpu::{CpuSnapshot, CpuUsage},
    http::{self, ClientError, Conn, Target},
    keys::{Dist, KeyPicker, Keys},
    metrics_scrape::{self, DbQueries, InstanceQueries},
    progress, report,
    stats::{OpReport, OpStats, XCache},
};

/// How early an open-loop task asks the timer to wake it. Tokio's timer
/// has millisecond ticks and fires 0.2–2 ms after a deadline (measured on
/// the benchmark machine: median 1.1 ms late, p99 2.0 ms). Waking up to
/// 2 ms early and measuring from the actual send when it precedes the
/// intended time keeps timer lateness out of the latency, at the cost of
/// jittering the schedule by at most 2 ms (the rate is unchanged).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Back-off after a failed connect, so a dead server is not hammered by a
/// tight loop that would also eat the CPU the other services need.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// The load to generate.
#[derive(Debug, Clone)]
pub struct LoadOpts {
    /// Read base URLs; requests rotate over them.
    pub urls: Vec<String>,
    /// Extra headers on every read, as `Name: value`.
    pub headers: Vec<String>,
    /// Concurrent request loops (each has one request in flight at most).
    pub connections: usize,
    /// Target requests per second over all connections (open loop); `None`
    /// for closed loop.
    pub rate: Option<f64>,
    /// Measured window (not used by [`run_until`]).
    pub duration: Duration,
    /// Load before the window that is not recorded.
    pub warmup: Duration,
    /// Read path; `{id}` is replaced by the product id.
    pub path_template: String,
    pub dist: Dist,
    pub keys: Keys,
    /// Fraction of operations that are PATCHes to write-api.
    pub write_ratio: f64,
    /// write-api base URL (needed when `write_ratio > 0`).
    pub write_url: Option<String>,
    /// write-api bearer token (needed when `write_ratio > 0`).
    pub token: Option<String>,
    /// Per-request timeout (connect + answer).
    pub timeout: Duration,
    /// Seeds the key and operation draws.
    pub seed: u64,
    /// Scrape each read URL's `/metrics` for `catalog_db_queries_total`.
    pub scrape_metrics: bool,
    /// Scenario name carried into the report.
    pub label: String,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for LoadOpts {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:8080".into()],
            headers: Vec::new(),
            connections: 64,
            rate: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            path_template: "/products/{id}".into(),
            dist: Dist::Zipf { s: 1.0 },
            keys: Keys::default(),
            write_ratio: 0.0,
            write_url: None,
            token: None,
            timeout: Duration::from_secs(5),
            seed: 1,
            scrape_metrics: true,
            label: "load".into(),
            progress: true,
        }
    }
}

/// The settings a run used, as recorded in its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadConfig {
    pub urls: Vec<String>,
    /// Names of the extra headers (values are left out: they hold tokens).
    pub header_names: Vec<String>,
    pub connections: usize,
    /// Target rate (req/s), `null` for closed loop.
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub path_template: String,
    pub dist: Dist,
    /// Where the keys came from, and how many there were.
    pub keys: String,
    pub key_count: usize,
    pub write_ratio: f64,
    pub write_url: Option<String>,
    pub timeout_s: f64,
    pub seed: u64,
    /// Tokio worker threads of the load generator.
    pub client_threads: usize,
}

/// Everything a load run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub schema_version: u32,
    /// Always `"load"`.
    pub kind: String,
    pub label: String,
    pub started_at: String,
    pub config: LoadConfig,
    /// Length of the measured window, s (the nominal duration, or the time
    /// until the stop for [`run_until`]: requests count when their intended
    /// start falls inside it).
    pub window_s: f64,
    /// Reads + writes started in the window.
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// `requests` per second.
    pub throughput_rps: f64,
    /// `ok` per second.
    pub ok_rps: f64,
    pub reads: OpReport,
    pub writes: OpReport,
    pub x_cache: XCache,
    /// `null` when scraping was off.
    pub db_queries: Option<DbQueries>,
    pub client_cpu: CpuUsage,
}

/// One read URL, prepared for the hot loop.
struct ReadTarget {
    target: Target,
    /// Request URI per key index (or a single one when the template has no
    /// `{id}`).
    uris: Vec<Uri>,
    /// `Host` plus the extra headers.
    headers: HeaderMap,
}

impl ReadTarget {
    fn uri(&self, key: usize) -> Uri {
        self.uris[key.min(self.uris.len() - 1)].clone()
    }
}

/// write-api, prepared for the hot loop.
struct WriteTarget {
    target: Target,
    uris: Vec<Uri>,
    /// `Host`, `Authorization` and `Content-Type`.
    headers: HeaderMap,
}

/// Every request target, prepared before the clock starts.
struct Targets {
    reads: Vec<ReadTarget>,
    write: Option<WriteTarget>,
}

/// What every worker reads; immutable during the run.
struct Plan {
    reads: Vec<ReadTarget>,
    write: Option<WriteTarget>,
    picker: KeyPicker,
    write_ratio: f64,
    timeout: Duration,
    seed: u64,
    connections: usize,
    rate: Option<f64>,
    start: Instant,
    /// Start of the measured window.
    measure_from: Instant,
    end: Deadline,
}

/// The end of the measured window: fixed when the run starts, or the moment
/// the caller's stop token is cancelled, as first noticed by any task.
struct Deadline {
    origin: Instant,
    /// Nanoseconds from `origin` to the end; [`Deadline::OPEN`] until known.
    end_ns: AtomicU64,
    /// The caller's token, when the end is not fixed.
    stop: Option<CancellationToken>,
}

impl Deadline {
    const OPEN: u64 = u64::MAX;

    /// A window ending at `end`.
    fn at(origin: Instant, end: Instant) -> Self {
        Self {
            origin,
            end_ns: AtomicU64::new(nanos(end - origin)),
            stop: None,
        }
    }

    /// A window ending when `stop` is cancelled.
    fn on_stop(origin: Instant, stop: CancellationToken) -> Self {
        Self {
            origin,
            end_ns: AtomicU64::new(Self::OPEN),
            stop: Some(stop),
        }
    }

    /// The end, once known. The first caller to see the token cancelled
    /// fixes it at that moment; every later caller gets the same instant.
    fn get(&self) -> Option<Instant> {
        let mut ns = self.end_ns.load(Ordering::Acquire);
        if ns == Self::OPEN {
            if !self.stop.as_ref()?.is_cancelled() {
                return None;
            }
            let now = nanos(Instant::now() - self.origin);
            ns = match self.end_ns.compare_exchange(
                Self::OPEN,
                now,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => now,
                Err(fixed) => fixed,
            };
        }
        Some(self.origin + Duration::from_nanos(ns))
    }

    /// Whether `t` is at or after the end.
    #[inline]
    fn passed(&self, t: Instant) -> bool {
        self.get().is_some_and(|end| t >= end)
    }

    /// Sleeps until `t`, or less when the caller stops the run first.
    async fn sleep_until(&self, t: Instant) {
        match &self.stop {
            None => tokio::time::sleep_until(t).await,
            Some(stop) => {
                tokio::select! {
                    () = tokio::time::sleep_until(t) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }

    /// Waits for the end and returns it.
    async fn reached(&self) -> Instant {
        if let Some(stop) = &self.stop {
            stop.cancelled().await;
        }
        // Known from here on (fixed, or just fixed by this call).
        let end = self.get().unwrap_or_else(Instant::now);
        tokio::time::sleep_until(end).await;
        end
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(Deadline::OPEN - 1)
}

/// Per-worker request counter for the progress bar, alone on its cache
/// line so workers on different cores do not contend for it.
#[repr(align(64))]
#[derive(Default)]
struct PaddedCounter(AtomicU64);

/// Runs the load and returns its report (also printed by the CLI).
pub async fn run(opts: LoadOpts) -> anyhow::Result<LoadReport> {
    if opts.duration.is_zero() {
        bail!("--duration must be positive");
    }
    execute(opts, None).await
}

/// Like [`run`], but the measured window lasts from the end of the warm-up
/// until `stop` is cancelled: for scenarios that load the system while they
/// do work of unknown length. `opts.duration` is not used and no progress
/// bar is drawn (the caller draws its own); the report's `window_s` and
/// `config.duration_s` are the window as it turned out. Cancelling during
/// the warm-up is an error: nothing was measured.
pub async fn run_until(mut opts: LoadOpts, stop: CancellationToken) -> anyhow::Result<LoadReport> {
    opts.progress = false;
    execute(opts, Some(stop)).await
}

async fn execute(opts: LoadOpts, stop: Option<CancellationToken>) -> anyhow::Result<LoadReport> {
    validate(&opts)?;
    let ids = opts.keys.load()?;
    let targets = prepare(&opts, &ids)?;
    let picker = KeyPicker::new(opts.dist, ids.len())?;
    let client = reqwest::Client::builder().timeout(opts.timeout).build()?;
    let metrics_urls = metrics_urls(&opts.urls);

    let plan = Arc::new(Plan::starting_now(&opts, targets, picker, stop));
    let started_at = report::now_rfc3339();
    let meter = spawn_meter(
        client.clone(),
        metrics_urls.clone(),
        opts.scrape_metrics,
        Arc::clone(&plan),
    );
    let total = run_workers(&opts, &plan).await?;
    let edges = meter.await.context("the meter task panicked")?;
    let window = edges.end.saturating_duration_since(plan.measure_from);
    if window.is_zero() {
        bail!("the load was stopped during its warm-up: nothing was measured");
    }
    let queries_after = scrape_queries(opts.scrape_metrics, &client, &metrics_urls).await;
    let db_queries = opts.scrape_metrics.then(|| {
        db_queries(
            &metrics_urls,
            (&edges.queries_before, &queries_after),
            &total,
        )
    });
    let client_cpu = edges.cpu_before.until(&edges.cpu_after);
    Ok(assemble(
        &opts,
        &ids,
        (started_at, window),
        total,
        db_queries,
        client_cpu,
    ))
}

impl Plan {
    /// The plan for `opts` with its clock starting now: warm-up first, then
    /// the measured window, for `opts.duration` or until `stop`.
    fn starting_now(
        opts: &LoadOpts,
        targets: Targets,
        picker: KeyPicker,
        stop: Option<CancellationToken>,
    ) -> Self {
        let start = Instant::now();
        let measure_from = start + opts.warmup;
        let end = match stop {
            Some(stop) => Deadline::on_stop(start, stop),
            None => Deadline::at(start, measure_from + opts.duration),
        };
        Self {
            reads: targets.reads,
            write: targets.write,
            picker,
            write_ratio: opts.write_ratio,
            timeout: opts.timeout,
            seed: opts.seed,
            connections: opts.connections,
            rate: opts.rate,
            start,
            measure_from,
            end,
        }
    }
}

/// What the meter samples at the measured window's edges.
struct WindowEdges {
    /// When the window ended.
    end: Instant,
    cpu_before: CpuSnapshot,
    cpu_after: CpuSnapshot,
    /// Each metrics URL's query counter at the window's start (empty when
    /// scraping is off).
    queries_before: Vec<Option<f64>>,
}

/// Samples the client's CPU exactly at the measured window's edges, and
/// scrapes the query counters right after the first sample.
fn spawn_meter(
    client: reqwest::Client,
    urls: Vec<String>,
    scrape: bool,
    plan: Arc<Plan>,
) -> JoinHandle<WindowEdges> {
    tokio::spawn(async move {
        tokio::time::sleep_until(plan.measure_from).await;
        let cpu_before = CpuSnapshot::now();
        let queries_before = scrape_queries(scrape, &client, &urls).await;
        let end = plan.end.reached().await;
        WindowEdges {
            end,
            cpu_before,
            cpu_after: CpuSnapshot::now(),
            queries_before,
        }
    })
}

/// Each metrics URL's query counter, or nothing when scraping is off.
async fn scrape_queries(
    scrape: bool,
    client: &reqwest::Client,
    urls: &[String],
) -> Vec<Option<f64>> {
    if scrape {
        metrics_scrape::scrape_all(client, urls).await
    } else {
        Vec::new()
    }
}

/// Spawns one worker per connection and the progress bar, and merges what
/// the workers recorded once the last one has finished (after `end`, when
/// its last request is answered).
async fn run_workers(opts: &LoadOpts, plan: &Arc<Plan>) -> anyhow::Result<WorkerStats> {
    let counters: Arc<Vec<PaddedCounter>> = Arc::new(
        (0..opts.connections)
            .map(|_| PaddedCounter::default())
            .collect(),
    );
    let workers: Vec<_> = (0..opts.connections)
        .map(|k| tokio::spawn(worker(k, Arc::clone(plan), Arc::clone(&counters))))
        .collect();
    let bar = progress::timed(opts.warmup + opts.duration, opts.progress);
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        Arc::clone(&counters),
        Arc::clone(plan),
    ));

    let mut total = WorkerStats::new(opts.rate.is_some());
    for w in workers {
        total.absorb(&w.await.context("a load worker panicked")?);
    }
    ticker.abort();
    bar.finish_and_clear();
    Ok(total)
}

/// The Postgres queries per instance over the window, from the counters
/// scraped (`before`, `after`) at its edges, set against the requests
/// recorded in it.
fn db_queries(
    metrics_urls: &[String],
    (before, after): (&[Option<f64>], &[Option<f64>]),
    total: &WorkerStats,
) -> DbQueries {
    let instances = metrics_urls
        .iter()
        .zip(before.iter().zip(after))
        .map(|(url, (before, after))| InstanceQueries {
            metrics_url: url.clone(),
            before: *before,
            after: *after,
        })
        .collect();
    DbQueries::new(
        instances,
        total.reads.requests + total.writes.requests,
        total.reads.requests,
    )
}

/// The report from what the workers recorded.
fn assemble(
    opts: &LoadOpts,
    ids: &[i64],
    (started_at, window): (String, Duration),
    total: WorkerStats,
    db_queries: Option<DbQueries>,
    client_cpu: CpuUsage,
) -> LoadReport {
    // Requests are selected by (intended) start within the window, so its
    // length is the exact denominator.
    let config = config(opts, ids, window);
    let window = window.as_secs_f64();
    let reads = total.reads.report(window);
    let writes = total.writes.report(window);
    LoadReport {
        schema_version: report::SCHEMA_VERSION,
        kind: "load".into(),
        label: opts.label.clone(),
        started_at,
        config,
        window_s: window,
        requests: reads.requests + writes.requests,
        ok: reads.ok + writes.ok,
        errors: reads.errors + writes.errors,
        throughput_rps: (reads.requests + writes.requests) as f64 / window,
        ok_rps: (reads.ok + writes.ok) as f64 / window,
        x_cache: total.x_cache,
        reads,
        writes,
        db_queries,
        client_cpu,
    }
}

fn validate(opts: &LoadOpts) -> anyhow::Result<()> {
    if opts.urls.is_empty() {
        bail!("give at least one --url");
    }
    if opts.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if let Some(rate) = opts.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of requests per second");
    }
    if !(0.0..=1.0).contains(&opts.write_ratio) {
        bail!("--write-ratio must be within 0..=1");
    }
    if opts.write_ratio > 0.0 && (opts.write_url.is_none() || opts.token.is_none()) {
        bail!("--write-ratio > 0 needs --write-url and --token");
    }
    if !opts.path_template.starts_with('/') {
        bail!("--path-template must start with /");
    }
    Ok(())
}

/// Parses URLs and headers and builds every request URI up front.
fn prepare(opts: &LoadOpts, ids: &[i64]) -> anyhow::Result<Targets> {
    let extra = opts
        .headers
        .iter()
        .map(|h| http::parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reads = opts
        .urls
        .iter()
        .map(|url| {
            let target = Target::parse(url)?;
            let uris = if opts.path_template.contains("{id}") {
                ids.iter()
                    .map(|id| target.uri(&opts.path_template.replace("{id}", &id.to_string())))
                    .collect::<anyhow::Result<_>>()?
            } else {
                vec![target.uri(&opts.path_template)?]
            };
            Ok(ReadTarget {
                headers: target.headers(&extra),
                uris,
                target,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let write = match (&opts.write_url, &opts.token) {
        (Some(url), Some(token)) if opts.write_ratio > 0.0 => {
            let target = Target::parse(url)?;
            let auth = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            let headers = target.headers(&[
                (header::AUTHORIZATION, auth),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/merge-patch+json"),
                ),
            ]);
            let uris = ids
                .iter()
                .map(|id| target.uri(&format!("/products/{id}")))
                .collect::<anyhow::Result<_>>()?;
            Some(WriteTarget {
                target,
                uris,
                headers,
            })
        }
        _ => None,
    };
    Ok(Targets { reads, write })
}

/// `<url>/metrics` for each distinct read URL.
fn metrics_urls(urls: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in urls {
        let m = format!("{}/metrics", url.trim_end_matches('/'));
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

fn config(opts: &LoadOpts, ids: &[i64], window: Duration) -> LoadConfig {
    LoadConfig {
        urls: opts.urls.clone(),
        header_names: opts
            .headers
            .iter()
            .map(|h| h.split(':').next().unwrap_or_default().trim().to_owned())
            .collect(),
        connections: opts.connections,
        rate: opts.rate,
        duration_s: window.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        path_template: opts.path_template.clone(),
        dist: opts.dist,
        keys: opts.keys.to_string(),
        key_count: ids.len(),
        write_ratio: opts.write_ratio,
        write_url: opts.write_url.clone(),
        timeout_s: opts.timeout.as_secs_f64(),
        seed: opts.seed,
        client_threads: tokio::runtime::Handle::current().metrics().num_workers(),
    }
}

/// One connection loop; returns what it recorded.
async fn worker(k: usize, plan: Arc<Plan>, counters: Arc<Vec<PaddedCounter>>) -> WorkerStats {
    // Distinct, reproducible streams per worker.
    let mut rng =
        SmallRng::seed_from_u64(plan.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut conns = Conns::new(k, &plan);
    let mut stats = WorkerStats::new(plan.rate.is_some());
    let mut n: u64 = 0;
    loop {
        let intended = match plan.rate {
            Some(rate) => {
                let due = plan.start
                    + Duration::from_secs_f64(
                        (k as f64 + n as f64 * plan.connections as f64) / rate,
                    );
                n += 1;
                if plan.end.passed(due) {
                    break;
                }
                // Behind schedule (backlog): send at once, no timer round trip.
                if due - TIMER_SLACK > Instant::now() {
                    plan.end.sleep_until(due - TIMER_SLACK).await;
                    if plan.end.passed(due) {
                        break;
                    }
                }
                due
            }
            None => {
                let now = Instant::now();
                if plan.end.passed(now) {
                    break;
                }
                now
            }
        };
        let key = plan.picker.pick(&mut rng);
        let is_write = plan.write_ratio > 0.0 && rng.random_bool(plan.write_ratio);
        let sent = Instant::now();
        let (conn, req) = conns.next_request(&plan, key, is_write, &mut rng);
        let result = conn.send(req, false).await;
        let done = Instant::now();
        if intended >= plan.measure_from {
            // Early wake-ups (see TIMER_SLACK) measure from the real send.
            let from = intended.min(sent);
            stats.record(is_write, &result, done - from, done - sent);
        }
        counters[k].0.fetch_add(1, Ordering::Relaxed);
        if result.as_ref().err() == Some(&ClientError::Connect) {
            tokio::time::sleep(CONNECT_BACKOFF).await;
        }
    }
    stats
}

/// One worker's connections: one per read URL and, when writes are mixed
/// in, one to write-api.
struct Conns {
    reads: Vec<Conn>,
    write: Option<Conn>,
    /// The read URL the next GET goes to.
    next_read: usize,
}

impl Conns {
    /// Connections for worker `k` (each opens on its first request).
    fn new(k: usize, plan: &Plan) -> Self {
        Self {
            reads: plan
                .reads
                .iter()
                .map(|r| Conn::new(&r.target, plan.timeout))
                .collect(),
            write: plan
                .write
                .as_ref()
                .map(|w| Conn::new(&w.target, plan.timeout)),
            // Start the rotation at a different URL per worker so the
            // instances are loaded evenly at every moment, not just on
            // average.
            next_read: k % plan.reads.len(),
        }
    }

    /// The request for `key` and the connection it goes out on: a PATCH
    /// with a random price when `is_write` (and writes are configured),
    /// else a GET on the next read URL of the rotation. Not async, so the
    /// hot loop keeps its one await per request.
    #[inline]
    fn next_request(
        &mut self,
        plan: &Plan,
        key: usize,
        is_write: bool,
        rng: &mut SmallRng,
    ) -> (&mut Conn, Request<Full<Bytes>>) {
        match (&plan.write, self.write.as_mut()) {
            (Some(target), Some(conn)) if is_write => {
                let body = Bytes::from(format!(
                    "{{\"price_cents\":{}}}",
                    rng.random_range(100..=1_000_000u64)
                ));
                let req = http::request(
                    Method::PATCH,
                    target.uris[key].clone(),
                    target.headers.clone(),
                    body,
                );
                (conn, req)
            }
            _ => {
                let i = self.next_read;
                self.next_read = (self.next_read + 1) % self.reads.len();
                let target = &plan.reads[i];
                let req = http::request(
                    Method::GET,
                    target.uri(key),
                    target.headers.clone(),
                    Bytes::new(),
                );
                (&mut self.reads[i], req)
            }
        }
    }
}

/// Updates the bar four times a second with the live request rate.
async fn show_progress(
    bar: indicatif::ProgressBar,
    counters: Arc<Vec<PaddedCounter>>,
    plan: Arc<Plan>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (plan.start, 0u64);
    loop {
        tick.tick().await;
        let now = Instant::now();
        // Not known yet (stop token): the window is still open.
        let end = plan.end.get().unwrap_or(now + Duration::from_secs(1));
        let done: u64 = counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
        last = (now, done);
        let phase = if now < plan.measure_from {
            "warm-up"
        } else if now < end {
            "measuring"
        } else {
            "draining"
        };
        bar.set_position(u64::try_from((now.min(end) - plan.start).as_millis()).unwrap_or(0));
        bar.set_message(format!("{phase}: {rate:.0} req/s, {done} requests"));
        if now >= end {
            bar.finish_and_clear();
            return;
        }
    }
}

struct WorkerStats {
    reads: OpStats,
    writes: OpStats,
    x_cache: XCache,
}

impl WorkerStats {
    fn new(open_loop: bool) -> Self {
        Self {
            reads: OpStats::new(open_loop),
            writes: OpStats::new(open_loop),
            x_cache: XCache::default(),
        }
    }

    fn record(
        &mut self,
        is_write: bool,
        result: &Result<http::Answer, ClientError>,
        latency: Duration,
        service: Duration,
    ) {
        if is_write {
            self.writes.record(result, latency, service);
        } else {
            if let Ok(answer) = result {
                self.x_cache.count(&answer.headers);
            }
            self.reads.record(result, latency, service);
        }
    }

    fn absorb(&mut self, o: &WorkerStats) {
        self.reads.absorb(&o.reads);
        self.writes.absorb(&o.writes);
        self.x_cache.add(&o.x_cache);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_deadline_is_fixed_by_the_first_to_see_the_stop() {
        let origin = Instant::now();
        let stop = CancellationToken::new();
        let deadline = Deadline::on_stop(origin, stop.clone());
        assert_eq!(deadline.get(), None);
        assert!(!deadline.passed(Instant::now()));
        stop.cancel();
        let end = deadline.reached().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(deadline.get(), Some(end));
        assert!(deadline.passed(Instant::now()) && !deadline.passed(origin));
        // A sleep past the end returns at once.
        tokio::time::timeout(
            Duration::from_secs(5),
            deadline.sleep_until(Instant::now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_fixed_deadline_is_known_from_the_start() {
        let origin = Instant::now();
        let deadline = Deadline::at(origin, origin + Duration::from_millis(20));
        assert_eq!(deadline.get(), Some(origin + Duration::from_millis(20)));
        assert_eq!(deadline.reached().await, origin + Duration::from_millis(20));
        assert!(deadline.passed(Instant::now()));
    }
}
