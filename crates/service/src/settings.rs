//! Typed settings, loaded lowest to highest precedence from built-in defaults,
//! `config/default.toml`, the file named by `CATALOG_CONFIG`, then
//! `CATALOG__SECTION__KEY` environment variables (see CONTRACT.md).
//!
//! Keys beyond the contract's table are ours; each is documented here and in
//! docs/operations.md.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use serde::{Deserialize, Deserializer};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// One URL; with `cluster`, a comma-separated list of seed nodes.
    pub url: String,
    /// A Redis Cluster: commands are routed by hash slot.
    pub cluster: bool,
    /// Budget for one Redis round trip; past it the call counts as failed.
    pub timeout_ms: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker skips Redis before probing it again.
    pub breaker_cooldown_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReadApiSettings {
    pub bind: String,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// How often the trending top list is recomputed (by one instance at a
    /// time).
    pub trending_rollup_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WriteApiSettings {
    pub bind: String,
    /// How often the outbox relay looks for rows it was not woken for (rows of
    /// other or crashed instances, retries).
    pub relay_poll_ms: u64,
    /// Most outbox rows published per relay pass.
    pub relay_batch: i64,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
}

/// What the invalidator writes for a product event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidatorMode {
    /// Fence the key with a tombstone at the event's version.
    #[default]
    Evict,
    /// Write the event's product snapshot through the version CAS.
    Refresh,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct InvalidatorSettings {
    pub bind: String,
    /// `evict` or `refresh`; parsed in [`Settings::validate`].
    mode: String,
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

impl InvalidatorSettings {
    pub fn mode(&self) -> InvalidatorMode {
        if self.mode == "refresh" {
            InvalidatorMode::Refresh
        } else {
            InvalidatorMode::Evict
        }
    }

    pub fn set_mode(&mut self, mode: InvalidatorMode) {
        self.mode = match mode {
            InvalidatorMode::Evict => "evict",
            InvalidatorMode::Refresh => "refresh",
        }
        .to_owned();
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
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
    /// L1 entry lifetime: bounds staleness while the event subscription is
    /// down.
    pub l1_ttl_secs: u64,
    /// Lifetime of "no such product" entries.
    pub negative_ttl_secs: u64,
    /// false sends every read to Postgres (the benchmarks' no-cache baseline).
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `text` (human) or `json` (one object per line).
    pub format: String,
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
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            cluster: false,
            timeout_ms: 100,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
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
            workers: 0,
        }
    }
}

impl Default for InvalidatorSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8082".to_owned(),
            mode: "evict".to_owned(),
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
            l1_ttl_secs: 10,
            negative_ttl_secs: 30,
            enabled: true,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".to_owned(),
        }
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

/// Which service is loading: each checks only what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ReadApi,
    WriteApi,
    Invalidator,
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
            .map_err(|e| {
                let text = e.to_string();
                let key = text
                    .split("for key `")
                    .nth(1)
                    .and_then(|rest| rest.split('`').next())
                    .unwrap_or("configuration")
                    .to_owned();
                ConfigError { key, message: text }
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

    /// Checks what types alone cannot.
    pub fn validate(&self, role: Role) -> Result<(), ConfigError> {
        check_url(
            "database.url",
            &self.database.url,
            &["postgres", "postgresql"],
        )?;
        if let Some(replica) = &self.database.replica_url {
            check_url("database.replica_url", replica, &["postgres", "postgresql"])?;
        }
        if self.redis.cluster {
            for seed in self.redis.url.split(',') {
                check_url("redis.url", seed.trim(), &["redis"])?;
            }
        } else {
            check_url(
                "redis.url",
                &self.redis.url,
                &["redis", "unix", "redis+unix"],
            )?;
        }
        check_url("amqp.url", &self.amqp.url, &["amqp"])?;
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
        if self.database.pool_size == 0 {
            return Err(ConfigError::new("database.pool_size", "must be at least 1"));
        }
        if !matches!(self.invalidator.mode.as_str(), "evict" | "refresh") {
            return Err(ConfigError::new(
                "invalidator.mode",
                format!(
                    "unknown value {:?} (expected evict or refresh)",
                    self.invalidator.mode
                ),
            ));
        }
        if self.invalidator.max_retries == 0 {
            return Err(ConfigError::new(
                "invalidator.max_retries",
                "must be at least 1",
            ));
        }
        if self.invalidator.prefetch == 0 {
            return Err(ConfigError::new(
                "invalidator.prefetch",
                "must be at least 1",
            ));
        }
        if self.cache.ttl_secs == 0 {
            return Err(ConfigError::new("cache.ttl_secs", "must be at least 1"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::new(
                "log.format",
                format!(
                    "unknown value {:?} (expected text or json)",
                    self.log.format
                ),
            ));
        }
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

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.database.statement_timeout_ms)
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database.acquire_timeout_ms)
    }

    /// A Postgres pool's settings from the `database` section: `pool_size`
    /// connections, named `application_name` in `pg_stat_activity`.
    pub fn pool_settings(&self, application_name: &str) -> store::PoolSettings {
        store::PoolSettings {
            max_size: self.database.pool_size,
            wait_timeout: self.acquire_timeout(),
            statement_timeout: self.statement_timeout(),
            application_name: application_name.to_owned(),
            ..store::PoolSettings::default()
        }
    }
}

fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| ConfigError::new(key, format!("invalid URL: {e}")))?;
    // This build carries no TLS stack: refuse a URL that asks for TLS here,
    // at start-up, rather than at the first connection attempt.
    if matches!(url.scheme(), "rediss" | "amqps")
        || url
            .query_pairs()
            .any(|(k, v)| k == "sslmode" && matches!(&*v, "require" | "verify-ca" | "verify-full"))
    {
        return Err(ConfigError::new(
            key,
            "TLS is not supported by this build (use a plain URL, through a TLS-terminating proxy if needed)",
        ));
    }
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
        assert_eq!(s.invalidator.mode(), InvalidatorMode::Evict);
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
        assert_eq!(s.invalidator.mode(), InvalidatorMode::Refresh);
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
    fn tls_urls_are_refused_up_front() {
        let cases = [
            ("CATALOG__REDIS__URL", "rediss://cache:6380", "redis.url"),
            ("CATALOG__AMQP__URL", "amqps://mq:5671/%2f", "amqp.url"),
            (
                "CATALOG__DATABASE__URL",
                "postgres://db/catalog?sslmode=require",
                "database.url",
            ),
            (
                "CATALOG__DATABASE__REPLICA_URL",
                "postgres://db/catalog?sslmode=verify-full",
                "database.replica_url",
            ),
        ];
        for (var, value, key) in cases {
            let err = load(Role::ReadApi, &[(var, value)]).unwrap_err();
            assert_eq!(err.key, key, "{var}={value}: {err}");
            assert!(err.to_string().contains("TLS"), "{err}");
        }
        // sslmode=prefer (the libpq default) falls back to plain: accepted.
        let s = load(
            Role::ReadApi,
            &[(
                "CATALOG__DATABASE__URL",
                "postgres://db/catalog?sslmode=prefer",
            )],
        );
        assert!(s.is_ok());
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
