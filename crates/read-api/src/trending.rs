//! Background work for trending: flush batched view counts to Redis every
//! second, and roll the hour buckets up into the 24-hour top list.

use std::{sync::Arc, time::Duration};

use cache::{L2, ViewCounter};
use tokio_util::sync::CancellationToken;

/// How often views are flushed.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Flushes views until `shutdown`, then once more; recomputes the top list
/// at most every `rollup_every` across all instances.
pub async fn run(
    l2: L2,
    views: Arc<ViewCounter>,
    rollup_every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => {
                flush(&l2, &views).await;
                return;
            }
        }
        flush(&l2, &views).await;
        if let Err(e) = l2.rollup_trending(unix_now(), Some(rollup_every)).await {
            tracing::debug!(error = %e, "trending roll-up skipped");
        }
    }
}

async fn flush(l2: &L2, views: &ViewCounter) {
    let counts = views.take();
    if counts.is_empty() {
        return;
    }
    let total: u64 = counts.values().sum();
    // Views are approximate by nature: when Redis is away they are dropped
    // rather than piled up in memory.
    match l2.add_views(&counts, unix_now()).await {
        Ok(()) => metrics::counter!("trending_views_flushed_total").increment(total),
        Err(_) => metrics::counter!("trending_views_dropped_total").increment(total),
    }
}
