//! Redis behind Sentinel: commands go to whichever server the Sentinels name
//! as the primary, and follow it through a failover.
//!
//! redis-rs resolves the primary once; it does not follow it. So this
//! connection keeps a [`ConnectionManager`] to the primary it last resolved
//! and asks the Sentinels again when a command's error says that server may
//! no longer be the primary: it is unreachable or slow, or it answers
//! READONLY (demoted to a replica) or MASTERDOWN. The failing command is
//! answered with its error (the caller's retry policy applies: the
//! invalidator holds its batch, a reader skips the cache); the next command
//! goes to the new primary. Lookups happen one at a time and at most every
//! [`LOOKUP_EVERY`], so a dead primary costs the Sentinels a few queries,
//! not one per command.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use parking_lot::RwLock;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsMode, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::{sync::Mutex, time::Instant};

/// The least time between two lookups of the primary.
const LOOKUP_EVERY: Duration = Duration::from_millis(100);

/// A cheap-to-clone connection to the current primary of a Sentinel-managed
/// Redis.
#[derive(Clone)]
pub(crate) struct SentinelConn(Arc<State>);

struct State {
    /// Asks the Sentinels; one lookup at a time.
    sentinels: Mutex<(SentinelClient, Option<Instant>)>,
    /// The primary last resolved, and a connection to it.
    current: RwLock<Option<(String, ConnectionManager)>>,
    /// Set by an error that says the current server may not be the primary.
    suspect: AtomicBool,
    config: ConnectionManagerConfig,
}

impl SentinelConn {
    /// Prepares the connection; the first command looks the primary up.
    /// `rediss://` Sentinel URLs are asked over TLS; `primary_tls` says
    /// whether the primary is too. Both trust and present what `tls` holds.
    /// The Sentinels share one username and password: the first URL's.
    pub(crate) fn new(
        sentinels: &[String],
        master: &str,
        primary_tls: bool,
        tls: &tls::ClientTls,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        let infos = sentinels
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let mut builder = SentinelClientBuilder::new(
            infos.iter().map(|info| info.addr().clone()),
            master,
            SentinelServerType::Master,
        )?;
        if let Some(first) = infos.first() {
            let auth = first.redis_settings();
            if let Some(username) = auth.username() {
                builder = builder.set_client_to_sentinel_username(username);
            }
            if let Some(password) = auth.password() {
                builder = builder.set_client_to_sentinel_password(password);
            }
        }
        if sentinels.iter().any(|url| crate::conn::is_tls(url)) {
            tls::install_provider();
            builder = builder.set_client_to_sentinel_certificates(crate::conn::certificates(tls));
        }
        if primary_tls {
            tls::install_provider();
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(crate::conn::certificates(tls));
        }
        let client: SentinelClient = builder.build()?;
        Ok(Self(Arc::new(State {
            sentinels: Mutex::new((client, None)),
            current: RwLock::new(None),
            suspect: AtomicBool::new(false),
            config,
        })))
    }

    /// The connection to the primary, looking it up first if there is none
    /// yet or the last error made it suspect.
    async fn primary(&self) -> RedisResult<ConnectionManager> {
        if !self.0.suspect.load(Ordering::Acquire)
            && let Some((_, conn)) = &*self.0.current.read()
        {
            return Ok(conn.clone());
        }
        let mut sentinels = self.0.sentinels.lock().await;
        let (client, last) = &mut *sentinels;
        let current = self.0.current.read().clone();
        let recent = last.is_some_and(|t| t.elapsed() < LOOKUP_EVERY);
        if let Some((_, conn)) = &current
            && (recent || !self.0.suspect.load(Ordering::Acquire))
        {
            // Another command just looked it up (or is rate-limited): use
            // what there is.
            return Ok(conn.clone());
        }
        *last = Some(Instant::now());
        let primary = client.async_get_client().await?;
        let addr = primary.get_connection_info().addr().to_string();
        self.0.suspect.store(false, Ordering::Release);
        if let Some((known, conn)) = &current
            && *known == addr
        {
            return Ok(conn.clone());
        }
        tracing::info!(primary = %addr, "redis primary resolved through sentinel");
        let conn = ConnectionManager::new_lazy_with_config(primary, self.0.config.clone())?;
        *self.0.current.write() = Some((addr, conn.clone()));
        Ok(conn)
    }

    /// Marks the primary suspect after an error that may mean a failover.
    fn note<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result {
            let moved = e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
            if moved {
                self.0.suspect.store(true, Ordering::Release);
            }
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.primary().await.inspect_err(|_| {
                self.0.suspect.store(true, Ordering::Release);
            })?;
            let result = conn.req_packed_command(cmd).await;
            self.note(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.primary().await.inspect_err(|_| {
                self.0.suspect.store(true, Ordering::Release);
            })?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            self.note(&result);
            if let Ok(values) = &result {
                // With errors ignored, a READONLY comes back inside the
                // replies rather than as the pipeline's error.
                if values.iter().any(|v| {
                    matches!(v, Value::ServerError(e) if matches!(e.code(), "READONLY" | "MASTERDOWN"))
                }) {
                    self.0.suspect.store(true, Ordering::Release);
                }
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
