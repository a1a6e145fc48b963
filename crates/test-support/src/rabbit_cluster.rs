//! A private RabbitMQ cluster on this machine, for the tests of quorum queues
//! and node loss that the shared broker cannot stage; or a single node with
//! an `amqps` listener, for the TLS tests.
//!
//! Each node is `/usr/lib/rabbitmq/bin/rabbitmq-server` (or
//! `CATALOG_TEST_RABBITMQ_BIN`) run directly, as the current user: Debian's
//! `/usr/sbin` wrappers switch to the `rabbitmq` user and its cookie, which
//! are the system broker's. Everything a node owns is in
//! `catalog-rabbit-<uuid>`: its config, database and logs, and `home/` with
//! the cluster's own Erlang cookie file, mode 0400 (the nodes and our
//! `rabbitmqctl` calls share that `HOME`). 3.10 also honours
//! `RABBITMQ_ERLANG_COOKIE`, in the server (with a warning) and in
//! `rabbitmqctl`, but Erlang still writes a random cookie file into a `HOME`
//! that has none, so a `HOME` of our own is needed anyway. Node names are
//! `catalog-<id>-a@localhost`, `-b`, ...; the AMQP and distribution ports are
//! free loopback ports, so the system broker (5672, node `rabbit@localhost`)
//! is left alone; the nodes register with the machine's `epmd` (4369) like
//! any node, and start one if none runs (it then outlives the cluster).
//! No plugins: they slow the start down.
//!
//! The cluster forms while the nodes boot, all at once: the first node is the
//! seed, the others find it through `classic_config` peer discovery and join
//! it, retrying while it is still booting. Measured on two cores: three
//! nodes are up and clustered 13 to 15 s after the start (one node alone:
//! 5 s); booting them and then joining each with `stop_app`, `join_cluster`,
//! `start_app` took 19 s. A restarted node rejoins from its own database.
//!
//! Every node is killed (SIGKILL to its process group) when dropped.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    certs::TlsFiles,
    fixture::{self, PORT_ATTEMPTS, START_WAIT, TempDir},
};

/// The running nodes.
pub struct RabbitCluster {
    dir: TempDir,
    /// Where rabbitmq-server and rabbitmqctl live.
    bin: PathBuf,
    nodes: Vec<Node>,
    /// Set for the TLS node: its certificates.
    tls: Option<TlsFiles>,
}

struct Node {
    /// `catalog-<id>-<letter>@localhost`.
    name: String,
    /// AMQP (plain) port.
    port: u16,
    /// Erlang distribution port (inter-node and rabbitmqctl traffic).
    dist_port: u16,
    /// AMQP over TLS, on the TLS node only.
    tls_port: Option<u16>,
    /// This node's config, database and logs.
    base: PathBuf,
    /// The `rabbitmq-server` script, leader of a process group that holds
    /// the Erlang VM. None while stopped.
    child: Option<Child>,
}

impl Node {
    /// The node's own log (`RABBITMQ_LOG_BASE/<name>.log`): where a failed
    /// boot says why.
    fn log_file(&self) -> PathBuf {
        self.base.join("log").join(format!("{}.log", self.name))
    }
}

/// How long a node may take to boot; a node joining waits for the seed.
const BOOT_WAIT: Duration = Duration::from_secs(90);
/// Whole clusters tried before a test gives up: a node that fails its boot
/// (on a loaded machine, now and then, with only "BOOT FAILED" on its
/// stdout) leaves the others half-clustered with it, so the retry is a new
/// cluster under new names, not that node alone.
const CLUSTER_ATTEMPTS: u32 = 3;

impl RabbitCluster {
    /// Starts `n` clustered nodes (3 for the quorum tests) and returns once
    /// each accepts AMQP connections and `cluster_status` lists all of them
    /// running. 13 to 15 s for three nodes on two cores.
    pub async fn start(n: usize) -> Self {
        assert!((1..=26).contains(&n), "a RabbitCluster has 1 to 26 nodes");
        Self::start_with(n, None).await
    }

    /// Boots a cluster of `n` nodes, a new one after a failed boot.
    async fn start_with(n: usize, tls: Option<&TlsFiles>) -> Self {
        let mut attempt = 1;
        loop {
            let mut cluster = Self::prepare(n, tls.cloned());
            match cluster.boot_all().await {
                Ok(()) => return cluster,
                Err(why) if attempt < CLUSTER_ATTEMPTS => {
                    eprintln!("RabbitMQ cluster boot {attempt} failed, starting a new one: {why}");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// One node with an `amqps` listener using `tls`'s server certificate
    /// (client certificates are verified when presented, not required),
    /// beside its plain listener.
    pub async fn start_tls(tls: &TlsFiles) -> Self {
        Self::start_with(1, Some(tls)).await
    }

    fn prepare(n: usize, tls: Option<TlsFiles>) -> Self {
        let dir = TempDir::new("rabbit");
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("create the nodes' HOME");
        let cookie = home.join(".erlang.cookie");
        std::fs::write(
            &cookie,
            uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        )
        .expect("write the Erlang cookie");
        // Erlang refuses a cookie file others may read.
        fixture::set_mode(&cookie, 0o400);
        // Empty, so that the system's /etc/rabbitmq/rabbitmq-env.conf (node
        // name, ports) is not read.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("write rabbitmq-env.conf");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        let nodes = (0..n)
            .map(|i| {
                let letter = char::from(b'a' + u8::try_from(i).expect("at most 26 nodes"));
                Node {
                    name: format!("catalog-{id}-{letter}@localhost"),
                    port: 0,
                    dist_port: 0,
                    tls_port: None,
                    base: dir.path().join(letter.to_string()),
                    child: None,
                }
            })
            .collect();
        Self {
            bin: bin_dir(),
            dir,
            nodes,
            tls,
        }
    }

    /// Boots every node at once, then waits for the cluster to agree.
    async fn boot_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.pick_ports(i);
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_booted(i, true).await?;
        }
        let (this, want) = (&*self, self.nodes.len());
        crate::eventually(
            "every node to be running in one cluster",
            START_WAIT,
            || async move { (this.running_nodes(0).await.ok()?.len() == want).then_some(()) },
        )
        .await;
        Ok(())
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` of each node, in node order.
    /// guest may log in: it connects from loopback.
    pub fn amqp_urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.amqp_url(i)).collect()
    }

    /// The AMQP URL of node `i`.
    pub fn amqp_url(&self, i: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.nodes[i].port)
    }

    /// `amqps://guest:guest@127.0.0.1:PORT/%2f` of the TLS node (its
    /// certificate names 127.0.0.1 and localhost). Panics for a cluster
    /// started without TLS.
    pub fn amqps_url(&self) -> String {
        let port = self.nodes[0]
            .tls_port
            .expect("amqps_url: this RabbitCluster was started without TLS (start_tls)");
        format!("amqps://guest:guest@127.0.0.1:{port}/%2f")
    }

    /// The Erlang node name of node `i`, as `rabbitmqctl` and
    /// `cluster_status` show it.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Stops node `i` gracefully (`rabbitmqctl shutdown`: it leaves its
    /// quorum queues' leadership to others) and waits for its VM to exit.
    pub async fn stop_node(&mut self, i: usize) {
        if let Err(e) = self.rabbitmqctl(i, &["-q", "shutdown"]).await {
            panic!("rabbitmqctl shutdown of {}: {e}", self.nodes[i].name);
        }
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.wait();
        }
    }

    /// Kills node `i` (SIGKILL to its process group): a crash.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            fixture::signal(child.id(), "KILL", true);
            let _ = child.wait();
        }
    }

    /// Starts the stopped node `i` again on its ports; it rejoins the
    /// cluster from its own database. Returns once it accepts AMQP.
    pub async fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.spawn(i);
        if let Err(why) = self.wait_booted(i, false).await {
            panic!("{why}");
        }
    }

    /// The node names `cluster_status` on node `via` reports running.
    pub async fn running_nodes(&self, via: usize) -> Result<Vec<String>, String> {
        let out = self
            .rabbitmqctl(via, &["-q", "cluster_status", "--formatter", "json"])
            .await?;
        let status: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("cluster_status JSON: {e}: {out}"))?;
        Ok(status["running_nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect())
    }

    /// The index of the node that leads quorum queue `queue` (on vhost `/`),
    /// as a running node reports it; None if no running node answers, the
    /// queue is unknown or has no leader right now.
    pub async fn queue_leader(&self, queue: &str) -> Option<usize> {
        let status = self.queue_status(queue).await?;
        let leader = status.get("leader")?.as_str()?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Quorum queue `queue` (on vhost `/`) as a running node reports it:
    /// its `leader`, `members`, `online` members and `messages`; None if no
    /// running node answers or the queue is unknown.
    pub async fn queue_status(&self, queue: &str) -> Option<serde_json::Value> {
        self.list(&[
            "list_queues",
            "name",
            "leader",
            "members",
            "online",
            "messages",
        ])
        .await?
        .into_iter()
        .find(|q| q["name"] == queue)
    }

    /// The rows of `rabbitmqctl -q LIST_COMMAND COLUMNS... --formatter
    /// json` on a running node; None if none answers.
    async fn list(&self, command: &[&str]) -> Option<Vec<serde_json::Value>> {
        let via = self.nodes.iter().position(|n| n.child.is_some())?;
        let mut args = vec!["-q"];
        args.extend_from_slice(command);
        args.extend_from_slice(&["--formatter", "json"]);
        let out = self.rabbitmqctl(via, &args).await.ok()?;
        serde_json::from_str(&out).ok()
    }

    /// The nodes that hold the client connections named `name` (the AMQP
    /// `connection_name` a service gives), one entry per connection, as a
    /// running node reports them.
    pub async fn connection_nodes(&self, name: &str) -> Vec<usize> {
        let connections = self
            .list(&["list_connections", "port", "client_properties"])
            .await
            .unwrap_or_default();
        connections
            .iter()
            .filter(|c| {
                // client_properties: [[key, type, value], ...]
                c["client_properties"].as_array().is_some_and(|props| {
                    props
                        .iter()
                        .any(|p| p[0] == "connection_name" && p[2] == name)
                })
            })
            .filter_map(|c| {
                // The server's port the connection came in on: each node
                // listens on its own.
                let port = c["port"].as_u64()?;
                self.nodes.iter().position(|n| u64::from(n.port) == port)
            })
            .collect()
    }

    /// The last `lines` lines of each running node's log, headed by its
    /// name: what a test prints when the cluster stops doing its job.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let text =
                std::fs::read_to_string(node.log_file()).unwrap_or_else(|e| format!("({e})"));
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} ---\n", node.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Runs `rabbitmqctl -n <node i> ARGS` with the cluster's cookie; its
    /// stdout, or what it said when it failed.
    pub async fn rabbitmqctl(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(self.bin.join("rabbitmqctl"));
        cmd.args(["-n", &self.nodes[i].name]).args(args);
        self.env(&mut cmd);
        fixture::try_run(cmd).await
    }

    /// What every node and every rabbitmqctl shares: the cookie (in HOME)
    /// and no system rabbitmq-env.conf.
    fn env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.dir.path().join("home")).env(
            "RABBITMQ_CONF_ENV_FILE",
            self.dir.path().join("rabbitmq-env.conf"),
        );
    }

    fn pick_ports(&mut self, i: usize) {
        let tls = self.tls.is_some();
        let node = &mut self.nodes[i];
        node.port = fixture::free_port();
        node.dist_port = fixture::free_port();
        node.tls_port = tls.then(fixture::free_port);
    }

    /// Writes node `i`'s config and spawns it; it boots in the background.
    fn spawn(&mut self, i: usize) {
        let seed = self.nodes[0].name.clone();
        let node = &self.nodes[i];
        std::fs::create_dir_all(&node.base).expect("create the node's directory");
        let conf = node.base.join("rabbitmq.conf");
        let mut text = format!("listeners.tcp.default = 127.0.0.1:{}\n", node.port);
        if i > 0 {
            // Join the seed while booting; retry for a minute while it boots.
            text.push_str(&format!(
                "cluster_formation.peer_discovery_backend = classic_config\n\
                 cluster_formation.classic_config.nodes.1 = {seed}\n\
                 cluster_formation.classic_config.nodes.2 = {}\n\
                 cluster_formation.discovery_retry_limit = 240\n\
                 cluster_formation.discovery_retry_interval = 250\n",
                node.name
            ));
        }
        if let (Some(tls), Some(port)) = (&self.tls, node.tls_port) {
            text.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                tls.ca.display(),
                tls.server_cert.display(),
                tls.server_key.display()
            ));
        }
        std::fs::write(&conf, text).expect("write rabbitmq.conf");
        let stdout =
            std::fs::File::create(node.base.join("stdout.log")).expect("create stdout.log");
        let mut cmd = Command::new(self.bin.join("rabbitmq-server"));
        self.env(&mut cmd);
        cmd.env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", node.port.to_string())
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", node.base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.base.join("log"))
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.path().join("enabled_plugins"),
            )
            // Distribution on loopback only, like the AMQP listener.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("clone stdout.log"))
            .stderr(stdout)
            // Its own group: one signal kills the script and the VM under it.
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): install RabbitMQ (Debian: apt-get install \
                 rabbitmq-server) or set CATALOG_TEST_RABBITMQ_BIN to the directory of \
                 rabbitmq-server and rabbitmqctl",
                self.bin.join("rabbitmq-server").display()
            )
        });
        self.nodes[i].child = Some(child);
    }

    /// Waits until node `i` accepts TCP on its AMQP port (its listeners
    /// open at the end of the boot, after it joined the cluster). A node
    /// that exits instead is respawned on new ports if `may_move` and a port
    /// was taken, else reported with its log.
    async fn wait_booted(&mut self, i: usize, may_move: bool) -> Result<(), String> {
        for attempt in 1..=PORT_ATTEMPTS {
            let port = self.nodes[i].port;
            let child = self.nodes[i].child.as_mut().expect("spawned");
            let what = format!("RabbitMQ node {i} to accept AMQP on port {port}");
            let booted = crate::eventually(&what, BOOT_WAIT, || {
                let exited = child.try_wait().ok().flatten();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    let addr = ("127.0.0.1", port);
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .ok()
                        .map(|_| Ok(()))
                }
            })
            .await;
            let Err(status) = booted else {
                return Ok(());
            };
            self.nodes[i].child = None;
            let node = &self.nodes[i];
            let out = fixture::log_tail(&node.base.join("stdout.log"), 30);
            if !(out.contains("eaddrinuse") && may_move && attempt < PORT_ATTEMPTS) {
                // stdout may end at "BOOT FAILED"; the reason is in the log.
                let log = fixture::log_tail(&node.log_file(), 30);
                return Err(format!(
                    "RabbitMQ node {} exited while booting ({status})\n{out}\n{log}",
                    node.name
                ));
            }
            // Its database was half made: start over on new ports.
            let _ = std::fs::remove_dir_all(self.nodes[i].base.join("mnesia"));
            self.pick_ports(i);
            self.spawn(i);
        }
        Err(format!(
            "RabbitMQ node {} found no free ports in {PORT_ATTEMPTS} attempts",
            self.nodes[i].name
        ))
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// `CATALOG_TEST_RABBITMQ_BIN`, else Debian's `/usr/lib/rabbitmq/bin`, else
/// the directory of `rabbitmq-server` on PATH.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CATALOG_TEST_RABBITMQ_BIN") {
        return PathBuf::from(dir);
    }
    let debian = Path::new("/usr/lib/rabbitmq/bin");
    if debian.join("rabbitmq-server").exists() {
        return debian.to_owned();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("rabbitmq-server").exists())
        .unwrap_or_else(|| {
            panic!(
                "no rabbitmq-server: install RabbitMQ (Debian: apt-get install rabbitmq-server) \
                 or set CATALOG_TEST_RABBITMQ_BIN to its bin directory"
            )
        })
}
