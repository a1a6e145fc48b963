//! The whole system over TLS to all three backends, each a private engine
//! that speaks TLS (Postgres and Redis only TLS), with certificates made for
//! the test: a wrong CA is named in `/readyz`, the right one carries every
//! write to every cache and reader. One test, so the RabbitMQ TLS node
//! (5 to 7 s to start) is started once.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use service::{Settings, settings::TlsSettings};
use test_support::{PgOptions, PgPair, RabbitCluster, RedisServer, TlsFiles};
use tls::{ClientTls, Failure, Files};

use crate::harness::{System, WAIT, product};

fn trusting(ca: &Path) -> TlsSettings {
    TlsSettings {
        ca_file: Some(ca.to_owned()),
        ..TlsSettings::default()
    }
}

/// Points `settings` at the TLS engines, trusting `ca` for all three.
struct Engines {
    certs: TlsFiles,
    pg: PgPair,
    redis: RedisServer,
    rabbit: RabbitCluster,
    db: String,
}

impl Engines {
    fn apply(&self, settings: &mut Settings, ca: &Path) {
        let certs = &self.certs;
        settings.database.url = format!("{}?sslmode=verify-full", self.pg.primary_url(&self.db));
        settings.database.replica_url = Some(format!(
            "{}?sslmode=verify-ca",
            self.pg.replica_url(&self.db)
        ));
        // write-api creates the database and migrates it, over TLS.
        settings.database.migrate = true;
        settings.database.tls = TlsSettings {
            ca_file: Some(ca.to_owned()),
            client_cert_file: Some(certs.client_cert.clone()),
            client_key_file: Some(certs.client_key.clone()),
        };
        settings.redis.url = self.redis.url();
        settings.redis.tls = trusting(ca);
        settings.amqp.url = self.rabbit.amqps_url();
        settings.amqp.tls = trusting(ca);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_path_runs_over_tls_and_a_wrong_ca_is_named_in_readiness() {
    let certs = TlsFiles::generate();
    let started = std::time::Instant::now();
    let (pg, redis, rabbit) = tokio::join!(
        PgPair::start(PgOptions {
            replica: Some(Duration::ZERO),
            ssl: Some(certs.clone()),
            tls_only: true,
        }),
        RedisServer::start_tls(&certs, &[]),
        RabbitCluster::start_tls(&certs),
    );
    eprintln!(
        "TLS Postgres (primary + replica), Redis and RabbitMQ up in {:?}",
        started.elapsed()
    );
    let engines = Engines {
        db: format!(
            "catalog_tls_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        certs,
        pg,
        redis,
        rabbit,
    };
    let certs = &engines.certs;

    // The broker itself: the right CA connects, the wrong one is refused
    // with the key named.
    let broker = |ca: &Path| {
        let tls = ClientTls::load(
            "amqp.tls",
            Files {
                ca_file: Some(ca),
                ..Files::default()
            },
        )
        .unwrap();
        bus::Broker::new(&engines.rabbit.amqps_url(), tls)
    };
    let conn = broker(&certs.ca).connect("tls-test").await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
    let refused = broker(&certs.wrong_ca);
    let err = refused.connect("tls-test").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the server's certificate is not trusted; check amqp.tls.ca_file"),
        "{err}"
    );
    assert_eq!(refused.tls_failure(), Some(Failure::Untrusted));

    // A read-api trusting the wrong CA says why in /readyz, per backend.
    let mut wrong = test_support::TestEnv::new().await.settings.clone();
    engines.apply(&mut wrong, &certs.wrong_ca);
    let reader = test_support::run(read_api::build, wrong).await;
    let expected = [
        ("postgres", "check database.tls.ca_file"),
        ("postgres_replica", "check database.tls.ca_file"),
        ("redis", "check redis.tls.ca_file"),
        ("rabbitmq", "check amqp.tls.ca_file"),
    ];
    let client = reqwest::Client::new();
    let readyz = reader.url("/readyz");
    let body: Value = test_support::eventually("/readyz to name every TLS key", WAIT, || {
        let (client, readyz) = (client.clone(), readyz.clone());
        async move {
            let body: Value = client.get(readyz).send().await.ok()?.json().await.ok()?;
            expected
                .iter()
                .all(|(check, key)| {
                    body["checks"][check]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(key))
                })
                .then_some(body)
        }
    })
    .await;
    assert_eq!(body["status"], "not_ready", "{body}");
    reader.stop().await;

    // The right CA: write-api migrates, publishes; the invalidator fences
    // Redis; read-api reads the replica and the primary, fills Redis, and
    // follows the events; all of it over TLS.
    let sys = System::start_with(1, |settings| engines.apply(settings, &certs.ca)).await;
    let id = sys.admin.create(&product("TLS-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(id, 1).await;
    let (status, _, body) = sys.read(0, &format!("/products/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["sku"], "TLS-1");
    let v = sys.admin.patch(id, &json!({"price_cents": 4242})).await["version"]
        .as_i64()
        .unwrap();
    sys.converge(id, v).await;
    assert_eq!(
        sys.read(0, &format!("/products/{id}")).await.2["price_cents"],
        4242
    );
    // Every check up (eventually: on a CI machine busy with the rest of
    // the suite one Redis PING over TLS can miss its budget, which is not
    // what this test is about; a TLS failure would not clear).
    for base in [&sys.write.base, &sys.readers[0].base] {
        test_support::until_all_up(base).await;
    }
    // The sessions really are encrypted, and ours carry the client
    // certificate.
    let ssl = engines
        .pg
        .psql(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
                engines.pg.primary_port()
            ),
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'write-api%' AND s.ssl AND s.client_dn = '/CN=postgres'",
        )
        .await
        .unwrap();
    assert!(ssl.trim().parse::<u32>().unwrap() > 0, "{ssl}");
}
