//! RabbitMQ: the names and shape of every exchange and queue (the topology),
//! a publisher that only reports a message sent once the broker confirmed it,
//! and the consumer-side helpers the invalidator and read-api share.
//!
//! Topology lives only here, so the write side, the invalidator and tests
//! agree on it by construction.
//!
//! TLS is the URLs' choice: `amqps://` connects over rustls (ring), trusting
//! the system roots plus the CA file of [`tls::ClientTls`] when one is
//! configured (lapin's connector always starts from the system store), and
//! presenting its client certificate when one is; `amqp://` stays plain text,
//! connected exactly as before.

mod acks;
mod publisher;
mod topology;

use std::{sync::Arc, time::Duration};

pub use acks::{ACK_IDLE, Acks};
pub use lapin;
pub use publisher::{CORRELATION_IDS, Outgoing, PUBLISH_TIMEOUT, Publisher};
pub use topology::{Topology, declare_instance_queue, declare_topology};

/// Time allowed to open a connection and a channel.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for any one AMQP call (a declare, a bind, a publish, an
/// ack...): a broker that stops answering must not hang a service's task,
/// whose loop then reconnects.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one AMQP call under [`CALL_TIMEOUT`]; `what` names it in the error.
pub async fn timed<T>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BusError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| BusError::Timeout(what))?
        .map_err(BusError::from)
}

/// Opens a channel on `connection`, under the call timeout.
pub async fn open_channel(connection: &lapin::Connection) -> Result<lapin::Channel, BusError> {
    timed("opening a channel", connection.create_channel()).await
}

/// Closes a connection, waiting at most the call timeout: at shutdown or
/// after a failure, a broker that does not answer is no reason to wait.
pub async fn close(connection: &lapin::Connection) {
    let _ = timed(
        "closing the connection",
        connection.close(200, "shutting down".into()),
    )
    .await;
}

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached, or the connection or channel broke.
    #[error("RabbitMQ is unavailable")]
    Unavailable(#[from] lapin::Error),
    /// The broker did not answer within our deadline.
    #[error("RabbitMQ did not answer in time while {0}")]
    Timeout(&'static str),
    /// The broker cancelled our consumer (the queue was deleted, the node
    /// went away).
    #[error("RabbitMQ closed the consumer")]
    ConsumerClosed,
    /// The TLS handshake failed: a configuration to fix, worded with the key
    /// to check.
    #[error("{}", .failure.reason(tls::Backend::RabbitMq))]
    Tls {
        failure: tls::Failure,
        #[source]
        source: lapin::Error,
    },
}

impl BusError {
    /// The TLS failure this error is, if it is one.
    pub fn tls_failure(&self) -> Option<tls::Failure> {
        match self {
            Self::Tls { failure, .. } => Some(*failure),
            _ => None,
        }
    }
}

/// Where the broker is and how to reach it: one URL or several,
/// comma-separated (the nodes of a cluster), and what `amqps://` connections
/// trust and present. Cheap to clone; clones share what the last connection
/// attempt found, so readiness can tell a TLS failure from an outage.
#[derive(Clone)]
pub struct Broker {
    urls: Arc<str>,
    tls: tls::ClientTls,
    last_failure: Arc<tls::LastFailure>,
}

/// The URLs carry credentials: never shown.
impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("nodes", &self.urls.split(',').count())
            .field("tls", &self.tls)
            .finish()
    }
}

impl Broker {
    pub fn new(urls: &str, tls: tls::ClientTls) -> Self {
        Self {
            urls: urls.into(),
            tls,
            last_failure: Arc::default(),
        }
    }

    /// Opens a connection (see [`connect`]); records whether it failed its
    /// TLS handshake.
    pub async fn connect(&self, name: &str) -> Result<lapin::Connection, BusError> {
        let result = connect_with(&self.urls, &self.tls, name).await;
        self.last_failure
            .set(result.as_ref().err().and_then(BusError::tls_failure));
        result
    }

    /// Why the last connection attempt's TLS handshake failed, if it did.
    pub fn tls_failure(&self) -> Option<tls::Failure> {
        self.last_failure.get()
    }
}

/// Heartbeat asked for when the URL does not set one: a dead peer is noticed
/// within about two intervals instead of the broker's default minute.
const HEARTBEAT_SECS: u16 = 10;

/// Opens a connection, naming it `name` in the broker's management views.
/// `urls` is one broker URL or several, comma-separated (the nodes of a
/// cluster): the first that answers is used, starting from a different one
/// on each call, so instances spread over the nodes and a dead node costs
/// one attempt, not every reconnect. `amqps://` URLs trust the system roots
/// only; [`Broker::connect`] takes a CA file and a client certificate.
pub async fn connect(urls: &str, name: &str) -> Result<lapin::Connection, BusError> {
    connect_with(urls, &tls::ClientTls::default(), name).await
}

async fn connect_with(
    urls: &str,
    tls: &tls::ClientTls,
    name: &str,
) -> Result<lapin::Connection, BusError> {
    let urls: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let start = NEXT_NODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut last = BusError::Timeout("connecting: no broker URL");
    for i in 0..urls.len() {
        let url = urls[(start + i) % urls.len()];
        match connect_one(url, tls, name).await {
            Ok(conn) => return Ok(conn),
            Err(e) => {
                if urls.len() > 1 {
                    tracing::debug!(node = i, error = %e, "broker node did not answer; trying the next");
                }
                last = e;
            }
        }
    }
    Err(last)
}

/// Which node of the list the next `connect` tries first.
static NEXT_NODE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn connect_one(
    url: &str,
    tls: &tls::ClientTls,
    name: &str,
) -> Result<lapin::Connection, BusError> {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    let url = with_heartbeat(url);
    let connecting = async {
        if is_tls(&url) {
            tls::install_provider();
            lapin::DefaultConnectionBuilder::new()?
                .with_uri_str(url)
                .with_properties(props)
                .with_tls_config(tls_config(tls))
                .connect()
                .await
        } else {
            lapin::Connection::connect(&url, props).await
        }
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| BusError::Timeout("connecting"))?;
    result.map_err(|e| match tls::Failure::of(&e) {
        Some(failure) => BusError::Tls { failure, source: e },
        None => BusError::from(e),
    })
}

fn is_tls(url: &str) -> bool {
    url.trim_start()
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("amqps://"))
}

/// What lapin takes for TLS: extra CA certificates (PEM) and a client
/// identity (certificate chain and key, PEM).
fn tls_config(tls: &tls::ClientTls) -> lapin::tcp::OwnedTLSConfig {
    lapin::tcp::OwnedTLSConfig {
        identity: tls
            .identity_pem()
            .map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 {
                pem: pem.to_vec(),
                key: key.to_vec(),
            }),
        cert_chain: tls
            .ca_pem()
            .map(|pem| String::from_utf8_lossy(pem).into_owned()),
    }
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

/// The correlation id a message carries: the request id of the write that
/// caused it, so logs follow one change from write-api to every fence.
pub fn correlation_id(delivery: &lapin::message::Delivery) -> Option<&str> {
    delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(lapin::types::ShortString::as_str)
}

/// The request id behind each of a message's `events` events: the
/// [`CORRELATION_IDS`] header of a batch from several requests, else the
/// message's `correlation_id` for all of them.
pub fn correlation_ids(delivery: &lapin::message::Delivery, events: usize) -> Vec<Option<String>> {
    use lapin::types::AMQPValue;
    let listed = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(CORRELATION_IDS))
        .and_then(|v| match v {
            AMQPValue::FieldArray(ids) => Some(ids.as_slice()),
            _ => None,
        })
        .filter(|ids| ids.len() == events);
    match listed {
        Some(ids) => ids
            .iter()
            .map(|v| match v {
                AMQPValue::LongString(s) if !s.as_bytes().is_empty() => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            })
            .collect(),
        None => vec![correlation_id(delivery).map(str::to_owned); events],
    }
}
