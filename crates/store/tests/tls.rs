//! TLS to Postgres: each `sslmode` checks what it promises, against a private
//! server that accepts TLS only (`PgPair` with `tls_only`), with certificates
//! made for the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::{QueryableByName, sql_query, sql_types::Bool, sql_types::Text};
use diesel_async::RunQueryDsl;
use store::{Db, OutboxListener, PoolSettings, StoreError};
use test_support::{PgOptions, PgPair, TlsFiles};
use tls::{ClientTls, Failure, Files};

#[derive(QueryableByName)]
struct Session {
    #[diesel(sql_type = Bool)]
    ssl: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    client_dn: Option<String>,
}

fn pool(url: &str, tls: &ClientTls) -> Db {
    let settings = PoolSettings {
        max_size: 1,
        tls: tls.clone(),
        ..PoolSettings::default()
    };
    Db::connect(url, &settings).unwrap()
}

/// The error and its causes, `a: b: c`, as the services log it.
fn chain(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

async fn session(db: &Db) -> Session {
    let mut conn = db.conn().await.unwrap();
    sql_query("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sslmode_checks_what_it_promises() {
    let certs = TlsFiles::generate();
    let pg = PgPair::start(PgOptions {
        ssl: Some(certs.clone()),
        tls_only: true,
        ..PgOptions::default()
    })
    .await;
    let port = pg.primary_port();
    let url = |host: &str, mode: &str| {
        format!("postgres://postgres@{host}:{port}/postgres?sslmode={mode}")
    };
    // Connects to 127.0.0.1 but verifies a name the certificate lacks.
    let elsewhere = |mode: &str| {
        format!("postgres://postgres@db.example:{port}/postgres?hostaddr=127.0.0.1&sslmode={mode}")
    };
    let trusting = ClientTls::load(
        "database.tls",
        Files {
            ca_file: Some(&certs.ca),
            client_cert_file: Some(&certs.client_cert),
            client_key_file: Some(&certs.client_key),
        },
    )
    .unwrap();
    let wrong = ClientTls::load(
        "database.tls",
        Files {
            ca_file: Some(&certs.wrong_ca),
            ..Files::default()
        },
    )
    .unwrap();

    // verify-full with the right CA: encrypted, our certificate presented.
    let db = pool(&url("localhost", "verify-full"), &trusting);
    db.ping().await.unwrap();
    let s = session(&db).await;
    assert!(s.ssl);
    assert_eq!(s.client_dn.as_deref(), Some("/CN=postgres"));
    assert_eq!(db.tls_failure(), None);

    // The wrong CA: refused, and the error names the key to fix.
    for mode in ["verify-full", "verify-ca"] {
        let db = pool(&url("127.0.0.1", mode), &wrong);
        let err = db.ping().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let text = chain(&err);
        assert!(
            text.contains("the server's certificate is not trusted; check database.tls.ca_file"),
            "{mode}: {text}"
        );
        assert_eq!(db.tls_failure(), Some(Failure::Untrusted), "{mode}");
    }

    // require encrypts without checking: the wrong CA does not matter.
    let db = pool(&url("127.0.0.1", "require"), &wrong);
    db.ping().await.unwrap();
    assert!(session(&db).await.ssl);

    // verify-ca checks the chain, not the name; verify-full checks both.
    pool(&elsewhere("verify-ca"), &trusting)
        .ping()
        .await
        .unwrap();
    let db = pool(&elsewhere("verify-full"), &trusting);
    let err = db.ping().await.unwrap_err();
    assert_eq!(db.tls_failure(), Some(Failure::HostName), "{}", chain(&err));

    // prefer stays plain: this server takes TLS only, so it refuses.
    let db = pool(&url("127.0.0.1", "prefer"), &trusting);
    let err = db.ping().await.unwrap_err();
    assert!(chain(&err).contains("no encryption"), "{}", chain(&err));
    assert_eq!(db.tls_failure(), None);

    // What opens connections outside the pools speaks TLS too: creating
    // the database, migrating, listening for outbox rows.
    let shop = format!("postgres://postgres@localhost:{port}/shop?sslmode=verify-full");
    let applied = store::migrate(&shop, &trusting).await.unwrap();
    assert!(applied > 0);
    OutboxListener::connect(&shop, &trusting).await.unwrap();
}
