//! Progress bars on stderr (hidden when asked, and by indicatif itself when
//! stderr is not a terminal, so logs of scripted runs stay clean).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `len` items of `unit`.
pub fn bar(len: u64, unit: &str, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target(visible));
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// A bar over a run of `total`, in milliseconds, whose message the caller
/// updates with live numbers.
pub fn timed(total: Duration, visible: bool) -> ProgressBar {
    let len = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(len), target(visible));
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {elapsed:>4}/{duration} {msg}") {
        bar.set_style(style);
    }
    bar
}

fn target(visible: bool) -> ProgressDrawTarget {
    if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
