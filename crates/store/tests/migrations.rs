//! The migration that hands versions and events to the database runs on a
//! database that already holds products and unsent events, and from then on
//! every change made with plain SQL is versioned and published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::{Connection, RunQueryDsl, sql_query};
use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
use diesel_migrations::MigrationHarness;

type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;

const TRIGGERS: &str = "20261129100000";

#[tokio::test(flavor = "multi_thread")]
async fn the_trigger_migration_runs_on_a_database_with_data() {
    let server = test_support::server_url();
    let name = format!("catalog_test_{}", uuid::Uuid::new_v4().simple());
    store::admin::create_database(&server, &Default::default(), &name)
        .await
        .unwrap();
    let url = {
        let mut u = url::Url::parse(&server).unwrap();
        u.set_path(&format!("/{name}"));
        u.to_string()
    };

    let setup_url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = Wrapper::establish(&setup_url).unwrap();
        // Everything before the triggers, then data written the old way.
        while conn
            .pending_migrations(store::MIGRATIONS)
            .unwrap()
            .first()
            .is_some_and(|m| m.name().version().to_string() != TRIGGERS)
        {
            conn.run_next_migration(store::MIGRATIONS).unwrap();
        }
        sql_query(
            "INSERT INTO products (sku, name, category, price_cents, currency, version) \
             VALUES ('OLD-1', 'Old', 'laptops', 1, 'USD', 4)",
        )
        .execute(&mut conn)
        .unwrap();
        sql_query(
            "INSERT INTO outbox (event_id, routing_key, payload) \
             VALUES (gen_random_uuid(), 'product.updated', '{\"legacy\":true}')",
        )
        .execute(&mut conn)
        .unwrap();
        let ran = conn.run_pending_migrations(store::MIGRATIONS).unwrap();
        assert_eq!(
            ran.first().map(ToString::to_string).as_deref(),
            Some(TRIGGERS),
            "the trigger migration ran next"
        );

        // The existing row keeps its version and is versioned from there.
        sql_query("UPDATE products SET price_cents = 2 WHERE sku = 'OLD-1'")
            .execute(&mut conn)
            .unwrap();
    })
    .await
    .unwrap();

    let db = store::Db::connect(&url, &store::PoolSettings::default()).unwrap();
    let (pass, error): (store::RelayPass, Option<()>) = db
        .relay_outbox(
            10,
            std::time::Duration::from_secs(5),
            |messages| async move {
                assert_eq!(messages.len(), 2);
                // The unsent row from before goes out exactly as it was written.
                assert_eq!(messages[0].body, br#"{"legacy":true}"#);
                let event = domain::ChangeEvent::from_slice(&messages[1].body).unwrap();
                assert_eq!(event.version.get(), 5);
                assert_eq!(event.product.unwrap().price_cents, 2);
                assert!(event.lsn.is_some());
                (messages.iter().map(|m| m.id).collect(), None)
            },
        )
        .await
        .unwrap();
    assert_eq!((pass.claimed, pass.sent, error), (2, 2, None));
    drop(db);
    store::admin::drop_database(&server, &Default::default(), &name)
        .await
        .unwrap();
}
