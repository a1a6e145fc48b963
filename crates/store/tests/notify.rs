//! The notify trigger: a writer that wakes its own relay commits quietly;
//! anyone else's change (here: a pool that does not wake a relay, as psql
//! or a batch job) wakes every listening relay at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use domain::{NewProduct, ProductPatch};
use serde_json::json;
use store::{Db, OutboxListener, PoolSettings};

async fn notified(listener: &mut OutboxListener, within: Duration) -> bool {
    tokio::time::timeout(within, listener.next()).await.is_ok()
}

#[tokio::test]
async fn only_writers_without_their_own_relay_notify() {
    // A migrated database of its own, dropped with `env`.
    let env = test_support::TestEnv::new().await;
    let url = env.settings.database.url.clone();
    let quiet = Db::connect(
        &url,
        &PoolSettings {
            wakes_own_relay: true,
            ..PoolSettings::default()
        },
    )
    .unwrap();
    let loud = Db::connect(&url, &PoolSettings::default()).unwrap();
    let mut listener = OutboxListener::connect(&url, &Default::default())
        .await
        .unwrap();
    let new = NewProduct::from_json(&json!({
        "sku": "N-1", "name": "Thing", "category": "c", "price_cents": 1, "currency": "USD"
    }))
    .unwrap();

    let product = quiet.create(&new, Some("req-1")).await.unwrap();
    let patch = ProductPatch::from_json(&json!({"price_cents": 2})).unwrap();
    quiet
        .update(product.id, &patch, None, Some("req-2"))
        .await
        .unwrap();
    assert!(
        !notified(&mut listener, Duration::from_millis(300)).await,
        "write-api's own writes wake no other relay"
    );
    let patch = ProductPatch::from_json(&json!({"price_cents": 3})).unwrap();
    loud.update(product.id, &patch, None, None).await.unwrap();
    assert!(
        notified(&mut listener, Duration::from_secs(5)).await,
        "a change from elsewhere wakes the relays"
    );
    // Either way, every change has its event waiting.
    assert_eq!(loud.outbox_backlog().await.unwrap().0, 3);
}
