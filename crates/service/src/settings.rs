//! Typed settings, loaded lowest to highest precedence from built-in defaults,
//! `config/default.toml`, the file named by `CATALOG_CONFIG`, then
//! `CATALOG__SECTION__KEY` environment variables (docs/operations.md lists
//! every key).
//!
//! Keys beyond the contract's table are ours; each is documented here and in
//! docs/operations.md.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use cache::InvalidatorMode;
use serde::{Deserialize, Deserializer};

use crate::redact;

/// Every setting of every service. Each binary reads the ones it needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub amqp: AmqpSettings,
    /// Prefix of every Redis key, exchange and queue name, so several
    /// deployments (or tests) can share one Redis and one broker.
    pub namespace: String,
    pub read_api: ReadApiSettings,
    pub write_api: WriteApiSettings,
    pub invalidator: InvalidatorSettings,
    pub auth: AuthSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// TLS as its `sslmode` asks (see [`store::connect`]).
    pub url: String,
    /// A read replica for read-api; unset means read the primary.
    pub replica_url: Option<String>,
    pub pool_size: usize,
    /// write-api applies pending embedded migrations at start.
    pub migrate: bool,
    /// Server-side cap on each statement.
    pub statement_timeout_ms: u64,
    /// How long a request waits for a pooled connection.
    pub acquire_timeout_ms: u64,
    /// read-api: most Postgres queries in flight at once (0 = pool_size).
    /// Requests beyond it wait `acquire_timeout_ms`, then get 503 overloaded.
    pub max_concurrency: usize,
    /// read-api: how long the replica's replay position is reused before it
    /// is asked again.
    pub replica_lsn_refresh_ms: u64,
    /// read-api: a replica behind what the instance has seen for longer than
    /// this is skipped for a while, and readiness says degraded.
    pub replica_max_lag_ms: u64,
    /// For URLs with `sslmode=require|verify-ca|verify-full` (the primary's
    /// and the replica's).
    pub tls: TlsSettings,
}

/// A backend's TLS files (`<section>.tls.*`), PEM. Unset: trust the
/// system's roots, present no client certificate. Read and checked at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// CA certificates to trust (instead of the system roots; for RabbitMQ,
    /// besides them).
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain, for servers that verify clients.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key_file: Option<PathBuf>,
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// One URL; with `cluster`, a comma-separated list of seed nodes.
    /// Unused when `sentinel.urls` is set. `rediss://` for TLS.
    pub url: String,
    /// A Redis Cluster: commands are routed by hash slot.
    pub cluster: bool,
    /// A primary with replicas managed by Sentinel.
    pub sentinel: SentinelSettings,
    /// The invalidator counts a batch applied only once this many replicas
    /// have it (`WAIT`). Unset: 1 with Sentinel, 0 otherwise.
    pub wait_replicas: Option<u32>,
    /// How long the invalidator's `WAIT` waits for them before the batch is
    /// retried.
    pub wait_timeout_ms: u64,
    /// Budget for one Redis round trip; past it the call counts as failed.
    pub timeout_ms: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker skips Redis before probing it again.
    pub breaker_cooldown_ms: u64,
    /// For `rediss://` (every kind: single, cluster seeds, Sentinels and the
    /// primary behind them).
    pub tls: TlsSettings,
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct SentinelSettings {
    /// The Sentinels, `redis://host:26379` (or `rediss://`, all alike),
    /// comma-separated; empty: no Sentinel.
    #[serde(deserialize_with = "string_or_list")]
    pub urls: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub master: String,
    /// Whether the primary the Sentinels name speaks TLS. Unset: as the
    /// Sentinels' URLs do.
    pub primary_tls: Option<bool>,
}

impl Default for SentinelSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            master: "catalog".to_owned(),
            primary_tls: None,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    /// One broker URL, or the nodes of a cluster, comma-separated: the first
    /// that answers is used. `amqps://` for TLS.
    pub url: String,
    /// For `amqps://`.
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReadApiSettings {
    pub bind: String,
    /// HTTP worker threads (0 = one per core but one, at least one).
    pub workers: usize,
    /// How often the trending top list is recomputed (by one instance at a
    /// time).
    pub trending_rollup_secs: u64,
}

/// The longest `write_api.relay_linger_ms` allowed.
pub const MAX_RELAY_LINGER_MS: u64 = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WriteApiSettings {
    pub bind: String,
    /// How often the outbox relay looks for rows it was not woken for (rows of
    /// other or crashed instances, retries).
    pub relay_poll_ms: u64,
    /// Most outbox rows published per relay pass.
    pub relay_batch: u32,
    /// The least time between the starts of two woken relay passes. A
    /// commit after a quiet spell goes out at once; commits that follow
    /// it within this time wait and go out together: at most one message
    /// per linger under a steady stream of writes (fewer deliveries and
    /// acks), each event held at most this long. 0 (the default) publishes
    /// every wake at once.
    pub relay_linger_ms: u64,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct InvalidatorSettings {
    pub bind: String,
    /// `evict` or `refresh`: what an event writes into Redis and L1.
    pub mode: InvalidatorMode,
    /// Deliveries that failed processing before a message is dead-lettered.
    pub max_retries: u32,
    /// Unacknowledged messages in flight (AMQP prefetch); also the largest
    /// batch applied to Redis in one pipeline.
    pub prefetch: u16,
    /// Seconds between consistency audits; 0 turns the auditor off.
    pub audit_interval_secs: u64,
    /// Cached product keys sampled per audit.
    pub audit_sample_size: usize,
    /// Fence stale entries the auditor finds (besides reporting them).
    pub audit_repair: bool,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// Bearer tokens write-api accepts. A comma-separated string or a list.
    #[serde(deserialize_with = "string_or_list")]
    pub admin_tokens: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CacheSettings {
    /// Redis entry lifetime (jittered); a safety net for lost events, never
    /// the consistency mechanism. Tombstones live this long too.
    pub ttl_secs: u64,
    /// L1 entries per read-api instance; 0 disables L1.
    pub l1_capacity: u64,
    /// L1 bytes per read-api instance, payloads and bookkeeping, beside the
    /// entry bound: big products take more of it.
    pub l1_max_bytes: u64,
    /// L1 entry lifetime: bounds staleness while the event subscription is
    /// down.
    pub l1_ttl_secs: u64,
    /// Lifetime of "no such product" entries.
    pub negative_ttl_secs: u64,
    /// Most product versions a read-api instance remembers beyond its L1
    /// entries (its floors, about 64 bytes each); past it the oldest go,
    /// with their L1 values.
    pub floor_capacity: usize,
    /// false sends every read to Postgres (the benchmarks' no-cache baseline).
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `text` (human) or `json` (one object per line).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Compact lines for a human at a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::default(),
            redis: RedisSettings::default(),
            amqp: AmqpSettings::default(),
            namespace: "catalog".to_owned(),
            read_api: ReadApiSettings::default(),
            write_api: WriteApiSettings::default(),
            invalidator: InvalidatorSettings::default(),
            auth: AuthSettings::default(),
            cache: CacheSettings::default(),
            log: LogSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/catalog".to_owned(),
            replica_url: None,
            pool_size: 16,
            migrate: true,
            statement_timeout_ms: 5000,
            acquire_timeout_ms: 1000,
            max_concurrency: 0,
            replica_lsn_refresh_ms: 10,
            replica_max_lag_ms: 5000,
            tls: TlsSettings::default(),
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            cluster: false,
            sentinel: SentinelSettings::default(),
            wait_replicas: None,
            wait_timeout_ms: 1000,
            timeout_ms: 100,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
            tls: TlsSettings::default(),
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for ReadApiSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".to_owned(),
            workers: 0,
            trending_rollup_secs: 10,
        }
    }
}

impl Default for WriteApiSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8081".to_owned(),
            relay_poll_ms: 500,
            relay_batch: 500,
            relay_linger_ms: 0,
            workers: 0,
        }
    }
}

impl Default for InvalidatorSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8082".to_owned(),
            mode: InvalidatorMode::Evict,
            max_retries: 5,
            prefetch: 256,
            audit_interval_secs: 60,
            audit_sample_size: 200,
            audit_repair: false,
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl_secs: 300,
            l1_capacity: 100_000,
            // 100,000 products of up to ~900 bytes (the demo's average is
            // ~470), bookkeeping included; bigger ones are fewer.
            l1_max_bytes: 128 * 1024 * 1024,
            l1_ttl_secs: 10,
            negative_ttl_secs: 30,
            floor_capacity: 250_000,
            enabled: true,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

// The sections that hold secrets print them masked (see `crate::redact`).
// Each impl destructures its struct, so a field added later must be listed
// here to compile, and cannot slip out unmasked.

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            url,
            replica_url,
            pool_size,
            migrate,
            statement_timeout_ms,
            acquire_timeout_ms,
            max_concurrency,
            replica_lsn_refresh_ms,
            replica_max_lag_ms,
            tls,
        } = self;
        f.debug_struct("DatabaseSettings")
            .field("url", &redact::url(url))
            .field("replica_url", &replica_url.as_deref().map(redact::url))
            .field("pool_size", pool_size)
            .field("migrate", migrate)
            .field("statement_timeout_ms", statement_timeout_ms)
            .field("acquire_timeout_ms", acquire_timeout_ms)
            .field("max_concurrency", max_concurrency)
            .field("replica_lsn_refresh_ms", replica_lsn_refresh_ms)
            .field("replica_max_lag_ms", replica_max_lag_ms)
            .field("tls", tls)
            .finish()
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            url,
            cluster,
            sentinel,
            wait_replicas,
            wait_timeout_ms,
            timeout_ms,
            breaker_failures,
            breaker_cooldown_ms,
            tls,
        } = self;
        f.debug_struct("RedisSettings")
            .field("url", &redact::url(url))
            .field("cluster", cluster)
            .field("sentinel", sentinel)
            .field("wait_replicas", wait_replicas)
            .field("wait_timeout_ms", wait_timeout_ms)
            .field("timeout_ms", timeout_ms)
            .field("breaker_failures", breaker_failures)
            .field("breaker_cooldown_ms", breaker_cooldown_ms)
            .field("tls", tls)
            .finish()
    }
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            urls,
            master,
            primary_tls,
        } = self;
        let urls: Vec<String> = urls.iter().map(|u| redact::url(u)).collect();
        f.debug_struct("SentinelSettings")
            .field("urls", &urls)
            .field("master", master)
            .field("primary_tls", primary_tls)
            .finish()
    }
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { url, tls } = self;
        f.debug_struct("AmqpSettings")
            .field("url", &redact::url(url))
            .field("tls", tls)
            .finish()
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { admin_tokens } = self;
        f.debug_struct("AuthSettings")
            .field("admin_tokens", &redact::tokens(admin_tokens))
            .finish()
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tokens {
        One(String),
        Many(Vec<String>),
    }
    let list = match Tokens::deserialize(d)? {
        Tokens::One(s) => s.split(',').map(str::to_owned).collect(),
        Tokens::Many(v) => v,
    };
    Ok(list
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect())
}

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The key a `config` error is about, from its structure (never its text).
fn config_key(e: &config::ConfigError) -> Option<&str> {
    match e {
        config::ConfigError::Type { key, .. } => key.as_deref(),
        config::ConfigError::At { key, error, .. } => key.as_deref().or_else(|| config_key(error)),
        config::ConfigError::NotFound(key) => Some(key),
        _ => None,
    }
}

/// Which service is loading: each checks only what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ReadApi,
    WriteApi,
    Invalidator,
}

impl Role {
    /// The binary's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadApi => "read-api",
            Self::WriteApi => "write-api",
            Self::Invalidator => "invalidator",
        }
    }
}

impl Settings {
    /// Loads from the files and the process environment.
    pub fn load(role: Role) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(role, &vars)
    }

    /// Loads with an explicit environment (tests use this).
    pub fn load_from(role: Role, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(
            config::File::with_name("config/default.toml")
                .format(config::FileFormat::Toml)
                .required(false),
        );
        if let Some(path) = env.get("CATALOG_CONFIG").filter(|p| !p.is_empty()) {
            if !std::path::Path::new(path).is_file() {
                return Err(ConfigError::new(
                    "CATALOG_CONFIG",
                    format!("no such file: {path}"),
                ));
            }
            builder = builder.add_source(
                config::File::with_name(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("CATALOG__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CATALOG")
                .prefix_separator("__")
                .separator("__")
                .source(Some(vars)),
        );
        let settings: Settings = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError {
                key: config_key(&e).unwrap_or("configuration").to_owned(),
                message: e.to_string(),
            })?;
        settings.validate(role)?;
        Ok(settings)
    }

    /// Loads, or prints one line naming the bad key and exits with status 2.
    pub fn load_or_exit(role: Role) -> Self {
        match Self::load(role) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }

    /// Checks what types alone cannot: URLs, names and every limit. The
    /// binaries take the values as they are; nothing is silently raised.
    pub fn validate(&self, role: Role) -> Result<(), ConfigError> {
        self.validate_urls()?;
        self.validate_limits()?;
        // The files are read again when the service is built; reading them
        // here stops a bad one at start, with the key named.
        self.database_tls()?;
        self.redis_tls()?;
        self.amqp_tls()?;
        let (bind_key, bind) = match role {
            Role::ReadApi => ("read_api.bind", &self.read_api.bind),
            Role::WriteApi => ("write_api.bind", &self.write_api.bind),
            Role::Invalidator => ("invalidator.bind", &self.invalidator.bind),
        };
        bind.parse::<SocketAddr>()
            .map_err(|_| ConfigError::new(bind_key, format!("not an ip:port address: {bind:?}")))?;
        if role == Role::WriteApi && self.auth.admin_tokens.is_empty() {
            return Err(ConfigError::new(
                "auth.admin_tokens",
                "write-api needs at least one admin token (CATALOG__AUTH__ADMIN_TOKENS)",
            ));
        }
        Ok(())
    }

    fn validate_urls(&self) -> Result<(), ConfigError> {
        check_postgres_url("database.url", &self.database.url)?;
        if let Some(replica) = &self.database.replica_url {
            check_postgres_url("database.replica_url", replica)?;
        }
        if !self.redis.sentinel.urls.is_empty() {
            if self.redis.cluster {
                return Err(ConfigError::new(
                    "redis.sentinel.urls",
                    "Sentinel and redis.cluster exclude each other",
                ));
            }
            for url in &self.redis.sentinel.urls {
                check_url("redis.sentinel.urls", url, &["redis", "rediss"])?;
            }
            same_scheme("redis.sentinel.urls", &self.redis.sentinel.urls)?;
            if self.redis.sentinel.master.is_empty() {
                return Err(ConfigError::new(
                    "redis.sentinel.master",
                    "the name the Sentinels monitor the primary under",
                ));
            }
        } else if self.redis.cluster {
            let seeds: Vec<String> = self
                .redis
                .url
                .split(',')
                .map(|seed| seed.trim().to_owned())
                .collect();
            for seed in &seeds {
                check_url("redis.url", seed, &["redis", "rediss"])?;
            }
            // The cluster client takes one TLS mode for every node.
            same_scheme("redis.url", &seeds)?;
        } else {
            check_url(
                "redis.url",
                &self.redis.url,
                &["redis", "rediss", "unix", "redis+unix"],
            )?;
        }
        for node in self.amqp.url.split(',') {
            check_url("amqp.url", node.trim(), &["amqp", "amqps"])?;
        }
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 64
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ns_ok {
            return Err(ConfigError::new(
                "namespace",
                "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-' or '.'",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::new(key, format!("must be at least {min}")))
            } else {
                Ok(())
            }
        };
        let db = &self.database;
        at_least("database.pool_size", db.pool_size as u64, 1)?;
        at_least("database.statement_timeout_ms", db.statement_timeout_ms, 1)?;
        at_least("database.acquire_timeout_ms", db.acquire_timeout_ms, 1)?;
        at_least(
            "database.replica_lsn_refresh_ms",
            db.replica_lsn_refresh_ms,
            1,
        )?;
        at_least("database.replica_max_lag_ms", db.replica_max_lag_ms, 1)?;
        let redis = &self.redis;
        at_least("redis.timeout_ms", redis.timeout_ms, 1)?;
        at_least(
            "redis.breaker_failures",
            u64::from(redis.breaker_failures),
            1,
        )?;
        let cache = &self.cache;
        at_least("cache.ttl_secs", cache.ttl_secs, 1)?;
        at_least("cache.l1_ttl_secs", cache.l1_ttl_secs, 1)?;
        at_least("cache.negative_ttl_secs", cache.negative_ttl_secs, 1)?;
        at_least("cache.floor_capacity", cache.floor_capacity as u64, 1)?;
        if cache.l1_capacity > 0 {
            at_least("cache.l1_max_bytes", cache.l1_max_bytes, 64 * 1024)?;
        }
        at_least(
            "read_api.trending_rollup_secs",
            self.read_api.trending_rollup_secs,
            1,
        )?;
        // Below 10 ms the sweep would be a busy loop against Postgres.
        at_least("write_api.relay_poll_ms", self.write_api.relay_poll_ms, 10)?;
        at_least(
            "write_api.relay_batch",
            self.write_api.relay_batch as u64,
            1,
        )?;
        // Past that it is no longer a linger but a lag the freshness bound
        // (docs/architecture.md) would have to carry.
        if self.write_api.relay_linger_ms > MAX_RELAY_LINGER_MS {
            return Err(ConfigError::new(
                "write_api.relay_linger_ms",
                format!("must be at most {MAX_RELAY_LINGER_MS}"),
            ));
        }
        let inv = &self.invalidator;
        at_least("invalidator.max_retries", u64::from(inv.max_retries), 1)?;
        at_least("invalidator.prefetch", u64::from(inv.prefetch), 1)?;
        if inv.audit_interval_secs > 0 {
            at_least(
                "invalidator.audit_sample_size",
                inv.audit_sample_size as u64,
                1,
            )?;
        }
        Ok(())
    }

    /// Where Redis is, from the `redis` section.
    pub fn redis_endpoint(&self) -> cache::Endpoint {
        let redis = &self.redis;
        if !redis.sentinel.urls.is_empty() {
            let sentinels_tls = redis.sentinel.urls.iter().any(|u| has_scheme(u, "rediss"));
            cache::Endpoint::Sentinel {
                sentinels: redis.sentinel.urls.clone(),
                master: redis.sentinel.master.clone(),
                primary_tls: redis.sentinel.primary_tls.unwrap_or(sentinels_tls),
            }
        } else if redis.cluster {
            cache::Endpoint::Cluster(redis.url.split(',').map(|u| u.trim().to_owned()).collect())
        } else {
            cache::Endpoint::Single(redis.url.clone())
        }
    }

    /// The invalidator's `WAIT` after each batch, if Redis has replicas to
    /// wait for (a Redis Cluster routes WAIT to no particular node: never).
    pub fn redis_wait(&self) -> Option<cache::Wait> {
        let redis = &self.redis;
        let default = u32::from(!redis.sentinel.urls.is_empty());
        let replicas = redis.wait_replicas.unwrap_or(default);
        (replicas > 0 && !redis.cluster).then(|| cache::Wait {
            replicas,
            timeout: Duration::from_millis(redis.wait_timeout_ms),
        })
    }

    /// How long a read-api instance remembers a version it learned: until
    /// every Redis copy written before can have expired (the TTL, its
    /// upward jitter of up to 10%, and a second of slack).
    pub fn floor_horizon(&self) -> Duration {
        let ttl = Duration::from_secs(self.cache.ttl_secs);
        ttl + ttl / 10 + Duration::from_secs(1)
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.database.statement_timeout_ms)
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database.acquire_timeout_ms)
    }

    /// A Postgres pool's settings from the `database` section: `pool_size`
    /// connections, named `application_name` in `pg_stat_activity`, with
    /// the `database.tls` files.
    pub fn pool_settings(
        &self,
        application_name: &str,
    ) -> Result<store::PoolSettings, ConfigError> {
        Ok(store::PoolSettings {
            max_size: self.database.pool_size,
            wait_timeout: self.acquire_timeout(),
            statement_timeout: self.statement_timeout(),
            application_name: application_name.to_owned(),
            tls: self.database_tls()?,
            ..store::PoolSettings::default()
        })
    }

    /// The `database.tls` files, read and checked.
    pub fn database_tls(&self) -> Result<tls::ClientTls, ConfigError> {
        load_tls("database.tls", &self.database.tls)
    }

    /// The `redis.tls` files, read and checked.
    pub fn redis_tls(&self) -> Result<tls::ClientTls, ConfigError> {
        load_tls("redis.tls", &self.redis.tls)
    }

    /// The `amqp.tls` files, read and checked.
    pub fn amqp_tls(&self) -> Result<tls::ClientTls, ConfigError> {
        load_tls("amqp.tls", &self.amqp.tls)
    }
}

fn load_tls(prefix: &str, files: &TlsSettings) -> Result<tls::ClientTls, ConfigError> {
    tls::ClientTls::load(
        prefix,
        tls::Files {
            ca_file: tls::path_setting(&files.ca_file),
            client_cert_file: tls::path_setting(&files.client_cert_file),
            client_key_file: tls::path_setting(&files.client_key_file),
        },
    )
    .map_err(|e| ConfigError {
        key: e.key,
        message: e.problem,
    })
}

fn has_scheme(url: &str, scheme: &str) -> bool {
    url.trim_start()
        .split_once("://")
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme))
}

/// Every URL of a list uses the same scheme: one TLS mode for them all.
fn same_scheme(key: &str, urls: &[String]) -> Result<(), ConfigError> {
    let tls = urls.iter().filter(|u| has_scheme(u, "rediss")).count();
    if tls != 0 && tls != urls.len() {
        return Err(ConfigError::new(
            key,
            "mixes redis:// and rediss://; use one scheme for every node",
        ));
    }
    Ok(())
}

fn check_postgres_url(key: &str, value: &str) -> Result<(), ConfigError> {
    check_url(key, value, &["postgres", "postgresql"])?;
    store::check_url(value).map_err(|e| ConfigError::new(key, e.to_string()))?;
    Ok(())
}

fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| ConfigError::new(key, format!("invalid URL: {e}")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::new(
            key,
            format!(
                "unsupported scheme {:?} (expected {})",
                url.scheme(),
                schemes.join(" or ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(role: Role, pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load_from(role, &env)
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load(Role::ReadApi, &[]).unwrap();
        assert_eq!(s.database.url, "postgres://postgres@127.0.0.1:5432/catalog");
        assert_eq!(s.database.replica_url, None);
        assert_eq!(s.database.pool_size, 16);
        assert!(s.database.migrate);
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(s.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.namespace, "catalog");
        assert_eq!(s.read_api.bind, "127.0.0.1:8080");
        assert_eq!(s.write_api.bind, "127.0.0.1:8081");
        assert_eq!(s.invalidator.bind, "127.0.0.1:8082");
        assert_eq!(s.cache.ttl_secs, 300);
        assert_eq!(s.cache.l1_capacity, 100_000);
        assert!(s.cache.enabled);
        assert_eq!(s.invalidator.mode, InvalidatorMode::Evict);
        assert_eq!(s.invalidator.max_retries, 5);
    }

    #[test]
    fn environment_overrides() {
        let s = load(
            Role::WriteApi,
            &[
                ("CATALOG__DATABASE__POOL_SIZE", "4"),
                ("CATALOG__NAMESPACE", "t1"),
                ("CATALOG__AUTH__ADMIN_TOKENS", "a, b,,c"),
                ("CATALOG__INVALIDATOR__MODE", "refresh"),
                ("CATALOG__CACHE__ENABLED", "false"),
                ("CATALOG__READ_API__BIND", "0.0.0.0:9000"),
            ],
        )
        .unwrap();
        assert_eq!(s.database.pool_size, 4);
        assert_eq!(s.namespace, "t1");
        assert_eq!(s.auth.admin_tokens, ["a", "b", "c"]);
        assert_eq!(s.invalidator.mode, InvalidatorMode::Refresh);
        assert!(!s.cache.enabled);
        assert_eq!(s.read_api.bind, "0.0.0.0:9000");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(Role, &str, &str, &str)] = &[
            (
                Role::ReadApi,
                "CATALOG__DATABASE__URL",
                "not a url",
                "database.url",
            ),
            (
                Role::ReadApi,
                "CATALOG__REDIS__URL",
                "http://x",
                "redis.url",
            ),
            (Role::ReadApi, "CATALOG__AMQP__URL", "::", "amqp.url"),
            (
                Role::ReadApi,
                "CATALOG__INVALIDATOR__MODE",
                "sometimes",
                "invalidator.mode",
            ),
            (
                Role::ReadApi,
                "CATALOG__DATABASE__POOL_SIZE",
                "lots",
                "database.pool_size",
            ),
            (
                Role::ReadApi,
                "CATALOG__READ_API__BIND",
                "nowhere",
                "read_api.bind",
            ),
            (
                Role::WriteApi,
                "CATALOG__AUTH__ADMIN_TOKENS",
                " , ",
                "auth.admin_tokens",
            ),
            (Role::ReadApi, "CATALOG__NAMESPACE", "a:b", "namespace"),
            (Role::ReadApi, "CATALOG__LOG__FORMAT", "xml", "log.format"),
            (
                Role::ReadApi,
                "CATALOG__CACHE__TTL_SECS",
                "0",
                "cache.ttl_secs",
            ),
            (
                Role::ReadApi,
                "CATALOG__CACHE__NEGATIVE_TTL_SECS",
                "0",
                "cache.negative_ttl_secs",
            ),
            (
                Role::ReadApi,
                "CATALOG__REDIS__TIMEOUT_MS",
                "0",
                "redis.timeout_ms",
            ),
            (
                Role::WriteApi,
                "CATALOG__WRITE_API__RELAY_POLL_MS",
                "5",
                "write_api.relay_poll_ms",
            ),
            (
                Role::ReadApi,
                "CATALOG__WRITE_API__RELAY_BATCH",
                "0",
                "write_api.relay_batch",
            ),
            (
                Role::WriteApi,
                "CATALOG__WRITE_API__RELAY_LINGER_MS",
                "101",
                "write_api.relay_linger_ms",
            ),
        ];
        for (role, var, value, key) in cases {
            let err = load(*role, &[(var, value)]).unwrap_err();
            assert_eq!(err.key, *key, "{var}={value}: {err}");
        }
        assert_eq!(
            load(Role::WriteApi, &[]).unwrap_err().key,
            "auth.admin_tokens"
        );
    }

    #[test]
    fn a_cluster_takes_a_list_of_seed_urls() {
        let seeds = "redis://10.0.0.1:6379, redis://10.0.0.2:6379";
        let s = load(
            Role::ReadApi,
            &[
                ("CATALOG__REDIS__CLUSTER", "true"),
                ("CATALOG__REDIS__URL", seeds),
            ],
        )
        .unwrap();
        assert!(s.redis.cluster);
        let err = load(Role::ReadApi, &[("CATALOG__REDIS__URL", seeds)]).unwrap_err();
        assert_eq!(err.key, "redis.url", "a list needs redis.cluster");
        let err = load(
            Role::ReadApi,
            &[
                ("CATALOG__REDIS__CLUSTER", "true"),
                ("CATALOG__REDIS__URL", "redis://a:1,http://b:2"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.key, "redis.url", "every seed is checked");
    }

    #[test]
    fn sentinel_takes_its_urls_and_waits_for_a_replica_by_default() {
        let s = load(
            Role::ReadApi,
            &[(
                "CATALOG__REDIS__SENTINEL__URLS",
                "redis://s1:26379, redis://s2:26379",
            )],
        )
        .unwrap();
        assert_eq!(
            s.redis_endpoint(),
            cache::Endpoint::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                master: "catalog".into(),
                primary_tls: false,
            }
        );
        assert_eq!(s.redis_wait().map(|w| w.replicas), Some(1));
        let plain = load(Role::ReadApi, &[]).unwrap();
        assert_eq!(plain.redis_wait(), None);
        let err = load(
            Role::ReadApi,
            &[
                ("CATALOG__REDIS__SENTINEL__URLS", "redis://s1:26379"),
                ("CATALOG__REDIS__CLUSTER", "true"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.key, "redis.sentinel.urls");
        let err = load(
            Role::ReadApi,
            &[("CATALOG__REDIS__SENTINEL__URLS", "http://s1:26379")],
        )
        .unwrap_err();
        assert_eq!(err.key, "redis.sentinel.urls");
    }

    #[test]
    fn amqp_takes_several_nodes() {
        let s = load(
            Role::ReadApi,
            &[("CATALOG__AMQP__URL", "amqp://a:5672/%2f,amqp://b:5672/%2f")],
        );
        assert!(s.is_ok());
        let err = load(
            Role::ReadApi,
            &[("CATALOG__AMQP__URL", "amqp://a:5672,http://b")],
        );
        assert_eq!(err.unwrap_err().key, "amqp.url");
    }

    #[test]
    fn tls_urls_are_accepted_and_sslmode_is_checked() {
        let s = load(
            Role::ReadApi,
            &[
                ("CATALOG__REDIS__URL", "rediss://cache:6380"),
                (
                    "CATALOG__AMQP__URL",
                    "amqps://mq:5671/%2f,amqp://mq2:5672/%2f",
                ),
                (
                    "CATALOG__DATABASE__URL",
                    "postgres://db/catalog?sslmode=verify-full",
                ),
                (
                    "CATALOG__DATABASE__REPLICA_URL",
                    "postgres://db2/catalog?sslmode=require",
                ),
            ],
        );
        assert!(s.is_ok(), "{s:?}");
        let sentinel = load(
            Role::ReadApi,
            &[(
                "CATALOG__REDIS__SENTINEL__URLS",
                "rediss://s1:26379,rediss://s2:26379",
            )],
        )
        .unwrap();
        let cache::Endpoint::Sentinel { primary_tls, .. } = sentinel.redis_endpoint() else {
            panic!("a Sentinel endpoint");
        };
        assert!(primary_tls, "the primary follows the Sentinels' scheme");

        let refused = [
            (
                "CATALOG__DATABASE__URL",
                "postgres://db/catalog?sslmode=allow",
                "database.url",
            ),
            (
                "CATALOG__DATABASE__REPLICA_URL",
                "postgres://db/catalog?sslmode=verify",
                "database.replica_url",
            ),
            (
                "CATALOG__REDIS__SENTINEL__URLS",
                "redis://s1:26379,rediss://s2:26379",
                "redis.sentinel.urls",
            ),
        ];
        for (var, value, key) in refused {
            let err = load(Role::ReadApi, &[(var, value)]).unwrap_err();
            assert_eq!(err.key, key, "{var}={value}: {err}");
        }
        let mixed = load(
            Role::ReadApi,
            &[
                ("CATALOG__REDIS__CLUSTER", "true"),
                ("CATALOG__REDIS__URL", "redis://a:1,rediss://b:2"),
            ],
        );
        assert_eq!(mixed.unwrap_err().key, "redis.url");
    }

    #[test]
    fn bad_tls_files_stop_the_start_naming_their_key() {
        let dir = std::env::temp_dir().join(format!("catalog-tls-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let missing = dir.join("missing.pem");
        let (not_pem, missing) = (not_pem.to_str().unwrap(), missing.to_str().unwrap());
        let cases = [
            (
                "CATALOG__DATABASE__TLS__CA_FILE",
                missing,
                "database.tls.ca_file",
            ),
            ("CATALOG__REDIS__TLS__CA_FILE", not_pem, "redis.tls.ca_file"),
            ("CATALOG__AMQP__TLS__CA_FILE", not_pem, "amqp.tls.ca_file"),
            (
                "CATALOG__REDIS__TLS__CLIENT_CERT_FILE",
                not_pem,
                "redis.tls.client_key_file",
            ),
            (
                "CATALOG__AMQP__TLS__CLIENT_KEY_FILE",
                not_pem,
                "amqp.tls.client_cert_file",
            ),
        ];
        for (var, value, key) in cases {
            let err = load(Role::ReadApi, &[(var, value)]).unwrap_err();
            assert_eq!(err.key, key, "{var}={value}: {err}");
            assert!(!err.message.contains('\n'), "one line: {err}");
        }
        let both = load(
            Role::ReadApi,
            &[
                ("CATALOG__DATABASE__TLS__CLIENT_CERT_FILE", not_pem),
                ("CATALOG__DATABASE__TLS__CLIENT_KEY_FILE", not_pem),
            ],
        );
        assert_eq!(both.unwrap_err().key, "database.tls.client_cert_file");
        // Empty means unset (an empty environment variable).
        let empty = load(Role::ReadApi, &[("CATALOG__REDIS__TLS__CA_FILE", "")]);
        assert!(empty.is_ok(), "{empty:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_masks_passwords_and_tokens() {
        let s = load(
            Role::WriteApi,
            &[
                (
                    "CATALOG__DATABASE__URL",
                    "postgres://app:pg-secret@db/catalog",
                ),
                (
                    "CATALOG__DATABASE__REPLICA_URL",
                    "postgres://app:pg-secret@replica/catalog",
                ),
                ("CATALOG__REDIS__URL", "redis://:redis-secret@cache:6379"),
                (
                    "CATALOG__REDIS__SENTINEL__URLS",
                    "redis://:sentinel-secret@s1:26379",
                ),
                ("CATALOG__AMQP__URL", "amqp://guest:amqp-secret@mq:5672/%2f"),
                ("CATALOG__AUTH__ADMIN_TOKENS", "token-one,token-two"),
            ],
        )
        .unwrap();
        let shown = format!("{s:?} {s:#?}");
        for secret in [
            "pg-secret",
            "redis-secret",
            "sentinel-secret",
            "amqp-secret",
            "token-one",
            "token-two",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("postgres://app:***@db/catalog"), "{shown}");
        assert!(shown.contains("2 token(s)"), "{shown}");
    }

    #[test]
    fn config_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("catalog-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "namespace = \"fromfile\"\n[cache]\nttl_secs = 60\n[auth]\nadmin_tokens = [\"x\"]\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = load(
            Role::WriteApi,
            &[("CATALOG_CONFIG", path), ("CATALOG__CACHE__TTL_SECS", "90")],
        )
        .unwrap();
        assert_eq!(s.namespace, "fromfile");
        assert_eq!(s.cache.ttl_secs, 90);
        assert_eq!(s.auth.admin_tokens, ["x"]);
        let missing = load(Role::ReadApi, &[("CATALOG_CONFIG", "/nonexistent.toml")]);
        assert_eq!(missing.unwrap_err().key, "CATALOG_CONFIG");
    }
}
