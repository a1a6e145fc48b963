//! The human-readable tables printed at the end of `load`, `freshness` and
//! `reprice`.

use std::fmt::{self, Display, Formatter};

use crate::{
    freshness::FreshnessReport,
    load::LoadReport,
    report::{LatencySummary, fmt_us, pct},
    reprice::{RepriceReport, RequestSummary},
    stats::{OpReport, XCache},
};

/// Column header for a latency row.
const LATENCY_HEADER: &str = "      p50       p90       p99     p99.9       max";

fn latency_cells(l: &LatencySummary) -> String {
    if l.count == 0 {
        return format!("{:>9} {:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-", "-");
    }
    format!(
        "{:>9} {:>9} {:>9} {:>9} {:>9}",
        fmt_us(l.p50),
        fmt_us(l.p90),
        fmt_us(l.p99),
        fmt_us(l.p99_9),
        fmt_us(l.max)
    )
}

/// `503 ×12, timeout ×3`, or `none`.
fn errors(op: &OpReport) -> String {
    let parts: Vec<String> = op
        .errors_by_status
        .iter()
        .map(|(status, n)| format!("{status} ×{n}"))
        .chain(
            op.connection_errors
                .iter()
                .map(|(kind, n)| format!("{kind} ×{n}")),
        )
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn x_cache(x: &XCache) -> String {
    let t = x.total();
    format!(
        "HIT-L1 {} · HIT-L2 {} · MISS {} · other {} · none {}  ({t} answers)",
        pct(x.hit_l1, t),
        pct(x.hit_l2, t),
        pct(x.miss, t),
        pct(x.other, t),
        pct(x.none, t)
    )
}

impl Display for LoadReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        load_heading(self, f)?;
        writeln!(f)?;
        load_ops(self, f)?;
        writeln!(f)?;
        load_notes(self, f)
    }
}

/// What ran: mode, window, and what was read and written.
fn load_heading(r: &LoadReport, f: &mut Formatter<'_>) -> fmt::Result {
    let c = &r.config;
    let mode = match c.rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".into(),
    };
    writeln!(
        f,
        "load \"{}\": {} connections, {mode}, {:.1} s measured after {:.1} s warm-up",
        r.label, c.connections, r.window_s, c.warmup_s
    )?;
    writeln!(
        f,
        "  reads  {} {} · {} over {} keys ({})",
        c.urls.join(", "),
        c.path_template,
        c.dist,
        c.key_count,
        c.keys
    )?;
    if let Some(url) = &c.write_url {
        writeln!(
            f,
            "  writes PATCH {url} · {:.2}% of operations",
            c.write_ratio * 100.0
        )?;
    }
    Ok(())
}

/// Counts, rate and latency per operation (writes only when there were
/// any), then the totals.
fn load_ops(r: &LoadReport, f: &mut Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "  {:<7} {:>10} {:>10} {:>8} {:>10} {LATENCY_HEADER}",
        "", "requests", "ok", "errors", "req/s"
    )?;
    for (name, op) in [("reads", &r.reads), ("writes", &r.writes)] {
        if op.requests == 0 && name == "writes" {
            continue;
        }
        writeln!(
            f,
            "  {name:<7} {:>10} {:>10} {:>8} {:>10.1} {}",
            op.requests,
            op.ok,
            op.errors,
            op.throughput_rps,
            latency_cells(&op.latency_us)
        )?;
        if let Some(service) = &op.service_time_us {
            writeln!(
                f,
                "  {:<7} {:>41} {}",
                "",
                "(service time)",
                latency_cells(service)
            )?;
        }
    }
    writeln!(
        f,
        "  {:<7} {:>10} {:>10} {:>8} {:>10.1}",
        "total", r.requests, r.ok, r.errors, r.throughput_rps
    )
}

/// Cache outcomes, errors, Postgres queries and the client's CPU.
fn load_notes(r: &LoadReport, f: &mut Formatter<'_>) -> fmt::Result {
    writeln!(f, "  X-Cache     {}", x_cache(&r.x_cache))?;
    writeln!(f, "  errors      reads: {}", errors(&r.reads))?;
    if r.writes.requests > 0 {
        writeln!(f, "              writes: {}", errors(&r.writes))?;
    }
    match &r.db_queries {
        Some(q) => match (q.total, q.per_1000_requests) {
            (Some(total), Some(per)) => writeln!(
                f,
                "  Postgres    {total:.0} queries: {per:.2} per 1000 requests ({:.2} per 1000 reads)",
                q.per_1000_reads.unwrap_or(0.0)
            )?,
            _ => writeln!(f, "  Postgres    not available (a /metrics scrape failed)")?,
        },
        None => writeln!(f, "  Postgres    not scraped")?,
    }
    writeln!(f, "  client CPU  {}", r.client_cpu)
}

impl Display for FreshnessReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        freshness_heading(self, f)?;
        writeln!(f)?;
        lag_table(self, f)?;
        freshness_notes(self, f)
    }
}

/// What ran, and how the writes went.
fn freshness_heading(r: &FreshnessReport, f: &mut Formatter<'_>) -> fmt::Result {
    let c = &r.config;
    writeln!(
        f,
        "freshness \"{}\": {} writes/s over {} products for {:.1} s, {} readers per instance and product",
        r.label,
        c.write_rate,
        c.product_ids.len(),
        r.window_s,
        c.readers_per_instance_and_product
    )?;
    let w = &r.writes;
    writeln!(
        f,
        "  writes    {} ok of {} (errors: {}), latency p50 {} p99 {}",
        w.ok,
        w.requests,
        errors(w),
        fmt_us(w.latency_us.p50),
        fmt_us(w.latency_us.p99)
    )
}

/// Lag, timeouts and the correctness counters per instance and over all,
/// then any instance's read errors.
fn lag_table(r: &FreshnessReport, f: &mut Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "  lag from write-api's 200 to the first read showing the version"
    )?;
    writeln!(
        f,
        "  {:<28} {:>8} {:>8} {LATENCY_HEADER} {:>7} {:>7} {:>9}",
        "instance", "seen", "timeout", "stale", "regress", "reads"
    )?;
    for i in &r.instances {
        writeln!(
            f,
            "  {:<28} {:>8} {:>8} {} {:>7} {:>7} {:>9}",
            i.url,
            i.observations,
            i.timeouts,
            latency_cells(&i.lag_us),
            i.stale_after_convergence,
            i.regressions,
            i.reads.requests
        )?;
    }
    writeln!(
        f,
        "  {:<28} {:>8} {:>8} {} {:>7} {:>7}",
        "all",
        r.observations,
        r.timeouts,
        latency_cells(&r.lag_us),
        r.stale_after_convergence,
        r.regressions
    )?;
    for i in &r.instances {
        if i.reads.errors > 0 {
            writeln!(f, "  read errors on {}: {}", i.url, errors(&i.reads))?;
        }
    }
    Ok(())
}

/// The background load, the client's CPU, and the verdict.
fn freshness_notes(r: &FreshnessReport, f: &mut Formatter<'_>) -> fmt::Result {
    if let Some(bg) = &r.background {
        writeln!(
            f,
            "  background  {:.0} req/s, read p99 {}, {} errors",
            bg.throughput_rps,
            fmt_us(bg.reads.latency_us.p99),
            bg.errors
        )?;
    }
    writeln!(f, "  client CPU  {}", r.client_cpu)?;
    let verdict = if r.stale_after_convergence == 0 && r.regressions == 0 {
        "OK: no stale read after convergence, no regression"
    } else {
        "FAILED: stale reads after convergence or regressions seen"
    };
    write!(f, "  {verdict}")?;
    if r.timeouts > 0 {
        write!(f, "; {} (write, instance) pairs timed out", r.timeouts)?;
    }
    writeln!(f)
}

impl Display for RepriceReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        reprice_apply(self, f)?;
        reprice_reads(self, f)?;
        reprice_verdict(self, f)
    }
}

/// `p50 1.20 ms, p99 3.40 ms, max 5.00 ms`.
fn ms_percentiles(p50_ms: f64, p99_ms: f64, max_ms: f64) -> String {
    let us = |ms: f64| fmt_us((ms * 1e3).round() as u64);
    format!("p50 {}, p99 {}, max {}", us(p50_ms), us(p99_ms), us(max_ms))
}

fn requests_line(r: &RequestSummary) -> String {
    format!(
        "{} requests ({:.1}/s), {}, {} errors",
        r.requests,
        r.rps,
        ms_percentiles(r.p50_ms, r.p99_ms, r.max_ms),
        r.errors
    )
}

/// What ran, and how the bulk requests went.
fn reprice_apply(r: &RepriceReport, f: &mut Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "reprice \"{}\": {} products in {} batches of {}, {} in flight{}, {} instance(s)",
        r.label,
        r.products,
        r.batches,
        r.batch_size,
        r.concurrency,
        r.rate
            .map(|rate| format!(", paced at {rate:.0} products/s"))
            .unwrap_or_default(),
        r.config.urls.len()
    )?;
    writeln!(
        f,
        "  apply      {} repriced in {:.2} s: {:.0} events/s",
        r.repriced, r.apply_s, r.events_per_s
    )?;
    writeln!(f, "  bulk       {}", requests_line(&r.bulk))?;
    if r.bulk.errors > 0 {
        writeln!(f, "             errors: {}", errors(&r.bulk_requests))?;
    }
    if let Some(first) = &r.bulk_first_error {
        writeln!(f, "             first error: {first}")?;
    }
    Ok(())
}

/// Freshness samples, the storefront load, and the convergence check.
fn reprice_reads(r: &RepriceReport, f: &mut Formatter<'_>) -> fmt::Result {
    let fr = &r.freshness;
    writeln!(
        f,
        "  freshness  {} samples, {} timeouts: {} (bulk 200 to the first read showing it)",
        fr.samples,
        fr.timeouts,
        ms_percentiles(fr.p50_ms, fr.p99_ms, fr.max_ms)
    )?;
    if fr.poll_errors > 0 {
        writeln!(
            f,
            "             {} of {} polls failed",
            fr.poll_errors, fr.polls
        )?;
    }
    match &r.reads_during_run {
        Some(reads) => writeln!(f, "  storefront {}", requests_line(reads))?,
        None => writeln!(f, "  storefront no background load")?,
    }
    writeln!(
        f,
        "  verified   {} reads (every repriced product on every instance): {} stale, {} errors",
        r.verified_reads, r.stale_after_convergence, r.verify_errors
    )?;
    for s in &r.stale_examples {
        writeln!(
            f,
            "             stale: {} product {} at version {}, acknowledged {}",
            s.url, s.id, s.seen, s.expected
        )?;
    }
    writeln!(f, "  client CPU {}", r.client_cpu)
}

fn reprice_verdict(r: &RepriceReport, f: &mut Formatter<'_>) -> fmt::Result {
    if r.failed_check() {
        writeln!(
            f,
            "  FAILED: {} stale after convergence, {} errors, {} samples timed out",
            r.stale_after_convergence, r.errors, r.freshness.timeouts
        )
    } else {
        writeln!(f, "  OK: every instance shows every new price, no errors")
    }
}
