//! The human-readable tables printed at the end of `load` and `freshness`.

use std::fmt::{self, Display, Formatter};

use crate::{
    freshness::FreshnessReport,
    load::LoadReport,
    report::{LatencySummary, fmt_us, pct},
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
        let c = &self.config;
        let mode = match c.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".into(),
        };
        writeln!(
            f,
            "load \"{}\": {} connections, {mode}, {:.1} s measured after {:.1} s warm-up",
            self.label, c.connections, self.window_s, c.warmup_s
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
        writeln!(f)?;
        writeln!(
            f,
            "  {:<7} {:>10} {:>10} {:>8} {:>10} {LATENCY_HEADER}",
            "", "requests", "ok", "errors", "req/s"
        )?;
        for (name, op) in [("reads", &self.reads), ("writes", &self.writes)] {
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
            "total", self.requests, self.ok, self.errors, self.throughput_rps
        )?;
        writeln!(f)?;
        writeln!(f, "  X-Cache     {}", x_cache(&self.x_cache))?;
        writeln!(f, "  errors      reads: {}", errors(&self.reads))?;
        if self.writes.requests > 0 {
            writeln!(f, "              writes: {}", errors(&self.writes))?;
        }
        match &self.db_queries {
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
        writeln!(f, "  client CPU  {}", self.client_cpu)
    }
}

impl Display for FreshnessReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "freshness \"{}\": {} writes/s over {} products for {:.1} s, {} readers per instance and product",
            self.label,
            c.write_rate,
            c.product_ids.len(),
            self.window_s,
            c.readers_per_instance_and_product
        )?;
        let w = &self.writes;
        writeln!(
            f,
            "  writes    {} ok of {} (errors: {}), latency p50 {} p99 {}",
            w.ok,
            w.requests,
            errors(w),
            fmt_us(w.latency_us.p50),
            fmt_us(w.latency_us.p99)
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "  lag from write-api's 200 to the first read showing the version"
        )?;
        writeln!(
            f,
            "  {:<28} {:>8} {:>8} {LATENCY_HEADER} {:>7} {:>7} {:>9}",
            "instance", "seen", "timeout", "stale", "regress", "reads"
        )?;
        for i in &self.instances {
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
            self.observations,
            self.timeouts,
            latency_cells(&self.lag_us),
            self.stale_after_convergence,
            self.regressions
        )?;
        for i in &self.instances {
            if i.reads.errors > 0 {
                writeln!(f, "  read errors on {}: {}", i.url, errors(&i.reads))?;
            }
        }
        if let Some(bg) = &self.background {
            writeln!(
                f,
                "  background  {:.0} req/s, read p99 {}, {} errors",
                bg.throughput_rps,
                fmt_us(bg.reads.latency_us.p99),
                bg.errors
            )?;
        }
        writeln!(f, "  client CPU  {}", self.client_cpu)?;
        let verdict = if self.stale_after_convergence == 0 && self.regressions == 0 {
            "OK: no stale read after convergence, no regression"
        } else {
            "FAILED: stale reads after convergence or regressions seen"
        };
        write!(f, "  {verdict}")?;
        if self.timeouts > 0 {
            write!(f, "; {} (write, instance) pairs timed out", self.timeouts)?;
        }
        writeln!(f)
    }
}
