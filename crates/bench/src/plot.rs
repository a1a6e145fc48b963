//! SVG plots of the JSON reports (plotters' SVG backend: text is written as
//! `<text>` elements, so no font files or system libraries are needed).
//!
//! - [`latency`]: latency by percentile, one curve per scenario, on the
//!   HdrHistogram "nines" axis (0 %, 90 %, 99 %, 99.9 %, … equally spaced),
//!   log latency axis: the tail is where caches differ.
//! - [`freshness`]: the CDF of the write-to-visible lag, log lag axis, one
//!   curve per instance (one input) or per run (several inputs).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plotters::prelude::*;

use crate::{
    freshness::{CdfPoint, FreshnessReport},
    load::LoadReport,
    report::{self, PercentilePoint},
};

/// The rightmost point of the nines axis, where the maximum is drawn.
const MAX_NINES: f64 = 6.0;

/// Distinguishable line colours (Okabe–Ito, safe for colour blindness).
const COLORS: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

const SIZE: (u32, u32) = (960, 600);
const FONT: &str = "sans-serif";

/// Which operation of a load report to plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Reads,
    Writes,
}

/// One named curve: (x, y) points.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Plots latency percentile curves of `inputs` (load reports) into `out`.
pub fn latency(inputs: &[PathBuf], out: &Path, op: Op, title: Option<&str>) -> anyhow::Result<()> {
    let mut curves = Vec::new();
    for path in inputs {
        let r: LoadReport = report::read_json(path)?;
        let l = match op {
            Op::Reads => &r.reads.latency_us,
            Op::Writes => &r.writes.latency_us,
        };
        if l.percentiles.is_empty() {
            eprintln!(
                "warning: {} has no {op:?} latencies; skipped",
                path.display()
            );
            continue;
        }
        curves.push(Curve {
            name: format!("{} (p99 {})", r.label, report::fmt_us(l.p99)),
            points: nines_points(&l.percentiles),
        });
    }
    if curves.is_empty() {
        bail!("nothing to plot");
    }
    let default_title = match op {
        Op::Reads => "Read latency by percentile",
        Op::Writes => "Write latency by percentile",
    };
    let (y_min, y_max) = y_range(&curves);
    draw(out, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title.unwrap_or(default_title), (FONT, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..MAX_NINES, (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(7)
            .x_label_formatter(&|x| nines_label(*x))
            .y_label_formatter(&|y| format_ms(*y))
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .label_style((FONT, 15))
            .draw()?;
        draw_curves(&mut chart, &curves, SeriesLabelPosition::UpperLeft)
    })
    .with_context(|| format!("drawing {}", out.display()))
}

/// Plots the lag CDF of `inputs` (freshness reports) into `out`.
pub fn freshness(inputs: &[PathBuf], out: &Path, title: Option<&str>) -> anyhow::Result<()> {
    let mut curves = Vec::new();
    let reports = inputs
        .iter()
        .map(|p| report::read_json::<FreshnessReport>(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for r in &reports {
        // One run: a curve per instance. Several: a curve per run.
        let per_instance = reports.len() == 1 && r.instances.len() > 1;
        let lines: Vec<(&str, u64, &[CdfPoint])> = if per_instance {
            r.instances
                .iter()
                .map(|i| (i.url.as_str(), i.lag_us.p99, &i.lag_cdf[..]))
                .collect()
        } else {
            vec![(r.label.as_str(), r.lag_us.p99, &r.lag_cdf[..])]
        };
        for (name, p99, cdf) in lines {
            if cdf.is_empty() {
                continue;
            }
            // Start the curve at 0 just left of the first value.
            let first = (cdf[0].us.max(1) as f64 / 1000.0, 0.0);
            curves.push(Curve {
                name: format!("{name} (p99 {})", report::fmt_us(p99)),
                points: std::iter::once(first)
                    .chain(
                        cdf.iter()
                            .map(|p| (p.us.max(1) as f64 / 1000.0, p.fraction)),
                    )
                    .collect(),
            });
        }
    }
    if curves.is_empty() {
        bail!("no lag observations to plot");
    }
    let (x_min, x_max) = x_range(&curves);
    draw(out, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                title.unwrap_or("Freshness: write acknowledged → visible on read-api"),
                (FONT, 24),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d((x_min..x_max).log_scale(), 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format_ms(*x))
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .x_desc("lag (ms, log scale)")
            .y_desc("fraction of updates visible")
            .label_style((FONT, 15))
            .draw()?;
        draw_curves(&mut chart, &curves, SeriesLabelPosition::LowerRight)
    })
    .with_context(|| format!("drawing {}", out.display()))
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Creates the SVG at `out` (and its directory) and lets `body` draw.
fn draw(
    out: &Path,
    body: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> PlotResult,
) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    let result = root
        .fill(&WHITE)
        .map_err(|e| e.to_string())
        .and_then(|()| body(&root).map_err(|e| e.to_string()))
        .and_then(|()| root.present().map_err(|e| e.to_string()));
    result.map_err(anyhow::Error::msg)
}

fn draw_curves<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    curves: &[Curve],
    legend_at: SeriesLabelPosition,
) -> PlotResult
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(curve.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 15))
        .draw()?;
    Ok(())
}

/// Percentile p (%) → position on the nines axis: −log10(1 − p/100), so 90 %
/// is 1, 99 % is 2, …; the maximum (100 %) sits at [`MAX_NINES`].
fn nines(p: f64) -> f64 {
    let rest = 1.0 - p / 100.0;
    if rest <= 10f64.powf(-MAX_NINES) {
        MAX_NINES
    } else {
        (-rest.log10()).clamp(0.0, MAX_NINES)
    }
}

fn nines_points(percentiles: &[PercentilePoint]) -> Vec<(f64, f64)> {
    percentiles
        .iter()
        .map(|p| (nines(p.p), (p.us.max(1)) as f64 / 1000.0))
        .collect()
}

/// Tick label on the nines axis.
fn nines_label(x: f64) -> String {
    if x >= MAX_NINES - 1e-9 {
        return "max".into();
    }
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    // Enough decimals to tell 99.9 from 99.99.
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// `0.25` → `"0.25"`, `12` → `"12"`, `1500` → `"1500"`.
fn format_ms(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        let s = format!("{ms:.3}");
        s.trim_end_matches('0').to_owned()
    }
}

/// A log-axis range covering every y with some room.
fn y_range(curves: &[Curve]) -> (f64, f64) {
    padded_log_range(curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)))
}

fn x_range(curves: &[Curve]) -> (f64, f64) {
    padded_log_range(curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)))
}

fn padded_log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.001, 1.0);
    }
    (lo / 1.5, (hi * 1.5).max(lo * 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(0.0) - 0.0).abs() < 1e-9);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        assert_eq!(nines_label(MAX_NINES), "max");
    }

    #[test]
    fn ms_labels() {
        assert_eq!(format_ms(0.25), "0.25");
        assert_eq!(format_ms(2.5), "2.5");
        assert_eq!(format_ms(120.0), "120");
    }
}
