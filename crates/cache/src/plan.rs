//! What an event asks of a cache: one operation on the product's key, and
//! the list families whose generation must move. Pure, no I/O; written once
//! for Redis (the invalidator applies it with [`crate::L2::apply`]) and for
//! L1 (each read-api instance applies it with [`crate::L1::apply`]).

use std::collections::BTreeMap;

use domain::{ChangeEvent, EventKind, Lsn};
use serde::Deserialize;

use crate::{Bump, Entry, Family, FenceKind, ProductOp};

/// What an event writes for a changed product (`invalidator.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidatorMode {
    /// Fence the key with a tombstone at the event's version: the next
    /// reader loads from Postgres.
    #[default]
    Evict,
    /// Write the event's product snapshot through the fill CAS: hot
    /// products never go cold.
    Refresh,
}

/// The operation on the product's key.
pub fn op_for(event: &ChangeEvent, mode: InvalidatorMode) -> ProductOp {
    let id = event.product_id;
    match (event.kind, &event.product, mode) {
        (EventKind::Deleted, _, _) => ProductOp::Fence {
            id,
            version: event.version,
            kind: FenceKind::Deleted,
        },
        // Refresh: the snapshot goes in through the same CAS a reader's fill
        // uses, serialized exactly as a reader would serialize the row.
        (_, Some(product), InvalidatorMode::Refresh) => match Entry::product(product) {
            Ok(entry) => ProductOp::Refresh { id, entry },
            Err(_) => tombstone(event),
        },
        _ => tombstone(event),
    }
}

fn tombstone(event: &ChangeEvent) -> ProductOp {
    ProductOp::Fence {
        id: event.product_id,
        version: event.version,
        kind: FenceKind::Tombstone,
    }
}

/// Every family the events touch, each once, with the newest WAL position
/// among the events that touch it (0 for events without one).
pub fn bumps<'a>(events: impl IntoIterator<Item = &'a ChangeEvent>) -> Vec<Bump> {
    let mut newest: BTreeMap<Family, Lsn> = BTreeMap::new();
    for event in events {
        let lsn = event.lsn.unwrap_or_default();
        for family in Family::touched_by(event) {
            let at = newest.entry(family).or_default();
            *at = (*at).max(lsn);
        }
    }
    newest
        .into_iter()
        .map(|(family, lsn)| Bump { family, lsn })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::{Version, fixtures::product};

    #[test]
    fn evict_fences_refresh_writes_the_snapshot_delete_marks_deleted() {
        let before = product(42, 1, "laptops", false);
        let after = product(42, 2, "tablets", true);
        let update = ChangeEvent::upserted(Some(&before), &after, Utc::now());
        assert!(matches!(
            op_for(&update, InvalidatorMode::Evict),
            ProductOp::Fence {
                version: Version(2),
                kind: FenceKind::Tombstone,
                ..
            }
        ));
        let ProductOp::Refresh { entry, .. } = op_for(&update, InvalidatorMode::Refresh) else {
            panic!("refresh mode writes the snapshot");
        };
        assert_eq!(entry.version, Version(2));
        let delete = ChangeEvent::deleted(&after, Utc::now());
        for mode in [InvalidatorMode::Evict, InvalidatorMode::Refresh] {
            assert!(matches!(
                op_for(&delete, mode),
                ProductOp::Fence {
                    version: Version(3),
                    kind: FenceKind::Deleted,
                    ..
                }
            ));
        }
    }

    #[test]
    fn bumps_cover_both_categories_lists_search_and_featured_once() {
        let mut a = ChangeEvent::upserted(
            Some(&product(42, 1, "laptops", false)),
            &product(42, 2, "tablets", true),
            Utc::now(),
        );
        a.lsn = Some(Lsn(10));
        let mut b = ChangeEvent::upserted(
            Some(&product(43, 1, "tablets", false)),
            &product(43, 2, "tablets", false),
            Utc::now(),
        );
        b.lsn = Some(Lsn(20));
        let bumps = bumps([&a, &b]);
        let at = |family: Family| bumps.iter().find(|b| b.family == family).map(|b| b.lsn.0);
        assert_eq!(bumps.len(), 5, "{bumps:?}");
        assert_eq!(at(Family::Category("laptops".into())), Some(10));
        assert_eq!(
            at(Family::Category("tablets".into())),
            Some(20),
            "the newest"
        );
        assert_eq!(at(Family::All), Some(20));
        assert_eq!(at(Family::Search), Some(20));
        assert_eq!(at(Family::Featured), Some(10));
        let only_b = super::bumps([&b]);
        assert!(only_b.iter().all(|x| x.family != Family::Featured));
    }
}
