//! A bulk change: all or nothing, in one transaction, the first unknown id
//! or stale `if_match` in request order failing the whole change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::{BulkPatchItem, NewProduct, ProductId, ProductPatch, Version};
use serde_json::json;
use store::StoreError;

fn item(id: ProductId, if_match: Option<Version>, patch: serde_json::Value) -> BulkPatchItem {
    BulkPatchItem {
        id,
        if_match,
        patch: ProductPatch::from_json(&patch).unwrap(),
    }
}

#[tokio::test]
async fn a_bulk_patch_is_all_or_nothing() {
    // A migrated database of its own, dropped with `env`.
    let env = test_support::TestEnv::new().await;
    let url = env.settings.database.url.clone();
    let db = store::Db::connect(&url, &store::PoolSettings::default()).unwrap();
    let new: Vec<NewProduct> = (0..3)
        .map(|i| {
            NewProduct::from_json(&json!({
                "sku": format!("B-{i}"), "name": "Thing", "category": "c",
                "price_cents": 1, "currency": "USD"
            }))
            .unwrap()
        })
        .collect();
    let created = db.create_bulk(&new, None).await.unwrap();
    let ids: Vec<_> = created.iter().map(|p| p.id).collect();
    let events = |db: &store::Db| {
        let db = db.clone();
        async move { db.outbox_backlog().await.unwrap().0 }
    };
    assert_eq!(events(&db).await, 3);

    // Two changes and one patch that changes nothing.
    let done = db
        .update_bulk(
            &[
                item(ids[2], Some(Version(1)), json!({"price_cents": 5})),
                item(ids[0], None, json!({"price_cents": 1})),
                item(ids[1], Some(Version(1)), json!({"name": "Other"})),
            ],
            Some("bulk-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        done,
        [
            (ids[2], Version(2)),
            (ids[0], Version(1)),
            (ids[1], Version(2))
        ]
    );
    assert_eq!(events(&db).await, 5, "one event per changed row");

    // A stale if_match, after an unknown id: the unknown id is named first.
    let unknown = ProductId::new(9_999).unwrap();
    let err = db
        .update_bulk(
            &[
                item(ids[0], Some(Version(7)), json!({"price_cents": 9})),
                item(unknown, None, json!({"price_cents": 9})),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { product: Some(id), .. } if id == ids[0]),
        "{err:?}"
    );
    let err = db
        .update_bulk(
            &[
                item(ids[0], None, json!({"price_cents": 9})),
                item(unknown, None, json!({"price_cents": 9})),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::ProductNotFound(id) if id == unknown),
        "{err:?}"
    );
    // Nothing of the failed changes was written.
    assert_eq!(db.product(ids[0]).await.unwrap().unwrap().price_cents, 1);
    assert_eq!(events(&db).await, 5);
}
