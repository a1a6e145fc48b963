//! `warm`: reads every product once on every read-api instance, so a run
//! that follows measures the steady state of a deployment that has been
//! serving for a while (at the benchmark's rates every key is read far more
//! often than the cache TTL), not the first touch of each key.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hyper::Method;
use serde::Serialize;

use crate::{
    http::{self, Conn, Target},
    keys::Keys,
    progress,
};

/// What to warm.
#[derive(Debug, Clone)]
pub struct WarmOpts {
    /// read-api base URLs: each is warmed with every id.
    pub urls: Vec<String>,
    pub keys: Keys,
    /// Read path; `{id}` becomes the product id.
    pub path_template: String,
    /// Requests in flight per URL.
    pub connections: usize,
    pub timeout: Duration,
    pub progress: bool,
}

impl Default for WarmOpts {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            keys: Keys::File(".bench/ids.txt".into()),
            path_template: "/products/{id}".into(),
            connections: 32,
            timeout: Duration::from_secs(5),
            progress: true,
        }
    }
}

/// What warming did.
#[derive(Debug, Clone, Serialize)]
pub struct WarmReport {
    pub requests: u64,
    /// Answers other than 200 (a 404 is cached too, but worth knowing).
    pub not_ok: u64,
    pub errors: u64,
    pub elapsed_s: f64,
}

impl std::fmt::Display for WarmReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "warmed: {} requests in {:.1} s ({:.0}/s), {} not 200, {} errors",
            self.requests,
            self.elapsed_s,
            self.requests as f64 / self.elapsed_s.max(1e-9),
            self.not_ok,
            self.errors
        )
    }
}

/// Reads every id once on every URL.
pub async fn run(opts: WarmOpts) -> anyhow::Result<WarmReport> {
    anyhow::ensure!(!opts.urls.is_empty(), "warm needs at least one --url");
    let ids = Arc::new(opts.keys.load()?);
    let bar = progress::bar(
        (ids.len() * opts.urls.len()) as u64,
        "requests",
        opts.progress,
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for url in &opts.urls {
        let target = Arc::new(Target::parse(url)?);
        // One shared cursor per URL: the connections split the ids.
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..opts.connections.max(1) {
            let (target, next, ids, bar) = (
                Arc::clone(&target),
                Arc::clone(&next),
                Arc::clone(&ids),
                bar.clone(),
            );
            let (template, timeout) = (opts.path_template.clone(), opts.timeout);
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::new(&target, timeout);
                let headers = target.headers(&[]);
                let (mut requests, mut not_ok, mut errors) = (0_u64, 0_u64, 0_u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let uri = target.uri(&template.replace("{id}", &id.to_string()))?;
                    let answer = conn
                        .send_idempotent(
                            || {
                                http::request(
                                    Method::GET,
                                    uri.clone(),
                                    headers.clone(),
                                    bytes::Bytes::new(),
                                )
                            },
                            false,
                        )
                        .await;
                    requests += 1;
                    match answer {
                        Ok(a) if a.status.as_u16() == 200 => {}
                        Ok(_) => not_ok += 1,
                        Err(_) => errors += 1,
                    }
                    bar.inc(1);
                }
                anyhow::Ok((requests, not_ok, errors))
            }));
        }
    }
    let mut report = WarmReport {
        requests: 0,
        not_ok: 0,
        errors: 0,
        elapsed_s: 0.0,
    };
    for task in tasks {
        let (requests, not_ok, errors) = task.await??;
        report.requests += requests;
        report.not_ok += not_ok;
        report.errors += errors;
    }
    bar.finish_and_clear();
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}
