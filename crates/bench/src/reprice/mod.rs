//! `reprice`: reprice a whole catalog through write-api's `PATCH
//! /products/bulk` while the storefront serves Zipf reads, and measure what
//! the storefront saw.
//!
//! 1. A background read load (the `load` workers, reads only, over the same
//!    ids and every instance) starts and warms up.
//! 2. The apply: the ids in batches, `concurrency` bulk requests in flight,
//!    each product a new price ([`new_price`]). Apply time is from the first
//!    request sent to the last 200 received.
//! 3. Meanwhile, as each batch's 200 arrives, a few of its products are
//!    polled on every instance until they show the version the 200 gave.
//!    The lag runs from the 200's arrival to the arrival of the first read
//!    showing it, so it includes one read round trip: an upper bound, as in
//!    `freshness`.
//! 4. Once the apply and the samples are done, the background load stops,
//!    and every repriced product is read once on every instance: a version
//!    below the acknowledged one is stale after convergence, and must not
//!    happen.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

mod apply;
mod observe;

pub use apply::new_price;
use apply::{Applied, Batches};
pub use observe::StaleRead;
use observe::{Instance, Samples, Sampling, Verified};

use crate::{
    cpu::{CpuSnapshot, CpuUsage},
    keys::Keys,
    load::{self, LoadOpts, LoadReport},
    progress,
    report::{self, LatencySummary},
    seed::MAX_BATCH,
    stats::OpReport,
};

/// What to reprice, and how to watch it.
#[derive(Debug, Clone)]
pub struct RepriceOpts {
    /// read-api base URLs: sampled, verified and loaded.
    pub urls: Vec<String>,
    /// write-api base URL.
    pub write_url: String,
    /// write-api bearer token.
    pub token: String,
    /// The products to reprice (all of them).
    pub keys: Keys,
    /// Items per bulk request (1..=1000).
    pub batch: usize,
    /// Bulk requests in flight.
    pub concurrency: usize,
    /// Products per second to pace the apply at (None: unpaced).
    pub rate: Option<f64>,
    /// Products of each batch polled on every instance after its 200.
    pub samples_per_batch: usize,
    /// Pause between polls of one sample (keeps the polling from
    /// competing with the storefront load it measures).
    pub poll_interval: Duration,
    /// A sample not converged this long after its 200 is a timeout.
    pub timeout: Duration,
    /// Per-request timeout of the sample and verification reads.
    pub request_timeout: Duration,
    /// Reads in flight during the convergence check, over all instances.
    pub verify_connections: usize,
    /// Picks the new prices (see [`new_price`]) and the sampled products.
    pub seed: u64,
    /// The storefront load, run until the apply and samples are done (its
    /// `duration` is not used; its warm-up precedes the apply).
    pub background: Option<LoadOpts>,
    pub label: String,
    pub progress: bool,
}

impl Default for RepriceOpts {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:8080".into()],
            write_url: "http://127.0.0.1:8081".into(),
            token: String::new(),
            keys: Keys::default(),
            batch: MAX_BATCH,
            concurrency: 2,
            rate: None,
            samples_per_batch: 4,
            poll_interval: Duration::from_millis(1),
            timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            verify_connections: 32,
            seed: default_seed(),
            background: None,
            label: "reprice".into(),
            progress: true,
        }
    }
}

/// A seed new with every run (the clock in ms), so each run changes every
/// price.
pub fn default_seed() -> u64 {
    chrono::Utc::now().timestamp_millis().unsigned_abs()
}

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepriceConfig {
    pub urls: Vec<String>,
    pub write_url: String,
    /// Where the ids came from.
    pub keys: String,
    pub samples_per_batch: usize,
    pub poll_interval_s: f64,
    pub timeout_s: f64,
    pub verify_connections: usize,
    pub seed: u64,
}

/// Request counts and latency of one kind of request, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSummary {
    pub requests: u64,
    /// `requests` per second of the window they ran in.
    pub rps: f64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl RequestSummary {
    fn new(op: &OpReport, window_s: f64) -> Self {
        let l = &op.latency_us;
        Self {
            requests: op.requests,
            rps: if window_s > 0.0 {
                op.requests as f64 / window_s
            } else {
                0.0
            },
            errors: op.errors,
            p50_ms: ms(l.p50),
            p99_ms: ms(l.p99),
            max_ms: ms(l.max),
        }
    }
}

/// How long repriced products took to show on the instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepriceFreshness {
    /// Converged (sample, instance) pairs.
    pub samples: u64,
    /// (sample, instance) pairs not converged within the timeout.
    pub timeouts: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Polling reads sent, and those without a successful answer.
    pub polls: u64,
    pub poll_errors: u64,
    /// The lag distribution, µs.
    pub lag_us: LatencySummary,
}

/// Everything a reprice run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepriceReport {
    pub schema_version: u32,
    /// Always `"reprice"`.
    pub kind: String,
    pub label: String,
    pub started_at: String,
    pub config: RepriceConfig,
    /// Products in the run (the ids given).
    pub products: u64,
    /// Products a 200 acknowledged.
    pub repriced: u64,
    /// Bulk requests the products were split into.
    pub batches: u64,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Products per second the apply was paced at (`null`: unpaced).
    #[serde(default)]
    pub rate: Option<f64>,
    /// First bulk request sent to the last 200 received, s.
    pub apply_s: f64,
    /// `repriced` per second of `apply_s`.
    pub events_per_s: f64,
    /// The bulk requests (`rps` over the time from the first sent to the
    /// last answered).
    pub bulk: RequestSummary,
    /// The bulk requests in full (errors by status, the latency histogram).
    pub bulk_requests: OpReport,
    /// Status and start of the body of the first failed bulk request.
    pub bulk_first_error: Option<String>,
    pub freshness: RepriceFreshness,
    /// The storefront load while repricing (`null` without one).
    pub reads_during_run: Option<RequestSummary>,
    /// Its whole report.
    pub background: Option<LoadReport>,
    /// Reads below the acknowledged version once everything was done.
    pub stale_after_convergence: u64,
    /// The first of them.
    pub stale_examples: Vec<StaleRead>,
    /// Reads of the convergence check (every repriced product on every
    /// instance), and those without a successful answer.
    pub verified_reads: u64,
    pub verify_errors: u64,
    /// Failed requests of every kind: bulk, polls, verification and
    /// background reads.
    pub errors: u64,
    /// The client's CPU from the first bulk request to the last sample.
    pub client_cpu: CpuUsage,
}

impl RepriceReport {
    /// What `--check` fails on: a stale read, a failed request, or a
    /// sample that never converged.
    pub fn failed_check(&self) -> bool {
        self.stale_after_convergence + self.errors + self.freshness.timeouts > 0
    }
}

/// Runs the scenario and returns its report.
pub async fn run(opts: RepriceOpts) -> anyhow::Result<RepriceReport> {
    validate(&opts)?;
    let ids = opts.keys.load()?;
    let batches = Arc::new(Batches::prepare(
        &opts.write_url,
        &opts.token,
        &ids,
        opts.batch,
        opts.seed,
    )?);
    let instances: Arc<[Instance]> = opts
        .urls
        .iter()
        .map(|url| Instance::new(url, opts.request_timeout))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into();
    let stop = CancellationToken::new();
    // However this function returns, the background load stops.
    let _stop_background = stop.clone().drop_guard();
    let started_at = report::now_rfc3339();

    let background = start_background(&opts, &stop).await;
    let (applied, samples, client_cpu) =
        apply_and_sample(&opts, &batches, &instances, ids.len()).await?;
    stop.cancel();
    let background = match background {
        Some(task) => Some(task.await.context("the background load panicked")??),
        None => None,
    };
    let items: Arc<[_]> = applied.items.clone().into();
    let bar = progress::bar(
        (items.len() * instances.len()) as u64,
        "reads",
        opts.progress,
    );
    let verified = observe::verify(instances, items, opts.verify_connections, bar.clone()).await?;
    bar.finish_and_clear();

    Ok(assemble(
        &opts,
        (ids.len(), batches.len()),
        Measured {
            started_at,
            applied,
            samples,
            background,
            verified,
            client_cpu,
        },
    ))
}

fn validate(opts: &RepriceOpts) -> anyhow::Result<()> {
    if opts.urls.is_empty() {
        bail!("give at least one --url");
    }
    if !(1..=MAX_BATCH).contains(&opts.batch) {
        bail!("--batch must be 1..={MAX_BATCH}, got {}", opts.batch);
    }
    if opts.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if opts.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of products per second");
    }
    if opts.timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    Ok(())
}

/// Starts the background load, if any, and waits out its warm-up, so the
/// apply meets the steady state.
async fn start_background(
    opts: &RepriceOpts,
    stop: &CancellationToken,
) -> Option<JoinHandle<anyhow::Result<LoadReport>>> {
    let bg = opts.background.clone()?;
    let warmup = bg.warmup;
    let task = tokio::spawn(load::run_until(bg, stop.clone()));
    tokio::time::sleep(warmup).await;
    Some(task)
}

/// Sends every batch while sampling each as it is acknowledged; returns
/// once both are done, with the client's CPU use over that time.
async fn apply_and_sample(
    opts: &RepriceOpts,
    batches: &Arc<Batches>,
    instances: &Arc<[Instance]>,
    products: usize,
) -> anyhow::Result<(Applied, Samples, CpuUsage)> {
    let cpu_before = CpuSnapshot::now();
    let (acks, acked) = mpsc::unbounded_channel();
    let sampler = tokio::spawn(observe::sample(
        Arc::clone(instances),
        acked,
        Sampling {
            per_batch: opts.samples_per_batch,
            poll_interval: opts.poll_interval,
            timeout: opts.timeout,
            seed: opts.seed,
        },
    ));
    let bar = progress::bar(products as u64, "products", opts.progress);
    // `apply` drops the last sender when it returns, which ends the sampler
    // once its samples are done.
    // Batch n starts no sooner than n × this after the first.
    let pace = opts
        .rate
        .map(|r| Duration::from_secs_f64(opts.batch as f64 / r));
    let applied = apply::apply(
        Arc::clone(batches),
        opts.concurrency,
        pace,
        acks,
        bar.clone(),
    )
    .await?;
    bar.finish_and_clear();
    let samples = sampler.await.context("the sampler panicked")??;
    Ok((applied, samples, cpu_before.until(&CpuSnapshot::now())))
}

/// The parts of the report measured by [`run`]'s steps.
struct Measured {
    started_at: String,
    applied: Applied,
    samples: Samples,
    background: Option<LoadReport>,
    verified: Verified,
    client_cpu: CpuUsage,
}

fn assemble(opts: &RepriceOpts, (products, batches): (usize, usize), m: Measured) -> RepriceReport {
    let apply_s = m.applied.elapsed.as_secs_f64();
    let repriced = m.applied.items.len() as u64;
    let bulk_requests = m.applied.requests.report(m.applied.span.as_secs_f64());
    let lag = LatencySummary::from_histogram(&m.samples.lag);
    let reads_during_run = m
        .background
        .as_ref()
        .map(|bg| RequestSummary::new(&bg.reads, bg.window_s));
    let background_errors = m.background.as_ref().map_or(0, |bg| bg.errors);
    RepriceReport {
        schema_version: report::SCHEMA_VERSION,
        kind: "reprice".into(),
        label: opts.label.clone(),
        started_at: m.started_at,
        config: RepriceConfig {
            urls: opts.urls.clone(),
            write_url: opts.write_url.clone(),
            keys: opts.keys.to_string(),
            samples_per_batch: opts.samples_per_batch,
            poll_interval_s: opts.poll_interval.as_secs_f64(),
            timeout_s: opts.timeout.as_secs_f64(),
            verify_connections: opts.verify_connections,
            seed: opts.seed,
        },
        products: products as u64,
        repriced,
        batches: batches as u64,
        batch_size: opts.batch,
        concurrency: opts.concurrency,
        rate: opts.rate,
        apply_s,
        events_per_s: if apply_s > 0.0 {
            repriced as f64 / apply_s
        } else {
            0.0
        },
        bulk: RequestSummary::new(&bulk_requests, m.applied.span.as_secs_f64()),
        errors: bulk_requests.errors
            + m.samples.poll_errors
            + m.verified.errors
            + background_errors,
        bulk_requests,
        bulk_first_error: m.applied.first_error,
        freshness: RepriceFreshness {
            samples: lag.count,
            timeouts: m.samples.timeouts,
            p50_ms: ms(lag.p50),
            p99_ms: ms(lag.p99),
            max_ms: ms(lag.max),
            polls: m.samples.polls,
            poll_errors: m.samples.poll_errors,
            lag_us: lag,
        },
        reads_during_run,
        background: m.background,
        stale_after_convergence: m.verified.stale,
        stale_examples: m.verified.stale_examples,
        verified_reads: m.verified.reads,
        verify_errors: m.verified.errors,
        client_cpu: m.client_cpu,
    }
}

/// µs → ms.
fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}
