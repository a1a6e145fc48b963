//! Cached pages: category lists, featured and search results. Each page is
//! stored in Redis under its family's generation; the invalidator bumps the
//! generation of every family a change touches, so no page served after the
//! event shows the old version.
//!
//! Pages are not kept in L1: an instance cannot tell, without asking Redis,
//! whether the invalidator has bumped a generation, and a page copied into L1
//! from a not-yet-bumped Redis page could outlive the event. One MGET per page
//! keeps the freshness promise exact.

use std::sync::Arc;

use bytes::Bytes;
use cache::{Family, ListHit};
use domain::{Product, ProductId};
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

/// Cached pages, sharing the read path's Postgres, Redis and limiter.
pub struct Pages {
    read: Arc<ReadPath>,
    flights: SingleFlight<PageQuery, Result<Bytes, ReadError>>,
}

impl Pages {
    pub fn new(read: Arc<ReadPath>) -> Self {
        Self {
            read,
            flights: SingleFlight::default(),
        }
    }

    /// The page's JSON body and where it came from.
    pub async fn get(self: &Arc<Self>, query: PageQuery) -> Result<(Bytes, Tier), ReadError> {
        let (l2, enabled) = (self.read.l2.clone(), self.read.cache_enabled);
        let Some(l2) = l2.filter(|_| enabled) else {
            return Ok((self.query(&query).await?, Tier::Db));
        };
        let family = query.family();
        let page = query.page_key();
        let seen = match l2.list_get(&family, &page).await {
            Ok(ListHit::Hit(body)) => {
                metrics::counter!("cache_hits_total", "tier" => "l2_page").increment(1);
                return Ok((body, Tier::L2));
            }
            Ok(ListHit::Miss(generation)) => Some(generation),
            // Redis away: serve from Postgres, fill nothing.
            Err(_) => None,
        };
        metrics::counter!("cache_misses_total", "tier" => "l2_page").increment(1);
        let this = Arc::clone(self);
        let q = query.clone();
        let (body, _) = self
            .flights
            .run(query, async move {
                let body = this.query(&q).await?;
                if let Some(generation) = seen {
                    let _ = l2
                        .list_fill(&q.family(), &q.page_key(), generation.as_deref(), &body)
                        .await;
                }
                Ok(body)
            })
            .await;
        let body = body.unwrap_or_else(|| Err(ReadError::Internal("page load failed".into())))?;
        Ok((body, Tier::Db))
    }

    /// Runs the page's query and serializes the answer.
    async fn query(&self, query: &PageQuery) -> Result<Bytes, ReadError> {
        let _slot = self.read.limiter.acquire().await?;
        let db = self.read.replica.as_ref().unwrap_or(&self.read.primary);
        let json = match query {
            PageQuery::List {
                category,
                after,
                limit,
            } => {
                let page = db.list(category.as_deref(), *after, *limit).await?;
                serde_json::to_vec(&ListBody {
                    items: &page.items,
                    next_after: page.next_after,
                })
            }
            PageQuery::Featured { limit } => {
                let items = db.featured(*limit).await?;
                serde_json::to_vec(&ItemsBody { items: &items })
            }
            PageQuery::Search { q, limit } => {
                let items = db.search(q, *limit).await?;
                serde_json::to_vec(&ItemsBody { items: &items })
            }
        };
        json.map(Bytes::from)
            .map_err(|e| ReadError::Internal(e.to_string()))
    }
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
