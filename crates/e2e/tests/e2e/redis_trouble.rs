//! Redis that refuses writes is not a poison message: each way a private
//! `redis-server` can refuse (OOM under noeviction, a replica of a dead
//! primary, a long-running script, a flushed script cache, a restart) holds
//! the invalidator's batch without dead-lettering anything, `/readyz` says
//! so, and once Redis takes writes again the fence lands within 2 s and the
//! new version is served.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::{Metrics, RedisServer};

use crate::harness::{System, WAIT, product};

/// How soon the fence must land once Redis accepts writes again.
const LANDS_WITHIN: Duration = Duration::from_secs(2);

/// The whole system on a private Redis started with `args`.
async fn system_on(redis: &RedisServer) -> System {
    let url = redis.url();
    System::start_with(1, move |s| s.redis.url.clone_from(&url)).await
}

/// A product at version 1, read once (so Redis holds it).
async fn product_at_1(sys: &System, sku: &str) -> i64 {
    let id = sys.admin.create(&product(sku)).await["id"]
        .as_i64()
        .unwrap();
    sys.until_invalidator_handled(1).await;
    sys.converge(id, 1).await;
    id
}

/// Waits until the invalidator has retried held batches `n` times.
async fn until_retried(sys: &System, n: u64) {
    let base = &sys.invalidator.as_ref().unwrap().base;
    test_support::eventually(
        "the invalidator to retry the held batch",
        WAIT,
        || async move {
            let retries = Metrics::of(base)
                .await?
                .sum("invalidator_redis_retries_total{");
            (retries >= n as f64).then_some(())
        },
    )
    .await;
}

async fn redis_check(sys: &System) -> Value {
    let url = sys.invalidator.as_ref().unwrap().url("/readyz");
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["checks"]["redis"].clone()
}

/// Changes the product while Redis refuses, checks the batch is held (and
/// nothing dead-lettered), lets Redis recover with `recover`, and checks the
/// fence lands and the new version is served.
async fn held_then_applied<F, Fut>(sys: &System, id: i64, expect_status: &str, recover: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    sys.admin.patch(id, &json!({"price_cents": 2})).await;
    let check = test_support::eventually("the invalidator to report Redis", WAIT, || async {
        let check = redis_check(sys).await;
        (check["status"] == expect_status).then_some(check)
    })
    .await;
    assert_eq!(check["required"], true, "{check}");
    // Held and retried several times: never dead-lettered.
    until_retried(sys, 3).await;
    let topology = sys.env.topology();
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );

    recover().await;
    let recovered = tokio::time::Instant::now();
    sys.until_applied(id, 2).await;
    let took = recovered.elapsed();
    assert!(
        took < LANDS_WITHIN,
        "the fence landed {took:?} after recovery"
    );
    assert_eq!(sys.version_on(0, id).await, 2);
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );
    assert_eq!(redis_check(sys).await["status"], "up");
}

#[tokio::test]
async fn out_of_memory_under_noeviction_holds_the_batch() {
    let redis =
        RedisServer::start(&["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"]).await;
    let sys = system_on(&redis).await;
    let id = product_at_1(&sys, "OOM-1").await;
    // Memory over maxmemory under noeviction: every write is refused with
    // OOM, reads are served. (Filling up to the limit leaves a few bytes
    // free, enough for small writes; lowering the limit below what is used
    // is the state an operator meets.)
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query_async(&mut conn)
        .await;
    assert_eq!(refused.unwrap_err().code(), Some("OOM"));
    held_then_applied(&sys, id, "blocked", || async {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("0")
            .query_async(&mut conn)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_replica_of_a_dead_primary_holds_the_batch() {
    let redis = RedisServer::start(&["--replica-serve-stale-data", "yes"]).await;
    let sys = system_on(&redis).await;
    let id = product_at_1(&sys, "RO-1").await;
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // A failover demoted it, and its new primary is gone: READONLY.
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(test_support::closed_port())
        .query_async(&mut conn)
        .await
        .unwrap();
    held_then_applied(&sys, id, "blocked", || async {
        let () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut conn)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_long_running_script_holds_the_batch() {
    let redis = RedisServer::start(&["--busy-reply-threshold", "50"]).await;
    let sys = system_on(&redis).await;
    let id = product_at_1(&sys, "BUSY-1").await;
    // Another client's script spins: everyone else gets BUSY.
    let mut spinner = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let spinning = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query_async::<()>(&mut spinner)
            .await
    });
    held_then_applied(&sys, id, "blocked", || async {
        let mut killer = redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let () = redis::cmd("SCRIPT")
            .arg("KILL")
            .query_async(&mut killer)
            .await
            .unwrap();
    })
    .await;
    assert!(
        spinning.await.unwrap().is_err(),
        "the spinning script was killed"
    );
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_without_a_retry() {
    let redis = RedisServer::start(&[]).await;
    let sys = system_on(&redis).await;
    let id = product_at_1(&sys, "NOSCRIPT-1").await;
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    sys.admin.patch(id, &json!({"price_cents": 2})).await;
    sys.until_applied(id, 2).await;
    assert_eq!(sys.version_on(0, id).await, 2);
    let topology = sys.env.topology();
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );
}

#[tokio::test]
async fn a_redis_restart_holds_the_batch_until_it_is_back() {
    let mut redis = RedisServer::start(&[]).await;
    let sys = system_on(&redis).await;
    let id = product_at_1(&sys, "RESTART-1").await;
    redis.stop().await;
    sys.admin.patch(id, &json!({"price_cents": 2})).await;
    test_support::eventually("the invalidator to see Redis down", WAIT, || async {
        (redis_check(&sys).await["status"] == "down").then_some(())
    })
    .await;
    until_retried(&sys, 3).await;
    let topology = sys.env.topology();
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );
    redis.restart().await;
    let back = tokio::time::Instant::now();
    sys.until_applied(id, 2).await;
    assert!(
        back.elapsed() < Duration::from_secs(6),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(sys.version_on(0, id).await, 2);
    assert_eq!(
        test_support::queue_len(&topology.dead_letter_queue()).await,
        0
    );
}
