//! A Redis region on a three-node Redis Cluster that this harness starts on loopback: values,
//! fenced writes and invalidation spread over the nodes, blocking and async.
//!
//! Needs `redis-server` and `redis-cli` on the `PATH` (`.ci/run` installs them if missing).
#![cfg(all(feature = "redis", feature = "tokio"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
use dogpile_runtime::Region;

#[path = "support/redis_cluster.rs"]
mod redis_cluster;
use redis_cluster::Cluster;

type ClusterRegion = Region<u64, u64, RedisStore<u64, u64>, RedisMutex>;

fn region(redis: &Redis, namespace: &str) -> ClusterRegion {
    Region::builder()
        .name("on-a-cluster")
        .expiry(Duration::from_secs(60))
        .store(redis.store(namespace))
        .mutexes(redis.mutexes(namespace))
        .on_backend_error(dogpile_runtime::region::OnBackendError::ReturnError)
        .build()
        .unwrap()
}

/// 64 keys land on every node; each is created once (with a fenced write, whose script reads
/// the key's lock, value and epoch in one slot), then served fresh; `invalidate_all` and
/// `soft_invalidate_all` reach the epochs of every shard, on every node; async calls too.
#[test]
fn a_region_on_a_three_node_cluster() {
    let cluster = Cluster::start();
    let redis = Redis::builder(&cluster.url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let (a, b) = (region(&redis, "spread"), region(&redis, "spread"));
    let created = Arc::new(AtomicU64::new(0));
    let create = |value: u64| {
        let created = created.clone();
        move || -> Result<u64, ()> {
            created.fetch_add(1, Ordering::SeqCst);
            Ok(value)
        }
    };
    for key in 0..64 {
        assert_eq!(a.try_get_with(&key, create(key)).unwrap(), key);
        assert_eq!(
            b.try_get_with(&key, create(999)).unwrap(),
            key,
            "fresh elsewhere"
        );
    }
    assert_eq!(created.load(Ordering::SeqCst), 64);
    let stats = a.statistics();
    assert_eq!(
        (stats.regenerations, stats.refused_writes, stats.errors),
        (64, 0, 0)
    );
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|&keys| keys > 0),
        "values on every node: {per_node:?}"
    );

    // Hard, from `b`: `a` regenerates every key.
    b.invalidate_all().unwrap();
    for key in 0..64 {
        assert_eq!(a.try_get_with(&key, create(key + 100)).unwrap(), key + 100);
    }
    assert_eq!(created.load(Ordering::SeqCst), 128);

    // Soft, from `b`: the values are still there for `a` (stale, not gone), and `a`
    // regenerates them.
    b.soft_invalidate_all().unwrap();
    for key in 0..64 {
        assert_eq!(
            a.peek(&key),
            Some(key + 100),
            "a soft-invalidated value stays"
        );
        assert_eq!(a.try_get_with(&key, create(key + 200)).unwrap(), key + 200);
    }
    assert_eq!(created.load(Ordering::SeqCst), 192);

    // Async calls on the cluster's async connection.
    let async_region = region(&redis, "spread-async").to_async();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            for key in 0..16 {
                assert_eq!(
                    async_region.get_with(&key, || async move { key }).await,
                    key
                );
            }
            async_region.invalidate_all().await.unwrap();
            for key in 0..16 {
                let again = async_region.get_with(&key, || async move { key + 1 }).await;
                assert_eq!(again, key + 1);
            }
        });

    // A near store on a cluster never subscribes: it reads through to the cluster, coherent
    // as a plain store.
    let near = |namespace: &str| -> dogpile_runtime::backend::redis::NearRegion<u64, u64> {
        let store = redis
            .store(namespace)
            .near(100, Duration::from_secs(60))
            .unwrap();
        assert!(!store.listening());
        Region::builder()
            .expiry(Duration::from_secs(60))
            .store(store)
            .mutexes(redis.mutexes(namespace))
            .build()
            .unwrap()
    };
    let (c, d) = (near("near"), near("near"));
    assert_eq!(c.get_with(&1, || 1), 1);
    assert_eq!(d.get_with(&1, || unreachable!()), 1);
    c.insert(&1, 2).unwrap();
    assert_eq!(
        d.get_with(&1, || unreachable!()),
        2,
        "read through, not from memory"
    );
    assert!(d.statistics().near_suspect >= 2);
}
