//! The outbox relay: publishes committed events to RabbitMQ.
//!
//! Every event leaves the outbox the same way: rows are claimed with
//! `FOR UPDATE SKIP LOCKED` inside a transaction that deletes them, published
//! with publisher confirms, and the transaction commits only once the broker
//! confirmed every one. So a row is never lost (a failed publish or a dead
//! relay rolls the claim back) and two relays never publish the same row at
//! once; the worst case is an event published twice after a crash, which
//! the consumers treat as a no-op. If the broker is down, writes still
//! succeed and the rows wait; the relay retries with capped, jittered
//! backoff.
//!
//! What makes the relay look, fastest first: this instance's own commits
//! ([`RelayHandle::wake`]), a Postgres notification that some transaction
//! (another instance, psql, a batch job) wrote outbox rows, and a poll every
//! `write_api.relay_poll_ms` in case a notification was missed. Wakes that
//! arrive during a pass coalesce into one more pass, so a burst of writes
//! goes out in a few batches rather than one message per commit. With
//! `write_api.relay_linger_ms` set, passes are paced: a wake claims no
//! sooner than that long after the last pass that sent something began. A
//! commit after a quiet spell goes out at once; a steady trickle goes out in
//! groups, at most one message per linger, each event held at most the
//! linger.

use std::{sync::Arc, time::Duration};

use bus::{BusError, Outgoing, Publisher};
use futures::FutureExt;
use service::{Backoff, http::Chain};
use store::{Db, OutboxListener, OutboxMessage};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// First and largest pause after a failed pass.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// How long the final drain at shutdown may take.
const DRAIN_BUDGET: Duration = Duration::from_secs(5);
/// How long opening the listening connection may take.
const LISTEN_CONNECT: Duration = Duration::from_secs(2);

/// Wakes the relay after a commit; cloned into the handlers.
#[derive(Debug, Clone)]
pub struct RelayHandle(Arc<Notify>);

impl RelayHandle {
    /// Called right after a commit: the relay looks for rows now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Relay {
    pub db: Db,
    /// For the dedicated listening connection.
    pub database_url: String,
    /// What that connection's TLS trusts and presents.
    pub database_tls: tls::ClientTls,
    pub publisher: Arc<Publisher>,
    pub timing: Timing,
    pub batch: u32,
    wake: Arc<Notify>,
}

/// When the relay looks for rows besides being woken.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The sweep: how long after a pass the next one runs unwoken.
    pub poll: Duration,
    /// The least time between the starts of two woken passes, for
    /// company: commits inside it wait for the next pass.
    pub linger: Duration,
}

impl Relay {
    pub fn new(
        db: Db,
        database: (&str, tls::ClientTls),
        publisher: Arc<Publisher>,
        timing: Timing,
        batch: u32,
    ) -> (Self, RelayHandle) {
        let wake = Arc::new(Notify::new());
        let relay = Self {
            db,
            database_url: database.0.to_owned(),
            database_tls: database.1,
            publisher,
            timing,
            batch,
            wake: Arc::clone(&wake),
        };
        (relay, RelayHandle(wake))
    }

    /// Runs until `shutdown`, then publishes what it can within a short
    /// budget.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut listen = Listen::default();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        // Rows left from before (a crash, a restart) go out at once.
        let mut next_pass = Instant::now();
        // When the last pass that sent something began: a wake inside the
        // linger after it waits for the linger's end, with whatever else
        // commits meanwhile. (Sweeps that find nothing do not count.)
        let mut last_send: Option<Instant> = None;
        let mut backlog_tick = tokio::time::interval(BACKLOG_EVERY);
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            listen
                .reconnect_if_due(&self.database_url, &self.database_tls)
                .await;
            tokio::select! {
                () = self.wake.notified() => self.linger(last_send, &shutdown).await,
                () = listen.notified() => self.linger(last_send, &shutdown).await,
                () = tokio::time::sleep_until(next_pass) => {}
                _ = backlog_tick.tick() => {
                    self.report_backlog().await;
                    continue;
                }
                () = shutdown.cancelled() => break,
            }
            if backoff_pending(&backoff, next_pass) {
                // Failing: wait out the backoff, whatever woke us.
                continue;
            }
            // A wake stored meanwhile came from a commit this pass will
            // claim (the handlers wake after committing): spent here, it
            // does not send the relay on a pass that finds nothing.
            let _ = self.wake.notified().now_or_never();
            let started = Instant::now();
            match self.drain().await {
                Ok(sent) => {
                    if sent > 0 {
                        last_send = Some(started);
                    }
                    backoff.reset();
                    next_pass = Instant::now() + self.timing.poll;
                }
                Err(e) => {
                    metrics::counter!("outbox_publish_failures_total").increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %Chain(&e), retry_in_ms = delay.as_millis() as u64, "outbox relay pass failed");
                    next_pass = Instant::now() + delay;
                }
            }
        }
        // Publish what was committed before shutdown, if the broker lets us.
        match tokio::time::timeout(DRAIN_BUDGET, self.drain()).await {
            Ok(Ok(_)) => tracing::info!("outbox relay drained"),
            Ok(Err(e)) => {
                tracing::warn!(error = %Chain(&e), "outbox relay stopped with events pending; they stay in the outbox")
            }
            Err(_) => {
                tracing::warn!("outbox relay drain timed out; remaining events stay in the outbox")
            }
        }
        Ok(())
    }

    /// The pause after a wake: none after a quiet spell (a lone commit
    /// goes out at once), else until the linger since the last sending
    /// pass is over. The commits it lets in are claimed with the one that
    /// woke us.
    async fn linger(&self, last_send: Option<Instant>, shutdown: &CancellationToken) {
        let Some(until) = linger_until(last_send, self.timing.linger, Instant::now()) else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = shutdown.cancelled() => {}
        }
    }

    /// Publishes batches of rows until none are left; how many it sent.
    async fn drain(&self) -> Result<usize, RelayError> {
        let mut sent = 0;
        loop {
            // Connect before claiming rows, so a slow or failing connect
            // never holds row locks.
            self.publisher.ensure_connected().await?;
            let publisher = Arc::clone(&self.publisher);
            let (pass, error) = self
                .db
                .relay_outbox(i64::from(self.batch), bus::PUBLISH_TIMEOUT, move |rows| {
                    let span = tracing::debug_span!("relay.publish", rows = rows.len());
                    publish(publisher, rows).instrument(span)
                })
                .await?;
            sent += pass.sent;
            if pass.sent > 0 {
                metrics::counter!("outbox_published_total").increment(pass.sent as u64);
                metrics::histogram!("outbox_batch_size").record(pass.sent as f64);
            }
            if let Some(e) = error {
                return Err(e.into());
            }
            if pass.sent < pass.claimed {
                return Err(RelayError::Unconfirmed(pass.claimed - pass.sent));
            }
            if pass.claimed < self.batch as usize {
                return Ok(sent);
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

/// When a woken pass may claim: `None` for at once (no linger, nothing
/// sent yet, or the last sending pass began a linger or more ago), else
/// the linger's end.
fn linger_until(last_send: Option<Instant>, linger: Duration, now: Instant) -> Option<Instant> {
    let until = last_send? + linger;
    (until > now).then_some(until)
}

/// Whether the last pass failed and its backoff has not run out.
fn backoff_pending(backoff: &Backoff, next_pass: Instant) -> bool {
    backoff.is_backing_off() && Instant::now() < next_pass
}

/// The listening connection, reopened with backoff when lost. Without it
/// the relay still sees other writers' rows at its next poll.
#[derive(Default)]
struct Listen {
    listener: Option<OutboxListener>,
    retry_at: Option<Instant>,
    backoff: Option<Backoff>,
}

impl Listen {
    async fn reconnect_if_due(&mut self, url: &str, tls: &tls::ClientTls) {
        if self.listener.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match tokio::time::timeout(LISTEN_CONNECT, OutboxListener::connect(url, tls)).await {
            Ok(Ok(listener)) => {
                self.listener = Some(listener);
                self.retry_at = None;
                self.backoff = None;
            }
            outcome => {
                if let Ok(Err(e)) = outcome {
                    tracing::debug!(error = %Chain(&e), "cannot listen for outbox rows; polling meanwhile");
                }
                let backoff = self
                    .backoff
                    .get_or_insert_with(|| Backoff::new(BACKOFF_MIN, BACKOFF_MAX));
                self.retry_at = Some(Instant::now() + backoff.next_delay());
            }
        }
    }

    /// Completes on a notification; pending forever without a listener.
    /// Losing the connection drops it (reopened by `reconnect_if_due`).
    async fn notified(&mut self) {
        let Some(listener) = &mut self.listener else {
            return std::future::pending().await;
        };
        if listener.next().await.is_err() {
            self.listener = None;
        }
    }
}

/// Events per message at most: a bulk change of a thousand products travels
/// in a handful of messages, each a modest frame.
const EVENTS_PER_MESSAGE: usize = 256;
/// Bytes of events per message at most (a batch may pass it by one event).
const BYTES_PER_MESSAGE: usize = 256 * 1024;

/// The rows of a pass, cut into messages: runs of consecutive rows of the
/// same type (so a message's routing key is each of its events'), within
/// the bounds above; a row that is not [`OutboxMessage::batchable`] alone.
/// Order is kept, within and across messages.
fn batches(rows: &[OutboxMessage]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, row) in rows.iter().enumerate() {
        let fits = i > start
            && row.batchable
            && rows[start].batchable
            && row.routing_key == rows[start].routing_key
            && i - start < EVENTS_PER_MESSAGE
            && bytes < BYTES_PER_MESSAGE;
        if i > start && !fits {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += row.body.len();
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// One message's body: the event itself, or a JSON array of several.
fn body(rows: &[OutboxMessage]) -> std::borrow::Cow<'_, [u8]> {
    if let [only] = rows {
        return std::borrow::Cow::Borrowed(&only.body);
    }
    let size = rows.iter().map(|r| r.body.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(size);
    out.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&row.body);
    }
    out.push(b']');
    std::borrow::Cow::Owned(out)
}

/// Publishes the rows, several events to a message where they allow, with
/// confirms; returns the ids of the rows the broker confirmed.
async fn publish(
    publisher: Arc<Publisher>,
    rows: Vec<OutboxMessage>,
) -> (Vec<i64>, Option<BusError>) {
    let cuts = batches(&rows);
    let bodies: Vec<_> = cuts.iter().map(|r| body(&rows[r.clone()])).collect();
    let message_ids: Vec<String> = cuts
        .iter()
        .map(|r| rows[r.start].event_id.to_string())
        .collect();
    let correlations: Vec<Vec<Option<&str>>> = cuts
        .iter()
        .map(|r| {
            rows[r.clone()]
                .iter()
                .map(|row| row.correlation_id.as_deref())
                .collect()
        })
        .collect();
    let outgoing: Vec<Outgoing<'_>> = cuts
        .iter()
        .enumerate()
        .map(|(m, r)| {
            let ids = &correlations[m];
            let shared = ids.iter().all(|id| *id == ids[0]);
            Outgoing {
                routing_key: &rows[r.start].routing_key,
                message_id: &message_ids[m],
                correlation_id: if shared { ids[0] } else { None },
                correlation_ids: if shared { &[] } else { ids },
                payload: &bodies[m],
            }
        })
        .collect();
    match publisher.publish(&outgoing).await {
        Ok(confirmed) => {
            for (r, ok) in cuts.iter().zip(&confirmed) {
                for row in &rows[r.clone()] {
                    tracing::debug!(
                        correlation_id = row.correlation_id.as_deref(),
                        event_id = %row.event_id,
                        events_in_message = r.len(),
                        confirmed = *ok,
                        "event published"
                    );
                }
            }
            metrics::counter!("outbox_messages_published_total")
                .increment(confirmed.iter().filter(|ok| **ok).count() as u64);
            let sent = cuts
                .iter()
                .zip(confirmed)
                .filter(|(_, ok)| *ok)
                .flat_map(|(r, _)| rows[r.clone()].iter().map(|row| row.id))
                .collect();
            (sent, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("claiming outbox rows failed")]
    Store(#[from] store::StoreError),
    #[error("publishing failed")]
    Bus(#[from] BusError),
    #[error("{0} events were not confirmed by the broker")]
    Unconfirmed(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, routing_key: &str, size: usize) -> OutboxMessage {
        OutboxMessage {
            id,
            event_id: uuid::Uuid::new_v4(),
            routing_key: routing_key.to_owned(),
            correlation_id: None,
            body: vec![b'x'; size],
            batchable: true,
        }
    }

    #[test]
    fn a_wake_waits_only_for_the_rest_of_the_linger() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(linger_until(None, ms(5), now), None, "first pass: at once");
        assert_eq!(
            linger_until(Some(now - ms(9)), ms(0), now),
            None,
            "no linger"
        );
        assert_eq!(
            linger_until(Some(now - ms(5)), ms(5), now),
            None,
            "after a quiet spell: at once"
        );
        assert_eq!(
            linger_until(Some(now - ms(2)), ms(5), now),
            Some(now + ms(3)),
            "inside the linger: until its end"
        );
    }

    #[test]
    fn a_message_holds_consecutive_events_of_one_type() {
        let rows = vec![
            row(1, "product.updated", 10),
            row(2, "product.updated", 10),
            row(3, "product.deleted", 10),
            row(4, "product.updated", 10),
            row(5, "product.updated", 10),
        ];
        assert_eq!(batches(&rows), [0..2, 2..3, 3..5]);
        assert_eq!(
            batches(&rows[..1]),
            vec![std::ops::Range { start: 0, end: 1 }]
        );
        let mut lone = rows.clone();
        lone[1].batchable = false;
        assert_eq!(batches(&lone), [0..1, 1..2, 2..3, 3..5]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn a_message_stays_within_its_bounds() {
        let many: Vec<_> = (0..600).map(|i| row(i, "product.updated", 10)).collect();
        assert_eq!(batches(&many), [0..256, 256..512, 512..600]);
        // Past the byte bound after the third 100 KiB event.
        let big: Vec<_> = (0..5)
            .map(|i| row(i, "product.updated", 100 * 1024))
            .collect();
        assert_eq!(batches(&big), [0..3, 3..5]);
    }

    #[test]
    fn one_event_travels_as_itself_several_as_an_array() {
        let mut a = row(1, "product.updated", 0);
        a.body = b"{\"a\":1}".to_vec();
        let mut b = row(2, "product.updated", 0);
        b.body = b"{\"b\":2}".to_vec();
        assert_eq!(&*body(std::slice::from_ref(&a)), b"{\"a\":1}");
        assert_eq!(&*body(&[a, b]), b"[{\"a\":1},{\"b\":2}]");
    }
}
