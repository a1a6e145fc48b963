//! The search document is the database's: recomputed when the name,
//! category or description changes (whoever changes them), kept as it is
//! otherwise, and never set by a writer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::{QueryableByName, sql_types::Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use domain::{NewProduct, ProductPatch};
use serde_json::json;
use store::{Db, PoolSettings};

#[derive(QueryableByName)]
struct Doc {
    #[diesel(sql_type = Text)]
    search: String,
}

async fn document(url: &str, id: i64) -> String {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    let docs: Vec<Doc> = diesel::sql_query(format!(
        "SELECT search::text AS search FROM products WHERE id = {id}"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    docs.into_iter().next().unwrap().search
}

async fn sql(url: &str, statement: &str) {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(statement)
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_search_document_follows_the_words_and_only_them() {
    // A migrated database of its own, dropped with `env`.
    let env = test_support::TestEnv::new().await;
    let url = env.settings.database.url.clone();
    let db = Db::connect(&url, &PoolSettings::default()).unwrap();
    let new = NewProduct::from_json(&json!({
        "sku": "S-1", "name": "Quiet keyboard", "category": "input-devices",
        "description": "Mechanical switches", "price_cents": 1, "currency": "USD"
    }))
    .unwrap();
    let p = db.create(&new, None).await.unwrap();
    let id = p.id.get();
    let ids = |found: Vec<domain::Product>| found.iter().map(|p| p.id.get()).collect::<Vec<_>>();
    assert_eq!(ids(db.search("keyboard", 10).await.unwrap()), [id]);
    assert_eq!(ids(db.search("devices", 10).await.unwrap()), [id]);
    let first = document(&url, id).await;

    // A price change keeps the document.
    let patch = ProductPatch::from_json(&json!({"price_cents": 2})).unwrap();
    db.update(p.id, &patch, None, None).await.unwrap();
    assert_eq!(document(&url, id).await, first);

    // New words, from the API or from psql, are found; old ones are not.
    let patch = ProductPatch::from_json(&json!({"description": "Silent membrane"})).unwrap();
    db.update(p.id, &patch, None, None).await.unwrap();
    assert_eq!(ids(db.search("membrane", 10).await.unwrap()), [id]);
    assert!(db.search("mechanical", 10).await.unwrap().is_empty());
    sql(
        &url,
        &format!("UPDATE products SET name = 'Loud trackball' WHERE id = {id}"),
    )
    .await;
    assert_eq!(ids(db.search("trackball", 10).await.unwrap()), [id]);
    assert!(db.search("keyboard", 10).await.unwrap().is_empty());

    // Nobody sets it: a write of the document alone is ignored (and, since
    // nothing else changed, raises no version and writes no event).
    let before = db.product(p.id).await.unwrap().unwrap();
    sql(
        &url,
        &format!("UPDATE products SET search = to_tsvector('planted') WHERE id = {id}"),
    )
    .await;
    assert!(db.search("planted", 10).await.unwrap().is_empty());
    assert_eq!(
        db.product(p.id).await.unwrap().unwrap().version,
        before.version
    );
}
