//! A circuit breaker for Redis: after `threshold` consecutive failures it
//! opens and callers skip Redis at once (no waiting on a dead server); after
//! `cooldown` it lets one probe through, and closes again if it succeeds.
//!
//! Time is tokio's clock (the real one outside tests), so tests move it
//! forward instead of sleeping.

use std::{
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

/// Breaker state, as exported in metrics: 0 closed, 1 open, 2 half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    /// Reference point for `open_until`.
    epoch: Instant,
    failures: AtomicU32,
    /// Micros since `epoch` until which the breaker is open; 0 when closed.
    open_until: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    /// Metric label distinguishing breakers in one process.
    name: &'static str,
}

impl Breaker {
    pub fn new(name: &'static str, threshold: u32, cooldown: Duration) -> Self {
        let b = Self {
            threshold: threshold.max(1),
            cooldown,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            name,
        };
        b.publish(BreakerState::Closed);
        b
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn state(&self) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if self.now() < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to Redis now. In half-open state exactly one
    /// caller gets `true` (the probe) until it reports back.
    pub fn allow(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let probe = self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if probe {
                    self.publish(BreakerState::HalfOpen);
                }
                probe
            }
        }
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(breaker = self.name, "redis is back; circuit closed");
            self.publish(BreakerState::Closed);
        }
        self.probing.store(false, Ordering::Release);
    }

    pub fn failure(&self) {
        let reopen = self.probing.swap(false, Ordering::AcqRel);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if reopen || (failures >= self.threshold && self.open_until.load(Ordering::Acquire) == 0) {
            let until = self.now() + u64::try_from(self.cooldown.as_micros()).unwrap_or(u64::MAX);
            self.open_until.store(until.max(1), Ordering::Release);
            if !reopen {
                tracing::warn!(breaker = self.name, failures, "redis failing; circuit open");
            }
            self.publish(BreakerState::Open);
        }
    }

    /// Opens at once, whatever the count: the caller knows the backend is
    /// unfit (a replica lagging beyond its bound).
    pub fn trip(&self) {
        let until = self.now() + u64::try_from(self.cooldown.as_micros()).unwrap_or(u64::MAX);
        self.open_until.store(until.max(1), Ordering::Release);
        self.probing.store(false, Ordering::Release);
        self.publish(BreakerState::Open);
    }

    fn publish(&self, state: BreakerState) {
        let v = match state {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        };
        metrics::gauge!("cache_breaker_state", "breaker" => self.name).set(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new("test", 3, Duration::from_millis(30));
        assert!(b.allow());
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(29)).await;
        assert_eq!(b.state(), BreakerState::Open, "not before the cooldown");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "one probe");
        assert!(!b.allow(), "only one");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens");
        tokio::time::advance(Duration::from_millis(31)).await;
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn every_state_is_published() {
        let metrics = metrics_util::debugging::DebuggingRecorder::new();
        let snapshot = metrics.snapshotter();
        let gauge = || {
            snapshot
                .snapshot()
                .into_vec()
                .into_iter()
                .find(|(k, ..)| k.key().name() == "cache_breaker_state")
                .map(|(.., v)| match v {
                    metrics_util::debugging::DebugValue::Gauge(g) => g.into_inner(),
                    other => panic!("{other:?}"),
                })
        };
        metrics::with_local_recorder(&metrics, || {
            let b = Breaker::new("test", 1, Duration::from_millis(10));
            assert_eq!(gauge(), Some(0.0), "closed");
            b.failure();
            assert_eq!(gauge(), Some(1.0), "open");
            b
        });
        let b = metrics::with_local_recorder(&metrics, || {
            let b = Breaker::new("test", 1, Duration::from_millis(10));
            b.failure();
            b
        });
        tokio::time::advance(Duration::from_millis(11)).await;
        metrics::with_local_recorder(&metrics, || {
            assert!(b.allow());
            assert_eq!(gauge(), Some(2.0), "half-open while the probe runs");
            b.success();
            assert_eq!(gauge(), Some(0.0), "closed again");
        });
    }
}
