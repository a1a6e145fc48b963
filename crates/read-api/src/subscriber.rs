//! This instance's subscription to product events: each event fences L1 at
//! its version (see `cache::plan`). The queue is private to the instance
//! (exclusive, gone with the connection), so every instance sees every
//! event.
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

use bus::{BusError, Topology, lapin};
use cache::{InvalidatorMode, L1, plan};
use domain::ChangeEvent;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use service::Backoff;
use tokio_util::sync::CancellationToken;

/// Events in flight to this instance at most (unacked): the bound on what
/// waits in its memory.
const PREFETCH: u16 = 512;
/// Applied events acked together, at most.
const ACK_EVERY: u32 = 64;

/// Keeps L1 fenced by events until `shutdown`.
pub struct Subscriber {
    pub broker: bus::Broker,
    pub topology: Topology,
    pub l1: L1,
    /// The highest WAL position seen: each event's, so the replica is read
    /// only once it has the change.
    pub seen: Arc<crate::Seen>,
    /// The newest change seen per list family, so pages the invalidator has
    /// not bumped yet are not served here.
    pub family_floors: Arc<crate::pages::FamilyFloors>,
    /// Whether events are flowing right now (readiness, metrics).
    pub connected: Arc<AtomicBool>,
    /// `evict`: fence L1 at the event's version; `refresh`: also write the
    /// event's snapshot over an entry L1 holds.
    pub mode: InvalidatorMode,
}

impl Subscriber {
    /// Subscribes, and subscribes again whenever the connection is lost,
    /// until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.subscribe().await {
                Ok((connection, consumer)) => {
                    backoff.reset();
                    let ended = self.consume(consumer, &shutdown).await;
                    // Fences may be missed from here on: what L1 holds goes,
                    // and entries written until the next subscription live
                    // only the short TTL.
                    self.set_connected(false);
                    self.l1.clear();
                    if shutdown.is_cancelled() {
                        bus::close(&connection).await;
                        return Ok(());
                    }
                    let error = ended.err().map(|e| service::http::Chain(&e).to_string());
                    tracing::warn!(
                        error,
                        "L1 event subscription lost; L1 cleared, reconnecting"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %service::http::Chain(&e), "cannot subscribe to product events");
                }
            }
            if !backoff.wait(&shutdown).await {
                return Ok(());
            }
        }
    }

    /// Applies events until the consumer ends or `shutdown`.
    async fn consume(
        &self,
        mut consumer: lapin::Consumer,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        // Fences flow from here on: entries written from now live long;
        // anything filled before now may have missed a fence and goes.
        self.set_connected(true);
        self.l1.clear();
        tracing::info!("L1 event subscription established");
        // Acks go in batches (one `multiple` ack covers every delivery up
        // to it): each applied event's ack waits for a few more, or for a
        // short idle moment.
        let mut acks = bus::Acks::new(ACK_EVERY);
        loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(delivery) => {
                        let delivery = delivery?;
                        self.apply(&delivery).await;
                        acks.push(delivery.acker).await?;
                    }
                    None => return Err(BusError::ConsumerClosed),
                },
                () = tokio::time::sleep(bus::ACK_IDLE), if acks.is_pending() => {
                    acks.flush().await?;
                }
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        metrics::gauge!("l1_subscription_up").set(if up { 1.0 } else { 0.0 });
    }

    async fn subscribe(&self) -> Result<(lapin::Connection, lapin::Consumer), BusError> {
        let connection = self.broker.connect("read-api").await?;
        let channel = bus::open_channel(&connection).await?;
        // A fresh name per attempt: a half-dead previous connection may still
        // hold the old exclusive queue.
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let queue = bus::declare_instance_queue(&channel, &self.topology, &instance).await?;
        // Manual acks under a prefetch: with auto-ack the broker pushes
        // everything it has and the client buffers it without bound.
        bus::timed(
            "setting the prefetch",
            channel.basic_qos(PREFETCH, BasicQosOptions::default()),
        )
        .await?;
        let consumer = bus::timed(
            "consuming the instance queue",
            channel.basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok((connection, consumer))
    }

    async fn apply(&self, delivery: &Delivery) {
        let events = match ChangeEvent::many_from_slice(&delivery.data) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed product event");
                return;
            }
        };
        let correlation_ids = bus::correlation_ids(delivery, events.len());
        let now = chrono::Utc::now();
        for (event, correlation_id) in events.iter().zip(&correlation_ids) {
            if let Some(lsn) = event.lsn {
                self.seen.observe(lsn);
            }
            self.family_floors.observe(event);
            self.l1.apply(&plan::op_for(event, self.mode)).await;
            tracing::debug!(
                correlation_id = correlation_id.as_deref(),
                event_id = %event.event_id,
                product_id = %event.product_id,
                version = %event.version,
                "L1 fenced"
            );
            let lag = (now - event.occurred_at).num_microseconds().unwrap_or(0);
            metrics::histogram!("l1_event_lag_seconds").record(lag.max(0) as f64 / 1e6);
        }
        metrics::counter!("l1_fences_total").increment(events.len() as u64);
    }
}
