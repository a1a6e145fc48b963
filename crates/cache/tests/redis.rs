//! The cache against a real Redis: the Lua scripts follow the same version
//! table as L1, the stale-set race is closed, generations invalidate pages,
//! and a dead Redis costs a bounded wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use cache::{
    Bump, CacheError, Entry, Family, FenceKind, L2, L2Config, ListHit, ProductOp, Unavailable,
};
use domain::{Lsn, ProductId, Version};

fn config(url: &str) -> L2Config {
    L2Config {
        endpoint: cache::Endpoint::Single(url.to_owned()),
        namespace: format!("test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        timeout: Duration::from_millis(200),
        breaker: None,
        wait: None,
        tls: Default::default(),
    }
}

fn l2() -> L2 {
    L2::new(&config(&test_support::redis_url())).unwrap()
}

fn id(n: i64) -> ProductId {
    ProductId::new(n).unwrap()
}

fn value(v: i64) -> Entry {
    Entry::value(Version(v), Bytes::from(format!("{{\"version\":{v}}}")))
}

async fn plant(l2: &L2, id: ProductId, e: &Entry) {
    let () = l2
        .command(
            "test",
            redis::cmd("SET")
                .arg(l2.keys().product(id))
                .arg(e.encode())
                .clone(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn lua_scripts_follow_the_design_table() {
    lua_scripts_follow_the_design_table_on(l2()).await;
}

async fn lua_scripts_follow_the_design_table_on(l2: L2) {
    for (i, (held, v, fill, fence)) in cache::entry::design_table().into_iter().enumerate() {
        let fill_id = id(1000 + i64::try_from(i).unwrap());
        let fence_id = id(2000 + i64::try_from(i).unwrap());
        if let Some(h) = &held {
            plant(&l2, fill_id, h).await;
            plant(&l2, fence_id, h).await;
        }
        assert_eq!(
            l2.fill(fill_id, &value(v)).await.unwrap(),
            fill,
            "fill {v} over {held:?}"
        );
        let after = l2.get(fill_id).await.unwrap().unwrap();
        if fill {
            assert_eq!(after, value(v));
        } else {
            assert_eq!(Some(after), held);
        }
        assert_eq!(
            l2.fence(fence_id, Version(v), FenceKind::Tombstone)
                .await
                .unwrap(),
            fence,
            "fence {v} over {held:?}"
        );
        let after = l2.get(fence_id).await.unwrap().unwrap();
        if fence {
            assert_eq!(after, Entry::tombstone(Version(v)));
        } else {
            assert_eq!(Some(after), held);
        }
    }
}

#[tokio::test]
async fn the_stale_set_race_is_closed() {
    the_stale_set_race_is_closed_on(l2()).await;
}

async fn the_stale_set_race_is_closed_on(l2: L2) {
    let p = id(42);
    // A reader misses and loads version 7 from Postgres...
    assert_eq!(l2.get(p).await.unwrap(), None);
    let loaded = value(7);
    // ...meanwhile version 8 commits and its event fences the key...
    assert!(l2.fence(p, Version(8), FenceKind::Tombstone).await.unwrap());
    // ...so the reader's fill is refused.
    assert!(!l2.fill(p, &loaded).await.unwrap());
    let held = l2.get(p).await.unwrap().unwrap();
    assert_eq!(held, Entry::tombstone(Version(8)), "the floor stays");
    // The next reader loads 8, and its fill goes in.
    assert!(l2.fill(p, &value(8)).await.unwrap());
    assert_eq!(l2.get(p).await.unwrap().unwrap(), value(8));
}

#[tokio::test]
async fn late_duplicate_and_out_of_order_fences_never_lower_a_version() {
    late_duplicate_and_out_of_order_fences_never_lower_a_version_on(l2()).await;
}

async fn late_duplicate_and_out_of_order_fences_never_lower_a_version_on(l2: L2) {
    let p = id(9);
    for v in [3, 5, 4, 5, 2, 1, 5] {
        l2.fence(p, Version(v), FenceKind::Tombstone).await.unwrap();
    }
    assert_eq!(
        l2.get(p).await.unwrap().unwrap(),
        Entry::tombstone(Version(5))
    );
    assert!(l2.fill(p, &value(5)).await.unwrap());
    // The late event for version 5 keeps the value, already fresh.
    assert!(!l2.fence(p, Version(5), FenceKind::Tombstone).await.unwrap());
    assert_eq!(l2.get(p).await.unwrap().unwrap(), value(5));
    // A delete fences above everything; fills of older versions bounce off.
    l2.fence(p, Version(6), FenceKind::Deleted).await.unwrap();
    l2.fence(p, Version(5), FenceKind::Tombstone).await.unwrap();
    assert!(!l2.fill(p, &value(5)).await.unwrap());
    assert_eq!(
        l2.get(p).await.unwrap().unwrap(),
        Entry::deleted(Version(6))
    );
}

#[tokio::test]
async fn absent_marker_is_short_lived_and_yields_to_a_create() {
    let l2 = l2();
    let p = id(77);
    assert!(l2.fill(p, &Entry::absent()).await.unwrap());
    let ttl: i64 = l2
        .command("test", redis::cmd("PTTL").arg(l2.keys().product(p)).clone())
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 5500, "negative TTL, got {ttl} ms");
    // The create's fence (version 1) overrides it.
    assert!(l2.fence(p, Version(1), FenceKind::Tombstone).await.unwrap());
    // And an absent fill cannot come back over the fence.
    assert!(!l2.fill(p, &Entry::absent()).await.unwrap());
    let ttl: i64 = l2
        .command("test", redis::cmd("PTTL").arg(l2.keys().product(p)).clone())
        .await
        .unwrap();
    assert!(
        ttl >= 60_000,
        "tombstones live at least the TTL, got {ttl} ms"
    );
}

#[tokio::test]
async fn generations_invalidate_a_whole_family_and_refuse_stale_pages() {
    generations_invalidate_a_whole_family_and_refuse_stale_pages_on(l2()).await;
}

const PRIMARY: Lsn = Lsn(u64::MAX);

fn bump(family: &Family, lsn: u64) -> [Bump; 1] {
    [Bump {
        family: family.clone(),
        lsn: Lsn(lsn),
    }]
}

async fn generations_invalidate_a_whole_family_and_refuse_stale_pages_on(l2: L2) {
    let laptops = Family::Category("laptops".into());
    let ListHit::Miss(seen) = l2.list_get(&laptops, "p1", domain::Lsn(0)).await.unwrap() else {
        panic!("empty cache must miss");
    };
    assert!(
        l2.list_fill(&laptops, "p1", seen.as_deref(), PRIMARY, Lsn(0), b"[1]")
            .await
            .unwrap()
    );
    assert_eq!(
        l2.list_get(&laptops, "p1", domain::Lsn(0)).await.unwrap(),
        ListHit::Hit(Bytes::from_static(b"[1]"))
    );

    // A reader saw the generation, then a change bumped it before the fill.
    let ListHit::Miss(seen) = l2.list_get(&laptops, "p2", domain::Lsn(0)).await.unwrap() else {
        panic!("p2 was never filled");
    };
    l2.bump(&bump(&laptops, 0)).await.unwrap();
    assert!(
        !l2.list_fill(&laptops, "p2", seen.as_deref(), PRIMARY, Lsn(0), b"stale")
            .await
            .unwrap()
    );
    // Every page of the family is now a miss; other families are untouched.
    let tablets = Family::Category("tablets".into());
    let ListHit::Miss(t) = l2.list_get(&tablets, "p1", domain::Lsn(0)).await.unwrap() else {
        panic!()
    };
    assert!(
        l2.list_fill(&tablets, "p1", t.as_deref(), PRIMARY, Lsn(0), b"[2]")
            .await
            .unwrap()
    );
    assert!(matches!(
        l2.list_get(&laptops, "p1", domain::Lsn(0)).await.unwrap(),
        ListHit::Miss(Some(_))
    ));
    l2.bump(&bump(&laptops, 0)).await.unwrap();
    assert_eq!(
        l2.list_get(&tablets, "p1", domain::Lsn(0)).await.unwrap(),
        ListHit::Hit(Bytes::from_static(b"[2]"))
    );

    // A change at WAL position 500 made the generation: a page whose data
    // was read before it (a lagging replica at 499) is not stored under it;
    // data that has it is.
    l2.bump(&bump(&laptops, 500)).await.unwrap();
    let ListHit::Miss(seen) = l2.list_get(&laptops, "p3", domain::Lsn(0)).await.unwrap() else {
        panic!()
    };
    assert!(
        !l2.list_fill(
            &laptops,
            "p3",
            seen.as_deref(),
            Lsn(499),
            Lsn(0),
            b"lagging"
        )
        .await
        .unwrap()
    );
    assert!(
        l2.list_fill(
            &laptops,
            "p3",
            seen.as_deref(),
            Lsn(500),
            Lsn(0),
            b"caught up"
        )
        .await
        .unwrap()
    );
    // Generation keys expire (so unknown families do not pile up); pages
    // stored under a lost generation only miss.
    let ttl: i64 = l2
        .command(
            "test",
            redis::cmd("PTTL")
                .arg(l2.keys().generation(&laptops))
                .clone(),
        )
        .await
        .unwrap();
    assert!(ttl > 0, "generation keys carry a TTL, got {ttl}");
}

#[tokio::test]
async fn batches_report_per_operation_failures() {
    batches_report_per_operation_failures_on(l2()).await;
}

async fn batches_report_per_operation_failures_on(l2: L2) {
    // A key of the wrong type: the script fails for this operation only.
    let poisoned = id(5);
    let () = l2
        .command(
            "test",
            redis::cmd("RPUSH")
                .arg(l2.keys().product(poisoned))
                .arg("x")
                .clone(),
        )
        .await
        .map(|_: i64| ())
        .unwrap();
    let ops = vec![
        ProductOp::Fence {
            id: id(4),
            version: Version(2),
            kind: FenceKind::Tombstone,
        },
        ProductOp::Fence {
            id: poisoned,
            version: Version(2),
            kind: FenceKind::Tombstone,
        },
        ProductOp::Refresh {
            id: id(6),
            entry: value(3),
        },
    ];
    let results = l2
        .apply(
            &ops,
            &[bump(&Family::All, 0), bump(&Family::Search, 0)].concat(),
        )
        .await
        .unwrap();
    assert!(matches!(results[0], Ok(true)));
    assert!(
        matches!(results[1], Err(CacheError::Refused(_))),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Ok(true)));
    assert_eq!(l2.get(id(6)).await.unwrap().unwrap(), value(3));
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_script_flush() {
    scripts_are_reloaded_after_a_script_flush_on(l2()).await;
}

async fn scripts_are_reloaded_after_a_script_flush_on(l2: L2) {
    l2.fence(id(1), Version(1), FenceKind::Tombstone)
        .await
        .unwrap();
    let () = l2
        .command("test", redis::cmd("SCRIPT").arg("FLUSH").clone())
        .await
        .unwrap();
    let ops = [ProductOp::Fence {
        id: id(1),
        version: Version(2),
        kind: FenceKind::Tombstone,
    }];
    assert!(matches!(l2.apply(&ops, &[]).await.unwrap()[0], Ok(true)));
    assert!(l2.fill(id(1), &value(2)).await.unwrap());
}

#[tokio::test]
async fn a_dead_redis_costs_a_bounded_wait_and_then_nothing() {
    let mut cfg = config(&format!(
        "redis://127.0.0.1:{}",
        test_support::closed_port()
    ));
    cfg.breaker = Some((3, Duration::from_secs(60)));
    let l2 = L2::new(&cfg).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = l2.get(id(1)).await.unwrap_err();
        assert!(
            matches!(
                err.unavailable_kind(),
                Some(Unavailable::Unreachable | Unavailable::Timeout)
            ),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
    }
    // Breaker open: calls fail at once without touching the network.
    let started = Instant::now();
    for _ in 0..1000 {
        let err = l2.get(id(1)).await.unwrap_err();
        assert_eq!(err.unavailable_kind(), Some(Unavailable::CircuitOpen));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_hanging_redis_is_cut_off_by_the_timeout() {
    let (proxy, url) = test_support::Proxy::for_url(&test_support::redis_url()).await;
    let l2 = L2::new(&config(&url)).unwrap();
    l2.ping().await.unwrap();
    proxy.set(test_support::Mode::Hang).await;
    let started = Instant::now();
    assert_eq!(
        l2.get(id(1)).await.unwrap_err().unavailable_kind(),
        Some(Unavailable::Timeout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    proxy.set(test_support::Mode::Up).await;
    test_support::eventually("redis to answer again", Duration::from_secs(10), || async {
        l2.ping().await.ok()
    })
    .await;
}

#[tokio::test]
async fn trending_counts_views_per_hour_and_rolls_them_up() {
    trending_counts_views_per_hour_and_rolls_them_up_on(l2()).await;
}

async fn trending_counts_views_per_hour_and_rolls_them_up_on(l2: L2) {
    let views = cache::ViewCounter::default();
    for _ in 0..5 {
        views.record(id(1));
    }
    for _ in 0..9 {
        views.record(id(2));
    }
    views.record(id(3));
    let now = 1_800_000_000;
    l2.add_views(&views.take(), now).await.unwrap();
    // Views from an hour ago count; from 25 hours ago they do not.
    let mut old = std::collections::HashMap::new();
    old.insert(id(3), 10);
    l2.add_views(&old, now - 3600).await.unwrap();
    old.insert(id(1), 100);
    l2.add_views(&old, now - 25 * 3600).await.unwrap();
    let every = Some(Duration::from_secs(10));
    assert!(l2.rollup_trending(now, every).await.unwrap());
    assert!(
        !l2.rollup_trending(now, every).await.unwrap(),
        "one roll-up at a time"
    );
    assert!(
        l2.rollup_trending(now, None).await.unwrap(),
        "unless forced"
    );
    let top = l2.trending(10).await.unwrap();
    assert_eq!(top, vec![(id(3), 11), (id(2), 9), (id(1), 5)]);
    assert_eq!(l2.trending(1).await.unwrap(), vec![(id(3), 11)]);
}

#[tokio::test]
async fn past_hour_buckets_are_trimmed_a_bounded_chunk_at_a_time() {
    let l2 = l2();
    let now = 1_800_000_000;
    let past = l2.keys().trending_bucket(now / 3600 - 3);
    // 13,000 products viewed in an hour three hours ago: product n seen n times.
    let mut fill = redis::pipe();
    for chunk in (1..=13_000_i64).collect::<Vec<_>>().chunks(1000) {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&past);
        for n in chunk {
            zadd.arg(*n).arg(*n);
        }
        fill.add_command(zadd).ignore();
    }
    let mut conn = redis::Client::open(test_support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = fill.query_async(&mut conn).await.unwrap();
    let card = |conn: redis::aio::MultiplexedConnection| {
        let past = past.clone();
        async move {
            let mut conn = conn;
            redis::cmd("ZCARD")
                .arg(&past)
                .query_async::<usize>(&mut conn)
                .await
                .unwrap()
        }
    };
    l2.rollup_trending(now, None).await.unwrap();
    assert_eq!(
        card(conn.clone()).await,
        11_000,
        "one chunk of 2000 per roll-up"
    );
    l2.rollup_trending(now, None).await.unwrap();
    assert_eq!(card(conn.clone()).await, 10_000);
    l2.rollup_trending(now, None).await.unwrap();
    assert_eq!(
        card(conn.clone()).await,
        10_000,
        "trimmed to the most viewed 10,000"
    );
    // The least viewed went first; the top list still ranks the most viewed.
    let top = l2.trending(3).await.unwrap();
    assert_eq!(
        top,
        vec![
            (id(13_000), 13_000),
            (id(12_999), 12_999),
            (id(12_998), 12_998)
        ]
    );
}

#[tokio::test]
async fn a_scan_visits_every_product_key_of_the_namespace() {
    a_scan_visits_every_product_key_of_the_namespace_on(l2(), l2()).await;
}

/// `other` is an L2 on another namespace of the same Redis.
async fn a_scan_visits_every_product_key_of_the_namespace_on(l2: L2, other: L2) {
    for n in 1..=300 {
        plant(&l2, id(n), &value(n)).await;
    }
    plant(&other, id(7), &value(1)).await;
    let mut seen = std::collections::BTreeMap::new();
    let mut cursor = 0;
    for step in 0.. {
        assert!(step < 10_000, "the scan wraps");
        let (next, entries) = l2.scan_products(cursor, 100).await.unwrap();
        for (pid, entry) in entries {
            seen.insert(pid.get(), entry.version.get());
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let expected: std::collections::BTreeMap<i64, i64> = (1..=300).map(|n| (n, n)).collect();
    assert_eq!(seen, expected);
}

/// Every rule above, on a three-node Redis Cluster: product keys spread over
/// the slots of all three nodes, the invalidator's batches span them, and
/// pages, generations and trending keys keep to one slot each.
#[tokio::test]
async fn the_same_rules_hold_on_a_redis_cluster() {
    let cluster = test_support::RedisCluster::start().await;
    let on_cluster = || {
        L2::new(&L2Config {
            endpoint: cache::Endpoint::Cluster(cluster.url.split(',').map(str::to_owned).collect()),
            ..config(&cluster.url)
        })
        .unwrap()
    };
    lua_scripts_follow_the_design_table_on(on_cluster()).await;
    the_stale_set_race_is_closed_on(on_cluster()).await;
    late_duplicate_and_out_of_order_fences_never_lower_a_version_on(on_cluster()).await;
    generations_invalidate_a_whole_family_and_refuse_stale_pages_on(on_cluster()).await;
    batches_report_per_operation_failures_on(on_cluster()).await;
    scripts_are_reloaded_after_a_script_flush_on(on_cluster()).await;
    trending_counts_views_per_hour_and_rolls_them_up_on(on_cluster()).await;
    a_scan_visits_every_product_key_of_the_namespace_on(on_cluster(), on_cluster()).await;
    on_cluster().ping().await.unwrap();
    // The keys really are spread: every node holds some.
    for node in cluster.url.split(',') {
        let mut conn = redis::Client::open(node)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(keys > 0, "{node} holds no key");
    }
}
