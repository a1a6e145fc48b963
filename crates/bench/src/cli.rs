//! The command line: argument definitions, their mapping onto the library's
//! options, and what each subcommand prints.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::{
    freshness::{self, FreshnessOpts},
    keys::{self, DistName, Keys},
    load::{self, LoadOpts},
    plot, report,
    reprice::{self, RepriceOpts},
    seed::{self, SeedOpts},
    warm::{self, WarmOpts},
};

/// Seeds a Catalog, loads it with HTTP traffic, measures cache freshness,
/// and plots the results.
#[derive(Debug, Parser)]
#[command(name = "catalog-bench", version, propagate_version = true)]
pub struct Cli {
    /// Tokio worker threads of the client (default: one per core). The
    /// client shares the machine with the services: fewer threads leave
    /// them more CPU.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create products through write-api's bulk endpoint and save their ids.
    Seed(SeedArgs),
    /// HTTP load against read-api instances, with an optional write mix.
    Load(LoadArgs),
    /// Time from write-api's 200 until each read-api instance shows the change.
    Freshness(FreshnessArgs),
    /// Reprice every product through bulk PATCHes under a storefront read
    /// load: apply rate, freshness, and a final read of everything.
    Reprice(RepriceArgs),
    /// Read every product once on every instance (steady-state caches).
    Warm(WarmArgs),
    /// Plot latency percentile curves from `load --json` reports (SVG).
    Plot(PlotArgs),
    /// Plot the lag CDF from `freshness --json` reports (SVG).
    PlotFreshness(PlotFreshnessArgs),
}

/// `10s`, `500ms`, `2m`, or a bare number of seconds (`0` allowed).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    if let Ok(secs) = raw.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(raw).map_err(|e| e.to_string())
}

/// Where product ids come from.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// File of product ids, one per line (as written by `seed`).
    #[arg(long, value_name = "FILE", default_value = ".bench/ids.txt")]
    pub ids: PathBuf,

    /// Use ids A..=B instead of a file (e.g. `1..=100000`).
    #[arg(long, value_name = "A..=B", conflicts_with = "ids")]
    pub id_range: Option<String>,
}

impl KeyArgs {
    fn keys(&self) -> anyhow::Result<Keys> {
        match &self.id_range {
            Some(range) => keys::parse_range(range),
            None => Ok(Keys::File(self.ids.clone())),
        }
    }
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// write-api base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8081")]
    pub write_url: String,

    /// Admin bearer token.
    #[arg(long, env = "CATALOG_BENCH_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Number of products to create.
    #[arg(long, value_name = "N")]
    pub products: u64,

    /// Products per bulk request (at most 1000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,

    /// Bulk requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Categories to spread products over (from a built-in list).
    #[arg(long, default_value_t = 20)]
    pub categories: usize,

    /// Fraction of products marked featured.
    #[arg(long, default_value_t = 0.05)]
    pub featured_ratio: f64,

    /// RNG seed: the same seed gives the same products.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// SKU prefix (SKUs are PREFIX-00000001, …); default: unique per run.
    #[arg(long)]
    pub sku_prefix: Option<String>,

    /// Where to write the created ids.
    #[arg(long, value_name = "FILE", default_value = ".bench/ids.txt")]
    pub ids_out: PathBuf,

    /// Also write the summary as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Read base URL; repeat for several instances (each gets every id).
    #[arg(long, value_name = "URL", required = true)]
    pub url: Vec<String>,

    #[command(flatten)]
    pub keys: KeyArgs,

    /// Read path; `{id}` becomes the product id.
    #[arg(long, default_value = "/products/{id}")]
    pub path_template: String,

    /// Requests in flight per URL.
    #[arg(long, short, default_value_t = 32)]
    pub connections: usize,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read base URL; repeat for several instances (requests rotate).
    #[arg(long, value_name = "URL", required = true)]
    pub url: Vec<String>,

    /// Extra header on every read, curl style (`-H 'Authorization: Bearer x'`).
    #[arg(long, short = 'H', value_name = "NAME: VALUE")]
    pub header: Vec<String>,

    /// Concurrent connections (one request in flight each).
    #[arg(long, short, default_value_t = 64)]
    pub connections: usize,

    /// Target total requests/s (open loop, latency from the intended send
    /// time); default: closed loop, as fast as answers come.
    #[arg(long, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,

    /// Measured duration.
    #[arg(long, short, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unrecorded warm-up before the measured window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Read path; `{id}` becomes the product id.
    #[arg(long, default_value = "/products/{id}")]
    pub path_template: String,

    /// Key distribution: one hot key, uniform, or Zipf (rank 1 = first id).
    #[arg(long, value_enum, default_value = "zipf")]
    pub dist: DistName,

    /// Zipf exponent s.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,

    #[command(flatten)]
    pub keys: KeyArgs,

    /// Fraction of operations that are PATCHes to write-api.
    #[arg(long, default_value_t = 0.0)]
    pub write_ratio: f64,

    /// write-api base URL (for --write-ratio).
    #[arg(long, value_name = "URL")]
    pub write_url: Option<String>,

    /// write-api admin token (for --write-ratio).
    #[arg(long, env = "CATALOG_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// RNG seed for key and operation draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Do not scrape /metrics (e.g. for a static-file server).
    #[arg(long)]
    pub no_metrics: bool,

    /// Scenario name in the report.
    #[arg(long, default_value = "load")]
    pub label: String,

    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FreshnessArgs {
    /// read-api base URL; repeat for every instance.
    #[arg(long, value_name = "URL", required = true)]
    pub url: Vec<String>,

    /// Extra header on every read, curl style.
    #[arg(long, short = 'H', value_name = "NAME: VALUE")]
    pub header: Vec<String>,

    /// write-api base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8081")]
    pub write_url: String,

    /// write-api admin token.
    #[arg(long, env = "CATALOG_BENCH_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Writes per second.
    #[arg(long, default_value_t = 20.0)]
    pub write_rate: f64,

    /// Concurrent writer tasks.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,

    /// How long writes go on.
    #[arg(long, short, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Products written and polled (the first ids of the id source).
    #[arg(long, default_value_t = 50)]
    pub products: usize,

    #[command(flatten)]
    pub keys: KeyArgs,

    /// Polling tasks (each with its own connection) per instance and product.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,

    /// Pause between polls while a write is pending (0: back to back).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Extra reads right after a write became visible, to catch a flip back.
    #[arg(long, default_value_t = 3)]
    pub verify_polls: u32,

    /// Read interval while nothing is pending (keeps checking for stale reads).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub idle_poll: Duration,

    /// A write not visible on an instance after this counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// RNG seed for the written prices (and the background load).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Background read load: connections (0: none). Uses every id of the
    /// id source, against the same --url instances.
    #[arg(long, default_value_t = 0)]
    pub background_connections: usize,

    /// Background load target rate (default: closed loop).
    #[arg(long, value_name = "REQ_PER_S")]
    pub background_rate: Option<f64>,

    /// Background key distribution.
    #[arg(long, value_enum, default_value = "zipf")]
    pub background_dist: DistName,

    /// Background Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    pub background_zipf_s: f64,

    /// Fraction of background operations that are PATCHes.
    #[arg(long, default_value_t = 0.0)]
    pub background_write_ratio: f64,

    /// Background warm-up before the writes start.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub background_warmup: Duration,

    /// Exit with status 3 if any stale read, regression or timeout was seen.
    #[arg(long)]
    pub check: bool,

    /// Scenario name in the report.
    #[arg(long, default_value = "freshness")]
    pub label: String,

    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RepriceArgs {
    /// read-api base URL; repeat for every instance (each is sampled,
    /// verified and loaded).
    #[arg(long, value_name = "URL", required = true)]
    pub url: Vec<String>,

    /// write-api base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8081")]
    pub write_url: String,

    /// write-api admin token.
    #[arg(long, env = "CATALOG_BENCH_TOKEN", hide_env_values = true)]
    pub token: String,

    /// The products to reprice: every id of the id source.
    #[command(flatten)]
    pub keys: KeyArgs,

    /// Items per PATCH /products/bulk (at most 1000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,

    /// Bulk requests in flight at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,

    /// Pace the apply at this many products per second: batch n starts no
    /// sooner than n × batch / rate after the first (default: as fast as
    /// the bulk requests go). A paced reprice leaves the storefront its
    /// share of a shared machine.
    #[arg(long, value_name = "ITEMS_PER_S")]
    pub rate: Option<f64>,

    /// Products of each batch polled on every instance after its 200.
    #[arg(long, default_value_t = 4)]
    pub samples_per_batch: usize,

    /// Pause between polls of one sample.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// A sample not visible on an instance after this counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// RNG seed for the new prices and the samples (default: the clock, so
    /// each run changes every price).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Background read load: connections (0: none). Reads every id of the
    /// id source, against the same --url instances, until the apply and
    /// the samples are done.
    #[arg(long, default_value_t = 32)]
    pub background_connections: usize,

    /// Background load target rate (default: closed loop).
    #[arg(long, value_name = "REQ_PER_S")]
    pub background_rate: Option<f64>,

    /// Background key distribution.
    #[arg(long, value_enum, default_value = "zipf")]
    pub background_dist: DistName,

    /// Background Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    pub background_zipf_s: f64,

    /// Background warm-up before the apply starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub background_warmup: Duration,

    /// Exit with status 3 if any read was stale after convergence, any
    /// request failed or any sample timed out.
    #[arg(long)]
    pub check: bool,

    /// Scenario name in the report.
    #[arg(long, default_value = "reprice")]
    pub label: String,

    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A `load --json` report; repeat for one curve per scenario.
    #[arg(long, value_name = "FILE", required = true)]
    pub input: Vec<PathBuf>,

    /// The SVG to write.
    #[arg(long, value_name = "FILE", default_value = "docs/bench/latency.svg")]
    pub out: PathBuf,

    /// Which latencies to plot.
    #[arg(long, value_enum, default_value = "reads")]
    pub op: plot::Op,

    /// Chart title.
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlotFreshnessArgs {
    /// A `freshness --json` report; repeat to compare runs.
    #[arg(long, value_name = "FILE", required = true)]
    pub input: Vec<PathBuf>,

    /// The SVG to write.
    #[arg(long, value_name = "FILE", default_value = "docs/bench/freshness.svg")]
    pub out: PathBuf,

    /// Chart title.
    #[arg(long)]
    pub title: Option<String>,
}

/// What the process should exit with after a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `freshness --check` saw stale reads, regressions or timeouts;
    /// `reprice --check` stale reads, errors or timeouts.
    CheckFailed,
}

/// Runs the parsed command, printing its results.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let progress = !cli.quiet;
    match cli.command {
        Command::Seed(a) => {
            let json = a.json.clone();
            let report = seed::run(seed_opts(a, progress)).await?;
            println!("{report}");
            if let Some(path) = json {
                report::write_json(&path, &report)?;
            }
        }
        Command::Load(a) => {
            let json = a.json.clone();
            let report = load::run(load_opts(a, progress)?).await?;
            println!("{report}");
            if let Some(path) = json {
                report::write_json(&path, &report)?;
                println!("report written to {}", path.display());
            }
        }
        Command::Freshness(a) => {
            let (json, check) = (a.json.clone(), a.check);
            let report = freshness::run(freshness_opts(a, progress)?).await?;
            println!("{report}");
            if let Some(path) = json {
                report::write_json(&path, &report)?;
                println!("report written to {}", path.display());
            }
            if check && report.stale_after_convergence + report.regressions + report.timeouts > 0 {
                return Ok(Outcome::CheckFailed);
            }
        }
        Command::Reprice(a) => {
            let (json, check) = (a.json.clone(), a.check);
            let report = reprice::run(reprice_opts(a, progress)?).await?;
            println!("{report}");
            if let Some(path) = json {
                report::write_json(&path, &report)?;
                println!("report written to {}", path.display());
            }
            if check && report.failed_check() {
                return Ok(Outcome::CheckFailed);
            }
        }
        Command::Warm(a) => {
            let report = warm::run(WarmOpts {
                urls: a.url,
                keys: a.keys.keys()?,
                path_template: a.path_template,
                connections: a.connections,
                progress,
                ..WarmOpts::default()
            })
            .await?;
            println!("{report}");
        }
        Command::Plot(a) => {
            plot::latency(&a.input, &a.out, a.op, a.title.as_deref())?;
            println!("wrote {}", a.out.display());
        }
        Command::PlotFreshness(a) => {
            plot::freshness(&a.input, &a.out, a.title.as_deref())?;
            println!("wrote {}", a.out.display());
        }
    }
    Ok(Outcome::Ok)
}

fn seed_opts(a: SeedArgs, progress: bool) -> SeedOpts {
    SeedOpts {
        write_url: a.write_url,
        token: a.token,
        products: a.products,
        batch: a.batch,
        concurrency: a.concurrency,
        categories: a.categories,
        featured_ratio: a.featured_ratio,
        seed: a.seed,
        sku_prefix: a.sku_prefix.unwrap_or_else(seed::default_sku_prefix),
        ids_out: Some(a.ids_out),
        progress,
    }
}

fn load_opts(a: LoadArgs, progress: bool) -> anyhow::Result<LoadOpts> {
    Ok(LoadOpts {
        urls: a.url,
        headers: a.header,
        connections: a.connections,
        rate: a.rate,
        duration: a.duration,
        warmup: a.warmup,
        path_template: a.path_template,
        dist: a.dist.with_s(a.zipf_s),
        keys: a.keys.keys()?,
        write_ratio: a.write_ratio,
        write_url: a.write_url,
        token: a.token,
        timeout: a.timeout,
        seed: a.seed,
        scrape_metrics: !a.no_metrics,
        label: a.label,
        progress,
    })
}

fn freshness_opts(a: FreshnessArgs, progress: bool) -> anyhow::Result<FreshnessOpts> {
    let keys = a.keys.keys()?;
    if a.background_connections == 0 && a.background_rate.is_some() {
        bail!("--background-rate needs --background-connections");
    }
    let background = (a.background_connections > 0).then(|| LoadOpts {
        urls: a.url.clone(),
        headers: a.header.clone(),
        connections: a.background_connections,
        rate: a.background_rate,
        duration: a.duration,
        warmup: a.background_warmup,
        dist: a.background_dist.with_s(a.background_zipf_s),
        keys: keys.clone(),
        write_ratio: a.background_write_ratio,
        write_url: Some(a.write_url.clone()),
        token: Some(a.token.clone()),
        timeout: a.timeout,
        seed: a.seed,
        label: format!("{} background", a.label),
        progress: false,
        ..LoadOpts::default()
    });
    Ok(FreshnessOpts {
        urls: a.url,
        headers: a.header,
        write_url: a.write_url,
        token: a.token,
        write_rate: a.write_rate,
        writers: a.writers,
        duration: a.duration,
        products: a.products,
        keys,
        readers: a.readers,
        poll_interval: a.poll_interval,
        verify_polls: a.verify_polls,
        idle_poll: a.idle_poll,
        write_timeout: a.write_timeout,
        request_timeout: a.timeout,
        seed: a.seed,
        background,
        label: a.label,
        progress,
    })
}

fn reprice_opts(a: RepriceArgs, progress: bool) -> anyhow::Result<RepriceOpts> {
    let keys = a.keys.keys()?;
    if a.background_connections == 0 && a.background_rate.is_some() {
        bail!("--background-rate needs --background-connections");
    }
    let seed = a.seed.unwrap_or_else(reprice::default_seed);
    let background = (a.background_connections > 0).then(|| LoadOpts {
        urls: a.url.clone(),
        connections: a.background_connections,
        rate: a.background_rate,
        warmup: a.background_warmup,
        dist: a.background_dist.with_s(a.background_zipf_s),
        keys: keys.clone(),
        seed,
        label: format!("{} background", a.label),
        progress: false,
        ..LoadOpts::default()
    });
    Ok(RepriceOpts {
        urls: a.url,
        write_url: a.write_url,
        token: a.token,
        keys,
        batch: a.batch,
        concurrency: a.concurrency,
        rate: a.rate,
        samples_per_batch: a.samples_per_batch,
        poll_interval: a.poll_interval,
        timeout: a.timeout,
        seed,
        background,
        label: a.label,
        progress,
        ..RepriceOpts::default()
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn load_arguments_map_onto_options() {
        let cli = Cli::parse_from([
            "catalog-bench",
            "load",
            "--url",
            "http://a:1",
            "--url",
            "http://b:2",
            "-c",
            "8",
            "--rate",
            "1000",
            "-d",
            "3s",
            "--dist",
            "hot",
            "--id-range",
            "1..=10",
            "-H",
            "X-Test: 1",
            "--write-ratio",
            "0.1",
            "--write-url",
            "http://w:3",
            "--token",
            "t",
        ]);
        let Command::Load(args) = cli.command else {
            panic!("not load");
        };
        let opts = load_opts(args, false).unwrap();
        assert_eq!(opts.urls.len(), 2);
        assert_eq!(opts.connections, 8);
        assert_eq!(opts.rate, Some(1000.0));
        assert_eq!(opts.duration, Duration::from_secs(3));
        assert_eq!(opts.keys, Keys::Range { first: 1, last: 10 });
        assert_eq!(opts.headers, vec!["X-Test: 1".to_owned()]);
        assert_eq!(opts.token.as_deref(), Some("t"));
    }

    #[test]
    fn reprice_arguments_map_onto_options() {
        let cli = Cli::parse_from([
            "catalog-bench",
            "reprice",
            "--url",
            "http://a:1",
            "--url",
            "http://b:2",
            "--token",
            "t",
            "--id-range",
            "1..=100",
            "--batch",
            "25",
            "--seed",
            "9",
            "--background-rate",
            "500",
        ]);
        let Command::Reprice(args) = cli.command else {
            panic!("not reprice");
        };
        let opts = reprice_opts(args, false).unwrap();
        assert_eq!(
            (opts.batch, opts.concurrency, opts.samples_per_batch),
            (25, 2, 4)
        );
        assert_eq!(opts.timeout, Duration::from_secs(10));
        assert_eq!(
            opts.keys,
            Keys::Range {
                first: 1,
                last: 100
            }
        );
        let bg = opts.background.unwrap();
        assert_eq!((bg.connections, bg.rate, bg.seed), (32, Some(500.0), 9));
        assert_eq!(bg.urls, opts.urls);
        assert_eq!(bg.write_ratio, 0.0);
        assert_eq!(bg.dist, keys::Dist::Zipf { s: 1.0 });

        let cli = Cli::parse_from([
            "catalog-bench",
            "reprice",
            "--url",
            "http://a:1",
            "--token",
            "t",
            "--background-connections",
            "0",
        ]);
        let Command::Reprice(args) = cli.command else {
            panic!("not reprice");
        };
        assert!(reprice_opts(args, false).unwrap().background.is_none());
    }
}
