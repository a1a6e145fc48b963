//! The relay's claim on a queue table whose statistics are wrong: planned
//! once on an empty outbox, it still drains a large backlog in passes of
//! its limit, oldest first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use store::{Db, PoolSettings};

/// Rows a bulk change can leave queued at once (the reprice benchmark
/// queues 100,000; fewer keep the test short and show the same thing).
const BACKLOG: usize = 30_000;
const LIMIT: i64 = 1_000;

#[tokio::test]
async fn a_claim_planned_on_an_empty_outbox_drains_a_large_backlog() {
    let env = test_support::TestEnv::new().await;
    // The relay's pool settings, on one connection, so that every pass runs
    // the statement prepared by the first; and a server-side bound far
    // above a pass's work (15 ms here, in a debug build) and far below a
    // plan that reads the table per row (a claim written as a join timed
    // out here on its first pass).
    let db = Db::connect(
        &env.settings.database.url,
        &PoolSettings {
            max_size: 1,
            statement_timeout: Duration::from_secs(2),
            index_scans: true,
            ..PoolSettings::default()
        },
    )
    .unwrap();
    let pass = async |db: &Db| {
        let (pass, error): (store::RelayPass, Option<()>) = db
            .relay_outbox(LIMIT, Duration::from_secs(5), |messages| async move {
                let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
                (ids, None)
            })
            .await
            .expect("a claim pass ends within the statement timeout");
        assert_eq!(error, None);
        pass.sent
    };

    // Statistics say the outbox is empty, and the claim is prepared (and
    // planned, once) while they do.
    env.psql("VACUUM ANALYZE outbox").await;
    assert_eq!(pass(&db).await, 0);

    env.psql(&format!(
        "INSERT INTO outbox (routing_key, payload) \
         SELECT 'product.updated', '{{}}' FROM generate_series(1, {BACKLOG})"
    ))
    .await;
    let mut sent = 0;
    loop {
        let n = pass(&db).await;
        if n == 0 {
            break;
        }
        assert_eq!(n, LIMIT as usize, "every pass but the last is full");
        sent += n;
    }
    assert_eq!(sent, BACKLOG);
    assert_eq!(env.psql("SELECT count(*) FROM outbox").await.trim(), "0");
}

/// The relay's pool plans by index and never JIT-compiles: with sequential
/// scans "off", a plan that can only scan a table (the backlog count) is
/// costed past `jit_above_cost`, and compiling it took 150–230 ms on every
/// backlog report, holding the relay's events behind it.
#[tokio::test]
async fn the_relay_pool_plans_by_index_without_jit() {
    use diesel::{QueryableByName, sql_types::Text};
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Settings {
        #[diesel(sql_type = Text)]
        seqscan: String,
        #[diesel(sql_type = Text)]
        jit: String,
    }

    let env = test_support::TestEnv::new().await;
    let settings = |index_scans| PoolSettings {
        max_size: 1,
        index_scans,
        ..PoolSettings::default()
    };
    let show = async |db: &Db| {
        let mut conn = db.conn().await.unwrap();
        let s: Settings = diesel::sql_query(
            "SELECT current_setting('enable_seqscan') AS seqscan, \
                    current_setting('jit') AS jit",
        )
        .get_result(&mut conn)
        .await
        .unwrap();
        (s.seqscan, s.jit)
    };
    let relay = Db::connect(&env.settings.database.url, &settings(true)).unwrap();
    assert_eq!(show(&relay).await, ("off".to_owned(), "off".to_owned()));
    // Other pools keep the server's settings.
    let server = (
        env.psql("SHOW enable_seqscan").await.trim().to_owned(),
        env.psql("SHOW jit").await.trim().to_owned(),
    );
    let other = Db::connect(&env.settings.database.url, &settings(false)).unwrap();
    assert_eq!(show(&other).await, server);
}
