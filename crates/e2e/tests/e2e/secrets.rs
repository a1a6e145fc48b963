//! Nothing secret reaches the logs: the three services run at debug level
//! (every crate's, ours and the clients'), with a password in each backend
//! URL and a known admin token, serve writes and reads, and the whole log
//! is searched for the secrets.
//!
//! The capture is the process' global subscriber: nextest runs each test in
//! a process of its own, so this test's logs are its own.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use serde_json::json;
use test_support::{ADMIN_TOKEN, RabbitCluster, RedisServer};

use crate::harness::{System, product};

const PG_PASSWORD: &str = "pg-pw-7d1c0e";
const REDIS_PASSWORD: &str = "redis-pw-5e2a9b";
const AMQP_PASSWORD: &str = "amqp-pw-8c1f4d";
/// Sent by a client with the wrong token: not logged either.
const WRONG_TOKEN: &str = "wrong-token-3b6e21";

/// Every log line written, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_show_no_password_and_no_token() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test's process has no subscriber yet (unset TEST_LOG)");

    // Backends that check the passwords: a Redis ACL user, a broker user.
    let acl_user = format!(">{REDIS_PASSWORD}");
    let redis =
        RedisServer::start(&["--user", "catalog", "on", &acl_user, "~*", "&*", "+@all"]).await;
    let rabbit = RabbitCluster::start(1).await;
    rabbit
        .rabbitmqctl(0, &["add_user", "catalog", AMQP_PASSWORD])
        .await
        .unwrap();
    rabbit
        .rabbitmqctl(
            0,
            &["set_permissions", "-p", "/", "catalog", ".*", ".*", ".*"],
        )
        .await
        .unwrap();
    let amqp_port = rabbit
        .amqp_url(0)
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next().map(str::to_owned))
        .unwrap();

    let sys = System::start_with(1, |settings| {
        // The shared Postgres trusts local connections: the password is in
        // the URL (which must not be logged) but never asked for.
        let mut url = url::Url::parse(&settings.database.url).unwrap();
        url.set_password(Some(PG_PASSWORD)).unwrap();
        settings.database.url = url.into();
        settings.redis.url = format!("redis://catalog:{REDIS_PASSWORD}@{}", redis.addr());
        settings.amqp.url = format!("amqp://catalog:{AMQP_PASSWORD}@127.0.0.1:{amqp_port}/%2f");
        tracing::debug!(?settings, "the settings under test");
    })
    .await;

    let id = sys.admin.create(&product("SECRET-1")).await["id"]
        .as_i64()
        .unwrap();
    sys.converge(id, 1).await;
    let v = sys.admin.patch(id, &json!({"price_cents": 7})).await["version"]
        .as_i64()
        .unwrap();
    sys.converge(id, v).await;
    let refused = sys
        .client
        .post(format!("{}/products", sys.write.base))
        .bearer_auth(WRONG_TOKEN)
        .json(&product("SECRET-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let text = logs.text();
    assert!(
        text.contains("DEBUG") && text.contains("the settings under test"),
        "debug lines were captured"
    );
    assert!(text.contains("***"), "the settings were logged, masked");
    for secret in [
        ADMIN_TOKEN,
        WRONG_TOKEN,
        PG_PASSWORD,
        REDIS_PASSWORD,
        AMQP_PASSWORD,
    ] {
        if let Some(at) = text.find(secret) {
            let line = text[..at].rfind('\n').map_or(0, |n| n + 1);
            let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
            panic!("{secret} is in the logs:\n{}", &text[line..end]);
        }
    }
    eprintln!("{} bytes of debug logs searched", text.len());
}
