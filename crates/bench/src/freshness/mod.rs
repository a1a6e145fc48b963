//! `freshness`: how long after write-api acknowledges a change does every
//! read-api instance serve it, and does any instance ever go back in time?
//!
//! Writers PATCH a small set of products at a fixed rate. For each
//! (instance, product) pair, `readers` polling tasks with connections of
//! their own wait idle until a write to their product is acknowledged, then
//! GET it back to back until the instance shows a version at least as new,
//! then make a few more verification reads, then idle again (with one read
//! every `idle_poll`, which keeps checking and keeps connections warm).
//!
//! Per (write, instance) the lag is from the write's 200 arriving here to
//! the arrival of the first answer showing that version (so it includes one
//! read round trip: an upper bound). A write whose version no read shows
//! within `write_timeout` counts as a timeout.
//!
//! Two correctness counters, which must both be 0:
//! - regressions: one reader task seeing a lower version after a higher one;
//! - stale after convergence: any read on an instance, *sent after* some
//!   reader received version v from that instance, answering below v (this
//!   also catches one worker or connection lagging behind another).

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hyper::{
    HeaderMap, Uri,
    header::{self, HeaderName, HeaderValue},
};
use rand::{SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};
use tokio::{sync::Barrier, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

mod board;
mod tasks;

use board::Board;
use tasks::{Pacing, Reader, Writer};

use crate::{
    cpu::{CpuSnapshot, CpuUsage},
    http::{self, Conn, Target},
    keys::Keys,
    load::{self, LoadOpts, LoadReport},
    progress,
    report::{self, LatencySummary},
    stats::{OpReport, OpStats},
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FreshnessOpts {
    /// read-api base URLs; every one is polled.
    pub urls: Vec<String>,
    /// Extra headers on every read, as `Name: value`.
    pub headers: Vec<String>,
    /// write-api base URL.
    pub write_url: String,
    /// write-api bearer token.
    pub token: String,
    /// Writes per second over all writers.
    pub write_rate: f64,
    /// Concurrent writer tasks (a slow write does not delay the next).
    pub writers: usize,
    /// How long writes go on.
    pub duration: Duration,
    /// How many products (the first of `keys`) are written and polled.
    pub products: usize,
    pub keys: Keys,
    /// Polling tasks per (instance, product).
    pub readers: usize,
    /// Pause between polls while a write is pending (0: back to back).
    pub poll_interval: Duration,
    /// Reads right after convergence, to catch a flip back.
    pub verify_polls: u32,
    /// Read interval while nothing is pending.
    pub idle_poll: Duration,
    /// A write not visible on an instance after this is a timeout there.
    pub write_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Seeds the written prices.
    pub seed: u64,
    /// Background load run alongside (its `duration` is set to match).
    pub background: Option<LoadOpts>,
    pub label: String,
    pub progress: bool,
}

impl Default for FreshnessOpts {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:8080".into()],
            headers: Vec::new(),
            write_url: "http://127.0.0.1:8081".into(),
            token: String::new(),
            write_rate: 20.0,
            writers: 2,
            duration: Duration::from_secs(30),
            products: 50,
            keys: Keys::default(),
            readers: 2,
            poll_interval: Duration::ZERO,
            verify_polls: 3,
            idle_poll: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            seed: 1,
            background: None,
            label: "freshness".into(),
            progress: true,
        }
    }
}

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreshnessConfig {
    pub urls: Vec<String>,
    pub write_url: String,
    pub write_rate: f64,
    pub writers: usize,
    pub duration_s: f64,
    /// The product ids written and polled.
    pub product_ids: Vec<i64>,
    pub readers_per_instance_and_product: usize,
    pub poll_interval_s: f64,
    pub verify_polls: u32,
    pub idle_poll_s: f64,
    pub write_timeout_s: f64,
}

/// One instance's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceFreshness {
    pub url: String,
    /// (write, instance) pairs that became visible.
    pub observations: u64,
    /// Acknowledged writes this instance never showed within the timeout.
    pub timeouts: u64,
    /// Lag from write-api's 200 to the first answer showing the version, µs.
    pub lag_us: LatencySummary,
    /// The same lags as a CDF, one point per distinct recorded value.
    pub lag_cdf: Vec<CdfPoint>,
    pub stale_after_convergence: u64,
    /// Sum over this instance's reader tasks.
    pub regressions: u64,
    /// The polling reads (counts, errors, and their own latency).
    pub reads: OpReport,
}

/// One point of the lag CDF.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CdfPoint {
    pub us: u64,
    /// Fraction of observations with lag ≤ `us`.
    pub fraction: f64,
}

/// Everything a freshness run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreshnessReport {
    pub schema_version: u32,
    /// Always `"freshness"`.
    pub kind: String,
    pub label: String,
    pub started_at: String,
    pub config: FreshnessConfig,
    /// Length of the write phase, s.
    pub window_s: f64,
    /// The PATCHes (latency is write-api's answer time).
    pub writes: OpReport,
    /// Totals over instances.
    pub observations: u64,
    pub timeouts: u64,
    pub stale_after_convergence: u64,
    pub regressions: u64,
    /// Lag over all instances, µs.
    pub lag_us: LatencySummary,
    /// The lag distribution over all instances, point by recorded value.
    pub lag_cdf: Vec<CdfPoint>,
    pub instances: Vec<InstanceFreshness>,
    /// The background load's report, when one ran.
    pub background: Option<LoadReport>,
    pub client_cpu: CpuUsage,
}

/// Runs the measurement and returns its report.
pub async fn run(opts: FreshnessOpts) -> anyhow::Result<FreshnessReport> {
    validate(&opts)?;
    let targets = prepare(&opts)?;
    let board = Arc::new(Board::new(
        targets.instances.len(),
        targets.ids.len(),
        opts.write_timeout,
    ));
    let stop = CancellationToken::new();
    // However this function returns, the readers stop.
    let _stop_readers = stop.clone().drop_guard();
    let started_at = report::now_rfc3339();

    let readers = start_readers(&opts, &targets, &board, &stop).await?;
    let background = start_background(&opts).await;
    let (writes, client_cpu) = write_phase(&opts, &targets, &board).await?;
    // Readers finish what is pending (bounded by the write timeout).
    stop.cancel();
    let per_instance = collect_readers(readers, targets.instances.len()).await?;
    let background = match background {
        Some(task) => Some(task.await.context("the background load panicked")??),
        None => None,
    };

    Ok(assemble(
        &opts,
        &board,
        targets.ids,
        per_instance,
        writes.report(opts.duration.as_secs_f64()),
        Assembled {
            started_at,
            background,
            client_cpu,
        },
    ))
}

fn validate(opts: &FreshnessOpts) -> anyhow::Result<()> {
    if opts.urls.is_empty() {
        bail!("give at least one --url");
    }
    if !(opts.write_rate.is_finite() && opts.write_rate > 0.0) {
        bail!("--write-rate must be positive");
    }
    if opts.writers == 0 || opts.readers == 0 || opts.products == 0 {
        bail!("--writers, --readers and --products must be at least 1");
    }
    if opts.duration.is_zero() || opts.write_timeout.is_zero() {
        bail!("--duration and --write-timeout must be positive");
    }
    Ok(())
}

/// Every server and request part, parsed before any task starts.
struct Targets {
    /// The product ids written and polled (the first `products` keys).
    ids: Vec<i64>,
    /// The read-api instances, in `urls` order.
    instances: Vec<Target>,
    /// Extra headers on every read.
    extra: Vec<(HeaderName, HeaderValue)>,
    /// `/products/{id}` per product, in `ids` order.
    paths: Vec<String>,
    writer: Target,
    /// PATCH URI per product.
    write_uris: Vec<Uri>,
    /// `Host`, `Authorization` and `Content-Type`.
    write_headers: HeaderMap,
}

/// Loads the keys and parses URLs, headers and the token.
fn prepare(opts: &FreshnessOpts) -> anyhow::Result<Targets> {
    let all_ids = opts.keys.load()?;
    let ids: Vec<i64> = all_ids.iter().copied().take(opts.products).collect();
    let extra = opts
        .headers
        .iter()
        .map(|h| http::parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let instances = opts
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let writer = Target::parse(&opts.write_url)?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", opts.token))
        .context("the token is not a valid header value")?;
    let write_headers = writer.headers(&[
        (header::AUTHORIZATION, auth),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        ),
    ]);
    let paths: Vec<String> = ids.iter().map(|id| format!("/products/{id}")).collect();
    let write_uris = paths
        .iter()
        .map(|p| writer.uri(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Targets {
        ids,
        instances,
        extra,
        paths,
        writer,
        write_uris,
        write_headers,
    })
}

/// What a reader task hands back: (instance, read stats, regressions).
type ReaderTask = JoinHandle<(usize, OpStats, u64)>;

/// Spawns `readers` polling tasks per (instance, product) and returns once
/// every one has made its first read, so writes start against connected
/// readers that already know the current version.
async fn start_readers(
    opts: &FreshnessOpts,
    targets: &Targets,
    board: &Arc<Board>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<ReaderTask>> {
    let n_readers = targets.instances.len() * targets.paths.len() * opts.readers;
    let ready = Arc::new(Barrier::new(n_readers + 1));
    let pacing = Pacing {
        poll_interval: opts.poll_interval,
        verify_polls: opts.verify_polls,
        idle_poll: opts.idle_poll,
    };
    let mut readers = Vec::with_capacity(n_readers);
    for (i, target) in targets.instances.iter().enumerate() {
        let headers = target.headers(&targets.extra);
        for (p, path) in targets.paths.iter().enumerate() {
            let uri = target.uri(path)?;
            for _ in 0..opts.readers {
                let reader = Reader::new(
                    (i, p),
                    Conn::new(target, opts.request_timeout),
                    (uri.clone(), headers.clone()),
                    Arc::clone(board),
                    pacing,
                );
                readers.push(tokio::spawn(reader.run(Arc::clone(&ready), stop.clone())));
            }
        }
    }
    ready.wait().await;
    Ok(readers)
}

/// Starts the background load, if any, and waits out its warm-up, so
/// writes meet the steady state.
async fn start_background(opts: &FreshnessOpts) -> Option<JoinHandle<anyhow::Result<LoadReport>>> {
    let mut bg = opts.background.clone()?;
    bg.duration = opts.duration;
    bg.progress = false;
    let warmup = bg.warmup;
    let task = tokio::spawn(load::run(bg));
    tokio::time::sleep(warmup).await;
    Some(task)
}

/// The measured window: writers PATCH on schedule for `duration`. Returns
/// the writes' stats and the client's CPU use over the window.
async fn write_phase(
    opts: &FreshnessOpts,
    targets: &Targets,
    board: &Arc<Board>,
) -> anyhow::Result<(OpStats, CpuUsage)> {
    let start = Instant::now();
    let end = start + opts.duration;
    let cpu_before = CpuSnapshot::now();
    let bar = progress::timed(opts.duration, opts.progress);
    let ticker = tokio::spawn(show_progress(bar.clone(), Arc::clone(board), start, end));
    let writers = spawn_writers(opts, targets, board, start, end);
    let mut writes = OpStats::new(false);
    for w in writers {
        writes.absorb(&w.await.context("a writer panicked")?);
    }
    // The last write may end before the window does; the window is what
    // the CPU share is over.
    tokio::time::sleep_until(end).await;
    let cpu_after = CpuSnapshot::now();
    ticker.abort();
    bar.finish_and_clear();
    Ok((writes, cpu_before.until(&cpu_after)))
}

/// One task per writer, each taking its share of the `start..end` schedule
/// with a price stream of its own.
fn spawn_writers(
    opts: &FreshnessOpts,
    targets: &Targets,
    board: &Arc<Board>,
    start: Instant,
    end: Instant,
) -> Vec<JoinHandle<OpStats>> {
    (0..opts.writers)
        .map(|w| {
            tokio::spawn(
                Writer {
                    index: w,
                    count: opts.writers,
                    rate: opts.write_rate,
                    start,
                    end,
                    conn: Conn::new(&targets.writer, opts.request_timeout),
                    uris: targets.write_uris.clone(),
                    headers: targets.write_headers.clone(),
                    board: Arc::clone(board),
                    rng: SmallRng::seed_from_u64(opts.seed.wrapping_add(w as u64)),
                    stats: OpStats::new(false),
                }
                .run(),
            )
        })
        .collect()
}

/// Waits for every reader and sums their reads and regressions per instance.
async fn collect_readers(
    readers: Vec<ReaderTask>,
    instances: usize,
) -> anyhow::Result<Vec<(OpStats, u64)>> {
    let mut per_instance: Vec<(OpStats, u64)> =
        (0..instances).map(|_| (OpStats::new(false), 0)).collect();
    for r in readers {
        let (instance, stats, regressions) = r.await.context("a reader panicked")?;
        per_instance[instance].0.absorb(&stats);
        per_instance[instance].1 += regressions;
    }
    Ok(per_instance)
}

/// The parts of the report computed outside [`assemble`].
struct Assembled {
    started_at: String,
    background: Option<LoadReport>,
    client_cpu: CpuUsage,
}

fn assemble(
    opts: &FreshnessOpts,
    board: &Board,
    ids: Vec<i64>,
    per_instance: Vec<(OpStats, u64)>,
    writes: OpReport,
    rest: Assembled,
) -> FreshnessReport {
    let window = opts.duration.as_secs_f64();
    let mut all = report::histogram();
    let mut instances = Vec::new();
    for (i, (reads, regressions)) in per_instance.into_iter().enumerate() {
        let tally = board.tally(i);
        let mut lag = report::histogram();
        for us in &tally.lags {
            // 0 (already visible at the ack) lands in the 1 µs floor.
            lag.saturating_record((*us).max(1));
        }
        report::merge(&mut all, &lag);
        instances.push(InstanceFreshness {
            url: opts.urls[i].clone(),
            observations: lag.len(),
            timeouts: tally.timeouts,
            lag_us: LatencySummary::from_histogram(&lag),
            lag_cdf: cdf(&lag),
            stale_after_convergence: tally.stale,
            regressions,
            reads: reads.report(window),
        });
    }
    FreshnessReport {
        schema_version: report::SCHEMA_VERSION,
        kind: "freshness".into(),
        label: opts.label.clone(),
        started_at: rest.started_at,
        config: FreshnessConfig {
            urls: opts.urls.clone(),
            write_url: opts.write_url.clone(),
            write_rate: opts.write_rate,
            writers: opts.writers,
            duration_s: opts.duration.as_secs_f64(),
            product_ids: ids,
            readers_per_instance_and_product: opts.readers,
            poll_interval_s: opts.poll_interval.as_secs_f64(),
            verify_polls: opts.verify_polls,
            idle_poll_s: opts.idle_poll.as_secs_f64(),
            write_timeout_s: opts.write_timeout.as_secs_f64(),
        },
        window_s: window,
        writes,
        observations: instances.iter().map(|i| i.observations).sum(),
        timeouts: instances.iter().map(|i| i.timeouts).sum(),
        stale_after_convergence: instances.iter().map(|i| i.stale_after_convergence).sum(),
        regressions: instances.iter().map(|i| i.regressions).sum(),
        lag_us: LatencySummary::from_histogram(&all),
        lag_cdf: cdf(&all),
        instances,
        background: rest.background,
        client_cpu: rest.client_cpu,
    }
}

/// The step CDF of `h`, one point per distinct recorded value.
fn cdf(h: &Histogram<u64>) -> Vec<CdfPoint> {
    h.iter_recorded()
        .map(|v| CdfPoint {
            us: h.highest_equivalent(v.value_iterated_to()),
            fraction: v.quantile_iterated_to(),
        })
        .collect()
}

/// Updates the bar with writes acknowledged and lags observed so far.
async fn show_progress(
    bar: indicatif::ProgressBar,
    board: Arc<Board>,
    start: Instant,
    end: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        bar.set_position(u64::try_from((now.min(end) - start).as_millis()).unwrap_or(0));
        bar.set_message(format!("{} writes acknowledged", board.acked()));
    }
}
