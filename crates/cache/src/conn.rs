//! One connection type for a single Redis server, a Redis Cluster and Redis
//! behind Sentinel, so that every cache operation is written once.
//!
//! The key schema already keeps every script, every transaction and every
//! multi-key command in one slot (see [`crate::keys`]). What a cluster adds
//! is pipelines that span slots: the invalidator's batch fences products all
//! over the keyspace, and the cluster client refuses such a pipeline
//! (CROSSSLOT). On a cluster, a pipeline is therefore sent as single
//! commands, all at once: the cluster client multiplexes them over its one
//! connection per node, so they still share round trips.
//!
//! TLS is the URLs' choice: `rediss://` connects over TLS (rustls), trusting
//! the CA file of [`tls::ClientTls`] instead of the system roots when one is
//! configured, and presenting its client certificate when one is; `redis://`
//! stays plain text, built exactly as before.
//!
//! A single server gets one multiplexed connection per thread that uses it
//! ([`PerThread`]), not one for the whole process. read-api answers on
//! actix workers, each a single-threaded runtime; a shared connection's
//! driver task lives on whichever runtime first connected it, so every GET
//! from a worker crossed threads twice (request in, reply out) and woke
//! another thread each way. Profiled on L2 hits (`perf`, 1 worker): a
//! quarter of read-api's samples were on that other thread and 17 % in
//! `finish_task_switch`. With a connection per thread the request, the
//! socket and the reply stay on the worker's runtime. Ordering is not lost:
//! a task's next command is sent after the previous reply, and a pipeline
//! (the invalidator's batch with its `WAIT`) is one request on one
//! connection.

use std::{sync::Arc, time::Duration};

use futures::future::{FutureExt, try_join_all};
use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

use crate::{CacheError, sentinel::SentinelConn};

/// Whether a Redis URL asks for TLS.
pub(crate) fn is_tls(url: &str) -> bool {
    url.trim_start()
        .get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// What redis-rs takes for TLS: the CA file's certificates (PEM) instead of
/// the system roots, and the client certificate.
pub(crate) fn certificates(tls: &tls::ClientTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .identity_pem()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.to_vec(),
                client_key: key.to_vec(),
            }),
        root_cert: tls.ca_pem().map(<[u8]>::to_vec),
    }
}

/// A client for one server: TLS as the URL says.
fn client(url: &str, tls: &tls::ClientTls) -> redis::RedisResult<redis::Client> {
    if is_tls(url) {
        tls::install_provider();
        redis::Client::build_with_tls(url, certificates(tls))
    } else {
        redis::Client::open(url)
    }
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server (`redis://host:port`).
    Single(String),
    /// A Redis Cluster, by seed nodes: commands are routed by hash slot.
    Cluster(Vec<String>),
    /// A primary with replicas, managed by Sentinel: the Sentinels' URLs
    /// and the name they monitor it under. Commands follow the primary
    /// through a failover.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        /// Whether the primary (and replicas) speak TLS; the Sentinels' own
        /// URLs say whether they do.
        primary_tls: bool,
    },
}

/// A cheap-to-clone handle; every variant reconnects on its own.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(Arc<PerThread>),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl Conn {
    /// Prepares a lazy connection: this succeeds while Redis is down, and
    /// the first command connects.
    pub(crate) fn open(
        endpoint: &Endpoint,
        tls: &tls::ClientTls,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        let unavailable = CacheError::from;
        let connect_timeout = timeout.max(Duration::from_millis(250));
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let url = match endpoint {
            Endpoint::Single(url) => url,
            Endpoint::Sentinel {
                sentinels,
                master,
                primary_tls,
            } => {
                return SentinelConn::new(sentinels, master, *primary_tls, tls, manager_config)
                    .map(Self::Sentinel)
                    .map_err(unavailable);
            }
            Endpoint::Cluster(seeds) => {
                let mut builder = ClusterClient::builder(seeds.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(timeout)
                    .retries(1);
                // Nodes found through the seeds get the seeds' TLS (the
                // settings refuse a mix of schemes).
                if seeds.iter().any(|s| is_tls(s)) {
                    tls::install_provider();
                    builder = builder.certs(certificates(tls));
                }
                let client = builder.build().map_err(unavailable)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(timeout);
                return Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ));
            }
        };
        let client = client(url, tls).map_err(unavailable)?;
        Ok(Self::Single(Arc::new(PerThread {
            client,
            config: manager_config,
            conns: thread_local::ThreadLocal::new(),
        })))
    }

    /// The cluster connection, for commands that must be routed by hand.
    pub(crate) fn cluster(&self) -> Option<&ClusterConnection> {
        match self {
            Self::Cluster(c) => Some(c),
            Self::Single(_) | Self::Sentinel(_) => None,
        }
    }
}

/// One lazy connection to a single server per thread that uses it (see the
/// module comment). Each is made on first use, inside that thread's
/// runtime, so its driver task runs there.
pub(crate) struct PerThread {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conns: thread_local::ThreadLocal<ConnectionManager>,
}

impl PerThread {
    /// This thread's connection (cheap: a clone of a handle).
    fn here(&self) -> redis::RedisResult<ConnectionManager> {
        self.conns
            .get_or_try(|| {
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            })
            .cloned()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => match c.here() {
                Ok(mut conn) => async move { conn.req_packed_command(cmd).await }.boxed(),
                Err(e) => futures::future::ready(Err(e)).boxed(),
            },
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => match c.here() {
                Ok(mut conn) => {
                    async move { conn.req_packed_commands(pipeline, offset, count).await }.boxed()
                }
                Err(e) => futures::future::ready(Err(e)).boxed(),
            },
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => {
                if pipeline.is_transaction() {
                    // A transaction stays in one slot (the key schema sees to it).
                    return c.req_packed_commands(pipeline, offset, count);
                }
                // Not a transaction, so offset 0 and one reply per command.
                let conn = c.clone();
                try_join_all(pipeline.cmd_iter().map(move |cmd| {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_command(cmd).await }
                }))
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.client.get_connection_info().redis_settings().db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}
