//! The event consumer: takes what the broker has in flight (up to the
//! prefetch), applies it to Redis in one pipelined round trip, then acks:
//! applied messages in runs, one `multiple` ack each (`bus::Acks`), since
//! every ack frame is a write to the quorum queue's log.
//!
//! Failures are sorted by whose fault they are:
//! - Redis cannot take the batch now (unreachable, slow, refusing writes,
//!   restarting): not the messages' fault. Nothing is acked; the batch is
//!   retried with capped, jittered backoff until Redis takes it, holding the
//!   messages (nothing lost, and no retry budget spent).
//! - Malformed message: dead-lettered at once, with a log line.
//! - Redis refuses this message's own command (say, WRONGTYPE on its key):
//!   it is requeued after a short delay; once it has failed `max_retries`
//!   times it is dead-lettered. It never blocks the messages behind it.
//!   The failures are counted here, by message id, not read from the
//!   queue's `x-delivery-count`: RabbitMQ versions disagree on what that
//!   counts (4.3 stops counting requeues; 3.13 also counts returns after a
//!   lost connection, which are not the message's fault).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bus::{BusError, Topology, lapin};
use cache::{CacheError, InvalidatorMode, L2, Unavailable, plan};
use chrono::Utc;
use domain::ChangeEvent;
use futures::{FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use parking_lot::Mutex;
use service::{Backoff, http::Chain};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Applied messages acked together, at most (and at most half the
/// prefetch, so the broker never waits on our acks to deliver more).
const ACK_EVERY: u16 = 64;

pub struct Consumer {
    pub broker: bus::Broker,
    pub topology: Topology,
    pub l2: L2,
    pub mode: InvalidatorMode,
    /// Failed deliveries after which a message is dead-lettered.
    pub max_retries: u32,
    /// Messages in flight, and the largest batch.
    pub prefetch: u16,
    /// Whether the consumer is attached right now (readiness).
    pub connected: Arc<AtomicBool>,
    /// Whether Redis is holding up the work right now (readiness).
    pub blocked: Arc<Blocked>,
    /// Failures per message id, counted here.
    pub retries: Mutex<Retries>,
}

/// Since when, and why, Redis has not taken a batch: `/readyz` says
/// "blocked", the metrics say how long.
#[derive(Debug, Default)]
pub struct Blocked(Mutex<Option<(Instant, Unavailable)>>);

impl Blocked {
    /// Why the invalidator is blocked, if it is.
    pub fn reason(&self) -> Option<Unavailable> {
        self.0.lock().map(|(_, kind)| kind)
    }

    fn hold(&self, kind: Unavailable) {
        let mut state = self.0.lock();
        let since = state.map_or_else(Instant::now, |(since, _)| since);
        *state = Some((since, kind));
        metrics::gauge!("invalidator_blocked_seconds").set(since.elapsed().as_secs_f64());
    }

    fn release(&self) {
        if let Some((since, kind)) = self.0.lock().take() {
            tracing::info!(blocked_for_ms = since.elapsed().as_millis() as u64, %kind, "redis takes the batches again");
        }
        metrics::gauge!("invalidator_blocked_seconds").set(0.0);
    }
}

/// How many times each message failed for its own reasons, bounded: the
/// oldest counts are forgotten first (a message that old has long been
/// dead-lettered or applied).
#[derive(Debug, Default)]
pub struct Retries {
    counts: HashMap<String, u32>,
    order: VecDeque<String>,
}

/// Message ids whose failures are remembered.
const RETRIES_KEPT: usize = 10_000;

impl Retries {
    /// Counts one more failure; returns the total.
    fn fail(&mut self, key: &str) -> u32 {
        if let Some(n) = self.counts.get_mut(key) {
            *n += 1;
            return *n;
        }
        if self.order.len() >= RETRIES_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.counts.remove(&old);
        }
        self.counts.insert(key.to_owned(), 1);
        self.order.push_back(key.to_owned());
        1
    }

    fn forget(&mut self, key: &str) {
        if self.counts.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

/// The key failures are counted by: the message id (the event id), or, for
/// a message without one, its body.
fn retry_key(delivery: &Delivery) -> String {
    match delivery.properties.message_id() {
        Some(id) => id.to_string(),
        None => String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}

/// A delivery and the events it carries (one, or a batch of the same
/// type), with the request id behind each for the logs. A message is
/// settled as a whole: acked once every event in it is applied, requeued
/// if Redis refused any (applying the others again is harmless).
struct Work {
    delivery: Delivery,
    events: Vec<ChangeEvent>,
    correlation_ids: Vec<Option<String>>,
}

/// One channel's acknowledgements: the applied messages waiting for their
/// `multiple` ack, and how many refused messages wait to be requeued. While
/// any does, applied messages are acked one by one, since a `multiple` ack
/// would settle the waiting one too.
struct Settling {
    acks: bus::Acks,
    requeues: Arc<AtomicUsize>,
}

impl Settling {
    fn new(prefetch: u16) -> Self {
        Self {
            acks: bus::Acks::new(u32::from(ACK_EVERY.min(prefetch / 2))),
            requeues: Arc::default(),
        }
    }

    async fn ack(&mut self, delivery: Delivery) -> Result<(), BusError> {
        if self.requeues.load(Ordering::Acquire) == 0 {
            self.acks.push(delivery.acker).await
        } else {
            self.acks.ack_alone(&delivery.acker).await
        }
    }

    /// Returns a refused message to the queue after a pause that grows
    /// with its failures, so a poison message does not spin; the queue
    /// counts the return. What waits to be acked (all earlier) goes first.
    async fn requeue_later(&mut self, delivery: Delivery, failures: u32) {
        if self.acks.flush().await.is_err() {
            tracing::warn!("some acks were lost; those events will be applied again");
        }
        let pause =
            (BACKOFF_MIN * 2u32.saturating_pow(failures.min(6))).min(Duration::from_secs(2));
        let requeues = Arc::clone(&self.requeues);
        requeues.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let nack = delivery.acker.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            });
            let _ = bus::timed("requeueing", nack).await;
            requeues.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl Consumer {
    /// Consumes until `shutdown`, reconnecting with capped backoff.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(BACKOFF_MIN * 2, BACKOFF_MAX);
        while !shutdown.is_cancelled() {
            if let Err(e) = self.session(&shutdown, &mut backoff).await {
                self.set_connected(false);
                tracing::warn!(error = %Chain(&e), "event consumer disconnected");
            }
            if !backoff.wait(&shutdown).await {
                break;
            }
        }
        self.set_connected(false);
        Ok(())
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        metrics::gauge!("invalidator_consumer_up").set(if up { 1.0 } else { 0.0 });
    }

    /// One connection's life. `Ok` only on shutdown.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), BusError> {
        let connection = self.broker.connect("invalidator").await?;
        let channel = bus::open_channel(&connection).await?;
        bus::declare_topology(&channel, &self.topology).await?;
        bus::timed(
            "setting the prefetch",
            channel.basic_qos(self.prefetch, BasicQosOptions::default()),
        )
        .await?;
        let mut deliveries = bus::timed(
            "consuming the invalidator queue",
            channel.basic_consume(
                self.topology.invalidator_queue().as_str().into(),
                "invalidator".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.set_connected(true);
        backoff.reset();
        tracing::info!(queue = %self.topology.invalidator_queue(), prefetch = self.prefetch, "consuming product events");
        let mut settling = Settling::new(self.prefetch);
        loop {
            let first = tokio::select! {
                d = deliveries.next() => d,
                () = tokio::time::sleep(bus::ACK_IDLE), if settling.acks.is_pending() => {
                    settling.acks.flush().await?;
                    continue;
                }
                () = shutdown.cancelled() => {
                    // Unacked messages go back to the queue when we close.
                    let _ = settling.acks.flush().await;
                    bus::close(&connection).await;
                    return Ok(());
                }
            };
            let first = first.ok_or(BusError::ConsumerClosed)??;
            let mut batch = vec![first];
            // Whatever else has already arrived joins this batch.
            while batch.len() < usize::from(self.prefetch) {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    _ => break,
                }
            }
            self.process(batch, shutdown, &mut settling).await;
        }
    }

    /// Applies one batch and settles every message in it.
    async fn process(
        &self,
        batch: Vec<Delivery>,
        shutdown: &CancellationToken,
        settling: &mut Settling,
    ) {
        metrics::histogram!("invalidator_batch_size").record(batch.len() as f64);
        let work = self.decode(batch).await;
        if work.is_empty() {
            return;
        }
        let events: usize = work.iter().map(|w| w.events.len()).sum();
        let span = tracing::debug_span!("invalidator.batch", messages = work.len(), events);
        async move {
            let Some(results) = self.apply_held(&work, shutdown).await else {
                // Shutting down: not acked, the broker redelivers after we
                // close.
                return;
            };
            self.settle(work, results, settling).await;
        }
        .instrument(span)
        .await;
    }

    /// Decodes each delivery; dead-letters the malformed and the exhausted.
    async fn decode(&self, batch: Vec<Delivery>) -> Vec<Work> {
        let mut work = Vec::with_capacity(batch.len());
        for delivery in batch {
            match ChangeEvent::many_from_slice(&delivery.data) {
                Ok(events) => work.push(Work {
                    correlation_ids: bus::correlation_ids(&delivery, events.len()),
                    delivery,
                    events,
                }),
                Err(e) => {
                    tracing::error!(error = %e, body = %String::from_utf8_lossy(&delivery.data), "dead-lettering a malformed event");
                    dead_letter(delivery, "malformed").await;
                }
            }
        }
        work
    }

    /// Applies the batch, retrying it as a whole while Redis cannot take it.
    /// `None` if shutdown came first.
    async fn apply_held(
        &self,
        work: &[Work],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Result<bool, CacheError>>> {
        let events = || work.iter().flat_map(|w| &w.events);
        let ops: Vec<_> = events().map(|e| plan::op_for(e, self.mode)).collect();
        let bumps = plan::bumps(events());
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            match self.l2.apply(&ops, &bumps).await {
                Ok(results) => {
                    self.blocked.release();
                    return Some(results);
                }
                Err(e) => {
                    // Whatever the error, it is Redis's state, not the
                    // messages': hold them, spend no retry budget.
                    let kind = e.unavailable_kind().unwrap_or(Unavailable::Unreachable);
                    self.blocked.hold(kind);
                    metrics::counter!("invalidator_redis_retries_total", "kind" => kind.label())
                        .increment(1);
                    tracing::warn!(error = %Chain(&e), %kind, held = ops.len(), "redis cannot take the batch now; holding it");
                    if !backoff.wait(shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Acks the messages whose events were all applied; requeues those
    /// Redis refused any of (`results` holds one per event, in order).
    async fn settle(
        &self,
        work: Vec<Work>,
        results: Vec<Result<bool, CacheError>>,
        settling: &mut Settling,
    ) {
        let now = Utc::now();
        let mut results = results.into_iter();
        let mut lost = false;
        for w in work {
            let mut refused = None;
            for (event, correlation_id) in w.events.iter().zip(&w.correlation_ids) {
                let kind = event.kind.label();
                let outcome = match results.next() {
                    Some(Ok(true)) => "applied",
                    Some(Ok(false)) => "already_current",
                    Some(Err(e)) => {
                        tracing::warn!(
                            error = %Chain(&e),
                            correlation_id = correlation_id.as_deref(),
                            product_id = %event.product_id,
                            version = %event.version,
                            "redis refused the event's command"
                        );
                        refused.get_or_insert(e);
                        "failed"
                    }
                    None => {
                        refused.get_or_insert(CacheError::UnexpectedReply(
                            "fewer results than commands".into(),
                        ));
                        "failed"
                    }
                };
                metrics::counter!("invalidator_events_total", "type" => kind, "outcome" => outcome)
                    .increment(1);
                if outcome != "failed" {
                    tracing::debug!(
                        correlation_id = correlation_id.as_deref(),
                        event_id = %event.event_id,
                        product_id = %event.product_id,
                        version = %event.version,
                        outcome,
                        "event applied to redis"
                    );
                    let lag = (now - event.occurred_at)
                        .num_microseconds()
                        .unwrap_or(0)
                        .max(0);
                    metrics::histogram!("invalidator_lag_seconds").record(lag as f64 / 1e6);
                }
            }
            let Some(e) = refused else {
                self.retries.lock().forget(&retry_key(&w.delivery));
                lost |= settling.ack(w.delivery).await.is_err();
                continue;
            };
            let failures = self.retries.lock().fail(&retry_key(&w.delivery));
            if failures >= self.max_retries {
                tracing::error!(
                    error = %Chain(&e),
                    message_id = %retry_key(&w.delivery),
                    events = w.events.len(),
                    failures,
                    "dead-lettering a message redis refused every time"
                );
                self.retries.lock().forget(&retry_key(&w.delivery));
                dead_letter(w.delivery, "retries_exhausted").await;
                continue;
            }
            tracing::warn!(
                message_id = %retry_key(&w.delivery),
                events = w.events.len(),
                failures,
                max = self.max_retries,
                "requeueing a message redis refused"
            );
            settling.requeue_later(w.delivery, failures).await;
        }
        if lost {
            // The channel broke after Redis was written: the broker will
            // redeliver, and applying an event twice is harmless.
            tracing::warn!("some acks were lost; those events will be applied again");
        }
    }
}

/// Rejects a message for good: the queue routes it to the dead-letter
/// exchange. (A `multiple` ack sent later leaves it alone: it is settled.)
async fn dead_letter(delivery: Delivery, reason: &'static str) {
    metrics::counter!("invalidator_dead_lettered_total", "reason" => reason).increment(1);
    let nack = delivery.acker.nack(BasicNackOptions {
        requeue: false,
        multiple: false,
    });
    let _ = bus::timed("dead-lettering", nack).await;
}
