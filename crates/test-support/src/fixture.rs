//! What the engine fixtures share: a private temp dir per fixture, free
//! ports, a server's own log quoted in panic messages, running the servers'
//! tools, and signals by pid.
//!
//! Every fixture's directory is `catalog-<kind>-<uuid>` under the system temp
//! dir, so that `scripts/test.sh` can find what a killed test run left behind
//! (the processes carry that path on their command line, or have it as their
//! working directory).

use std::{
    net::TcpListener,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// How long a server gets to come up, and a cluster to agree.
pub(crate) const START_WAIT: Duration = Duration::from_secs(30);

/// How many times a start is retried when the free port picked was taken by
/// someone else before the server bound it.
pub(crate) const PORT_ATTEMPTS: usize = 3;

/// A directory removed, with everything in it, when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/catalog-<kind>-<uuid>`, mode 0755 so that a server running as
    /// another OS user (Postgres as `postgres`) can reach its own subdirectory.
    pub(crate) fn new(kind: &str) -> Self {
        let path = std::env::temp_dir().join(format!("catalog-{kind}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        set_mode(&path, 0o755);
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A loopback port nothing listens on right now. Another process may take it
/// before the server binds it: callers retry with a new one when the server
/// reports the address in use.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective user): Postgres refuses to run as root, so the fixtures then run
/// it as the `postgres` OS user.
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The last `lines` lines of a server's log, for a panic message that says
/// why the server did not come up.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            format!("--- last lines of {} ---\n{tail}", path.display())
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Sends `signal` (`KILL`, `TERM`, ...) to `pid`, or to the process group
/// `pid` when `group` is set. std only sends SIGKILL, and only to its own
/// children; `kill(1)` does the rest without `unsafe`.
pub(crate) fn signal(pid: u32, signal: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `cmd` to completion and returns its stdout, or panics with what it
/// printed. For the server tools (initdb, pg_basebackup, rabbitmqctl, ...):
/// their failure is a broken fixture, not a test outcome.
pub(crate) async fn run(what: &str, cmd: Command) -> String {
    match try_run(cmd).await {
        Ok(out) => out,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// Like [`run`], but the failure (exit status, stderr and stdout) is returned.
pub(crate) async fn try_run(cmd: Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = tokio::process::Command::from(cmd)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{shown}: {}\n{}{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
