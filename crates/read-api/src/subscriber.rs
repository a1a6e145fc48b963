//! This instance's subscription to product events: each event fences L1 at
//! its version. The queue is private to the instance (exclusive, gone with
//! the connection), so every instance sees every event.
//!
//! While the subscription is down, L1 entries live at most their short TTL;
//! when it comes back, L1 is cleared, because fences may have been missed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bus::{Topology, lapin};
use cache::{Entry, FenceKind, L1};
use domain::{ChangeEvent, EventKind};
use futures::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use service::InvalidatorMode;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Keeps L1 fenced by events until `shutdown`.
pub struct Subscriber {
    pub amqp_url: String,
    pub topology: Topology,
    pub l1: L1,
    /// Whether events are flowing right now (readiness, metrics).
    pub connected: Arc<AtomicBool>,
    /// `evict`: fence L1 at the event's version; `refresh`: also write the
    /// event's snapshot over an entry L1 holds (see `L1::refresh`).
    pub mode: InvalidatorMode,
}

impl Subscriber {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        while !shutdown.is_cancelled() {
            match self.subscribe().await {
                Ok((connection, mut consumer)) => {
                    // Fences flow from here on: entries written from now live
                    // long; anything filled before now may have missed a
                    // fence and goes.
                    self.set_connected(true);
                    self.l1.clear();
                    backoff = BACKOFF_MIN;
                    tracing::info!("L1 event subscription established");
                    loop {
                        tokio::select! {
                            delivery = consumer.next() => match delivery {
                                Some(Ok(d)) => self.apply(&d.data).await,
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "L1 event subscription failed");
                                    break;
                                }
                                None => break,
                            },
                            () = shutdown.cancelled() => {
                                let _ = connection.close(200, "shutting down".into()).await;
                                self.set_connected(false);
                                return;
                            }
                        }
                    }
                    // Entries written from now live only the short TTL; the
                    // long-lived ones may miss fences from here on.
                    self.set_connected(false);
                    self.l1.clear();
                    tracing::warn!("L1 event subscription lost; L1 cleared, reconnecting");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to product events");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        metrics::gauge!("l1_subscription_up").set(if up { 1.0 } else { 0.0 });
    }

    async fn subscribe(&self) -> Result<(lapin::Connection, lapin::Consumer), bus::BusError> {
        let connection = bus::connect(&self.amqp_url, "read-api").await?;
        let channel = connection.create_channel().await?;
        // A fresh name per attempt: a half-dead previous connection may still
        // hold the old exclusive queue.
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let queue = bus::declare_instance_queue(&channel, &self.topology, &instance).await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                // Auto-ack: a lost event only matters while connected, and a
                // lost connection clears L1 anyway.
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((connection, consumer))
    }

    async fn apply(&self, body: &[u8]) {
        match ChangeEvent::from_slice(body) {
            Ok(event) => {
                let id = event.product_id;
                match (event.kind, &event.product, self.mode) {
                    (EventKind::Deleted, _, _) => {
                        self.l1.fence(id, event.version, FenceKind::Deleted).await;
                    }
                    (_, Some(product), InvalidatorMode::Refresh) => match Entry::product(product) {
                        Ok(entry) => self.l1.refresh(id, Arc::new(entry)).await,
                        Err(_) => self.l1.fence(id, event.version, FenceKind::Tombstone).await,
                    },
                    _ => self.l1.fence(id, event.version, FenceKind::Tombstone).await,
                }
                metrics::counter!("l1_fences_total").increment(1);
                let lag = (chrono::Utc::now() - event.occurred_at)
                    .num_microseconds()
                    .unwrap_or(0);
                metrics::histogram!("l1_event_lag_seconds").record(lag.max(0) as f64 / 1e6);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed product event"),
        }
    }
}
