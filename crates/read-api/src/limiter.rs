//! A bound on Postgres work in flight. Past it, a request waits a short while
//! for a slot and then gets 503 `overloaded` with `Retry-After`, instead of
//! queueing without bound behind a saturated database (which turns a spike
//! into a pile-up of timeouts).

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    wait: Duration,
}

/// No slot freed up within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many database queries in flight")]
pub struct Saturated;

impl Limiter {
    pub fn new(slots: usize, wait: Duration) -> Self {
        metrics::gauge!("db_concurrency_limit").set(slots as f64);
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            wait,
        }
    }

    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Saturated> {
        let slots = Arc::clone(&self.slots);
        match tokio::time::timeout(self.wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("db_overloaded_total").increment(1);
                Err(Saturated)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_after_waiting_when_full() {
        let l = Limiter::new(1, Duration::from_millis(20));
        let held = l.acquire().await.unwrap();
        assert_eq!(l.acquire().await.unwrap_err(), Saturated);
        drop(held);
        assert!(l.acquire().await.is_ok());
    }
}
