//! The connection pool and the embedded migrations.

use std::time::Duration;

use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
        deadpool::{Object, Pool},
    },
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use crate::StoreError;

/// Every migration in `migrations/`, compiled into the binary.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

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
        let setup = settings.clone();
        let mut config = ManagerConfig::default();
        // `Fast` checks only that the connection is open and idle, which
        // tokio-postgres knows without a round trip; `Verified` would add a
        // `SELECT 1` to every checkout on the hot path.
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |url| {
            let setup = setup.clone();
            let url = url.to_owned();
            async move {
                let mut conn =
                    tokio::time::timeout(setup.connect_timeout, AsyncPgConnection::establish(&url))
                        .await
                        .map_err(|_| {
                            diesel::ConnectionError::BadConnection(
                                "timed out connecting to Postgres".to_owned(),
                            )
                        })??;
                let init = format!(
                    "SET statement_timeout = {}; SET application_name = '{}'; SET synchronous_commit = {}",
                    setup.statement_timeout.as_millis(),
                    setup.application_name.replace('\'', ""),
                    if setup.durable_commits { "on" } else { "off" },
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
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Self {
            pool,
            deadline: settings.wait_timeout + settings.statement_timeout + Duration::from_secs(1),
        })
    }

    /// Runs one store call under the client-side deadline.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.deadline, call)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no answer from Postgres within {:?}",
                    self.deadline
                ))
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

    /// Connections open and idle, for metrics.
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }
}

/// Creates the database `url` names if it does not exist yet (connecting to
/// the server's `postgres` database to do so), so a fresh server needs no
/// manual step.
async fn ensure_database(url: &str) -> Result<(), StoreError> {
    match AsyncPgConnection::establish(url).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("does not exist") => {
            let mut server =
                url::Url::parse(url).map_err(|e| StoreError::Internal(e.to_string()))?;
            let name = server.path().trim_start_matches('/').to_owned();
            server.set_path("/postgres");
            tracing::info!(database = %name, "creating the database");
            match admin::create_database(server.as_str(), &name).await {
                // Another instance may have created it in between.
                Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
                Err(e) if e.to_string().contains("already exists") => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
    }
}

/// Applies pending embedded migrations under an advisory lock and returns
/// how many ran. Creates the database first if it is missing.
pub async fn migrate(url: &str) -> Result<usize, StoreError> {
    ensure_database(url).await?;
    let url = url.to_owned();
    // diesel's migration harness is synchronous; run it on a blocking thread
    // through the async connection wrapper (works on any tokio runtime).
    tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
        type Wrapper =
            diesel_async::async_connection_wrapper::AsyncConnectionWrapper<AsyncPgConnection>;
        let mut conn = <Wrapper as diesel::Connection>::establish(&url)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
        diesel::RunQueryDsl::execute(diesel::sql_query(lock), &mut conn)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")));
        let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
        diesel::RunQueryDsl::execute(diesel::sql_query(unlock), &mut conn)?;
        applied
    })
    .await
    .map_err(|e| StoreError::Internal(e.to_string()))?
}

/// Creates and drops whole databases: for test isolation and the demo seed.
pub mod admin {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    use crate::StoreError;

    fn quoted(name: &str) -> Result<String, StoreError> {
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.is_empty() {
            Ok(format!("\"{name}\""))
        } else {
            Err(StoreError::Internal(format!("bad database name {name:?}")))
        }
    }

    /// `CREATE DATABASE name`, connecting through `server_url`.
    pub async fn create_database(server_url: &str, name: &str) -> Result<(), StoreError> {
        let mut conn = AsyncPgConnection::establish(server_url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        diesel::sql_query(format!("CREATE DATABASE {}", quoted(name)?))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// `DROP DATABASE IF EXISTS name WITH (FORCE)`.
    pub async fn drop_database(server_url: &str, name: &str) -> Result<(), StoreError> {
        let mut conn = AsyncPgConnection::establish(server_url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quoted(name)?
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}
