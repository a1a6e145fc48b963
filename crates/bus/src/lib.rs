//! RabbitMQ: the names and shape of every exchange and queue (the topology),
//! a publisher that only reports a message sent once the broker confirmed it,
//! and the consumer-side helpers the invalidator and read-api share.
//!
//! Topology lives only here, so the write side, the invalidator and tests
//! agree on it by construction.

mod publisher;
mod topology;

use std::time::Duration;

pub use lapin;
pub use publisher::{Outgoing, Publisher};
pub use topology::{Topology, declare_instance_queue, declare_topology};

/// Time allowed to open a connection and a channel.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached, or the connection or channel broke.
    #[error("RabbitMQ unavailable: {0}")]
    Unavailable(String),
    /// The broker refused to take responsibility for a message.
    #[error("RabbitMQ did not confirm the message: {0}")]
    NotConfirmed(&'static str),
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Heartbeat asked for when the URL does not set one: a dead peer is noticed
/// within about two intervals instead of the broker's default minute.
const HEARTBEAT_SECS: u16 = 10;

/// Opens a connection, naming it `name` in the broker's management views.
pub async fn connect(url: &str, name: &str) -> Result<lapin::Connection, BusError> {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    let url = with_heartbeat(url);
    tokio::time::timeout(CONNECT_TIMEOUT, lapin::Connection::connect(&url, props))
        .await
        .map_err(|_| BusError::Unavailable("timed out connecting".into()))?
        .map_err(BusError::from)
}

fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={HEARTBEAT_SECS}")
    } else {
        format!("{url}?heartbeat={HEARTBEAT_SECS}")
    }
}

/// The retry attempt a delivery is on: 0 on first delivery, then the quorum
/// queue's `x-delivery-count` header (deliveries returned so far).
pub fn delivery_count(delivery: &lapin::message::Delivery) -> u32 {
    use lapin::types::AMQPValue;
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::ShortShortInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 0,
    }
}
