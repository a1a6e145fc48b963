//! RedisServer (settings, restart, TLS) and RedisHa (Sentinel failover).

use std::time::{Duration, Instant};

use test_support::{RedisHa, RedisServer, TlsFiles, eventually, tls_client};

use crate::WAIT;

#[tokio::test]
async fn noeviction_refuses_writes_when_full_and_restarts_on_its_port() {
    let started = Instant::now();
    let mut redis =
        RedisServer::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]).await;
    eprintln!("RedisServer started in {:?}", started.elapsed());
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value = "x".repeat(64 * 1024);
    let mut refused = None;
    for i in 0..100 {
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value)
            .query_async(&mut conn)
            .await;
        if let Err(e) = set {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("2 MB fill up before 6.4 MB are written");
    assert!(err.to_string().contains("OOM"), "{err}");

    let port = redis.port();
    redis.restart().await;
    assert_eq!(redis.port(), port);
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(keys, 0, "a restarted server starts empty");
}

async fn redis_get(url: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?
}

async fn redis_set(url: &str, key: &str, value: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn sentinels_promote_the_replica_when_the_primary_dies() {
    let started = Instant::now();
    let mut ha = RedisHa::start().await;
    eprintln!(
        "RedisHa (primary, replica, 3 Sentinels) started in {:?}",
        started.elapsed()
    );
    assert_eq!(ha.sentinel_addrs().len(), 3);

    redis_set(&ha.primary_url(), "k", "v1").await;
    let replica = ha.replica_url();
    eventually("the write on the replica", WAIT, || async {
        (redis_get(&replica, "k").await.as_deref() == Some("v1")).then_some(())
    })
    .await;

    ha.kill_primary();
    let killed = Instant::now();
    let new = ha.wait_for_failover(WAIT).await;
    eprintln!("failover took {:?} after the kill", killed.elapsed());
    assert_eq!(ha.primary_url(), format!("redis://{new}"));
    assert_eq!(ha.primary_url(), replica, "the replica was promoted");
    assert_eq!(
        redis_get(&ha.primary_url(), "k").await.as_deref(),
        Some("v1")
    );
    redis_set(&ha.primary_url(), "k", "v2").await;

    ha.restart_old_primary_as_replica().await;
    let replica = ha.replica_url();
    eventually("the new write on the old primary", WAIT, || async {
        (redis_get(&replica, "k").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn tls_answers_only_clients_that_trust_the_ca() {
    let tls = TlsFiles::generate();
    let started = Instant::now();
    let redis = RedisServer::start_tls(&tls, &[]).await;
    eprintln!("RedisServer (TLS) started in {:?}", started.elapsed());
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());

    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    let distrusting = tls_client(&redis.url(), tls.wrong_ca_pem());
    let refused = distrusting.get_multiplexed_async_connection().await;
    let err = refused.expect_err("a client trusting the wrong CA is refused");
    eprintln!("with the wrong CA: {err}");

    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port())).unwrap();
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut conn = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "plain text must not work: {plain:?}"
    );
}
