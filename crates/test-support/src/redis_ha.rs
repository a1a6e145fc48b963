//! Redis with Sentinel, for the failover tests: a primary, one replica and
//! three Sentinels (quorum 2) watching them under the master name
//! [`MASTER_NAME`], all private processes on free loopback ports. A Sentinel
//! calls the primary down after 1 s without an answer
//! (`down-after-milliseconds 1000`), so a killed primary is replaced within
//! a few seconds. Measured on two cores: up in 2.1 s, a failover seen 2.2
//! to 2.3 s after the kill (the test that kills it prints the time).
//! Everything is killed when dropped.

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    fixture::{self, PORT_ATTEMPTS, START_WAIT, TempDir},
    redis_server::RedisServer,
};

/// The name the Sentinels know the primary by.
pub const MASTER_NAME: &str = "catalog";

/// The running primary, replica and Sentinels.
pub struct RedisHa {
    /// The two data servers; which one is primary changes on failover.
    servers: [RedisServer; 2],
    /// Index in `servers` of the primary as the Sentinels last named it.
    primary: usize,
    sentinels: Vec<Sentinel>,
    /// The Sentinels' config files and logs (`catalog-sentinel-<uuid>`).
    sentinel_dir: TempDir,
}

struct Sentinel {
    port: u16,
    child: Child,
}

impl RedisHa {
    /// Starts the primary, then the replica (waiting for its replication link
    /// to be up), then the Sentinels, and returns once every Sentinel knows
    /// the replica and the two other Sentinels: from then on a killed primary
    /// is failed over. Takes about two seconds, most of it the Sentinels
    /// finding each other (they say hello every 2 s).
    pub async fn start() -> Self {
        let primary = RedisServer::start(&as_strs(&server_args(None))).await;
        let replica_of = server_args(Some(primary.port()));
        let replica = RedisServer::start(&as_strs(&replica_of)).await;
        wait_for_link(&replica).await;

        let mut ha = Self {
            sentinels: Vec::new(),
            sentinel_dir: TempDir::new("sentinel"),
            servers: [primary, replica],
            primary: 0,
        };
        for _ in 0..3 {
            let sentinel = ha.spawn_sentinel().await;
            ha.sentinels.push(sentinel);
        }
        for addr in ha.sentinel_addrs() {
            crate::eventually(
                "each Sentinel to know the replica and two other Sentinels",
                START_WAIT,
                || {
                    let addr = addr.clone();
                    async move {
                        let master = sentinel_master(&addr).await?;
                        let count = |k: &str| master.get(k).and_then(|v| v.parse::<u32>().ok());
                        (count("num-slaves") == Some(1) && count("num-other-sentinels") == Some(2))
                            .then_some(())
                    }
                },
            )
            .await;
        }
        ha
    }

    /// The master name to give a Sentinel-aware client.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// `127.0.0.1:PORT` of each Sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// `redis://` URL of the primary as the Sentinels last named it (the
    /// original primary until [`wait_for_failover`](Self::wait_for_failover)
    /// has seen a new one).
    pub fn primary_url(&self) -> String {
        self.servers[self.primary].url()
    }

    /// `redis://` URL of the other data server: the replica.
    pub fn replica_url(&self) -> String {
        self.servers[1 - self.primary].url()
    }

    /// SIGKILLs the current primary: a crash, with no chance to tell anyone.
    pub fn kill_primary(&mut self) {
        self.servers[self.primary].kill();
    }

    /// Waits until every Sentinel names a primary other than the one known so
    /// far and that server answers `ROLE` as master; returns its
    /// `127.0.0.1:PORT`. Panics after `timeout`.
    pub async fn wait_for_failover(&mut self, timeout: Duration) -> String {
        let old = self.servers[self.primary].addr();
        let sentinels = self.sentinel_addrs();
        let new = crate::eventually("the Sentinels to promote the replica", timeout, || {
            let (old, sentinels) = (old.clone(), sentinels.clone());
            async move {
                let mut named = Vec::new();
                for s in &sentinels {
                    named.push(master_addr(s).await?);
                }
                let new = named.pop()?;
                if new == old || named.iter().any(|n| *n != new) {
                    return None;
                }
                (role(&new).await.as_deref() == Some("master")).then_some(new)
            }
        })
        .await;
        self.primary = self
            .servers
            .iter()
            .position(|s| s.addr() == new)
            .unwrap_or_else(|| panic!("the Sentinels named {new}, which is not one of ours"));
        new
    }

    /// After a failover: starts the old primary again (empty, same port) as a
    /// replica of the new one and waits for its replication link. The
    /// Sentinels would reconfigure it too; saying so at start is quicker.
    pub async fn restart_old_primary_as_replica(&mut self) {
        let new_primary = self.servers[self.primary].port();
        let old = &mut self.servers[1 - self.primary];
        old.restart_with(server_args(Some(new_primary))).await;
        wait_for_link(old).await;
    }

    async fn spawn_sentinel(&self) -> Sentinel {
        let dir = self.sentinel_dir.path();
        let primary_port = self.servers[self.primary].port();
        for attempt in 1..=PORT_ATTEMPTS {
            let port = fixture::free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            let log = dir.join(format!("sentinel-{port}.log"));
            write_sentinel_conf(&conf, &log, dir, port, primary_port);
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start redis-server --sentinel ({e}): install redis-server")
                });
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let ready = crate::eventually("a Sentinel to answer PING", START_WAIT, || {
                let exited = child.try_wait().ok().flatten();
                let client = client.clone();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    crate::redis_server::ping(&client).await.then_some(Ok(()))
                }
            })
            .await;
            match ready {
                Ok(()) => return Sentinel { port, child },
                Err(status) => {
                    let tail = fixture::log_tail(&log, 20);
                    if !(tail.contains("Address already in use") && attempt < PORT_ATTEMPTS) {
                        panic!("a Sentinel exited at start ({status})\n{tail}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

impl Drop for RedisHa {
    fn drop(&mut self) {
        // The data servers kill themselves when dropped.
        for s in &mut self.sentinels {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// Quorum 2 of 3; the primary is down after 1 s of silence; a failover that
/// stalls is retried after 2 × 3 s. `announce-ip` makes each Sentinel tell
/// the others the loopback address it listens on.
fn write_sentinel_conf(conf: &Path, log: &Path, dir: &Path, port: u16, primary_port: u16) {
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         daemonize no\n\
         dir \"{dir}\"\n\
         logfile \"{log}\"\n\
         sentinel announce-ip 127.0.0.1\n\
         sentinel resolve-hostnames no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 3000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.display(),
        log = log.display(),
    );
    std::fs::write(conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
}

/// Either server may become primary, so both sync replicas at once: Redis 7
/// waits 5 s by default (`repl-diskless-sync-delay`) for more replicas to
/// share one transfer. `replica_of`: the primary's port, for a replica.
fn server_args(replica_of: Option<u16>) -> Vec<String> {
    let mut args = vec!["--repl-diskless-sync-delay".to_owned(), "0".to_owned()];
    if let Some(port) = replica_of {
        args.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            port.to_string(),
        ]);
    }
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits for `INFO replication` on `replica` to say `master_link_status:up`.
async fn wait_for_link(replica: &RedisServer) {
    let client = replica.client();
    crate::eventually("the replica's link to its primary", START_WAIT, || {
        let client = client.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        }
    })
    .await;
}

async fn query<T: redis::FromRedisValue>(addr: &str, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://{addr}")).ok()?;
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async(&mut conn).await.ok()
    })
    .await
    .ok()?
}

/// `SENTINEL MASTER <name>` as field → value.
async fn sentinel_master(sentinel: &str) -> Option<HashMap<String, String>> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("MASTER").arg(MASTER_NAME);
    query(sentinel, &cmd).await
}

/// The primary's `ip:port` as `sentinel` names it.
async fn master_addr(sentinel: &str) -> Option<String> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME);
    let (ip, port): (String, u16) = query(sentinel, &cmd).await?;
    Some(format!("{ip}:{port}"))
}

/// The first field of `ROLE`: "master", "slave" or "sentinel".
async fn role(addr: &str) -> Option<String> {
    let role: Vec<redis::Value> = query(addr, &redis::cmd("ROLE")).await?;
    redis::from_redis_value(role.into_iter().next()?).ok()
}
