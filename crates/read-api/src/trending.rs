//! Background work for trending: flush batched view counts to Redis every
//! second, and roll the hour buckets up into the 24-hour top list (at most
//! every `read_api.trending_rollup_secs` across all instances, or at once
//! when a request found no top list).

use std::{sync::Arc, time::Duration};

use cache::{L2, ViewCounter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often views are flushed.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub struct Trending {
    pub redis: L2,
    pub views: Arc<ViewCounter>,
    /// Woken by a request that found no top list.
    pub nudge: Arc<Notify>,
    pub rollup_every: Duration,
}

impl Trending {
    /// Flushes views until `shutdown`, then once more.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.nudge.notified() => {}
                () = shutdown.cancelled() => {
                    self.flush().await;
                    return Ok(());
                }
            }
            self.flush().await;
            // Under the cross-instance lock: one roll-up per interval in all.
            if let Err(e) = self
                .redis
                .rollup_trending(unix_now(), Some(self.rollup_every))
                .await
            {
                tracing::debug!(error = %e, "trending roll-up skipped");
            }
        }
    }

    async fn flush(&self) {
        let counts = self.views.take();
        if counts.is_empty() {
            return;
        }
        let total: u64 = counts.values().sum();
        // Views are approximate by nature: when Redis is away they are
        // dropped rather than piled up in memory.
        match self.redis.add_views(&counts, unix_now()).await {
            Ok(()) => metrics::counter!("trending_views_flushed_total").increment(total),
            Err(_) => metrics::counter!("trending_views_dropped_total").increment(total),
        }
    }
}
