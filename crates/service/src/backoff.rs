//! The one retry policy: exponential backoff with full jitter and a cap
//! (the AWS architecture blog's "full jitter"). Every loop that waits on a
//! backend to come back uses it: the relay's sweep, the invalidator's
//! consumer and its Redis retries, read-api's event subscription.
//!
//! Jitter matters because these loops run in every instance at once: after
//! a broker restart, a hundred read-api instances reconnecting in lockstep
//! would hit it together on every attempt.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Grows `min`, `2·min`, `4·min`… up to `max`; each wait is drawn uniformly
/// from `[step/2, step]`, so it never drops to zero and never exceeds the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    /// Waits handed out since the last reset.
    attempts: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            step: min,
            attempts: 0,
        }
    }

    /// The next wait, and the step after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let low = step / 2;
        low + (step - low).mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.min;
        self.attempts = 0;
    }

    /// Whether a wait was handed out since the last reset: the caller is
    /// failing.
    pub fn is_backing_off(&self) -> bool {
        self.attempts > 0
    }

    /// Sleeps the next wait; false if `shutdown` was cancelled meanwhile.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_inside_each_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let steps = [100, 200, 400, 700, 700];
        for step in steps {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_false_when_cancelled() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let token = CancellationToken::new();
        token.cancel();
        assert!(!b.wait(&token).await);
        assert!(b.wait(&CancellationToken::new()).await);
    }
}
