//! Smoke test: every subcommand of catalog-bench, for a second or so each,
//! against services started in-process (write-api, read-api, invalidator) on
//! a tiny catalog. It checks that the
//! tool works and that its numbers add up, never how fast anything is.
//!
//! One test function on purpose: the services' metrics recorder is global
//! to the process, so parallel tests would blur the Postgres query counts
//! this test checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use actix_web::web::Data;
use bench::{
    freshness::{self, FreshnessOpts, FreshnessReport},
    keys::{Dist, Keys},
    load::{self, LoadOpts, LoadReport},
    plot, report,
    reprice::{self, RepriceOpts, RepriceReport},
    seed::{self, SeedOpts},
};
use service::Settings;
use test_support::Running;
use test_support::{ADMIN_TOKEN, TestEnv};

async fn start_write(settings: Settings) -> Running<Data<write_api::State>> {
    test_support::run(write_api::build, settings).await
}

/// Starts read-api and waits until its event subscription is up, so its L1
/// sees every change from then on.
async fn start_read(settings: Settings) -> Running<Data<read_api::AppState>> {
    let running = test_support::run(read_api::build, settings).await;
    test_support::until_subscribed(&running.base).await;
    running
}

/// Starts the invalidator and waits until it consumes.
async fn start_invalidator(settings: Settings) -> Running<()> {
    let running = test_support::run(invalidator::build, settings).await;
    test_support::until_ready("the invalidator", &running.base).await;
    running
}

fn auth_header() -> String {
    format!("Authorization: Bearer {ADMIN_TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_runs_against_a_tiny_catalog() {
    let env = TestEnv::new().await;
    let write = start_write(env.settings.clone()).await;
    let dir = std::env::temp_dir().join(format!("catalog-bench-{}", env.namespace));
    let ids_file = dir.join("ids.txt");

    let ids = seed_tiny_catalog(&write.base, &ids_file).await;
    let closed = closed_loop_with_writes(&write.base, &ids_file).await;
    let open = open_loop(&write.base, &ids).await;
    let fresh = freshness_against_write_api(&write.base, &ids).await;
    let read = start_read(env.settings.clone()).await;
    warm_every_product(&read.base, &ids).await;
    let cached = hot_key_through_read_api(&read.base, &ids).await;
    let _invalidator = start_invalidator(env.settings.clone()).await;
    let read2 = start_read(env.settings.clone()).await;
    let system = freshness_across_read_apis(&write.base, &[&read.base, &read2.base], &ids).await;
    let repriced = reprice_across_read_apis(&write.base, &[&read.base, &read2.base], &ids).await;

    // Reports survive the JSON round trip the plots rely on.
    let closed_json = dir.join("closed.json");
    let open_json = dir.join("open.json");
    let cached_json = dir.join("cached.json");
    let fresh_json = dir.join("freshness.json");
    report::write_json(&closed_json, &closed).unwrap();
    report::write_json(&open_json, &open).unwrap();
    report::write_json(&cached_json, &cached).unwrap();
    report::write_json(&fresh_json, &fresh).unwrap();
    let system_json = dir.join("system.json");
    report::write_json(&system_json, &system).unwrap();
    // (Floats may differ in the last digit after parsing; compare the rest.)
    let back: LoadReport = report::read_json(&closed_json).unwrap();
    assert_eq!(
        (
            &back.label,
            back.requests,
            &back.reads.latency_us.percentiles
        ),
        (
            &closed.label,
            closed.requests,
            &closed.reads.latency_us.percentiles
        )
    );
    assert_eq!(back.reads.latency_us.hdr, closed.reads.latency_us.hdr);
    assert_eq!(back.x_cache, closed.x_cache);
    let back: FreshnessReport = report::read_json(&fresh_json).unwrap();
    assert_eq!(back.lag_us.percentiles, fresh.lag_us.percentiles);
    assert_eq!(back.config, fresh.config);
    let reprice_json = dir.join("reprice.json");
    report::write_json(&reprice_json, &repriced).unwrap();
    let back: RepriceReport = report::read_json(&reprice_json).unwrap();
    assert_eq!(back.config, repriced.config);
    assert_eq!(back.freshness.lag_us.hdr, repriced.freshness.lag_us.hdr);
    assert_eq!(
        (back.kind.as_str(), back.repriced, back.verified_reads),
        ("reprice", repriced.repriced, repriced.verified_reads)
    );

    plots(
        &dir,
        &[closed_json, open_json, cached_json],
        &[fresh_json, system_json],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `seed`: 50 products in batches of 20, ids in product order.
async fn seed_tiny_catalog(write_url: &str, ids_file: &Path) -> Vec<i64> {
    let report = seed::run(SeedOpts {
        write_url: write_url.to_owned(),
        token: ADMIN_TOKEN.to_owned(),
        products: 50,
        batch: 20,
        concurrency: 2,
        ids_out: Some(ids_file.to_path_buf()),
        progress: false,
        ..SeedOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.created, 50);
    let mut distinct = report.ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 50);
    assert_eq!(
        Keys::File(ids_file.to_path_buf()).load().unwrap(),
        report.ids
    );
    report.ids
}

/// `load`, closed loop, reads of write-api's GET with 10 % PATCHes.
async fn closed_loop_with_writes(write_url: &str, ids_file: &Path) -> LoadReport {
    let report = load::run(LoadOpts {
        urls: vec![write_url.to_owned()],
        headers: vec![auth_header()],
        connections: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(300),
        keys: Keys::File(ids_file.to_path_buf()),
        dist: Dist::Zipf { s: 1.0 },
        write_ratio: 0.1,
        write_url: Some(write_url.to_owned()),
        token: Some(ADMIN_TOKEN.to_owned()),
        label: "write-api closed loop".into(),
        progress: false,
        ..LoadOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.reads.ok > 20 && report.writes.ok > 0, "{report}");
    assert_eq!(report.reads.latency_us.count, report.reads.ok);
    assert!(report.reads.service_time_us.is_none());
    // write-api sends no X-Cache header: every read answer counts as none.
    assert_eq!(report.x_cache.none, report.reads.requests);
    // Every read of write-api is a Postgres query (and every write more).
    let per_1000 = report
        .db_queries
        .as_ref()
        .unwrap()
        .per_1000_requests
        .unwrap();
    assert!(per_1000 >= 900.0, "{per_1000} queries per 1000 requests");
    assert!(report.client_cpu.percent_of_one_core > 0.0);
    report
}

/// `load`, open loop at 200 req/s: the rate is met and service time shows.
async fn open_loop(write_url: &str, ids: &[i64]) -> LoadReport {
    let report = load::run(LoadOpts {
        urls: vec![write_url.to_owned()],
        headers: vec![auth_header()],
        connections: 4,
        rate: Some(200.0),
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        keys: Keys::List(ids.to_vec()),
        dist: Dist::Uniform,
        label: "write-api at 200 req/s".into(),
        progress: false,
        ..LoadOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.errors, 0, "{report}");
    // Exactly the scheduled requests fall in the window.
    assert!(
        (195..=205).contains(&report.reads.requests),
        "{} requests",
        report.reads.requests
    );
    let service = report.reads.service_time_us.as_ref().unwrap();
    assert_eq!(service.count, report.reads.ok);
    // Measured from the intended send time, each request's latency is at
    // least its service time, so every percentile is too.
    let latency = &report.reads.latency_us;
    assert!(latency.p50 >= service.p50 && latency.p99 >= service.p99);
    report
}

/// `freshness` with write-api as the "instance": it reads the primary, so
/// every write is visible at once, and nothing is ever stale.
async fn freshness_against_write_api(write_url: &str, ids: &[i64]) -> FreshnessReport {
    let report = freshness::run(FreshnessOpts {
        urls: vec![write_url.to_owned()],
        headers: vec![auth_header()],
        write_url: write_url.to_owned(),
        token: ADMIN_TOKEN.to_owned(),
        write_rate: 20.0,
        duration: Duration::from_secs(1),
        products: 5,
        keys: Keys::List(ids.to_vec()),
        label: "freshness smoke".into(),
        progress: false,
        ..FreshnessOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.writes.errors, 0, "{report}");
    assert!((18..=20).contains(&report.writes.ok), "{report}");
    assert_eq!(report.observations, report.writes.ok, "{report}");
    assert_eq!(
        (
            report.timeouts,
            report.stale_after_convergence,
            report.regressions
        ),
        (0, 0, 0),
        "{report}"
    );
    assert!(report.lag_us.max < 1_000_000, "{report}");
    assert_eq!(report.lag_cdf.last().map(|p| p.fraction), Some(1.0));
    report
}

/// `warm` reads every product once; after it, every product is in L1.
async fn warm_every_product(read_url: &str, ids: &[i64]) {
    let report = bench::warm::run(bench::warm::WarmOpts {
        urls: vec![read_url.to_owned()],
        keys: Keys::List(ids.to_vec()),
        connections: 4,
        progress: false,
        ..bench::warm::WarmOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.requests, ids.len() as u64);
    assert_eq!((report.not_ok, report.errors), (0, 0));
    for id in ids {
        let res = reqwest::get(format!("{read_url}/products/{id}"))
            .await
            .unwrap();
        assert_eq!(
            res.headers()["x-cache"],
            "HIT-L1",
            "product {id} after warming"
        );
    }
}

/// `load` through read-api on one hot key: served from L1 after the first
/// miss, so X-Cache says HIT-L1 and Postgres is barely touched.
async fn hot_key_through_read_api(read_url: &str, ids: &[i64]) -> LoadReport {
    let report = load::run(LoadOpts {
        urls: vec![read_url.to_owned()],
        connections: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(300),
        keys: Keys::List(ids.to_vec()),
        dist: Dist::Hot,
        label: "read-api hot key".into(),
        progress: false,
        ..LoadOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(
        report.x_cache.hit_l1 * 10 >= report.reads.requests * 9,
        "{report}"
    );
    let per_1000 = report.db_queries.as_ref().unwrap().per_1000_reads.unwrap();
    // Loose: the in-process write-api's outbox relay polls Postgres too, and
    // its queries land in the same process-wide counter.
    assert!(
        per_1000 < 200.0,
        "{per_1000} queries per 1000 reads: {report}"
    );
    report
}

/// `freshness` for real: two read-api instances kept fresh by their event
/// subscriptions and the invalidator, under a little background load.
async fn freshness_across_read_apis(
    write_url: &str,
    read_urls: &[&str],
    ids: &[i64],
) -> FreshnessReport {
    let urls: Vec<String> = read_urls.iter().map(|u| (*u).to_owned()).collect();
    let report = freshness::run(FreshnessOpts {
        urls: urls.clone(),
        write_url: write_url.to_owned(),
        token: ADMIN_TOKEN.to_owned(),
        write_rate: 10.0,
        duration: Duration::from_millis(1500),
        products: 5,
        keys: Keys::List(ids.to_vec()),
        background: Some(LoadOpts {
            urls,
            connections: 2,
            warmup: Duration::from_millis(200),
            keys: Keys::List(ids.to_vec()),
            ..LoadOpts::default()
        }),
        label: "read-api freshness".into(),
        progress: false,
        ..FreshnessOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.writes.errors, 0, "{report}");
    assert_eq!(report.instances.len(), 2);
    assert_eq!(report.observations, 2 * report.writes.ok, "{report}");
    assert_eq!(
        (
            report.timeouts,
            report.stale_after_convergence,
            report.regressions
        ),
        (0, 0, 0),
        "{report}"
    );
    let background = report.background.as_ref().unwrap();
    assert!(
        background.reads.ok > 0 && background.errors == 0,
        "{report}"
    );
    report
}

/// `reprice`: every product gets a new price through bulk PATCHes, batch by
/// batch, while a background load reads; both read-api instances converge.
async fn reprice_across_read_apis(
    write_url: &str,
    read_urls: &[&str],
    ids: &[i64],
) -> RepriceReport {
    let urls: Vec<String> = read_urls.iter().map(|u| (*u).to_owned()).collect();
    let report = reprice::run(RepriceOpts {
        urls: urls.clone(),
        write_url: write_url.to_owned(),
        token: ADMIN_TOKEN.to_owned(),
        keys: Keys::List(ids.to_vec()),
        batch: 25,
        concurrency: 2,
        // Paced: the second batch of 25 starts 0.5 s after the first,
        // though two are allowed in flight.
        rate: Some(50.0),
        samples_per_batch: 4,
        background: Some(LoadOpts {
            urls: urls.clone(),
            connections: 2,
            warmup: Duration::from_millis(300),
            keys: Keys::List(ids.to_vec()),
            label: "reprice background".into(),
            ..LoadOpts::default()
        }),
        label: "reprice smoke".into(),
        progress: false,
        ..RepriceOpts::default()
    })
    .await
    .unwrap();
    println!("{report}");
    let n = ids.len() as u64;
    assert_eq!((report.products, report.repriced), (n, n), "{report}");
    assert_eq!((report.batches, report.bulk.requests), (2, 2), "{report}");
    assert_eq!(report.bulk_first_error, None, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    // 4 samples of each of 2 batches, on each of 2 instances.
    assert_eq!(
        report.freshness.samples + report.freshness.timeouts,
        2 * 4 * 2,
        "{report}"
    );
    assert_eq!(report.freshness.timeouts, 0, "{report}");
    assert_eq!(report.freshness.lag_us.count, report.freshness.samples);
    assert!(report.freshness.polls >= report.freshness.samples);
    assert_eq!(report.stale_after_convergence, 0, "{report}");
    assert!(report.stale_examples.is_empty());
    assert_eq!(report.verified_reads, 2 * n, "{report}");
    assert!(
        report.apply_s >= 0.5 && report.events_per_s > 0.0,
        "the pace holds the second batch back: {report}"
    );
    assert_eq!(report.rate, Some(50.0));
    let reads = report.reads_during_run.as_ref().unwrap();
    let background = report.background.as_ref().unwrap();
    assert!(reads.requests > 0 && reads.errors == 0, "{report}");
    assert_eq!(reads.requests, background.reads.requests);
    // The background ran until it was stopped, and says for how long.
    assert_eq!(background.config.duration_s, background.window_s);
    assert!(!report.failed_check());

    // Every instance serves every new price.
    for url in read_urls {
        for id in ids {
            let product: serde_json::Value = reqwest::get(format!("{url}/products/{id}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                product["price_cents"].as_i64(),
                Some(reprice::new_price(*id, report.config.seed)),
                "product {id} on {url}"
            );
        }
    }
    report
}

/// `plot` and `plot-freshness` write well-formed SVG naming each scenario.
fn plots(dir: &Path, load_reports: &[PathBuf], freshness_reports: &[PathBuf]) {
    let latency_svg = dir.join("latency.svg");
    plot::latency(load_reports, &latency_svg, plot::Op::Reads, None).unwrap();
    let text = std::fs::read_to_string(&latency_svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    for label in [
        "write-api closed loop",
        "write-api at 200 req/s",
        "read-api hot key",
    ] {
        assert!(text.contains(label), "{label} missing from the plot");
    }
    assert!(plot::latency(load_reports, &latency_svg, plot::Op::Writes, None).is_ok());

    let freshness_svg = dir.join("freshness.svg");
    plot::freshness(freshness_reports, &freshness_svg, None).unwrap();
    let text = std::fs::read_to_string(&freshness_svg).unwrap();
    roxmltree::Document::parse(&text).unwrap();
    assert!(text.contains("freshness smoke") && text.contains("read-api freshness"));
    // One report with several instances: a curve per instance.
    plot::freshness(&freshness_reports[1..], &freshness_svg, None).unwrap();
    let text = std::fs::read_to_string(&freshness_svg).unwrap();
    assert_eq!(text.matches("http://127.0.0.1:").count(), 2, "{text}");
}
