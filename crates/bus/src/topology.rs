//! Exchange and queue names, and their idempotent declarations.

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{BusError, timed};

/// The names of one deployment's exchanges and queues, all prefixed with the
/// namespace so deployments and tests can share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
}

/// Routing keys the invalidator and read-api instances bind: every product
/// event.
pub const PRODUCT_EVENTS: &str = "product.*";

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Durable topic exchange every change event is published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Durable quorum queue the invalidator consumes.
    pub fn invalidator_queue(&self) -> String {
        format!("{}.invalidator", self.namespace)
    }

    /// Where rejected and exhausted invalidator messages are routed.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.namespace)
    }

    /// Durable queue holding dead-lettered messages for inspection.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.invalidator.dlq", self.namespace)
    }

    /// Prefix of each read-api instance's private queue.
    pub fn instance_queue_prefix(&self) -> String {
        format!("{}.read-api.", self.namespace)
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the durable part of the topology: the events exchange, the
/// invalidator's quorum queue bound to it, and the dead-letter exchange and
/// queue. Idempotent. write-api declares it too, before its first publish,
/// so no event is ever published to an exchange with nothing bound to it.
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> Result<(), BusError> {
    let events = topology.events_exchange();
    let dlx = topology.dead_letter_exchange();
    let queue = topology.invalidator_queue();
    let dlq = topology.dead_letter_queue();

    timed(
        "declaring the events exchange",
        channel.exchange_declare(
            events.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        ),
    )
    .await?;
    // Fanout: whatever is dead-lettered, from any queue of this namespace,
    // lands in the DLQ whatever its routing key.
    timed(
        "declaring the dead-letter exchange",
        channel.exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        ),
    )
    .await?;

    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    timed(
        "declaring the dead-letter queue",
        channel.queue_declare(dlq.as_str().into(), durable, quorum_args(None)),
    )
    .await?;
    timed(
        "binding the dead-letter queue",
        channel.queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;

    // A quorum queue: replicated when RabbitMQ runs as a cluster. The retry
    // limit is the consumer's own count, not a queue argument, so changing
    // `invalidator.max_retries` never conflicts with an existing queue's
    // declaration.
    timed(
        "declaring the invalidator queue",
        channel.queue_declare(queue.as_str().into(), durable, quorum_args(Some(&dlx))),
    )
    .await?;
    timed(
        "binding the invalidator queue",
        channel.queue_bind(
            queue.as_str().into(),
            events.as_str().into(),
            PRODUCT_EVENTS.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(())
}

fn quorum_args(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dlx) = dead_letter_exchange {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.into()),
        );
    }
    args
}

/// Declares a read-api instance's private queue (exclusive, so it dies with
/// the connection) bound to every product event, and returns its name.
pub async fn declare_instance_queue(
    channel: &Channel,
    topology: &Topology,
    instance: &str,
) -> Result<String, BusError> {
    let events = topology.events_exchange();
    timed(
        "declaring the events exchange",
        channel.exchange_declare(
            events.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        ),
    )
    .await?;
    let name = format!("{}{instance}", topology.instance_queue_prefix());
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    timed(
        "declaring the instance queue",
        channel.queue_declare(name.as_str().into(), options, FieldTable::default()),
    )
    .await?;
    timed(
        "binding the instance queue",
        channel.queue_bind(
            name.as_str().into(),
            events.as_str().into(),
            PRODUCT_EVENTS.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(name)
}
