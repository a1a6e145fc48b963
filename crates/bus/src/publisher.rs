//! A publisher with confirms: a message counts as sent only when the broker
//! has acknowledged it (written to the queues it routes to), never when it
//! merely left our socket.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;

use crate::{BusError, Topology, connect, declare_topology};

/// How long to wait for the broker's confirms of one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub routing_key: &'a str,
    /// Becomes the AMQP `message_id`.
    pub message_id: &'a str,
    pub payload: &'a [u8],
}

/// Publishes to the events exchange over one lazily (re)opened connection.
/// After any failure the connection is dropped, and the next call reconnects;
/// the caller owns the retry policy.
pub struct Publisher {
    url: String,
    name: String,
    topology: Topology,
    link: Mutex<Option<Link>>,
    /// The link's state as of the last operation, readable without waiting
    /// for a publish in progress (readiness probes).
    up: AtomicBool,
}

struct Link {
    /// Kept so the connection lives as long as the channel.
    _connection: Connection,
    channel: Channel,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("exchange", &self.topology.events_exchange())
            .finish()
    }
}

impl Publisher {
    /// A publisher for `topology`'s events exchange; connects on first use.
    pub fn new(url: &str, name: &str, topology: Topology) -> Self {
        Self {
            url: url.to_owned(),
            name: name.to_owned(),
            topology,
            link: Mutex::new(None),
            up: AtomicBool::new(false),
        }
    }

    async fn open(&self) -> Result<Link, BusError> {
        let connection = connect(&self.url, &self.name).await?;
        let channel = connection.create_channel().await?;
        declare_topology(&channel, &self.topology).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Link {
            _connection: connection,
            channel,
        })
    }

    /// Whether the last attempt to connect or publish succeeded (readiness).
    pub fn is_connected(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Connects now if not connected (the relay calls this before claiming
    /// outbox rows).
    pub async fn ensure_connected(&self) -> Result<(), BusError> {
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_some_and(|l| l.channel.status().connected())
        {
            return Ok(());
        }
        let opened = self.open().await;
        self.up.store(opened.is_ok(), Ordering::Release);
        *link = Some(opened?);
        Ok(())
    }

    /// Publishes `messages` (persistent, JSON, mandatory) and waits for their
    /// confirms. Returns, for each message, whether the broker confirmed it.
    /// An error means nothing can be said about any of them.
    pub async fn publish(&self, messages: &[Outgoing<'_>]) -> Result<Vec<bool>, BusError> {
        let mut guard = self.link.lock().await;
        if !guard
            .as_ref()
            .is_some_and(|l| l.channel.status().connected())
        {
            *guard = None;
            *guard = Some(self.open().await?);
        }
        let Some(link) = guard.as_ref() else {
            return Err(BusError::Unavailable("no channel".into()));
        };
        let result = publish_on(&link.channel, &self.topology.events_exchange(), messages).await;
        if result.is_err() {
            // Whatever broke, start from a fresh connection next time.
            *guard = None;
        }
        self.up.store(result.is_ok(), Ordering::Release);
        result
    }
}

async fn publish_on(
    channel: &Channel,
    exchange: &str,
    messages: &[Outgoing<'_>],
) -> Result<Vec<bool>, BusError> {
    let mut pending = Vec::with_capacity(messages.len());
    for m in messages {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            // 2 = persistent: the message survives a broker restart.
            .with_delivery_mode(2)
            .with_message_id(m.message_id.into())
            .with_type(m.routing_key.into())
            .with_timestamp(u64::try_from(chrono_now_secs()).unwrap_or_default());
        let confirm = channel
            .basic_publish(
                exchange.into(),
                m.routing_key.into(),
                // mandatory: an unroutable message comes back instead of
                // vanishing; we then treat it as not sent.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                m.payload,
                properties,
            )
            .await?;
        pending.push(confirm);
    }
    let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, futures::future::join_all(pending))
        .await
        .map_err(|_| BusError::Unavailable("timed out waiting for publisher confirms".into()))?;
    let mut confirmed = Vec::with_capacity(confirmations.len());
    for c in confirmations {
        confirmed.push(match c? {
            Confirmation::Ack(None) => true,
            Confirmation::Ack(Some(_)) => {
                tracing::error!(
                    exchange,
                    "event was unroutable: no queue is bound; will retry"
                );
                false
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => false,
        });
    }
    Ok(confirmed)
}

fn chrono_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
