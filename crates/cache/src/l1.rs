//! L1: a bounded in-process cache per read-api instance, fenced by the
//! product events the instance consumes, under the same version rules as
//! Redis.
//!
//! How long an entry may live depends on what it is and whether fences can
//! reach it. A value (or a deleted marker) written while the instance's event
//! subscription is up lives as long as a Redis entry: events fence it, and L1
//! is cleared the moment the subscription drops. Written while it is down, it
//! lives only the short TTL, the staleness bound when events cannot arrive.
//! A tombstone only has to outlive the reads in flight when it was written
//! (every store call has a deadline of seconds), so it gets the short TTL
//! too: otherwise a bulk load would fill L1 with tombstones of products
//! nobody reads here. A "not found" marker lives the negative TTL. All
//! lifetimes are jittered by up to 10% so entries filled together do not
//! expire together.
//!
//! moka's loaders insert unconditionally, which would let a slow loader
//! overwrite a newer version or a fence. Every write here goes through
//! `and_compute_with` instead: a per-key compare-and-set.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use domain::{ProductId, Version};
use moka::{Expiry, future::Cache, ops::compute::Op};

use rand::Rng;

use crate::{Entry, FenceKind, State};

#[derive(Clone)]
pub struct L1 {
    /// `None` when disabled (`cache.l1_capacity = 0`).
    cache: Option<Cache<ProductId, Arc<Entry>>>,
    /// Advanced by every [`L1::clear`]. A read notes it when it starts and
    /// its fill is refused if it moved: a value read before the event
    /// subscription dropped or came back must not outlive the clear.
    epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for L1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1")
            .field("entries", &self.cache.as_ref().map(Cache::entry_count))
            .finish()
    }
}

/// Lifetimes of L1 entries (see the module comment).
#[derive(Debug, Clone)]
pub struct Lifetimes {
    /// Values while fences can arrive: the Redis TTL.
    pub fenced: Duration,
    /// Values while they cannot (the staleness bound), and tombstones.
    pub unfenced: Duration,
    /// "Not found" markers.
    pub negative: Duration,
    /// Whether the event subscription is up right now.
    pub subscribed: Arc<AtomicBool>,
}

impl Lifetimes {
    /// One lifetime whatever the entry and the subscription.
    pub fn fixed(ttl: Duration) -> Self {
        Self {
            fenced: ttl,
            unfenced: ttl,
            negative: ttl,
            subscribed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn for_entry(&self, entry: &Entry) -> Duration {
        let base = match entry.state {
            State::Tombstone => self.unfenced,
            State::Absent => self.negative.min(self.unfenced.max(self.fenced)),
            State::Value(_) | State::Deleted if self.subscribed.load(Ordering::Acquire) => {
                self.fenced
            }
            State::Value(_) | State::Deleted => self.unfenced,
        };
        // Up to 10% shorter, never longer: a bound stays a bound.
        base.mul_f64(1.0 - rand::rng().random_range(0.0..0.1))
    }
}

impl Expiry<ProductId, Arc<Entry>> for Lifetimes {
    fn expire_after_create(
        &self,
        _: &ProductId,
        entry: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.for_entry(entry))
    }

    fn expire_after_update(
        &self,
        _: &ProductId,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.for_entry(entry))
    }
}

impl L1 {
    /// `capacity` entries living per `lifetimes`; capacity 0 disables L1.
    pub fn new(capacity: u64, lifetimes: Lifetimes) -> Self {
        let cache = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(lifetimes)
                .build()
        });
        Self {
            cache,
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The current epoch, to pass to [`L1::fill`] for a read starting now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub async fn get(&self, id: ProductId) -> Option<Arc<Entry>> {
        self.cache.as_ref()?.get(&id).await
    }

    /// Fills with a value or the absent marker read during `epoch`, unless
    /// what is held is as new or newer (or a fence above it), or L1 was
    /// cleared since. Returns whether it was written.
    pub async fn fill(&self, id: ProductId, entry: Arc<Entry>, epoch: u64) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let written = cache
            .entry(id)
            .and_compute_with(|held| {
                // Checked under the entry's lock: a clear that lands after
                // this point drops what we write.
                let op = match held {
                    _ if self.epoch() != epoch => Op::Nop,
                    Some(held) if !held.value().admits_fill(&entry) => Op::Nop,
                    _ => Op::Put(entry),
                };
                std::future::ready(op)
            })
            .await;
        let stored = matches!(
            written,
            moka::ops::compute::CompResult::Inserted(_)
                | moka::ops::compute::CompResult::ReplacedWith(_)
        );
        if !stored {
            metrics::counter!("cache_fill_refused_total", "tier" => "l1").increment(1);
        }
        stored
    }

    /// Fences at `version` unless what is held is already at or above it.
    pub async fn fence(&self, id: ProductId, version: Version, kind: FenceKind) {
        let Some(cache) = &self.cache else {
            return;
        };
        let marker = Arc::new(match kind {
            FenceKind::Tombstone => Entry::tombstone(version),
            FenceKind::Deleted => Entry::deleted(version),
        });
        cache
            .entry(id)
            .and_compute_with(|held| {
                let op = match held {
                    Some(held) if !held.value().admits_fence(version) => Op::Nop,
                    _ => Op::Put(marker),
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Applies a changed product's snapshot (refresh mode): replaces what is
    /// held through the fill CAS, so a hot product never goes cold here; a
    /// product this instance does not hold gets only a tombstone, which still
    /// stops a slower reader's older fill without filling L1 with products
    /// nobody reads here.
    pub async fn refresh(&self, id: ProductId, entry: Arc<Entry>) {
        let Some(cache) = &self.cache else {
            return;
        };
        cache
            .entry(id)
            .and_compute_with(|held| {
                let op = match held {
                    None => Op::Put(Arc::new(Entry::tombstone(entry.version))),
                    Some(held) if held.value().admits_fill(&entry) => Op::Put(entry),
                    Some(_) => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Drops everything: after the event subscription was lost, L1 may have
    /// missed fences.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::entry_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::table;
    use bytes::Bytes;

    fn id() -> ProductId {
        ProductId::new(7).unwrap()
    }

    #[tokio::test]
    async fn l1_follows_the_design_table() {
        for (held, v, fill, fence) in table() {
            let l1 = L1::new(100, Lifetimes::fixed(Duration::from_secs(60)));
            l1.cache
                .as_ref()
                .unwrap()
                .insert(id(), Arc::new(held.clone()))
                .await;
            let incoming = Arc::new(Entry::value(Version(v), Bytes::from_static(b"{}")));
            assert_eq!(
                l1.fill(id(), incoming, 0).await,
                fill,
                "fill {v} over {held:?}"
            );

            let l1 = L1::new(100, Lifetimes::fixed(Duration::from_secs(60)));
            l1.cache
                .as_ref()
                .unwrap()
                .insert(id(), Arc::new(held.clone()))
                .await;
            l1.fence(id(), Version(v), FenceKind::Tombstone).await;
            let now = l1.get(id()).await.unwrap();
            let expected = if fence {
                Entry::tombstone(Version(v))
            } else {
                held.clone()
            };
            assert_eq!(*now, expected, "fence {v} over {held:?}");
        }
    }

    #[tokio::test]
    async fn a_slow_fill_cannot_undo_a_fence() {
        let l1 = L1::new(100, Lifetimes::fixed(Duration::from_secs(60)));
        // A reader loaded version 7; before it fills, the event for 8 lands.
        l1.fence(id(), Version(8), FenceKind::Tombstone).await;
        assert!(
            !l1.fill(id(), Arc::new(Entry::value(Version(7), Bytes::new())), 0)
                .await
        );
        assert_eq!(l1.get(id()).await.unwrap().version, Version(8));
        // Out-of-order and duplicated fences never lower it.
        l1.fence(id(), Version(6), FenceKind::Tombstone).await;
        l1.fence(id(), Version(8), FenceKind::Tombstone).await;
        assert_eq!(l1.get(id()).await.unwrap().version, Version(8));
        assert!(
            l1.fill(id(), Arc::new(Entry::value(Version(8), Bytes::new())), 0)
                .await
        );
        // A read that started before a clear cannot fill after it.
        let before = l1.epoch();
        l1.clear();
        let late = Arc::new(Entry::value(Version(9), Bytes::new()));
        assert!(!l1.fill(id(), late, before).await);
        assert!(l1.get(id()).await.is_none());
    }

    #[tokio::test]
    async fn refresh_replaces_held_entries_and_only_fences_absent_ones() {
        let l1 = L1::new(100, Lifetimes::fixed(Duration::from_secs(60)));
        let v = |n: i64| Arc::new(Entry::value(Version(n), Bytes::from(format!("v{n}"))));
        // Not held: a tombstone only.
        l1.refresh(id(), v(2)).await;
        assert_eq!(*l1.get(id()).await.unwrap(), Entry::tombstone(Version(2)));
        // Held: the snapshot replaces it; an older snapshot does not.
        l1.fill(id(), v(2), 0).await;
        l1.refresh(id(), v(3)).await;
        assert_eq!(l1.get(id()).await.unwrap(), v(3));
        l1.refresh(id(), v(2)).await;
        assert_eq!(l1.get(id()).await.unwrap(), v(3));
    }

    #[tokio::test]
    async fn lifetimes_depend_on_the_entry_and_the_subscription() {
        let subscribed = Arc::new(AtomicBool::new(false));
        let l1 = L1::new(
            100,
            Lifetimes {
                fenced: Duration::from_secs(60),
                unfenced: Duration::from_millis(50),
                negative: Duration::from_millis(50),
                subscribed: Arc::clone(&subscribed),
            },
        );
        let value = || Arc::new(Entry::value(Version(1), Bytes::new()));
        let unfenced = ProductId::new(1).unwrap();
        let fenced = ProductId::new(2).unwrap();
        let tombstone = ProductId::new(3).unwrap();
        let absent = ProductId::new(4).unwrap();
        l1.fill(unfenced, value(), 0).await;
        subscribed.store(true, Ordering::Release);
        l1.fill(fenced, value(), 0).await;
        l1.fence(tombstone, Version(1), FenceKind::Tombstone).await;
        l1.fill(absent, Arc::new(Entry::absent()), 0).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            l1.get(unfenced).await.is_none(),
            "expired after the short TTL"
        );
        assert!(
            l1.get(fenced).await.is_some(),
            "fences reach it: it lives on"
        );
        assert!(
            l1.get(tombstone).await.is_none(),
            "tombstones only outlive reads in flight"
        );
        assert!(
            l1.get(absent).await.is_none(),
            "not-found markers live the negative TTL"
        );
    }

    #[tokio::test]
    async fn disabled_l1_holds_nothing() {
        let l1 = L1::new(0, Lifetimes::fixed(Duration::from_secs(1)));
        assert!(!l1.enabled());
        assert!(!l1.fill(id(), Arc::new(Entry::absent()), 0).await);
        assert!(l1.get(id()).await.is_none());
    }
}
