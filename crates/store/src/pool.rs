//! The connection pool and the embedded migrations.

use std::{sync::Arc, time::Duration};

use diesel_async::{
    AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
        deadpool::{Object, Pool},
    },
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use crate::{StoreError, connect::Target};

/// Every migration in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Key of the advisory lock that serializes migrations, so several
/// write-api instances starting together do not race each other.
const MIGRATION_LOCK: i64 = 0x00ca_7a10_6000_0001;

/// A pooled connection.
pub type Conn = Object<AsyncPgConnection>;

/// How a pool connects and how long it waits.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_size: usize,
    /// How long a caller waits for a free connection before giving up.
    pub wait_timeout: Duration,
    /// How long opening a new connection may take.
    pub connect_timeout: Duration,
    /// Server-side cap on any single statement.
    pub statement_timeout: Duration,
    /// Shown in `pg_stat_activity`, so operators can tell the services apart.
    pub application_name: String,
    /// Wait for the WAL flush at commit (`synchronous_commit`). Only the
    /// outbox relay turns it off: its commits delete rows the broker already
    /// confirmed, and losing one in a crash only republishes an event.
    pub durable_commits: bool,
    /// What TLS connections trust and present (used when the URL's
    /// `sslmode` asks for TLS; see [`crate::connect`]).
    pub tls: tls::ClientTls,
    /// Whether the caller wakes its own outbox relay after each write (as
    /// write-api does). Its transactions then tell the notify trigger to
    /// stay quiet: a notification would only send every listening relay on
    /// a pass that finds nothing. Other writers (psql, batch jobs) notify.
    pub wakes_own_relay: bool,
    /// Whether the planner is told to walk indexes rather than scan tables
    /// (`enable_seqscan = off`): for the outbox relay's own pool. The outbox
    /// is a queue table whose statistics are wrong nearly all the time
    /// (analyzed empty, thousands of rows a moment later). Planned on an
    /// analyzed empty outbox, the claim reads it by `Seq Scan` and `Sort`,
    /// and a pass costs as much as the backlog is long: 30,000 rows
    /// queued, the first pass of 1,000 took 310 ms, against 15 ms a pass
    /// at any length by index (`store/tests/outbox.rs`, debug build).
    ///
    /// It also turns JIT off (`jit = off`). A plan that can only scan the
    /// table (the backlog's `count(*)`) is costed past `jit_above_cost` once
    /// sequential scans are "off", and Postgres compiles it: 150–230 ms for
    /// counting a 16-row outbox, against 0.15 ms without JIT. The relay
    /// counts its backlog every 5 s, and every event behind it waited
    /// (freshness p99 100–190 ms at 20 writes/s, unloaded).
    pub index_scans: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 16,
            wait_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            application_name: "catalog".to_owned(),
            durable_commits: true,
            tls: tls::ClientTls::default(),
            wakes_own_relay: false,
            index_scans: false,
        }
    }
}

/// A Postgres connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<AsyncPgConnection>,
    /// Client-side bound on one store call. `statement_timeout` is enforced
    /// by the server, which never hears of a query lost in a black-holed
    /// connection; this bound is what frees the caller then.
    deadline: Duration,
    /// The TLS failure of the last connection attempt, for readiness.
    tls_failure: Arc<tls::LastFailure>,
    /// See [`PoolSettings::wakes_own_relay`].
    pub(crate) wakes_own_relay: bool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Db")
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl Db {
    /// Builds a pool. Connections open lazily, so this succeeds while
    /// Postgres is down; the first query then reports it unavailable.
    pub fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let target =
            Target::new(url, &settings.tls).map_err(|e| StoreError::Internal(Arc::new(e)))?;
        let tls_failure = Arc::clone(&target.last_failure);
        let setup = settings.clone();
        let mut config = ManagerConfig::default();
        // `Fast` checks only that the connection is open and idle, which
        // tokio-postgres knows without a round trip; `Verified` would add a
        // `SELECT 1` to every checkout on the hot path.
        config.recycling_method = RecyclingMethod::Fast;
        // The manager hands each set-up the URL; the target already holds
        // it, with the TLS connector its sslmode asks for.
        config.custom_setup = Box::new(move |_url| {
            let setup = setup.clone();
            let target = target.clone();
            async move {
                let mut conn = tokio::time::timeout(setup.connect_timeout, target.establish())
                    .await
                    .map_err(|_| {
                        diesel::ConnectionError::BadConnection(
                            "timed out connecting to Postgres".to_owned(),
                        )
                    })??;
                let init = format!(
                    "SET statement_timeout = {}; SET application_name = '{}'; \
                     SET synchronous_commit = {}{}",
                    setup.statement_timeout.as_millis(),
                    setup.application_name.replace('\'', ""),
                    if setup.durable_commits { "on" } else { "off" },
                    if setup.index_scans {
                        "; SET enable_seqscan = off; SET jit = off"
                    } else {
                        ""
                    },
                );
                conn.batch_execute(&init)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .wait_timeout(Some(settings.wait_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))?;
        Ok(Self {
            pool,
            deadline: settings.wait_timeout + settings.statement_timeout + Duration::from_secs(1),
            tls_failure,
            wakes_own_relay: settings.wakes_own_relay,
        })
    }

    /// Why the last connection attempt's TLS handshake failed, if it did:
    /// readiness names the key to fix instead of "not answering".
    pub fn tls_failure(&self) -> Option<tls::Failure> {
        self.tls_failure.get()
    }

    /// Runs one store call under the client-side deadline.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded_with(Duration::ZERO, call).await
    }

    /// Runs one store call under the client-side deadline plus `extra`: the
    /// time the call spends on something else than Postgres, such as the
    /// relay's publish inside its transaction. Cutting that short would drop
    /// the transaction mid-way instead of rolling it back.
    pub(crate) async fn bounded_with<T>(
        &self,
        extra: Duration,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let deadline = self.deadline + extra;
        tokio::time::timeout(deadline, call).await.map_err(|_| {
            StoreError::Unavailable(std::sync::Arc::from(Box::<
                dyn std::error::Error + Send + Sync,
            >::from(format!(
                "no answer from Postgres within {deadline:?}"
            ))))
        })?
    }

    /// A connection from the pool.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Checks that Postgres answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// How far a replica has replayed the primary's WAL; `None` on a server
    /// that is not a replica.
    pub async fn replay_lsn(&self) -> Result<Option<domain::Lsn>, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let row: Position = diesel::sql_query("SELECT pg_last_wal_replay_lsn()::text AS lsn")
                .get_result(&mut conn)
                .await?;
            row.lsn
                .map(|l| {
                    l.parse()
                        .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))
                })
                .transpose()
        })
        .await
    }

    /// The primary's current WAL position.
    pub async fn current_lsn(&self) -> Result<domain::Lsn, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let row: Position = diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
                .get_result(&mut conn)
                .await?;
            row.lsn
                .ok_or_else(|| StoreError::bug("no WAL position"))?
                .parse()
                .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))
        })
        .await
    }

    /// Connections open and idle, for metrics.
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }
}

/// A WAL position, as text (NULL where the server has none to give).
#[derive(diesel::QueryableByName)]
struct Position {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    lsn: Option<String>,
}

/// Creates the database `url` names if it does not exist yet (connecting to
/// the server's `postgres` database to do so), so a fresh server needs no
/// manual step.
async fn ensure_database(url: &str, tls: &tls::ClientTls) -> Result<(), StoreError> {
    let mut server =
        url::Url::parse(url).map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))?;
    let name = server.path().trim_start_matches('/').to_owned();
    server.set_path("/postgres");
    if admin::database_exists(server.as_str(), tls, &name).await? {
        return Ok(());
    }
    tracing::info!(database = %name, "creating the database");
    match admin::create_database(server.as_str(), tls, &name).await {
        Ok(()) => Ok(()),
        // Another instance may have created it in between.
        Err(e) if admin::database_exists(server.as_str(), tls, &name).await? => {
            tracing::debug!(error = %e, "the database appeared meanwhile");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Applies pending embedded migrations under an advisory lock and returns
/// how many ran. Creates the database first if it is missing. `tls` serves
/// when the URL's `sslmode` asks for TLS.
pub async fn migrate(url: &str, tls: &tls::ClientTls) -> Result<usize, StoreError> {
    ensure_database(url, tls).await?;
    let conn = admin::connect(url, tls).await?;
    // diesel's migration harness is synchronous; run it on a blocking thread
    // through the async connection wrapper, which drives the connection
    // opened here on this runtime.
    tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
        type Wrapper =
            diesel_async::async_connection_wrapper::AsyncConnectionWrapper<AsyncPgConnection>;
        let mut conn = Wrapper::from(conn);
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
        diesel::RunQueryDsl::execute(diesel::sql_query(lock), &mut conn)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| StoreError::Internal(std::sync::Arc::from(e)));
        let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
        diesel::RunQueryDsl::execute(diesel::sql_query(unlock), &mut conn)?;
        applied
    })
    .await
    .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))?
}

/// Creates and drops whole databases: for test isolation and the demo seed.
pub mod admin {
    use std::sync::Arc;

    use diesel::sql_types::Text;
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    use crate::{StoreError, connect::Target};

    fn quoted(name: &str) -> Result<String, StoreError> {
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.is_empty() {
            Ok(format!("\"{name}\""))
        } else {
            Err(StoreError::bug(format!("bad database name {name:?}")))
        }
    }

    /// One connection, outside any pool.
    pub(crate) async fn connect(
        url: &str,
        tls: &tls::ClientTls,
    ) -> Result<AsyncPgConnection, StoreError> {
        let target = Target::new(url, tls).map_err(|e| StoreError::Internal(Arc::new(e)))?;
        target
            .establish()
            .await
            .map_err(|e| StoreError::Unavailable(Arc::new(e)))
    }

    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }

    /// Whether the server at `server_url` has a database called `name`.
    pub async fn database_exists(
        server_url: &str,
        tls: &tls::ClientTls,
        name: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = connect(server_url, tls).await?;
        let row: Exists = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists",
        )
        .bind::<Text, _>(name)
        .get_result(&mut conn)
        .await?;
        Ok(row.exists)
    }

    /// `CREATE DATABASE name`, connecting through `server_url`.
    pub async fn create_database(
        server_url: &str,
        tls: &tls::ClientTls,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut conn = connect(server_url, tls).await?;
        diesel::sql_query(format!("CREATE DATABASE {}", quoted(name)?))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// `DROP DATABASE IF EXISTS name WITH (FORCE)`.
    pub async fn drop_database(
        server_url: &str,
        tls: &tls::ClientTls,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut conn = connect(server_url, tls).await?;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quoted(name)?
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}
