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
use hyper::{
    HeaderMap, Method, Uri,
    header::{self, HeaderValue},
};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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
    /// Measured window.
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
    /// Length of the measured window, s (the nominal duration: requests
    /// count when their intended start falls inside it).
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
    end: Instant,
}

/// Per-worker request counter for the progress bar, alone on its cache
/// line so workers on different cores do not contend for it.
#[repr(align(64))]
#[derive(Default)]
struct PaddedCounter(AtomicU64);

/// Runs the load and returns its report (also printed by the CLI).
pub async fn run(opts: LoadOpts) -> anyhow::Result<LoadReport> {
    validate(&opts)?;
    let ids = opts.keys.load()?;
    let targets = prepare(&opts, &ids)?;
    let picker = KeyPicker::new(opts.dist, ids.len())?;
    let client = reqwest::Client::builder().timeout(opts.timeout).build()?;
    let metrics_urls = metrics_urls(&opts.urls);

    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let plan = Arc::new(Plan {
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
    });
    let started_at = report::now_rfc3339();

    // CPU snapshots exactly at the window's edges; the "before" scrape
    // right after the first one.
    let meter = {
        let (client, urls, scrape) = (client.clone(), metrics_urls.clone(), opts.scrape_metrics);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            let cpu_before = CpuSnapshot::now();
            let queries_before = if scrape {
                metrics_scrape::scrape_all(&client, &urls).await
            } else {
                Vec::new()
            };
            tokio::time::sleep_until(end).await;
            (cpu_before, CpuSnapshot::now(), queries_before)
        })
    };

    let counters: Arc<Vec<PaddedCounter>> = Arc::new(
        (0..opts.connections)
            .map(|_| PaddedCounter::default())
            .collect(),
    );
    let workers: Vec<_> = (0..opts.connections)
        .map(|k| tokio::spawn(worker(k, Arc::clone(&plan), Arc::clone(&counters))))
        .collect();
    let bar = progress::timed(opts.warmup + opts.duration, opts.progress);
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        Arc::clone(&counters),
        start,
        measure_from,
        end,
    ));

    let mut total = WorkerStats::new(opts.rate.is_some());
    for w in workers {
        total.absorb(&w.await.context("a load worker panicked")?);
    }
    ticker.abort();
    bar.finish_and_clear();
    let (cpu_before, cpu_after, queries_before) = meter.await.context("the meter task panicked")?;
    let queries_after = if opts.scrape_metrics {
        metrics_scrape::scrape_all(&client, &metrics_urls).await
    } else {
        Vec::new()
    };
    let client_cpu = cpu_before.until(&cpu_after);
    let db_queries = opts.scrape_metrics.then(|| {
        let instances = metrics_urls
            .iter()
            .zip(queries_before.iter().zip(&queries_after))
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
    });

    // Requests are selected by (intended) start within the window, so the
    // nominal duration is the exact denominator.
    let window = opts.duration.as_secs_f64();
    let reads = total.reads.report(window);
    let writes = total.writes.report(window);
    Ok(LoadReport {
        schema_version: report::SCHEMA_VERSION,
        kind: "load".into(),
        label: opts.label.clone(),
        started_at,
        config: config(&opts, &ids),
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
    })
}

fn validate(opts: &LoadOpts) -> anyhow::Result<()> {
    if opts.urls.is_empty() {
        bail!("give at least one --url");
    }
    if opts.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if opts.duration.is_zero() {
        bail!("--duration must be positive");
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

fn config(opts: &LoadOpts, ids: &[i64]) -> LoadConfig {
    LoadConfig {
        urls: opts.urls.clone(),
        header_names: opts
            .headers
            .iter()
            .map(|h| h.split(':').next().unwrap_or_default().trim().to_owned())
            .collect(),
        connections: opts.connections,
        rate: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
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
    let mut reads: Vec<Conn> = plan
        .reads
        .iter()
        .map(|r| Conn::new(&r.target, plan.timeout))
        .collect();
    let mut write = plan
        .write
        .as_ref()
        .map(|w| Conn::new(&w.target, plan.timeout));
    let mut stats = WorkerStats::new(plan.rate.is_some());
    // Start the rotation at a different URL per worker so the instances
    // are loaded evenly at every moment, not just on average.
    let mut next_read = k % plan.reads.len();
    let mut n: u64 = 0;
    loop {
        let intended = match plan.rate {
            Some(rate) => {
                let due = plan.start
                    + Duration::from_secs_f64(
                        (k as f64 + n as f64 * plan.connections as f64) / rate,
                    );
                n += 1;
                if due >= plan.end {
                    break;
                }
                // Behind schedule (backlog): send at once, no timer round trip.
                if due - TIMER_SLACK > Instant::now() {
                    tokio::time::sleep_until(due - TIMER_SLACK).await;
                }
                due
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
        };
        let key = plan.picker.pick(&mut rng);
        let is_write = plan.write_ratio > 0.0 && rng.random_bool(plan.write_ratio);
        let sent = Instant::now();
        let result = match (&plan.write, write.as_mut()) {
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
                conn.send(req, false).await
            }
            _ => {
                let i = next_read;
                next_read = (next_read + 1) % reads.len();
                let target = &plan.reads[i];
                let req = http::request(
                    Method::GET,
                    target.uri(key),
                    target.headers.clone(),
                    Bytes::new(),
                );
                reads[i].send(req, false).await
            }
        };
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

/// Updates the bar four times a second with the live request rate.
async fn show_progress(
    bar: indicatif::ProgressBar,
    counters: Arc<Vec<PaddedCounter>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (start, 0u64);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let done: u64 = counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
        last = (now, done);
        let phase = if now < measure_from {
            "warm-up"
        } else if now < end {
            "measuring"
        } else {
            "draining"
        };
        bar.set_position(u64::try_from((now.min(end) - start).as_millis()).unwrap_or(0));
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
