//! PgPair: a replica that lags by its apply delay, and TLS to Postgres.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use test_support::{PgOptions, PgPair, TlsFiles, eventually};

use crate::WAIT;

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn replica_applies_commits_after_its_delay() {
    let started = Instant::now();
    let mut pair = PgPair::start(PgOptions {
        replica: Some(Duration::from_secs(1)),
        ..PgOptions::default()
    })
    .await;
    eprintln!(
        "PgPair (primary + replica) started in {:?}",
        started.elapsed()
    );

    pair.create_database("shop").await;
    let primary = pg(&pair.primary_url("shop")).await;
    primary
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    pair.wait_for_replay(WAIT).await;
    let replica = pg(&pair.replica_url("shop")).await;

    primary
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let committed = Instant::now();
    let target = pair.primary_lsn().await;
    assert_eq!(
        count(&replica).await,
        0,
        "the row is applied only after 1 s"
    );
    assert!(pair.replica_replay_lsn().await.unwrap() < target);
    eventually("the row on the replica", WAIT, || async {
        (count(&replica).await == 1).then_some(())
    })
    .await;
    let lag = committed.elapsed();
    eprintln!("the row reached the replica after {lag:?}");
    assert!(lag >= Duration::from_millis(900), "applied after {lag:?}");
    assert!(pair.replica_replay_lsn().await.unwrap() >= target);

    // A stopped replica catches up once started again.
    pair.stop_replica().await;
    primary
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    pair.start_replica().await;
    pair.set_apply_delay(Duration::ZERO).await;
    let replica = pg(&pair.replica_url("shop")).await;
    eventually("the second row on the restarted replica", WAIT, || async {
        (count(&replica).await == 2).then_some(())
    })
    .await;
    let caught_up = pair.wait_for_replay(WAIT).await;
    assert!(pair.replica_replay_lsn().await.unwrap() >= caught_up);
}

fn verify_full(port: u16, ca: &Path) -> String {
    format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        ca.display()
    )
}

#[tokio::test]
async fn tls_verifies_with_the_ca_and_refuses_the_wrong_one() {
    let tls = TlsFiles::generate();
    let started = Instant::now();
    let pair = PgPair::start(PgOptions {
        ssl: Some(tls.clone()),
        tls_only: true,
        ..PgOptions::default()
    })
    .await;
    eprintln!("PgPair (TLS primary) started in {:?}", started.elapsed());
    let port = pair.primary_port();

    let ssl = pair
        .psql(
            &verify_full(port, &tls.ca),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await
        .unwrap();
    assert_eq!(ssl.trim(), "t");

    let err = pair
        .psql(&verify_full(port, &tls.wrong_ca), "SELECT 1")
        .await
        .unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");

    let with_client_cert = format!(
        "{} sslcert={} sslkey={}",
        verify_full(port, &tls.ca),
        tls.client_cert.display(),
        tls.client_key.display()
    );
    pair.psql(&with_client_cert, "SELECT 1").await.unwrap();

    let plain = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable");
    let err = pair.psql(&plain, "SELECT 1").await.unwrap_err();
    assert!(err.contains("no pg_hba.conf entry"), "TLS only: {err}");
}
