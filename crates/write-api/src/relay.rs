//! The outbox relay: publishes committed events to RabbitMQ.
//!
//! Two paths, one guarantee. The fast path: a request handler hands the
//! outbox rows it just committed to the relay through a channel, and the relay
//! publishes them at once (publisher confirms) and deletes the confirmed ids.
//! The sweep: every `relay_poll_ms`, rows older than a grace period are
//! claimed with `FOR UPDATE SKIP LOCKED` and published the same way: rows of
//! a crashed instance, of a failed publish, of a full channel. Either way a row
//! leaves the outbox only after the broker confirmed it; the worst case is an
//! event published twice, which the consumers treat as a no-op. If the broker
//! is down, writes still succeed and the rows wait; the sweep retries with
//! capped backoff.

use std::{sync::Arc, time::Duration};

use bus::{BusError, Outgoing, Publisher};
use store::{Db, OutboxMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// First and largest pause after a failed sweep.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// How long the final drain at shutdown may take.
const DRAIN_BUDGET: Duration = Duration::from_secs(5);
/// Rows younger than this belong to the fast path of the instance that wrote
/// them; the sweep leaves them alone (else every event would go out twice).
const SWEEP_GRACE: Duration = Duration::from_secs(2);
/// Committed batches waiting for the fast path; beyond it they wait for the
/// sweep.
const CHANNEL_CAPACITY: usize = 4096;

/// Hands committed outbox rows to the relay; cloned into the handlers.
#[derive(Debug, Clone)]
pub struct RelayHandle(mpsc::Sender<Vec<OutboxMessage>>);

impl RelayHandle {
    /// Called right after a commit: the relay publishes these rows now. If
    /// it cannot take them, the sweep will.
    pub fn submit(&self, rows: Vec<OutboxMessage>) {
        if !rows.is_empty() && self.0.try_send(rows).is_err() {
            metrics::counter!("outbox_fast_path_skipped_total").increment(1);
        }
    }
}

pub struct Relay {
    pub db: Db,
    pub publisher: Arc<Publisher>,
    pub poll: Duration,
    pub batch: i64,
    committed: mpsc::Receiver<Vec<OutboxMessage>>,
}

impl Relay {
    pub fn new(
        db: Db,
        publisher: Arc<Publisher>,
        poll: Duration,
        batch: i64,
    ) -> (Self, RelayHandle) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let relay = Self {
            db,
            publisher,
            poll,
            batch,
            committed: rx,
        };
        (relay, RelayHandle(tx))
    }

    /// Runs until `shutdown`, then publishes what it can within a short
    /// budget.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Rows left from before (a crash, a restart) go out with the first
        // sweep. Even that one leaves rows younger than the grace period
        // alone: they may be on another live instance's fast path.
        let mut next_sweep = tokio::time::Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut backlog_tick = tokio::time::interval(BACKLOG_EVERY);
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(rows) = self.committed.recv() => self.fast_path(rows).await,
                () = tokio::time::sleep_until(next_sweep) => {
                    match self.sweep(SWEEP_GRACE).await {
                        Ok(()) => {
                            backoff = BACKOFF_MIN;
                            next_sweep = tokio::time::Instant::now() + self.poll;
                        }
                        Err(e) => {
                            metrics::counter!("outbox_publish_failures_total").increment(1);
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox sweep failed");
                            next_sweep = tokio::time::Instant::now() + backoff;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                _ = backlog_tick.tick() => self.report_backlog().await,
                () = shutdown.cancelled() => break,
            }
        }
        // Flush what was committed before shutdown, if the broker lets us.
        let drain = async {
            self.committed.close();
            while let Some(rows) = self.committed.recv().await {
                self.fast_path(rows).await;
            }
            self.sweep(SWEEP_GRACE).await
        };
        match tokio::time::timeout(DRAIN_BUDGET, drain).await {
            Ok(Ok(())) => tracing::info!("outbox relay drained"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "outbox relay stopped with events pending; they stay in the outbox")
            }
            Err(_) => {
                tracing::warn!("outbox relay drain timed out; remaining events stay in the outbox")
            }
        }
    }

    /// Publishes rows handed over at commit (plus any others already queued)
    /// and deletes the confirmed ones. Failures leave rows for the sweep.
    async fn fast_path(&mut self, mut rows: Vec<OutboxMessage>) {
        let limit = usize::try_from(self.batch).unwrap_or(500);
        while rows.len() < limit {
            match self.committed.try_recv() {
                Ok(more) => rows.extend(more),
                Err(_) => break,
            }
        }
        // A broker known to be down is the sweep's business (with backoff),
        // not every request's.
        if !self.publisher.is_connected() {
            return;
        }
        let (confirmed, error) = publish(Arc::clone(&self.publisher), rows).await;
        if let Some(e) = error {
            tracing::debug!(error = %e, "fast-path publish failed; the sweep will retry");
        }
        if confirmed.is_empty() {
            return;
        }
        match self.db.delete_sent(&confirmed).await {
            Ok(_) => metrics::counter!("outbox_published_total").increment(confirmed.len() as u64),
            // Published but still in the outbox: the sweep publishes them
            // again (a harmless duplicate) and deletes them.
            Err(e) => tracing::warn!(error = %e, "could not delete published outbox rows"),
        }
    }

    /// Publishes batches of rows older than `grace` until none are left.
    async fn sweep(&self, grace: Duration) -> Result<(), RelayError> {
        loop {
            // Connect before claiming rows, so a slow or failing connect
            // never holds row locks.
            self.publisher.ensure_connected().await?;
            let publisher = Arc::clone(&self.publisher);
            let (pass, error) = self
                .db
                .relay_outbox(self.batch, grace, move |rows| publish(publisher, rows))
                .await?;
            if pass.sent > 0 {
                metrics::counter!("outbox_published_total").increment(pass.sent as u64);
                tracing::debug!(sent = pass.sent, "outbox sweep published rows");
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

/// Publishes rows with confirms; returns the ids the broker confirmed.
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
