//! One connection type for a single Redis server and for a Redis Cluster, so
//! that every cache operation is written once.
//!
//! The key schema already keeps every script, every transaction and every
//! multi-key command in one slot (see [`crate::keys`]). What a cluster adds
//! is pipelines that span slots: the invalidator's batch fences products all
//! over the keyspace, and the cluster client refuses such a pipeline
//! (CROSSSLOT). On a cluster, a pipeline is therefore sent as single
//! commands, all at once: the cluster client multiplexes them over its one
//! connection per node, so they still share round trips.

use std::time::Duration;

use futures::future::{FutureExt, try_join_all};
use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

use crate::CacheError;

/// A cheap-to-clone handle; both variants reconnect on their own.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Prepares a lazy connection: this succeeds while Redis is down, and
    /// the first command connects. `url` is one URL, or for a cluster a
    /// comma-separated list of seed nodes.
    pub(crate) fn open(url: &str, cluster: bool, timeout: Duration) -> Result<Self, CacheError> {
        let unavailable = |e: redis::RedisError| CacheError::Unavailable(e.to_string());
        let connect_timeout = timeout.max(Duration::from_millis(250));
        if cluster {
            let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
            let client = ClusterClient::builder(seeds)
                .connection_timeout(connect_timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(unavailable)?;
            let config = ClusterConfig::new()
                .set_connection_timeout(connect_timeout)
                .set_response_timeout(timeout);
            return Ok(Self::Cluster(
                client.get_pending_async_connection_with_config(config),
            ));
        }
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client, config)
            .map(Self::Single)
            .map_err(unavailable)
    }

    /// The cluster connection, for commands that must be routed by hand.
    pub(crate) fn cluster(&self) -> Option<&ClusterConnection> {
        match self {
            Self::Cluster(c) => Some(c),
            Self::Single(_) => None,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
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
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
