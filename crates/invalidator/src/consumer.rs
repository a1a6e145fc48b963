//! The event consumer: takes what the broker has in flight (up to the
//! prefetch), applies it to Redis in one pipelined round trip, then acks.
//!
//! Failures are sorted by whose fault they are:
//! - Redis unreachable: not the message's fault. Nothing is acked; the batch
//!   is retried with capped backoff until Redis answers, holding the
//!   messages (nothing lost, and no retry budget spent).
//! - Malformed message: dead-lettered at once, with a log line.
//! - Redis refuses this message's command (say, WRONGTYPE on its key): it is
//!   requeued after a short delay; the quorum queue counts each return, and
//!   once it has failed `max_retries` times it is dead-lettered. It never
//!   blocks the messages behind it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bus::{BusError, Topology, lapin};
use cache::{CacheError, L2};
use chrono::Utc;
use domain::ChangeEvent;
use futures::{FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use service::InvalidatorMode;
use tokio_util::sync::CancellationToken;

use crate::plan;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Consumer {
    pub amqp_url: String,
    pub topology: Topology,
    pub l2: L2,
    pub mode: InvalidatorMode,
    /// Failed deliveries after which a message is dead-lettered.
    pub max_retries: u32,
    /// Messages in flight, and the largest batch.
    pub prefetch: u16,
    /// Whether the consumer is attached right now (readiness).
    pub connected: Arc<AtomicBool>,
}

impl Consumer {
    /// Consumes until `shutdown`, reconnecting with capped backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN * 2;
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    self.set_connected(false);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event consumer disconnected");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.set_connected(false);
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        metrics::gauge!("invalidator_consumer_up").set(if up { 1.0 } else { 0.0 });
    }

    /// One connection's life. `Ok` only on shutdown.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), BusError> {
        let connection = bus::connect(&self.amqp_url, "invalidator").await?;
        let channel = connection.create_channel().await?;
        bus::declare_topology(&channel, &self.topology).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut deliveries = channel
            .basic_consume(
                self.topology.invalidator_queue().as_str().into(),
                "invalidator".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.set_connected(true);
        *backoff = BACKOFF_MIN * 2;
        tracing::info!(queue = %self.topology.invalidator_queue(), prefetch = self.prefetch, "consuming product events");
        loop {
            let first = tokio::select! {
                d = deliveries.next() => d,
                () = shutdown.cancelled() => {
                    // Unacked messages go back to the queue when we close.
                    let _ = connection.close(200, "shutting down".into()).await;
                    return Ok(());
                }
            };
            let first = match first {
                Some(d) => d?,
                None => {
                    return Err(BusError::Unavailable(
                        "the broker closed the consumer".into(),
                    ));
                }
            };
            let mut batch = vec![first];
            // Whatever else has already arrived joins this batch.
            while batch.len() < usize::from(self.prefetch) {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    _ => break,
                }
            }
            self.process(batch, shutdown).await;
        }
    }

    /// Applies one batch and settles every message in it.
    async fn process(&self, batch: Vec<Delivery>, shutdown: &CancellationToken) {
        metrics::histogram!("invalidator_batch_size").record(batch.len() as f64);
        let mut work: Vec<(Delivery, ChangeEvent)> = Vec::with_capacity(batch.len());
        for delivery in batch {
            let failures = bus::delivery_count(&delivery);
            if failures >= self.max_retries {
                tracing::error!(failures, body = %String::from_utf8_lossy(&delivery.data), "dead-lettering a message that failed every retry");
                dead_letter(delivery, "retries_exhausted").await;
                continue;
            }
            match ChangeEvent::from_slice(&delivery.data) {
                Ok(event) => work.push((delivery, event)),
                Err(e) => {
                    tracing::error!(error = %e, body = %String::from_utf8_lossy(&delivery.data), "dead-lettering a malformed event");
                    dead_letter(delivery, "malformed").await;
                }
            }
        }
        if work.is_empty() {
            return;
        }
        let ops: Vec<_> = work
            .iter()
            .map(|(_, e)| plan::op_for(e, self.mode))
            .collect();
        let families = plan::families(work.iter().map(|(_, e)| e));

        let mut backoff = BACKOFF_MIN;
        let results = loop {
            match self.l2.apply(&ops, &families).await {
                Ok(results) => break results,
                Err(e) => {
                    metrics::counter!("invalidator_redis_retries_total").increment(1);
                    tracing::warn!(error = %e, held = work.len(), retry_in_ms = backoff.as_millis() as u64, "redis unavailable; holding the batch");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        // Not acked: the broker redelivers them after we close.
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };

        let now = Utc::now();
        let mut acks = Vec::with_capacity(work.len());
        for ((delivery, event), result) in work.into_iter().zip(results) {
            let kind = event.kind.label();
            match result {
                Ok(written) => {
                    let outcome = if written {
                        "applied"
                    } else {
                        "already_current"
                    };
                    metrics::counter!("invalidator_events_total", "type" => kind, "outcome" => outcome).increment(1);
                    let lag = (now - event.occurred_at)
                        .num_microseconds()
                        .unwrap_or(0)
                        .max(0);
                    metrics::histogram!("invalidator_lag_seconds").record(lag as f64 / 1e6);
                    acks.push(delivery);
                }
                Err(e) => {
                    let failures = bus::delivery_count(&delivery) + 1;
                    metrics::counter!("invalidator_events_total", "type" => kind, "outcome" => "failed").increment(1);
                    tracing::warn!(error = %e, product_id = %event.product_id, version = %event.version, failures, max = self.max_retries, "event failed; requeueing");
                    requeue_later(delivery, failures, matches!(e, CacheError::Refused(_)));
                }
            }
        }
        let acked =
            futures::future::join_all(acks.iter().map(|d| d.acker.ack(BasicAckOptions::default())))
                .await;
        if acked.iter().any(Result::is_err) {
            // The channel broke after Redis was written: the broker will
            // redeliver, and applying an event twice is harmless.
            tracing::warn!("some acks were lost; those events will be applied again");
        }
    }
}

async fn dead_letter(delivery: Delivery, reason: &'static str) {
    metrics::counter!("invalidator_dead_lettered_total", "reason" => reason).increment(1);
    let _ = delivery
        .acker
        .nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        })
        .await;
}

/// Returns a failed message to the queue after a pause that grows with its
/// failures, so a poison message does not spin; the queue counts the return.
fn requeue_later(delivery: Delivery, failures: u32, refused: bool) {
    let pause = if refused {
        (BACKOFF_MIN * 2u32.saturating_pow(failures.min(6))).min(Duration::from_secs(2))
    } else {
        BACKOFF_MIN
    };
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        let _ = delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await;
    });
}
