//! The product read path: L1 → L2 → Postgres, with the version floor.
//!
//! Every entry met on the way either answers the request or raises the
//! floor: a tombstone says "the committed version is at least t", and
//! `min_version` says "the client already saw N". An answer below the floor
//! is never served from a cache and never accepted from a lagging replica
//! (the read goes to the primary instead). Fills go to L2 first, through the
//! version CAS; L1 is filled only when L2 accepted (or cannot be asked), so
//! L1 never holds what Redis already knows to be stale.

use std::sync::Arc;

use cache::{Entry, FenceKind, L1, L2, State};
use domain::{ProductId, Version};
use store::{Db, StoreError};

use crate::{limiter::Limiter, singleflight::SingleFlight};

/// Where an answer came from; sent as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L1,
    L2,
    Db,
}

impl Tier {
    pub fn header(self) -> &'static str {
        match self {
            Self::L1 => "HIT-L1",
            Self::L2 => "HIT-L2",
            Self::Db => "MISS",
        }
    }
}

/// A lookup's answer: a value (200) or a deleted/absent marker (404).
#[derive(Debug, Clone)]
pub struct Answer {
    pub entry: Arc<Entry>,
    pub tier: Tier,
}

/// Why a read could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("too many database queries in flight")]
    Overloaded,
    #[error("database unavailable")]
    Unavailable,
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(error.detail = %detail, "postgres unavailable");
                Self::Unavailable
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::limiter::Saturated> for ReadError {
    fn from(_: crate::limiter::Saturated) -> Self {
        Self::Overloaded
    }
}

/// A load's result and the floor it was loaded under, so a caller that
/// joined it with a higher floor can tell whether it satisfies them.
#[derive(Debug, Clone)]
struct Loaded {
    entry: Arc<Entry>,
    floor: Version,
}

/// What a cache entry means to a reader with a given floor.
enum Verdict {
    /// Answer with this entry.
    Serve,
    /// Not good enough: read on, with this floor.
    Floor(Version),
}

fn judge(entry: &Entry, floor: Version) -> Verdict {
    match entry.state {
        State::Value(_) if entry.version >= floor => Verdict::Serve,
        State::Value(_) => Verdict::Floor(floor),
        State::Tombstone => Verdict::Floor(floor.max(entry.version)),
        // A delete is final: no later version can exist.
        State::Deleted => Verdict::Serve,
        // "Not found" is only trusted by a reader that expects nothing.
        State::Absent if floor == Version::ZERO => Verdict::Serve,
        State::Absent => Verdict::Floor(floor),
    }
}

/// Hit and miss counters, registered once: the hot path only bumps atomics.
struct Counters {
    l1_hits: metrics::Counter,
    l1_misses: metrics::Counter,
    l2_hits: metrics::Counter,
    l2_misses: metrics::Counter,
}

impl Counters {
    fn new() -> Self {
        Self {
            l1_hits: metrics::counter!("cache_hits_total", "tier" => "l1"),
            l1_misses: metrics::counter!("cache_misses_total", "tier" => "l1"),
            l2_hits: metrics::counter!("cache_hits_total", "tier" => "l2"),
            l2_misses: metrics::counter!("cache_misses_total", "tier" => "l2"),
        }
    }
}

/// The read path's shared state.
pub struct ReadPath {
    pub l1: L1,
    /// `None` when caching is disabled.
    pub l2: Option<L2>,
    pub primary: Db,
    /// A read replica; `None` reads the primary.
    pub replica: Option<Db>,
    pub limiter: Limiter,
    /// false: every read goes to Postgres (`cache.enabled = false`).
    pub cache_enabled: bool,
    flights: SingleFlight<ProductId, Result<Loaded, ReadError>>,
    counters: Counters,
}

impl ReadPath {
    pub fn new(
        l1: L1,
        l2: Option<L2>,
        primary: Db,
        replica: Option<Db>,
        limiter: Limiter,
        cache_enabled: bool,
    ) -> Self {
        Self {
            l1,
            l2,
            primary,
            replica,
            limiter,
            cache_enabled,
            flights: SingleFlight::default(),
            counters: Counters::new(),
        }
    }

    /// Looks a product up; the answer's version is at least `min_version`
    /// whenever Postgres has it.
    pub async fn product(
        self: &Arc<Self>,
        id: ProductId,
        min_version: Version,
    ) -> Result<Answer, ReadError> {
        if !self.cache_enabled {
            let loaded = self.load(id, min_version, false, 0).await?;
            return Ok(Answer {
                entry: loaded.entry,
                tier: Tier::Db,
            });
        }
        let mut floor = min_version;
        // Fills from this read are refused if L1 is cleared meanwhile.
        let epoch = self.l1.epoch();

        if self.l1.enabled() {
            if let Some(entry) = self.l1.get(id).await {
                match judge(&entry, floor) {
                    Verdict::Serve => {
                        self.counters.l1_hits.increment(1);
                        return Ok(Answer {
                            entry,
                            tier: Tier::L1,
                        });
                    }
                    Verdict::Floor(f) => floor = f,
                }
            }
            self.counters.l1_misses.increment(1);
        }

        let mut redis_ok = false;
        if let Some(l2) = &self.l2 {
            match l2.get(id).await {
                Ok(Some(entry)) => {
                    redis_ok = true;
                    match judge(&entry, floor) {
                        Verdict::Serve => {
                            self.counters.l2_hits.increment(1);
                            let entry = Arc::new(entry);
                            self.remember_in_l1(id, &entry, epoch).await;
                            return Ok(Answer {
                                entry,
                                tier: Tier::L2,
                            });
                        }
                        Verdict::Floor(f) => floor = f,
                    }
                }
                Ok(None) => redis_ok = true,
                Err(_) => {}
            }
            self.counters.l2_misses.increment(1);
        }

        let loaded = self.load_shared(id, floor, redis_ok, epoch).await?;
        Ok(Answer {
            entry: loaded.entry,
            tier: Tier::Db,
        })
    }

    /// Copies an L2 answer into L1 through L1's own CAS.
    async fn remember_in_l1(&self, id: ProductId, entry: &Arc<Entry>, epoch: u64) {
        match entry.state {
            State::Deleted => self.l1.fence(id, entry.version, FenceKind::Deleted).await,
            State::Tombstone => {}
            _ => {
                self.l1.fill(id, Arc::clone(entry), epoch).await;
            }
        }
    }

    /// Loads through single-flight; a caller whose floor is above the shared
    /// load's and whose answer falls short reads again on its own.
    async fn load_shared(
        self: &Arc<Self>,
        id: ProductId,
        floor: Version,
        redis_ok: bool,
        epoch: u64,
    ) -> Result<Loaded, ReadError> {
        let this = Arc::clone(self);
        let (shared, _leader) = self
            .flights
            .run(
                id,
                async move { this.load(id, floor, redis_ok, epoch).await },
            )
            .await;
        let loaded =
            shared.unwrap_or_else(|| Err(ReadError::Internal("load task failed".into())))?;
        if loaded.floor < floor && loaded.entry.version < floor {
            return self.load(id, floor, redis_ok, epoch).await;
        }
        Ok(loaded)
    }

    /// One Postgres read (replica first when there is one) and the fills.
    async fn load(
        &self,
        id: ProductId,
        floor: Version,
        redis_ok: bool,
        epoch: u64,
    ) -> Result<Loaded, ReadError> {
        let row = {
            let _slot = self.limiter.acquire().await?;
            let source = self.replica.as_ref().unwrap_or(&self.primary);
            let mut row = source.product(id).await?;
            let short = row
                .as_ref()
                .map_or(floor > Version::ZERO, |p| p.version < floor);
            if self.replica.is_some() && short {
                // The replica lags behind what the cache or the client
                // already knows: ask the primary.
                metrics::counter!("db_replica_fallbacks_total").increment(1);
                row = self.primary.product(id).await?;
            }
            row
        };
        let entry = Arc::new(match row {
            Some(p) => Entry::product(&p).map_err(|e| ReadError::Internal(e.to_string()))?,
            None => Entry::absent(),
        });
        if self.cache_enabled {
            let l1_may_fill = match (&self.l2, redis_ok) {
                // L2 is the shared authority: if it refuses, it knows of a
                // newer version or a fence, and L1 must not hold ours.
                (Some(l2), true) => l2.fill(id, &entry).await.unwrap_or(true),
                // Redis is away: L1 is still fenced by this instance's own
                // event subscription.
                _ => true,
            };
            if l1_may_fill {
                self.l1.fill(id, Arc::clone(&entry), epoch).await;
            }
        }
        Ok(Loaded { entry, floor })
    }
}
