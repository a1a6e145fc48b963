//! Cached pages: category lists, featured and search results. Each page is
//! stored in Redis under its family's generation; the invalidator bumps the
//! generation of every family a change touches, so no page served after the
//! event shows the old version.
//!
//! Pages are not kept in L1: an instance cannot tell, without asking Redis,
//! whether the invalidator has bumped a generation, and a page copied into L1
//! from a not-yet-bumped Redis page could outlive the event. One MGET per page
//! keeps the freshness promise exact.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use cache::{Family, ListHit};
use domain::{Lsn, Product, ProductId};
use parking_lot::Mutex;
use serde::Serialize;

use crate::{
    read_path::{ReadError, ReadPath, Tier},
    singleflight::SingleFlight,
};

/// Which page to produce.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PageQuery {
    List {
        category: Option<String>,
        after: Option<ProductId>,
        limit: i64,
    },
    Featured {
        limit: i64,
    },
    Search {
        /// Normalized: trimmed, single spaces, lower case.
        q: String,
        limit: i64,
    },
}

impl PageQuery {
    fn family(&self) -> Family {
        match self {
            Self::List {
                category: Some(c), ..
            } => Family::Category(c.clone()),
            Self::List { category: None, .. } => Family::All,
            Self::Featured { .. } => Family::Featured,
            Self::Search { .. } => Family::Search,
        }
    }

    /// The page's key within its family.
    fn page_key(&self) -> String {
        match self {
            Self::List { after, limit, .. } => {
                format!("a{}:l{limit}", after.map_or(0, ProductId::get))
            }
            Self::Featured { limit } => format!("l{limit}"),
            Self::Search { q, limit } => format!("l{limit}:q{q}"),
        }
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    items: &'a [Product],
    next_after: Option<ProductId>,
}

#[derive(Serialize)]
struct ItemsBody<'a> {
    items: &'a [Product],
}

/// A page load in flight: the query, and the generation the requests that
/// share it saw (`None`: Redis was away; `Some(None)`: no generation yet).
/// A request that saw a newer generation never joins a load that began
/// under an older one: its answer could predate the change it has seen.
type FlightKey = (PageQuery, Option<Option<String>>);

/// The WAL position of the newest change this instance has seen per list
/// family, from its own events: a Redis page under an older generation is
/// not served here (the invalidator has not bumped it yet). One entry per
/// family a change touched: the catalog's categories, plus four.
#[derive(Debug, Default)]
pub struct FamilyFloors(Mutex<HashMap<Family, Lsn>>);

impl FamilyFloors {
    /// Notes the families an event touches.
    pub fn observe(&self, event: &domain::ChangeEvent) {
        let mut floors = self.0.lock();
        for bump in cache::plan::bumps([event]) {
            let at = floors.entry(bump.family).or_default();
            *at = (*at).max(bump.lsn);
        }
    }

    fn get(&self, family: &Family) -> Lsn {
        self.0.lock().get(family).copied().unwrap_or_default()
    }
}

/// Cached pages, sharing the read path's Postgres, Redis and limiter.
pub struct Pages {
    read: Arc<ReadPath>,
    floors: Arc<FamilyFloors>,
    flights: SingleFlight<FlightKey, Result<Bytes, ReadError>>,
    /// Pages asked for once within [`ADMIT_WINDOW`] (their hash): the next
    /// ask stores the page.
    asked: moka::sync::Cache<u64, ()>,
    /// One hasher for those (a fresh one per call would never match).
    hasher: std::collections::hash_map::RandomState,
}

/// A page is stored in Redis on the second ask within this window.
const ADMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Pages remembered for admission, per instance.
const ADMIT_REMEMBERED: u64 = 10_000;

impl Pages {
    pub fn new(read: Arc<ReadPath>, floors: Arc<FamilyFloors>) -> Self {
        Self {
            read,
            floors,
            flights: SingleFlight::default(),
            asked: moka::sync::Cache::builder()
                .max_capacity(ADMIT_REMEMBERED)
                .time_to_live(ADMIT_WINDOW)
                .build(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Whether a page may be stored: once it was asked for before, lately.
    /// A popular page costs one more Postgres query per Redis lifetime; a
    /// page nobody asks for twice (a random category, cursor or search)
    /// costs Redis nothing.
    fn admit(&self, query: &PageQuery) -> bool {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(query);
        if self.asked.contains_key(&key) {
            true
        } else {
            self.asked.insert(key, ());
            metrics::counter!("cache_pages_not_admitted_total").increment(1);
            false
        }
    }

    /// The page's JSON body and where it came from.
    pub async fn get(self: &Arc<Self>, query: PageQuery) -> Result<(Bytes, Tier), ReadError> {
        let l2 = self.read.l2.clone();
        let family = query.family();
        let page = query.page_key();
        // A page under a generation older than a change this instance has
        // already seen (the invalidator has not bumped the family yet) is a
        // miss; storing the page read now under that generation is harmless
        // (it is newer).
        let floor = self.floors.get(&family);
        let seen = match l2.list_get(&family, &page, floor).await {
            Ok(ListHit::Hit(body)) => {
                metrics::counter!("cache_hits_total", "tier" => "l2_page").increment(1);
                return Ok((body, Tier::L2));
            }
            Ok(ListHit::Miss(generation)) => {
                // The change that made this generation is seen from now on:
                // this read, and any later one, waits for a replica to have
                // it (design rule 8).
                if let Some(lsn) = generation.as_deref().and_then(cache::keys::generation_lsn) {
                    self.read.db.seen.observe(lsn);
                }
                Some(generation)
            }
            // Redis away: serve from Postgres, fill nothing.
            Err(_) => None,
        };
        metrics::counter!("cache_misses_total", "tier" => "l2_page").increment(1);
        // A page is stored only once it was asked for lately: search text,
        // categories and cursors come from anonymous clients, and must not
        // fill Redis with pages nobody asks for twice.
        let seen = seen.filter(|_| self.admit(&query));
        let this = Arc::clone(self);
        let q = query.clone();
        let key = (query, seen.clone());
        // Read before the query: the data will have at least this.
        let known = self.read.db.seen.get().max(floor);
        let (body, _) = self
            .flights
            .run(key, async move {
                let (body, data_at) = this.query(&q).await?;
                if let Some(generation) = seen {
                    let _ = l2
                        .list_fill(
                            &q.family(),
                            &q.page_key(),
                            generation.as_deref(),
                            data_at,
                            known,
                            &body,
                        )
                        .await;
                }
                Ok(body)
            })
            .await;
        let body = body.unwrap_or(Err(ReadError::LoadLost))?;
        Ok((body, Tier::Db))
    }

    /// Runs the page's query and serializes the answer; also returns the WAL
    /// position the data is at least at (the replica's replay position, or
    /// everything for the primary).
    async fn query(&self, query: &PageQuery) -> Result<(Bytes, Lsn), ReadError> {
        let (rows, at) = self
            .read
            .db
            .query(async |db| {
                db.read(|source| async move {
                    Ok(match query {
                        PageQuery::List {
                            category,
                            after,
                            limit,
                        } => Rows::Page(source.list(category.as_deref(), *after, *limit).await?),
                        PageQuery::Featured { limit } => {
                            Rows::Items(source.featured(*limit).await?)
                        }
                        PageQuery::Search { q, limit } => {
                            Rows::Items(source.search(q, *limit).await?)
                        }
                    })
                })
                .await
            })
            .await?;
        let json = match rows {
            Rows::Page(page) => serde_json::to_vec(&ListBody {
                items: &page.items,
                next_after: page.next_after,
            }),
            Rows::Items(items) => serde_json::to_vec(&ItemsBody { items: &items }),
        }?;
        Ok((Bytes::from(json), at))
    }
}

/// What a page query read.
enum Rows {
    Page(store::Page),
    Items(Vec<Product>),
}

/// Normalizes a search query for the cache key: results do not depend on
/// case or on runs of whitespace.
pub fn normalize_query(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_queries_share_a_key() {
        assert_eq!(normalize_query("  Ultra   BOOK "), "ultra book");
        let a = PageQuery::Search {
            q: normalize_query("Ultra  book"),
            limit: 20,
        };
        let b = PageQuery::Search {
            q: normalize_query("ultra book"),
            limit: 20,
        };
        assert_eq!(a.page_key(), b.page_key());
    }
}
