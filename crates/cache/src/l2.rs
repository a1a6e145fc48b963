//! L2: Redis, shared by every read-api instance and written by the
//! invalidator. Every call has a deadline; an optional circuit breaker makes
//! a dead Redis cost nothing on the read path.

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use domain::{ProductId, Version};
use rand::Rng;
use redis::{AsyncCommands, Value};

use crate::{
    Breaker, CacheError, Entry, Family, Keys,
    conn::Conn,
    entry::State,
    scripts::{FENCE, FENCE_SCRIPT, FILL, FILL_SCRIPT, LIST_FILL_SCRIPT},
};

/// How to reach Redis and how long entries live.
#[derive(Debug, Clone)]
pub struct L2Config {
    /// One URL; with `cluster`, a comma-separated list of seed nodes.
    pub url: String,
    /// Redis Cluster: commands are routed by slot.
    pub cluster: bool,
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
    conn: Conn,
    keys: Keys,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    breaker: Option<Breaker>,
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
        let conn = Conn::open(&config.url, config.cluster, config.timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                keys: Keys::new(&config.namespace),
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
                timeout: config.timeout,
                breaker: config
                    .breaker
                    .map(|(failures, cooldown)| Breaker::new("redis", failures, cooldown)),
            }),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn breaker(&self) -> Option<&Breaker> {
        self.inner.breaker.as_ref()
    }

    fn conn(&self) -> Conn {
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
            return Err(CacheError::Unavailable("circuit open".into()));
        }
        let result = match tokio::time::timeout(self.inner.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CacheError::from(e)),
            Err(_) => Err(CacheError::Unavailable(format!(
                "no answer within {:?}",
                self.inner.timeout
            ))),
        };
        if let Some(b) = &self.inner.breaker {
            match &result {
                // A refused command means Redis is alive and answering.
                Ok(_) | Err(CacheError::Refused(_)) => b.success(),
                Err(CacheError::Unavailable(_)) => b.failure(),
            }
        }
        if result.is_err() {
            metrics::counter!("cache_redis_errors_total", "op" => op).increment(1);
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
        let mut conn = self.conn();
        self.call("ping", async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// The entry cached for a product. A malformed value reads as a miss
    /// (the next fill overwrites it).
    pub async fn get(&self, id: ProductId) -> Result<Option<Entry>, CacheError> {
        let key = self.keys().product(id);
        let mut conn = self.conn();
        let raw: Option<Vec<u8>> = self.call("get", async move { conn.get(key).await }).await?;
        Ok(raw.and_then(|r| Entry::decode(Bytes::from(r)).ok()))
    }

    /// Fills after a miss with a value, or the absent marker (version 0),
    /// through the version CAS. Returns whether it was written.
    pub async fn fill(&self, id: ProductId, entry: &Entry) -> Result<bool, CacheError> {
        let key = self.keys().product(id);
        let ttl = self.ttl_ms(entry);
        let encoded = entry.encode();
        let version = entry.version.get();
        let mut conn = self.conn();
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
    /// pipelined round trip. The outer error means Redis could not be asked
    /// at all; the inner results say, per operation, whether it was written
    /// or why Redis refused it.
    pub async fn apply(
        &self,
        ops: &[ProductOp],
        bumps: &[Family],
    ) -> Result<Vec<Result<bool, CacheError>>, CacheError> {
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
        for family in bumps {
            pipe.cmd("SET")
                .arg(self.keys().generation(family))
                .arg(new_generation())
                .ignore();
        }
        let mut attempt = 0;
        loop {
            let mut conn = self.conn();
            let pipe_ref = &pipe;
            let results: Vec<redis::RedisResult<Value>> = self
                .call(
                    "apply",
                    async move { pipe_ref.query_async(&mut conn).await },
                )
                .await?;
            let noscript = results.iter().any(|r| {
                matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
            });
            if noscript && attempt == 0 {
                // Redis restarted or flushed its script cache: load, retry
                // (every operation is idempotent).
                self.load_scripts().await?;
                attempt += 1;
                continue;
            }
            let mut out: Vec<Result<bool, CacheError>> = results
                .into_iter()
                .take(ops.len())
                .map(|r| match r {
                    Ok(Value::Int(n)) => Ok(n == 1),
                    Ok(other) => Err(CacheError::Refused(format!("unexpected reply {other:?}"))),
                    Err(e) => Err(CacheError::from(e)),
                })
                .collect();
            // A pipeline with only ignored commands returns fewer replies.
            out.resize_with(ops.len(), || Ok(false));
            return Ok(out);
        }
    }

    async fn load_scripts(&self) -> Result<(), CacheError> {
        let mut conn = self.conn();
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
    pub async fn bump(&self, families: &[Family]) -> Result<(), CacheError> {
        self.apply(&[], families).await.map(|_| ())
    }

    /// Reads a page and its family's generation in one round trip.
    pub async fn list_get(&self, family: &Family, page: &str) -> Result<ListHit, CacheError> {
        let gen_key = self.keys().generation(family);
        let page_key = self.keys().list(family, page);
        let mut conn = self.conn();
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
            if body.starts_with(prefix.as_bytes()) {
                return Ok(ListHit::Hit(Bytes::from(body).slice(prefix.len()..)));
            }
        }
        Ok(ListHit::Miss(generation))
    }

    /// Stores a page under the generation the reader saw before querying
    /// Postgres; refused if the generation has moved since.
    pub async fn list_fill(
        &self,
        family: &Family,
        page: &str,
        seen: Option<&str>,
        body: &[u8],
    ) -> Result<bool, CacheError> {
        let gen_key = self.keys().generation(family);
        let page_key = self.keys().list(family, page);
        let ttl = self.ttl_ms(&Entry::tombstone(Version::ZERO));
        let seen = seen.unwrap_or("").to_owned();
        let body = body.to_vec();
        let mut conn = self.conn();
        let written: i64 = self
            .call("list_fill", async move {
                LIST_FILL_SCRIPT
                    .key(gen_key)
                    .key(page_key)
                    .arg(seen)
                    .arg(body)
                    .arg(ttl)
                    .arg(new_generation())
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        let heads: Vec<Vec<u8>> = self
            .call(
                "scan_heads",
                async move { pipe.query_async(&mut conn).await },
            )
            .await?;
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

    /// Runs an arbitrary command (tests and tools only: plant values, read
    /// TTLs). Keys must come from [`L2::keys`].
    pub async fn raw<T: redis::FromRedisValue + Send>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, CacheError> {
        let mut conn = self.conn();
        self.call("raw", async move { cmd.query_async(&mut conn).await })
            .await
    }

    pub(crate) async fn pipeline<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        pipe: redis::Pipeline,
    ) -> Result<T, CacheError> {
        let mut conn = self.conn();
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

/// A fresh generation token. Random rather than a counter, so a generation
/// key lost to eviction or a restart can never come back with a value an old
/// page was stored under.
fn new_generation() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}
