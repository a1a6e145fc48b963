//! A private Postgres primary and, optionally, a streaming replica whose
//! replay lags by a delay the test chooses: for the tests of reads served
//! by a replica (stale rows, replay position) and of TLS to Postgres, which
//! the shared server cannot stage.
//!
//! Built from the server binaries (`initdb`, `pg_ctl`, `pg_basebackup`; the
//! newest `/usr/lib/postgresql/*/bin`, or `CATALOG_TEST_PG_BIN`), in
//! `catalog-pg-<uuid>`: `primary/` and `replica/` data directories, `run/`
//! for the Unix sockets and server logs. Postgres refuses to run as root, so
//! when the tests run as root the fixture runs the binaries as the
//! `postgres` OS user (`runuser`) and hands it the directories.
//!
//! Speed over durability: `fsync = off`, `full_page_writes = off`, `initdb
//! --no-sync`. Measured on two cores: a primary with a replica is up in 1.2
//! to 1.5 s (initdb 0.9 s of it; start, base backup and replica start about
//! 0.1 s each), a primary alone in about 1 s.
//!
//! The fixture's own queries (creating databases, reading LSNs) go over the
//! Unix socket, which trusts every local user, so they work in TLS-only mode.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tokio_postgres::{NoTls, types::PgLsn};

use crate::{
    certs::TlsFiles,
    fixture::{self, PORT_ATTEMPTS, START_WAIT, TempDir, is_root},
};

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Start a streaming replica that applies each commit this long after
    /// it happened on the primary (`recovery_min_apply_delay`). None: a
    /// primary alone.
    pub replica: Option<Duration>,
    /// Serve TLS (`ssl = on`) with these certificates; the server's CA file
    /// is `ca`, so client certificates signed by it are accepted.
    pub ssl: Option<TlsFiles>,
    /// With `ssl`: TCP connections must use TLS (only `hostssl` lines in
    /// `pg_hba.conf`). Otherwise plain TCP is allowed too.
    pub tls_only: bool,
}

/// The running primary and replica.
pub struct PgPair {
    dir: TempDir,
    /// Where initdb, pg_ctl, ... live.
    bin: PathBuf,
    primary: Node,
    replica: Option<Node>,
}

/// One server's data directory, port and state.
struct Node {
    data: PathBuf,
    port: u16,
    log: PathBuf,
    running: bool,
}

impl PgPair {
    /// Creates and starts the primary (and the replica if asked); returns
    /// once each accepts connections (the replica in hot standby).
    pub async fn start(options: PgOptions) -> Self {
        let dir = TempDir::new("pg");
        let bin = bin_dir();
        let run = dir.path().join("run");
        make_server_dir(&run, 0o755);
        let data = dir.path().join("primary");
        make_server_dir(&data, 0o700);
        let mut pair = Self {
            primary: Node {
                data: data.clone(),
                port: 0,
                log: run.join("primary.log"),
                running: false,
            },
            replica: None,
            bin,
            dir,
        };

        let mut initdb = pair.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .args(["--no-instructions", "-E", "UTF8", "--locale=C"]);
        fixture::run("initdb", initdb).await;
        if let Some(tls) = &options.ssl {
            // In the data directory, owned by the server's user, the key
            // mode 0600: Postgres refuses a key anyone else may read.
            copy_for_server(&tls.server_cert, &data.join("server.crt"), 0o644);
            copy_for_server(&tls.server_key, &data.join("server.key"), 0o600);
            copy_for_server(&tls.ca, &data.join("ca.crt"), 0o644);
        }
        append(&data.join("postgresql.conf"), &primary_conf(&run, &options));
        std::fs::write(data.join("pg_hba.conf"), hba(&options)).expect("write pg_hba.conf");

        pair.start_node(Role::Primary, true).await;
        if let Some(delay) = options.replica {
            pair.create_replica(delay).await;
        }
        pair
    }

    /// `postgres://postgres@127.0.0.1:PORT/{db}` on the primary.
    pub fn primary_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.primary.port)
    }

    /// `postgres://postgres@127.0.0.1:PORT/{db}` on the replica. Panics if
    /// started without one.
    pub fn replica_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.replica().port)
    }

    /// The primary's TCP port on 127.0.0.1, for a conninfo of the test's own.
    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    /// The replica's TCP port. Panics if started without a replica.
    pub fn replica_port(&self) -> u16 {
        self.replica().port
    }

    /// Creates database `name` on the primary and, with a replica running,
    /// waits until the replica has replayed it (so at least the apply delay).
    pub async fn create_database(&self, name: &str) {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        self.execute(Role::Primary, "postgres", &sql).await;
        if self.replica.as_ref().is_some_and(|r| r.running) {
            crate::eventually(
                &format!("the replica to have database {name}"),
                START_WAIT,
                || async move { self.connect(Role::Replica, name).await.ok().map(drop) },
            )
            .await;
        }
    }

    /// Stops the replica (fast shutdown: it replays nothing more). The
    /// primary keeps its WAL in a replication slot until it is back.
    pub async fn stop_replica(&mut self) {
        self.stop_node(Role::Replica).await;
    }

    /// Starts the stopped replica again on the same port; it resumes
    /// streaming from where it stopped.
    pub async fn start_replica(&mut self) {
        self.start_node(Role::Replica, false).await;
    }

    /// Changes the replica's apply delay (`ALTER SYSTEM` and a reload: no
    /// restart). Commits already waiting are held to the new delay.
    pub async fn set_apply_delay(&self, delay: Duration) {
        let sql = format!(
            "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
            delay.as_millis()
        );
        self.execute(Role::Replica, "postgres", &sql).await;
        self.execute(Role::Replica, "postgres", "SELECT pg_reload_conf()")
            .await;
    }

    /// The primary's current WAL write position (`pg_current_wal_lsn()`).
    pub async fn primary_lsn(&self) -> PgLsn {
        self.query_lsn(Role::Primary, "SELECT pg_current_wal_lsn()")
            .await
            .expect("the primary has a WAL position")
    }

    /// How far the replica has applied WAL (`pg_last_wal_replay_lsn()`);
    /// None before it replayed anything.
    pub async fn replica_replay_lsn(&self) -> Option<PgLsn> {
        self.query_lsn(Role::Replica, "SELECT pg_last_wal_replay_lsn()")
            .await
    }

    /// Waits until the replica has applied everything the primary had
    /// written when called (so at least the apply delay after the last
    /// commit); returns that position.
    pub async fn wait_for_replay(&self, timeout: Duration) -> PgLsn {
        let target = self.primary_lsn().await;
        crate::eventually(
            &format!("the replica to replay up to {target}"),
            timeout,
            || async move { (self.replica_replay_lsn().await? >= target).then_some(()) },
        )
        .await;
        target
    }

    /// Runs `psql` (this server version's) with `conninfo` and `sql`:
    /// stdout on success, stderr otherwise. For the TLS tests, which need
    /// libpq's `sslmode=verify-full`.
    pub async fn psql(&self, conninfo: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-w", "-A", "-t", "-c", sql, conninfo]);
        fixture::try_run(cmd).await
    }

    /// The primary's server log, for a failing test to look at.
    pub fn primary_log(&self) -> &Path {
        &self.primary.log
    }

    fn replica(&self) -> &Node {
        self.replica
            .as_ref()
            .expect("this PgPair was started without a replica (PgOptions::replica)")
    }

    fn node(&mut self, role: Role) -> &mut Node {
        match role {
            Role::Primary => &mut self.primary,
            Role::Replica => self
                .replica
                .as_mut()
                .expect("this PgPair was started without a replica (PgOptions::replica)"),
        }
    }

    /// pg_basebackup from the primary (with a replication slot, so the
    /// primary keeps WAL for a stopped replica), then the replica's own
    /// settings, then start.
    async fn create_replica(&mut self, delay: Duration) {
        let data = self.dir.path().join("replica");
        make_server_dir(&data, 0o700);
        let mut backup = self.command("pg_basebackup");
        backup
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-C", "-S", "replica"])
            .args([
                "-c",
                "fast",
                "--no-sync",
                "-U",
                "postgres",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.primary.port.to_string()]);
        fixture::run("pg_basebackup", backup).await;
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\n# test-support: the replica\n\
                 recovery_min_apply_delay = '{}ms'\n\
                 hot_standby_feedback = on\n",
                delay.as_millis()
            ),
        );
        self.replica = Some(Node {
            data,
            port: 0,
            log: self.dir.path().join("run/replica.log"),
            running: false,
        });
        self.start_node(Role::Replica, true).await;
    }

    /// `pg_ctl start -w`; with `new_port`, on a free port, retried when the
    /// port was taken meanwhile.
    async fn start_node(&mut self, role: Role, new_port: bool) {
        for attempt in 1..=PORT_ATTEMPTS {
            if new_port {
                self.node(role).port = fixture::free_port();
            }
            let node = self.node(role);
            let (data, log, port) = (node.data.clone(), node.log.clone(), node.port);
            let mut start = self.command("pg_ctl");
            start
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &format!("-p {port}")]);
            match fixture::try_run(start).await {
                Ok(_) => {
                    self.node(role).running = true;
                    return;
                }
                Err(e) => {
                    let tail = fixture::log_tail(&log, 20);
                    let taken = tail.contains("could not bind");
                    if !(taken && new_port && attempt < PORT_ATTEMPTS) {
                        panic!("Postgres ({role:?}) did not start on port {port}: {e}\n{tail}");
                    }
                }
            }
        }
    }

    async fn stop_node(&mut self, role: Role) {
        let data = self.node(role).data.clone();
        let mut stop = self.command("pg_ctl");
        stop.args(["stop", "-w", "-m", "fast", "-D"]).arg(&data);
        fixture::run("pg_ctl stop", stop).await;
        self.node(role).running = false;
    }

    /// `bin` from the server's bin directory, run as `postgres` when we are
    /// root.
    fn command(&self, bin: &str) -> Command {
        server_command(&self.bin.join(bin))
    }

    /// A connection over the node's Unix socket.
    async fn connect(&self, role: Role, db: &str) -> Result<tokio_postgres::Client, String> {
        let node = match role {
            Role::Primary => &self.primary,
            Role::Replica => self.replica(),
        };
        let run = self.dir.path().join("run");
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&run)
            .port(node.port)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        let (client, conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn execute(&self, role: Role, db: &str, sql: &str) {
        let client = self
            .connect(role, db)
            .await
            .unwrap_or_else(|e| panic!("connect to the {role:?} ({db}): {e}"));
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on the {role:?}: {e}"));
    }

    async fn query_lsn(&self, role: Role, sql: &str) -> Option<PgLsn> {
        let client = self.connect(role, "postgres").await.ok()?;
        client.query_one(sql, &[]).await.ok()?.get(0)
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        // Immediate: nothing here needs a clean shutdown, and it is instant.
        for node in std::iter::once(&self.primary).chain(&self.replica) {
            if node.running {
                let _ = server_command(&self.bin.join("pg_ctl"))
                    .args(["stop", "-w", "-m", "immediate", "-D"])
                    .arg(&node.data)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Primary,
    Replica,
}

fn primary_conf(run: &Path, options: &PgOptions) -> String {
    let mut conf = format!(
        "\n# test-support: a private primary, fast rather than durable\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         max_connections = 50\n\
         wal_level = replica\n\
         max_wal_senders = 5\n\
         max_replication_slots = 5\n\
         hot_standby = on\n\
         fsync = off\n\
         full_page_writes = off\n",
        run.display()
    );
    if options.ssl.is_some() {
        conf.push_str(
            "ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.crt'\n",
        );
    }
    conf
}

/// Trust everyone local (the Unix socket, and TCP from 127.0.0.1): `hostssl`
/// lines with TLS, and plain `host` lines unless `tls_only`.
fn hba(options: &PgOptions) -> String {
    let mut kinds = Vec::new();
    if options.ssl.is_some() {
        kinds.push("hostssl");
    }
    if !(options.ssl.is_some() && options.tls_only) {
        kinds.push("host");
    }
    let mut hba = String::from(
        "# test-support: written by PgPair\n\
         local all all trust\n\
         local replication all trust\n",
    );
    for kind in kinds {
        hba.push_str(&format!("{kind} all all 127.0.0.1/32 trust\n"));
        hba.push_str(&format!("{kind} replication all 127.0.0.1/32 trust\n"));
    }
    hba
}

/// `CATALOG_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout), else the directory of `initdb` on PATH.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CATALOG_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "no Postgres server binaries (initdb, pg_ctl, pg_basebackup): install them \
             (Debian: apt-get install postgresql) or set CATALOG_TEST_PG_BIN to their directory"
        )
    })
}

/// `path`, run as the `postgres` OS user when we are root.
fn server_command(path: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

/// The `postgres` OS user's uid and gid: the owner Postgres requires of its
/// data directory and key when it runs as that user.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "running as root, and there is no `postgres` OS user to run Postgres as \
                 (Postgres refuses root): install the postgresql package, or run the tests \
                 as an ordinary user"
                )
            })
    };
    (id("-u"), id("-g"))
}

/// Creates `dir` with `mode`, owned by the user the server runs as.
fn make_server_dir(dir: &Path, mode: u32) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    fixture::set_mode(dir, mode);
    give_to_server(dir);
}

fn copy_for_server(from: &Path, to: &Path, mode: u32) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    fixture::set_mode(to, mode);
    give_to_server(to);
}

fn give_to_server(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}
