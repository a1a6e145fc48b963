//! Counting answers: per-operation request and error counts, latency
//! histograms, and the `X-Cache` tier of read answers. Each worker owns its
//! own counters; they are merged once at the end.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};
use serde::{Deserialize, Serialize};

use crate::{
    http::{Answer, ClientError},
    report::{self, LatencySummary},
};

/// Results for one kind of operation (reads or writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// Requests started in the window (answered or not).
    pub requests: u64,
    /// Answered 2xx or 304.
    pub ok: u64,
    /// Everything else: `errors_by_status` plus `connection_errors`.
    pub errors: u64,
    /// `requests` per second of the window.
    pub throughput_rps: f64,
    /// Non-success answers by HTTP status.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests without an answer, by cause (`connect`, `timeout`, `io`).
    pub connection_errors: BTreeMap<String, u64>,
    /// Latency of successful requests, µs; from the intended send time in
    /// open-loop mode.
    pub latency_us: LatencySummary,
    /// Open loop only: from the actual send to the answer, µs.
    pub service_time_us: Option<LatencySummary>,
}

/// read-api's cache tier header.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// `X-Cache` of every read answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XCache {
    pub hit_l1: u64,
    pub hit_l2: u64,
    pub miss: u64,
    /// Some other value.
    pub other: u64,
    /// No `X-Cache` header.
    pub none: u64,
}

impl XCache {
    /// Counts one answer's tier.
    pub fn count(&mut self, headers: &HeaderMap) {
        match headers.get(X_CACHE).map(HeaderValue::as_bytes) {
            Some(b"HIT-L1") => self.hit_l1 += 1,
            Some(b"HIT-L2") => self.hit_l2 += 1,
            Some(b"MISS") => self.miss += 1,
            Some(_) => self.other += 1,
            None => self.none += 1,
        }
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, o: &XCache) {
        self.hit_l1 += o.hit_l1;
        self.hit_l2 += o.hit_l2;
        self.miss += o.miss;
        self.other += o.other;
        self.none += o.none;
    }

    /// All counted answers.
    pub fn total(&self) -> u64 {
        self.hit_l1 + self.hit_l2 + self.miss + self.other + self.none
    }
}

/// One operation kind's counts and histograms, per worker then merged.
pub struct OpStats {
    /// Requests recorded so far.
    pub requests: u64,
    ok: u64,
    by_status: BTreeMap<u16, u64>,
    by_client_error: BTreeMap<&'static str, u64>,
    latency: Histogram<u64>,
    service: Option<Histogram<u64>>,
}

impl OpStats {
    pub fn new(open_loop: bool) -> Self {
        Self {
            requests: 0,
            ok: 0,
            by_status: BTreeMap::new(),
            by_client_error: BTreeMap::new(),
            latency: report::histogram(),
            service: open_loop.then(report::histogram),
        }
    }

    pub fn record(
        &mut self,
        result: &Result<Answer, ClientError>,
        latency: Duration,
        service: Duration,
    ) {
        self.requests += 1;
        match result {
            Ok(answer) if answer.status.is_success() || answer.status.as_u16() == 304 => {
                self.ok += 1;
                report::record(&mut self.latency, latency);
                if let Some(h) = self.service.as_mut() {
                    report::record(h, service);
                }
            }
            Ok(answer) => *self.by_status.entry(answer.status.as_u16()).or_default() += 1,
            Err(e) => *self.by_client_error.entry(e.label()).or_default() += 1,
        }
    }

    pub fn absorb(&mut self, o: &OpStats) {
        self.requests += o.requests;
        self.ok += o.ok;
        for (k, v) in &o.by_status {
            *self.by_status.entry(*k).or_default() += v;
        }
        for (k, v) in &o.by_client_error {
            *self.by_client_error.entry(k).or_default() += v;
        }
        report::merge(&mut self.latency, &o.latency);
        if let (Some(a), Some(b)) = (self.service.as_mut(), o.service.as_ref()) {
            report::merge(a, b);
        }
    }

    pub fn report(&self, window_s: f64) -> OpReport {
        OpReport {
            requests: self.requests,
            ok: self.ok,
            errors: self.requests - self.ok,
            throughput_rps: self.requests as f64 / window_s,
            errors_by_status: self.by_status.clone(),
            connection_errors: self
                .by_client_error
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency_us: LatencySummary::from_histogram(&self.latency),
            service_time_us: self.service.as_ref().map(LatencySummary::from_histogram),
        }
    }
}
