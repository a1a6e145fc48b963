//! One private `redis-server` per test, for the tests the shared Redis cannot
//! serve: a server started with settings of the test's choosing (a tiny
//! `maxmemory`, a TLS listener), or one the test kills and restarts. It runs
//! on a free loopback port with its files in `catalog-redis-<uuid>`, and is
//! killed when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    certs::{TlsFiles, install_crypto_provider},
    fixture::{self, PORT_ATTEMPTS, START_WAIT, TempDir},
};

/// A running (or deliberately stopped) `redis-server`.
pub struct RedisServer {
    port: u16,
    /// The test's own arguments, given again on every restart.
    args: Vec<String>,
    /// Set for a TLS-only server: the certificates it was started with.
    tls: Option<TlsFiles>,
    dir: TempDir,
    /// None while stopped or killed.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port with `args` after the defaults (no
    /// persistence; a later argument overrides an earlier one, so `args` may
    /// also override a default), and waits until it answers PING.
    ///
    /// `RedisServer::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])`
    pub async fn start(args: &[&str]) -> Self {
        Self::launch(args, None).await
    }

    /// Like [`start`](Self::start), but the server speaks TLS only
    /// (`--port 0 --tls-port`), with `tls`'s server certificate; clients must
    /// trust `tls.ca`. Client certificates are checked when presented and
    /// not required (`--tls-auth-clients optional`).
    pub async fn start_tls(tls: &TlsFiles, args: &[&str]) -> Self {
        Self::launch(args, Some(tls.clone())).await
    }

    async fn launch(args: &[&str], tls: Option<TlsFiles>) -> Self {
        let mut server = Self {
            port: 0,
            args: args.iter().map(|&a| a.to_owned()).collect(),
            tls,
            dir: TempDir::new("redis"),
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = fixture::free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") && attempt < PORT_ATTEMPTS => {}
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The port it listens on (the TLS port for a TLS server); the same
    /// across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for a TLS
    /// server (its certificate names the IP address as well as `localhost`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client for assertions; for a TLS server, one that trusts the test CA.
    pub fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).expect("valid Redis URL"),
            Some(tls) => tls_client(&self.url(), tls.ca_pem()),
        }
    }

    /// The server's log file (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Kills the server with SIGKILL and waits for it to be gone: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the polite way (`SHUTDOWN NOSAVE`) and waits for its
    /// process to exit; killed if it has not within 10 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut conn) = self.client().get_multiplexed_async_connection().await {
            // The server closes the connection instead of answering.
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
                .arg("NOSAVE")
                .query_async(&mut conn)
                .await;
        }
        let exited = tokio::time::timeout(Duration::from_secs(10), async {
            while matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if exited.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Starts the server again on the same port with the same arguments
    /// (killing it first if it runs). Nothing is persisted, so the data is
    /// gone: a restarted server is empty. Panics if the port was taken while
    /// the server was down.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait().await {
            panic!("redis-server did not restart on port {}:\n{log}", self.port);
        }
    }

    /// Replaces the test's arguments, then restarts: for the HA fixture's
    /// "come back as a replica of the new primary".
    pub(crate) async fn restart_with(&mut self, args: Vec<String>) {
        self.args = args;
        self.restart().await;
    }

    /// Whether the process is still running (false after a kill, a stop, a
    /// crash or `SHUTDOWN`).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Spawns redis-server on `self.port` and waits for PING; on failure the
    /// process is reaped and the log's tail returned.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = self.log_path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log);
        let port = self.port.to_string();
        match &self.tls {
            None => {
                cmd.args(["--port", &port]);
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&tls.server_cert)
                    .arg("--tls-key-file")
                    .arg(&tls.server_key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "optional"]);
            }
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}): install it (Debian: apt-get install redis-server)"
            )
        });
        self.child = Some(child);
        let client = self.client();
        let child = self.child.as_mut().expect("just spawned");
        let ready = crate::eventually("redis-server to answer PING", START_WAIT, || {
            let exited = child.try_wait().ok().flatten();
            let client = client.clone();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                ping(&client).await.then_some(Ok(()))
            }
        })
        .await;
        ready.map_err(|status| {
            self.child = None;
            format!(
                "redis-server exited ({status})\n{}",
                fixture::log_tail(&log, 20)
            )
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `client` gets PONG, within a second.
pub(crate) async fn ping(client: &redis::Client) -> bool {
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    })
    .await;
    matches!(answer, Ok(Some(pong)) if pong == "PONG")
}

/// A `rediss://` client that trusts exactly `root_pem` (a CA certificate,
/// PEM): the test CA to succeed, the wrong CA to see verification fail.
pub fn tls_client(url: &str, root_pem: Vec<u8>) -> redis::Client {
    install_crypto_provider();
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_pem),
        },
    )
    .expect("a rediss:// client")
}
