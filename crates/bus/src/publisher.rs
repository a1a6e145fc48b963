//! A publisher with confirms: a message counts as sent only when the broker
//! has acknowledged it (written to the queues it routes to), never when it
//! merely left our socket.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;

use crate::{Broker, BusError, Topology, declare_topology};

/// How long one [`Publisher::publish`] may take in all: reopening the
/// connection if it was lost, sending, and the broker's confirms. The outbox
/// relay holds its claimed rows locked meanwhile, so its store call allows
/// for exactly this much besides its own statements.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// One message to publish: one event, or several of the same type.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub routing_key: &'a str,
    /// Becomes the AMQP `message_id`.
    pub message_id: &'a str,
    /// Becomes the AMQP `correlation_id`: the request id of the write that
    /// caused the events, when one request caused them all.
    pub correlation_id: Option<&'a str>,
    /// For a batch whose events came from different requests: each event's
    /// request id, in order (the [`CORRELATION_IDS`] header). Empty
    /// otherwise.
    pub correlation_ids: &'a [Option<&'a str>],
    pub payload: &'a [u8],
}

/// Header of a batch message whose events came from different requests:
/// an array of each event's request id, in the batch's order (an empty
/// string where a change came from no request, such as plain SQL).
pub const CORRELATION_IDS: &str = "correlation_ids";

fn correlation_ids_header(ids: &[Option<&str>]) -> FieldTable {
    let values = ids
        .iter()
        .map(|id| AMQPValue::LongString(id.unwrap_or_default().into()))
        .collect::<Vec<_>>();
    let mut headers = FieldTable::default();
    headers.insert(CORRELATION_IDS.into(), AMQPValue::FieldArray(values.into()));
    headers
}

/// Publishes to the events exchange over one lazily (re)opened connection.
/// After any failure the connection is dropped, and the next call reconnects;
/// the caller owns the retry policy.
pub struct Publisher {
    broker: Broker,
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
    pub fn new(broker: Broker, name: &str, topology: Topology) -> Self {
        Self {
            broker,
            name: name.to_owned(),
            topology,
            link: Mutex::new(None),
            up: AtomicBool::new(false),
        }
    }

    async fn open(&self) -> Result<Link, BusError> {
        let connection = self.broker.connect(&self.name).await?;
        let channel = crate::open_channel(&connection).await?;
        declare_topology(&channel, &self.topology).await?;
        crate::timed(
            "selecting publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
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

    /// Why the last connection attempt's TLS handshake failed, if it did.
    pub fn tls_failure(&self) -> Option<tls::Failure> {
        self.broker.tls_failure()
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
        let attempt = async {
            if !guard
                .as_ref()
                .is_some_and(|l| l.channel.status().connected())
            {
                *guard = None;
                *guard = Some(self.open().await?);
            }
            match guard.as_ref() {
                Some(link) => {
                    publish_on(&link.channel, &self.topology.events_exchange(), messages).await
                }
                None => Err(BusError::Timeout("opening a channel")),
            }
        };
        let result = tokio::time::timeout(PUBLISH_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(BusError::Timeout(
                "publishing and waiting for confirms",
            )));
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
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            // 2 = persistent: the message survives a broker restart.
            .with_delivery_mode(2)
            .with_message_id(m.message_id.into())
            .with_type(m.routing_key.into())
            .with_timestamp(u64::try_from(chrono_now_secs()).unwrap_or_default());
        if let Some(id) = m.correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        if !m.correlation_ids.is_empty() {
            properties = properties.with_headers(correlation_ids_header(m.correlation_ids));
        }
        let confirm = crate::timed(
            "publishing",
            channel.basic_publish(
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
            ),
        )
        .await?;
        pending.push(confirm);
    }
    // Bounded by the caller's PUBLISH_TIMEOUT.
    let confirmations = futures::future::join_all(pending).await;
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
