//! A three-node Redis Cluster for tests: three `redis-server` processes on
//! free ports, the 16384 slots split between them, stopped when dropped.
//! `CATALOG_TEST_REDIS_CLUSTER_URL` (comma-separated seed URLs) points the
//! tests at an existing cluster instead.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The running cluster.
pub struct RedisCluster {
    /// Comma-separated seed URLs, as `redis.url` takes them with
    /// `redis.cluster = true`.
    pub url: String,
    nodes: Vec<Child>,
    dir: Option<PathBuf>,
}

/// A port free for Redis and for its cluster bus (port + 10000).
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port());
        if (1024..55_535).contains(&port) && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

impl RedisCluster {
    pub async fn start() -> Self {
        if let Ok(url) = std::env::var("CATALOG_TEST_REDIS_CLUSTER_URL") {
            return Self {
                url,
                nodes: Vec::new(),
                dir: None,
            };
        }
        let dir = std::env::temp_dir().join(format!("catalog-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start redis-server ({e}): the Redis Cluster tests start three \
                         nodes with it (install redis-server), or set \
                         CATALOG_TEST_REDIS_CLUSTER_URL to an existing cluster's seed URLs"
                    )
                });
            nodes.push(child);
            ports.push(port);
        }
        let cluster = Self {
            url: ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
            nodes,
            dir: Some(dir),
        };
        let mut conns = Vec::new();
        for port in &ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let conn = crate::eventually("a cluster node to answer", WAIT, || {
                let client = client.clone();
                async move { client.get_multiplexed_async_connection().await.ok() }
            })
            .await;
            conns.push(conn);
        }
        // Three equal slot ranges, then every node meets the first.
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (conn, (first, last)) in conns.iter_mut().zip(ranges) {
            let () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query_async(conn)
                .await
                .unwrap();
        }
        for (conn, port) in conns.iter_mut().zip(&ports).skip(1) {
            let () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(ports[0])
                .query_async(conn)
                .await
                .unwrap_or_else(|e| panic!("node {port} meeting the first: {e}"));
        }
        for conn in &conns {
            crate::eventually("the cluster to agree it is up", WAIT, || {
                let mut conn = conn.clone();
                async move {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    (info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3"))
                        .then_some(())
                }
            })
            .await;
        }
        cluster
    }
}

const WAIT: Duration = Duration::from_secs(20);

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
