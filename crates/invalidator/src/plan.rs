//! What a batch of events asks of Redis: one operation per product key and
//! the set of list families whose generation must move. Pure, no I/O.

use std::collections::BTreeSet;

use cache::{Entry, Family, FenceKind, ProductOp};
use domain::{ChangeEvent, EventKind};
use service::InvalidatorMode;

/// The Redis work for one event.
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

/// Every family the events touch, each once.
pub fn families<'a>(events: impl IntoIterator<Item = &'a ChangeEvent>) -> Vec<Family> {
    let set: BTreeSet<Family> = events.into_iter().flat_map(Family::touched_by).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::{Product, Version};
    use serde_json::json;

    fn product(category: &str, featured: bool, version: i64) -> Product {
        serde_json::from_value(json!({
            "id": 42, "sku": "S", "name": "N", "description": "", "category": category,
            "price_cents": 1, "currency": "USD", "featured": featured, "attributes": {},
            "version": version, "created_at": "2026-11-26T09:00:00Z",
            "updated_at": "2026-11-26T09:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn evict_fences_refresh_writes_the_snapshot_delete_marks_deleted() {
        let before = product("laptops", false, 1);
        let after = product("tablets", true, 2);
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
    fn families_cover_both_categories_lists_search_and_featured_once() {
        let a = ChangeEvent::upserted(
            Some(&product("laptops", false, 1)),
            &product("tablets", true, 2),
            Utc::now(),
        );
        let b = ChangeEvent::upserted(
            Some(&product("tablets", false, 1)),
            &product("tablets", false, 2),
            Utc::now(),
        );
        let f = families([&a, &b]);
        assert_eq!(
            f,
            vec![
                Family::Category("laptops".into()),
                Family::Category("tablets".into()),
                Family::All,
                Family::Featured,
                Family::Search,
            ]
        );
        assert!(!families([&b]).contains(&Family::Featured));
    }
}
