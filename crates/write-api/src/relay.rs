//! The outbox relay: publishes committed events to RabbitMQ.
//!
//! Woken right after each commit (and every `relay_poll_ms` for rows it was
//! not woken for: another instance's, a crashed instance's, or its own after a
//! failure), it claims outbox rows with `FOR UPDATE SKIP LOCKED`, publishes
//! them with publisher confirms, and deletes exactly the confirmed rows. If
//! the broker is down, rows wait in Postgres and the relay retries with capped
//! backoff; writes are never blocked by it.

use std::{sync::Arc, time::Duration};

use bus::{BusError, Outgoing, Publisher};
use store::{Db, OutboxMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// First and largest pause after a failed pass.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// How long the final drain at shutdown may take.
const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// Wakes the relay; cloned into the request handlers.
#[derive(Debug, Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// Called after a commit: the relay runs now instead of at its next poll.
    /// A wake while a pass is running is remembered, not lost.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Relay {
    pub db: Db,
    pub publisher: Arc<Publisher>,
    pub waker: RelayWaker,
    pub poll: Duration,
    pub batch: i64,
}

impl Relay {
    /// Runs until `shutdown`, then drains what it can within a short budget.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut backlog_tick = tokio::time::interval(BACKLOG_EVERY);
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.drain().await {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(e) => {
                    metrics::counter!("outbox_publish_failures_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay pass failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            tokio::select! {
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
                _ = backlog_tick.tick() => self.report_backlog().await,
                () = shutdown.cancelled() => break,
            }
        }
        // Flush what was committed before shutdown, if the broker lets us.
        match tokio::time::timeout(DRAIN_BUDGET, self.drain()).await {
            Ok(Ok(())) => tracing::info!("outbox relay drained"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "outbox relay stopped with events pending; they stay in the outbox")
            }
            Err(_) => {
                tracing::warn!("outbox relay drain timed out; remaining events stay in the outbox")
            }
        }
    }

    /// Publishes batches until the outbox is empty (or holds only rows other
    /// relays are publishing).
    async fn drain(&self) -> Result<(), RelayError> {
        loop {
            // Connect before claiming rows, so a slow or failing connect
            // never holds row locks.
            self.publisher.ensure_connected().await?;
            let publisher = Arc::clone(&self.publisher);
            let (pass, error) = self
                .db
                .relay_outbox(self.batch, move |rows| publish(publisher, rows))
                .await?;
            if pass.sent > 0 {
                metrics::counter!("outbox_published_total").increment(pass.sent as u64);
            }
            if let Some(e) = error {
                return Err(e.into());
            }
            if pass.sent < pass.claimed {
                return Err(RelayError::Unconfirmed(pass.claimed - pass.sent));
            }
            if pass.claimed < usize::try_from(self.batch).unwrap_or(0) {
                return Ok(());
            }
        }
    }

    async fn report_backlog(&self) {
        if let Ok((count, oldest)) = self.db.outbox_backlog().await {
            metrics::gauge!("outbox_backlog").set(count as f64);
            let age = oldest.map_or(0.0, |t| {
                (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics::gauge!("outbox_oldest_age_seconds").set(age);
        }
    }
}

async fn publish(
    publisher: Arc<Publisher>,
    rows: Vec<OutboxMessage>,
) -> (Vec<i64>, Option<BusError>) {
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    let outgoing: Vec<Outgoing<'_>> = rows
        .iter()
        .zip(&ids)
        .map(|(r, id)| Outgoing {
            routing_key: &r.routing_key,
            message_id: id,
            payload: r.payload.as_bytes(),
        })
        .collect();
    match publisher.publish(&outgoing).await {
        Ok(confirmed) => {
            let sent = rows
                .iter()
                .zip(confirmed)
                .filter_map(|(r, ok)| ok.then_some(r.id))
                .collect();
            (sent, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0} events were not confirmed by the broker")]
    Unconfirmed(usize),
}
