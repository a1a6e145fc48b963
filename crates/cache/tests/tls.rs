//! `rediss://` to one server and through Sentinel (to the Sentinel and to
//! the primary it names), against private TLS-only servers with
//! certificates made for the test: the CA file is trusted, a wrong one is
//! refused with an error that names the key to fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use cache::{Endpoint, L2, L2Config, Unavailable};
use domain::ProductId;
use test_support::{RedisServer, TlsFiles, eventually, tls_client};
use tls::{ClientTls, Failure, Files};

fn l2(endpoint: Endpoint, tls: ClientTls) -> L2 {
    L2::new(&L2Config {
        endpoint,
        namespace: format!("test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        breaker: None,
        wait: None,
        tls,
    })
    .unwrap()
}

/// Trusts `ca`; with the test's client certificate when `identity`.
fn trusting(certs: &TlsFiles, ca: &std::path::Path, identity: bool) -> ClientTls {
    ClientTls::load(
        "redis.tls",
        Files {
            ca_file: Some(ca),
            client_cert_file: identity.then_some(certs.client_cert.as_path()),
            client_key_file: identity.then_some(certs.client_key.as_path()),
        },
    )
    .unwrap()
}

async fn assert_refused_naming_the_key(l2: &L2) {
    let err = l2.ping().await.unwrap_err();
    assert_eq!(
        err.unavailable_kind(),
        Some(Unavailable::Tls(Failure::Untrusted)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("the server's certificate is not trusted; check redis.tls.ca_file"),
        "{err}"
    );
    assert_eq!(l2.tls_failure(), Some(Failure::Untrusted));
}

#[tokio::test]
async fn rediss_trusts_the_ca_file_and_refuses_a_wrong_one_naming_the_key() {
    let certs = TlsFiles::generate();
    let redis = RedisServer::start_tls(&certs, &[]).await;
    let id = ProductId::new(1).unwrap();

    // One server: the right CA (and our client certificate) works.
    let single = l2(
        Endpoint::Single(redis.url()),
        trusting(&certs, &certs.ca, true),
    );
    single.ping().await.unwrap();
    assert_eq!(single.get(id).await.unwrap(), None);
    assert_eq!(single.tls_failure(), None);
    let wrong = l2(
        Endpoint::Single(redis.url()),
        trusting(&certs, &certs.wrong_ca, false),
    );
    assert_refused_naming_the_key(&wrong).await;

    // A key that is not the certificate's is refused when loaded.
    let mismatched = ClientTls::load(
        "redis.tls",
        Files {
            ca_file: None,
            client_cert_file: Some(&certs.client_cert),
            client_key_file: Some(&certs.server_key),
        },
    )
    .unwrap_err();
    assert_eq!(mismatched.key, "redis.tls.client_key_file", "{mismatched}");

    // Through a TLS Sentinel to the TLS primary it names.
    let sentinel = TlsSentinel::start(&certs, redis.port()).await;
    let via_sentinel = |tls| {
        l2(
            Endpoint::Sentinel {
                sentinels: vec![sentinel.url()],
                master: "catalog".to_owned(),
                primary_tls: true,
            },
            tls,
        )
    };
    let right = via_sentinel(trusting(&certs, &certs.ca, true));
    right.ping().await.unwrap();
    assert_eq!(right.get(id).await.unwrap(), None);
    assert_refused_naming_the_key(&via_sentinel(trusting(&certs, &certs.wrong_ca, false))).await;
}

/// One Sentinel that speaks TLS only and reaches the primary over TLS
/// (`tls-replication yes`), watching it as `catalog` with quorum 1.
struct TlsSentinel {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl TlsSentinel {
    async fn start(certs: &TlsFiles, primary_port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "catalog-tls-sentinel-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\n\
                 port 0\n\
                 tls-port {port}\n\
                 tls-cert-file {cert}\n\
                 tls-key-file {key}\n\
                 tls-ca-cert-file {ca}\n\
                 tls-auth-clients optional\n\
                 tls-replication yes\n\
                 dir {dir}\n\
                 logfile {dir}/sentinel.log\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor catalog 127.0.0.1 {primary_port} 1\n",
                cert = certs.server_cert.display(),
                key = certs.server_key.display(),
                ca = certs.ca.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let sentinel = Self { port, dir, child };
        let client = tls_client(&sentinel.url(), certs.ca_pem());
        eventually(
            "the TLS Sentinel to know the primary",
            Duration::from_secs(20),
            || {
                let client = client.clone();
                async move {
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg("catalog")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    addr.map(drop)
                }
            },
        )
        .await;
        sentinel
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
