//! Pieces every report shares: latency histograms and their summaries, the
//! JSON file writer and a few number formatters for the tables.
//!
//! Latencies are recorded in microseconds into HDR histograms (3 significant
//! digits, up to one minute), so percentiles are exact to 0.1 % whatever the
//! spread, and per-task histograms merge without loss.

use std::{path::Path, time::Duration};

use anyhow::Context;
use base64::Engine;
use hdrhistogram::{
    Histogram,
    serialization::{Serializer, V2Serializer},
};
use serde::{Deserialize, Serialize};

/// The largest latency a histogram tracks exactly; longer ones saturate to
/// it (they are timeouts in all but name).
const MAX_TRACKABLE_US: u64 = 60_000_000;

/// Version of the JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// A fresh microsecond histogram.
pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; these bounds are always valid.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Records `elapsed` in microseconds (at least 1: the histogram's floor).
pub fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.max(1));
}

/// Adds `from` into `into`; both come from [`histogram`], so the ranges
/// always match.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// One point of a percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Percentile in 0..=100.
    pub p: f64,
    /// Latency at that percentile, µs.
    pub us: u64,
}

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of recorded samples.
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    /// The whole curve at fixed percentiles (0, 10, …, 90, 91, …, 99, 99.1,
    /// …, 99.999, 100), for plotting on a "nines" axis.
    pub percentiles: Vec<PercentilePoint>,
    /// The histogram itself, HdrHistogram V2 serialized and base64-encoded,
    /// so runs can be re-analysed or merged with any HdrHistogram tool.
    pub hdr: String,
}

impl LatencySummary {
    /// Summarises `h` (all zeros when it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let empty = h.is_empty();
        let at = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        Self {
            count: h.len(),
            min: if empty { 0 } else { h.min() },
            mean: if empty { 0.0 } else { h.mean() },
            stdev: if empty { 0.0 } else { h.stdev() },
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            max: if empty { 0 } else { h.max() },
            percentiles: if empty {
                Vec::new()
            } else {
                percentile_steps()
                    .into_iter()
                    .map(|p| PercentilePoint {
                        p,
                        us: at(p / 100.0),
                    })
                    .collect()
            },
            hdr: encode(h),
        }
    }
}

/// 0, 10, …, 80, then each further "nine" in ten steps: 90, 91, …, 98,
/// 99.0, 99.1, …, 99.98, 99.990, …, 99.9998, and 100 (the maximum).
pub fn percentile_steps() -> Vec<f64> {
    let mut steps: Vec<f64> = (0..9).map(|i| f64::from(i) * 10.0).collect();
    let (mut low, mut width) = (90.0, 10.0);
    for _ in 0..5 {
        for j in 0..9 {
            steps.push(round6(low + width * f64::from(j) / 10.0));
        }
        low += width * 0.9;
        width /= 10.0;
    }
    steps.push(100.0);
    steps
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2Serializer::new().serialize(h, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

/// Writes `value` as pretty JSON to `path`, creating parent directories.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Reads a JSON report written by [`write_json`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `1234` µs → `"1.23 ms"`; below a millisecond in µs, above a second in s.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// `n` of `total` as a percentage with one decimal (`"-"` when total is 0).
pub fn pct(n: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / total as f64)
    }
}

/// The current time as RFC 3339, for the `started_at` of reports.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::Deserializer;

    use super::*;

    #[test]
    fn steps_climb_through_the_nines() {
        let steps = percentile_steps();
        assert_eq!(steps.first(), Some(&0.0));
        assert_eq!(steps.last(), Some(&100.0));
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        for p in [50.0, 90.0, 99.0, 99.9, 99.99, 99.999] {
            assert!(steps.contains(&p), "{p} missing from {steps:?}");
        }
    }

    #[test]
    fn summary_matches_the_histogram_and_round_trips() {
        let mut h = histogram();
        for us in 1..=1000 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 1000);
        assert_eq!((s.min, s.max), (1, 1000));
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s.hdr)
            .unwrap();
        let back: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
        assert_eq!(back.len(), 1000);
    }

    #[test]
    fn empty_histograms_summarise_to_zeros() {
        let s = LatencySummary::from_histogram(&histogram());
        assert_eq!((s.count, s.p99, s.max), (0, 0, 0));
        assert!(s.percentiles.is_empty());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_us(250), "250 µs");
        assert_eq!(fmt_us(1_250), "1.25 ms");
        assert_eq!(fmt_us(2_500_000), "2.50 s");
        assert_eq!(pct(1, 3), "33.3%");
        assert_eq!(pct(1, 0), "-");
    }
}
