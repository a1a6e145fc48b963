//! L2: Redis, shared by every read-api instance and written by the
//! invalidator. Every call has a deadline; an optional circuit breaker makes
//! a dead Redis cost nothing on the read path.
//!
//! [`L2::off`] is the null object for `cache.enabled = false`: it holds
//! nothing and writes nothing, so the read path needs no "is caching on"
//! branches (svix's `NoCache`).

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use domain::{Lsn, ProductId, Version};
use rand::Rng;
use redis::{AsyncCommands, Value};

use crate::{
    Breaker, Bump, CacheError, Entry, Family, Keys, Unavailable,
    conn::Conn,
    entry::State,
    scripts::{FENCE, FENCE_SCRIPT, FILL, FILL_SCRIPT, LIST_FILL_SCRIPT},
};

/// How to reach Redis and how long entries live.
#[derive(Debug, Clone)]
pub struct L2Config {
    pub endpoint: crate::Endpoint,
    pub namespace: String,
    /// Lifetime of values and tombstones (jittered upwards by up to 10%).
    pub ttl: Duration,
    /// Lifetime of "no such product" markers.
    pub negative_ttl: Duration,
    /// Deadline of one Redis round trip.
    pub timeout: Duration,
    /// `(failures, cooldown)` for a circuit breaker; `None` for callers that
    /// prefer to wait and retry (the invalidator).
    pub breaker: Option<(u32, Duration)>,
    /// For the invalidator, where Redis has replicas: a batch counts as
    /// applied only once this many replicas have it (`WAIT`), so a failover
    /// cannot bring back a version older than an acknowledged fence.
    pub wait: Option<Wait>,
    /// What `rediss://` connections trust and present.
    pub tls: tls::ClientTls,
}

/// `WAIT <replicas> <timeout>` after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// What an invalidation writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceKind {
    /// The product changed: a tombstone at the committed version.
    Tombstone,
    /// The product is gone: a deleted marker, answering 404 from cache.
    Deleted,
}

/// One product-key operation of an invalidator batch.
#[derive(Debug, Clone)]
pub enum ProductOp {
    Fence {
        id: ProductId,
        version: Version,
        kind: FenceKind,
    },
    /// Write this value through the fill CAS (refresh mode).
    Refresh { id: ProductId, entry: Entry },
}

/// A cached list page, or what a miss needs to fill it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListHit {
    Hit(Bytes),
    /// Not cached under the current generation; fill with this generation
    /// (`None`: the family has none yet).
    Miss(Option<String>),
}

#[derive(Clone)]
pub struct L2 {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for [`L2::off`].
    conn: Option<Conn>,
    keys: Keys,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    breaker: Option<Breaker>,
    wait: Option<Wait>,
    /// The TLS failure of the last call, if that is why it failed: kept
    /// apart from the errors because an open breaker answers without asking
    /// Redis, and readiness must still name the key to fix.
    tls_failure: tls::LastFailure,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2")
            .field("keys", &self.inner.keys)
            .finish()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl L2 {
    /// Prepares a client; the connection opens lazily, so this succeeds
    /// while Redis is down.
    pub fn new(config: &L2Config) -> Result<Self, CacheError> {
        let conn = Conn::open(&config.endpoint, &config.tls, config.timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Some(conn),
                keys: Keys::new(&config.namespace),
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
                timeout: config.timeout,
                breaker: config
                    .breaker
                    .map(|(failures, cooldown)| Breaker::new("redis", failures, cooldown)),
                wait: config.wait,
                tls_failure: tls::LastFailure::default(),
            }),
        })
    }

    /// The null object: every read misses, every write is a no-op that
    /// reports "not written", nothing is ever asked of a server.
    pub fn off(namespace: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: None,
                keys: Keys::new(namespace),
                ttl: Duration::ZERO,
                negative_ttl: Duration::ZERO,
                timeout: Duration::ZERO,
                breaker: None,
                wait: None,
                tls_failure: tls::LastFailure::default(),
            }),
        }
    }

    /// Whether this is a real Redis (not [`L2::off`]).
    pub fn is_on(&self) -> bool {
        self.inner.conn.is_some()
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn breaker(&self) -> Option<&Breaker> {
        self.inner.breaker.as_ref()
    }

    /// Why the last call's TLS handshake failed, if that is why it failed.
    pub fn tls_failure(&self) -> Option<tls::Failure> {
        self.inner.tls_failure.get()
    }

    /// The connection; `None` for [`L2::off`], whose callers answer as an
    /// empty cache would.
    fn conn(&self) -> Option<Conn> {
        self.inner.conn.clone()
    }

    /// Runs one Redis call under the breaker and the deadline.
    async fn call<T, F>(&self, op: &'static str, fut: F) -> Result<T, CacheError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if let Some(b) = &self.inner.breaker
            && !b.allow()
        {
            metrics::counter!("cache_redis_skipped_total", "op" => op).increment(1);
            return Err(CacheError::unavailable(Unavailable::CircuitOpen));
        }
        let result = match tokio::time::timeout(self.inner.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CacheError::from(e)),
            Err(_) => Err(CacheError::unavailable(Unavailable::Timeout)),
        };
        self.inner.tls_failure.set(match &result {
            Err(CacheError::Unavailable {
                kind: Unavailable::Tls(failure),
                ..
            }) => Some(*failure),
            _ => None,
        });
        if let Some(b) = &self.inner.breaker {
            match &result {
                // Not reachable, not answering in time, or refusing our TLS:
                // count towards opening (a handshake that fails will fail
                // again). Anything else means Redis is alive and answering.
                Err(CacheError::Unavailable {
                    kind: Unavailable::Unreachable | Unavailable::Timeout | Unavailable::Tls(_),
                    ..
                }) => b.failure(),
                _ => b.success(),
            }
        }
        if let Err(e) = &result {
            let kind = e.unavailable_kind().map_or("refused", Unavailable::label);
            metrics::counter!("cache_redis_errors_total", "op" => op, "kind" => kind).increment(1);
        }
        result
    }

    /// Values and tombstones live `ttl` plus up to 10% jitter, so entries
    /// filled together do not all expire together; never less than `ttl`,
    /// because a tombstone must outlive any read in flight.
    fn ttl_ms(&self, entry: &Entry) -> u64 {
        let base = match entry.state {
            State::Absent => self.inner.negative_ttl,
            _ => self.inner.ttl,
        };
        let base = ms(base);
        base + rand::rng().random_range(0..=base / 10)
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok(());
        };
        self.call("ping", async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// The entry cached for a product. A malformed value reads as a miss
    /// (the next fill overwrites it).
    pub async fn get(&self, id: ProductId) -> Result<Option<Entry>, CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok(None);
        };
        let key = self.keys().product(id);
        let raw: Option<Vec<u8>> = self.call("get", async move { conn.get(key).await }).await?;
        Ok(raw.and_then(|r| Entry::decode(Bytes::from(r)).ok()))
    }

    /// Fills after a miss with a value, or the absent marker (version 0),
    /// through the version CAS. Returns whether it was written.
    pub async fn fill(&self, id: ProductId, entry: &Entry) -> Result<bool, CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok(false);
        };
        let key = self.keys().product(id);
        let ttl = self.ttl_ms(entry);
        let encoded = entry.encode();
        let version = entry.version.get();
        let written: i64 = self
            .call("fill", async move {
                FILL_SCRIPT
                    .key(key)
                    .arg(version)
                    .arg(encoded)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if written == 0 {
            metrics::counter!("cache_fill_refused_total", "tier" => "l2").increment(1);
        }
        Ok(written == 1)
    }

    /// Fences one product at `version`. Returns whether it was written.
    pub async fn fence(
        &self,
        id: ProductId,
        version: Version,
        kind: FenceKind,
    ) -> Result<bool, CacheError> {
        let results = self
            .apply(&[ProductOp::Fence { id, version, kind }], &[])
            .await?;
        results.into_iter().next().unwrap_or(Ok(false))
    }

    /// Applies a batch of product operations and generation bumps in one
    /// pipelined round trip.
    ///
    /// The outer error means the batch must be retried as a whole later:
    /// Redis could not be asked, or refused part of it for a reason of its
    /// own (OOM, READONLY, BUSY, a failed generation bump...). Every
    /// operation is idempotent, so retrying what did land is harmless. The
    /// inner results say, per operation, whether it was written, or why
    /// Redis refused that operation's own input.
    pub async fn apply(
        &self,
        ops: &[ProductOp],
        bumps: &[Bump],
    ) -> Result<Vec<Result<bool, CacheError>>, CacheError> {
        if !self.is_on() {
            return Ok(ops.iter().map(|_| Ok(false)).collect());
        }
        let pipe = self.apply_pipeline(ops, bumps);
        let mut reloaded = false;
        loop {
            let Some(mut conn) = self.conn() else {
                return Ok(ops.iter().map(|_| Ok(false)).collect());
            };
            let pipe_ref = &pipe;
            let replies: Vec<redis::RedisResult<Value>> = self
                .call(
                    "apply",
                    async move { pipe_ref.query_async(&mut conn).await },
                )
                .await?;
            let mut results = Vec::with_capacity(ops.len());
            let mut transient = None;
            let waited_at = ops.len() + bumps.len();
            for (i, reply) in replies.into_iter().enumerate() {
                if i == waited_at {
                    // WAIT's reply: how many replicas have the batch.
                    if let Err(e) = self.replicated(reply) {
                        transient.get_or_insert(e);
                    }
                    continue;
                }
                let is_op = i < ops.len();
                match (reply, is_op) {
                    (Ok(Value::Int(n)), true) => results.push(Ok(n == 1)),
                    (Ok(other), true) => {
                        results.push(Err(CacheError::UnexpectedReply(format!("{other:?}"))));
                    }
                    // A bump's reply: OK.
                    (Ok(_), false) => {}
                    (Err(e), _) => match CacheError::from(e) {
                        refused @ CacheError::Refused(_) if is_op => results.push(Err(refused)),
                        // A bump that fails fails the batch, like a fence
                        // Redis cannot take now.
                        other => {
                            transient.get_or_insert(other);
                        }
                    },
                }
            }
            match transient {
                Some(e) if e.unavailable_kind() == Some(Unavailable::NoScript) && !reloaded => {
                    // Redis restarted or its script cache was flushed: load
                    // the scripts, send the batch again.
                    self.load_scripts().await?;
                    reloaded = true;
                }
                Some(e) => return Err(e),
                None => {
                    // A pipeline with nothing but bumps has no op replies.
                    results.resize_with(ops.len(), || Ok(false));
                    return Ok(results);
                }
            }
        }
    }

    /// One `EVALSHA` per product operation, then one `SET` per bump.
    fn apply_pipeline(&self, ops: &[ProductOp], bumps: &[Bump]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for op in ops {
            let (key, version, encoded, entry_for_ttl, script) = match op {
                ProductOp::Fence { id, version, kind } => {
                    let marker = match kind {
                        FenceKind::Tombstone => Entry::tombstone(*version),
                        FenceKind::Deleted => Entry::deleted(*version),
                    };
                    (
                        self.keys().product(*id),
                        *version,
                        marker.encode(),
                        marker,
                        FENCE_SCRIPT.get_hash(),
                    )
                }
                ProductOp::Refresh { id, entry } => (
                    self.keys().product(*id),
                    entry.version,
                    entry.encode(),
                    entry.clone(),
                    FILL_SCRIPT.get_hash(),
                ),
            };
            pipe.cmd("EVALSHA")
                .arg(script)
                .arg(1)
                .arg(key)
                .arg(version.get())
                .arg(encoded)
                .arg(self.ttl_ms(&entry_for_ttl));
        }
        for bump in bumps {
            pipe.cmd("SET")
                .arg(self.keys().generation(&bump.family))
                .arg(new_generation(bump.lsn))
                .arg("PX")
                .arg(self.generation_ttl_ms());
        }
        if let Some(wait) = self.inner.wait {
            // On the same connection as the writes, so it waits for them.
            pipe.cmd("WAIT").arg(wait.replicas).arg(ms(wait.timeout));
        }
        pipe
    }

    /// Whether WAIT says enough replicas have the batch.
    fn replicated(&self, reply: redis::RedisResult<Value>) -> Result<(), CacheError> {
        let wanted = self.inner.wait.map_or(0, |w| i64::from(w.replicas));
        match reply {
            Ok(Value::Int(n)) if n >= wanted => Ok(()),
            Ok(Value::Int(n)) => {
                tracing::debug!(replicas = n, wanted, "too few replicas have the batch");
                Err(CacheError::unavailable(Unavailable::NotReplicated))
            }
            Ok(other) => Err(CacheError::UnexpectedReply(format!("{other:?}"))),
            Err(e) => Err(e.into()),
        }
    }

    async fn load_scripts(&self) -> Result<(), CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok(());
        };
        self.call("script_load", async move {
            for code in [FILL, FENCE] {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(code)
                    .query_async::<String>(&mut conn)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Bumps the generation of each family: every cached page of those
    /// families stops matching, in O(1) per family.
    pub async fn bump(&self, bumps: &[Bump]) -> Result<(), CacheError> {
        self.apply(&[], bumps).await.map(|_| ())
    }

    /// A generation key outlives the pages stored under it (their TTL with
    /// jitter), and then goes: a family nobody changes or reads costs no
    /// memory forever, and a lost generation only makes its pages miss (a
    /// new one is a new random token, which no old page carries).
    fn generation_ttl_ms(&self) -> u64 {
        ms(self.inner.ttl) * 2
    }

    /// Reads a page and its family's generation in one round trip. A page
    /// whose generation was made before `floor` (a change the caller has
    /// already seen, that the invalidator has not bumped the family for
    /// yet) is a miss.
    pub async fn list_get(
        &self,
        family: &Family,
        page: &str,
        floor: Lsn,
    ) -> Result<ListHit, CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok(ListHit::Miss(None));
        };
        let gen_key = self.keys().generation(family);
        let page_key = self.keys().list(family, page);
        let (generation, body): (Option<String>, Option<Vec<u8>>) = self
            .call("list_get", async move {
                redis::cmd("MGET")
                    .arg(gen_key)
                    .arg(page_key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if let (Some(g), Some(body)) = (&generation, body) {
            let prefix = format!("G{g}:");
            let made_at = crate::keys::generation_lsn(g).unwrap_or_default();
            if body.starts_with(prefix.as_bytes()) && made_at >= floor {
                return Ok(ListHit::Hit(Bytes::from(body).slice(prefix.len()..)));
            }
        }
        Ok(ListHit::Miss(generation))
    }

    /// Stores a page under the generation the reader saw before querying
    /// Postgres; refused if the generation has moved since, or if the data
    /// was read at a WAL position (`data_at`; `Lsn(u64::MAX)` for the
    /// primary) older than the change that made the generation. A family
    /// without a generation gets one made at `known`: the newest change the
    /// reader had seen before it read, which its data has.
    pub async fn list_fill(
        &self,
        family: &Family,
        page: &str,
        seen: Option<&str>,
        data_at: Lsn,
        known: Lsn,
        body: &[u8],
    ) -> Result<bool, CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok(false);
        };
        let gen_key = self.keys().generation(family);
        let page_key = self.keys().list(family, page);
        let ttl = self.ttl_ms(&Entry::tombstone(Version::ZERO));
        let seen = seen.unwrap_or("").to_owned();
        let body = body.to_vec();
        let gen_ttl = self.generation_ttl_ms();
        let written: i64 = self
            .call("list_fill", async move {
                LIST_FILL_SCRIPT
                    .key(gen_key)
                    .key(page_key)
                    .arg(seen)
                    .arg(body)
                    .arg(ttl)
                    .arg(new_generation(known.min(data_at)))
                    .arg(format!("{:016x}", data_at.0))
                    .arg(gen_ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if written == 0 {
            metrics::counter!("cache_fill_refused_total", "tier" => "l2_list").increment(1);
        }
        Ok(written == 1)
    }

    /// One step of a walk over this namespace's product keys (`SCAN`, or on
    /// a cluster the hash slots, each asked of its primary): the next cursor
    /// (0 when the walk wrapped) and each key's entry header (version and
    /// kind; payloads are not transferred).
    pub async fn scan_products(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(ProductId, Entry)>), CacheError> {
        let Some(mut conn) = self.conn() else {
            return Ok((0, Vec::new()));
        };
        let (next, keys): (u64, Vec<String>) = match conn.cluster() {
            Some(cluster) => {
                let cluster = cluster.clone();
                self.call("scan", cluster_scan_step(cluster, cursor, count))
                    .await?
            }
            None => {
                let pattern = self.keys().product_pattern();
                self.call("scan", async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut conn)
                        .await
                })
                .await?
            }
        };
        // GETKEYSINSLOT returns every namespace's keys: read only ours.
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| self.keys().product_id(k).is_some())
            .collect();
        if keys.is_empty() {
            return Ok((next, Vec::new()));
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            // The header fits in 22 bytes: kind, up to 19 digits, colon.
            pipe.cmd("GETRANGE").arg(key).arg(0).arg(21);
        }
        let heads: Vec<Vec<u8>> = self.pipeline("scan_heads", pipe).await?;
        let entries = keys
            .iter()
            .zip(heads)
            .filter_map(|(key, head)| {
                let id = self.keys().product_id(key)?;
                let entry = Entry::decode(Bytes::from(head)).ok()?;
                Some((id, entry))
            })
            .collect();
        Ok((next, entries))
    }

    /// Runs one command under the deadline and the breaker. Keys must come
    /// from [`L2::keys`]. Tests and tools use it to plant entries and read
    /// TTLs; trending uses it for its sorted sets. On [`L2::off`] there is
    /// no server to ask: unavailable.
    pub async fn command<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, CacheError> {
        let Some(mut conn) = self.conn() else {
            return Err(CacheError::unavailable(Unavailable::Unreachable));
        };
        self.call(op, async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a pipeline under the deadline and the breaker.
    pub(crate) async fn pipeline<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        pipe: redis::Pipeline,
    ) -> Result<T, CacheError> {
        let Some(mut conn) = self.conn() else {
            return Err(CacheError::unavailable(Unavailable::Unreachable));
        };
        self.call(op, async move { pipe.query_async(&mut conn).await })
            .await
    }
}

/// Hash slots in a Redis Cluster.
const CLUSTER_SLOTS: u16 = 16384;
/// Slots one cluster scan step visits.
const SLOTS_PER_STEP: u16 = 128;

/// One step of a walk over a cluster's keys: SCAN would visit one node only,
/// so the cursor is a hash slot instead, and each slot's keys are asked of
/// the primary that owns it (`CLUSTER GETKEYSINSLOT`), up to `count` each.
/// Returns the next slot, 0 when the walk wrapped.
async fn cluster_scan_step(
    conn: redis::cluster_async::ClusterConnection,
    cursor: u64,
    count: usize,
) -> redis::RedisResult<(u64, Vec<String>)> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let start = u16::try_from(cursor).unwrap_or(0) % CLUSTER_SLOTS;
    let end = start.saturating_add(SLOTS_PER_STEP).min(CLUSTER_SLOTS);
    let replies = futures::future::try_join_all((start..end).map(|slot| {
        let mut conn = conn.clone();
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("GETKEYSINSLOT").arg(slot).arg(count);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        async move { conn.route_command(cmd, route).await }
    }))
    .await?;
    let mut keys = Vec::new();
    for reply in replies {
        keys.extend(redis::from_redis_value::<Vec<String>>(reply)?);
    }
    let next = if end == CLUSTER_SLOTS {
        0
    } else {
        u64::from(end)
    };
    Ok((next, keys))
}

/// A fresh generation: a random token (rather than a counter, so a
/// generation key lost to eviction, expiry or a restart can never come back
/// with a value an old page was stored under) and the WAL position of the
/// change that made it.
fn new_generation(made_at: Lsn) -> String {
    format!("{:016x}:{:016x}", rand::rng().random::<u64>(), made_at.0)
}
