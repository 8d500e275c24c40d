//! A Redis region on a three-node Redis Cluster that this harness starts on loopback: values,
//! fenced writes and invalidation spread over the nodes, blocking and async.
//!
//! Needs `redis-server` and `redis-cli` on the `PATH` (`.ci/run` installs them if missing).
#![cfg(all(feature = "redis", feature = "tokio"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
use dogpile_runtime::region::{AsyncRegion, Served};
use dogpile_runtime::Region;

#[path = "support/redis_cluster.rs"]
mod redis_cluster;
use redis_cluster::Cluster;

type ClusterRegion = Region<u64, u64, RedisStore<u64, u64>, RedisMutex>;
type AsyncClusterRegion = AsyncRegion<u64, u64, RedisStore<u64, u64>, RedisMutex>;

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

/// One node of the cluster stalls (SIGSTOP: it takes connections and answers nothing) for
/// longer than the timeout, as a host frozen by its hypervisor does, while the other two and
/// the cluster's view of itself stay healthy (its node timeout, 60 s here, is longer than the
/// stall). With a breaker that never opens, every call still returns its value, blocking or
/// async: async, the calls of the keys on the live nodes are served from the store at once
/// and those of the stalled node's keys pay one timeout and make their value directly (all
/// calls paid one after the first timeout: the shared connection was dropped, and each new
/// one waited for the stalled node). Blocking, a failed connection is dropped and the next
/// call connects to every node, the stalled one within half the timeout: at most about two
/// timeouts (every call paid two and failed, the live nodes' keys too: connecting took the
/// whole timeout; the first call of a handle paid four, the cluster client retrying each
/// timed-out command three times). With the default breaker, three calls pay and the rest
/// pay nothing. Once the node runs again the breaker closes by itself and every key is
/// served from the store again, the values the stalled node held not made again.
#[test]
fn a_stalled_node_costs_a_call_about_one_timeout_and_the_region_recovers_after_it() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    const KEYS: u64 = 48;
    let cluster = Cluster::start();
    let handle = |breaker_failures: u32| {
        Redis::builder(&cluster.url())
            .timeout(TIMEOUT)
            .breaker_failures(breaker_failures)
            .build()
            .unwrap()
    };
    let region = |redis: &Redis| -> ClusterRegion {
        Region::builder()
            .name("stalled-node")
            .expiry(Duration::from_secs(60))
            .store(redis.store("stall"))
            .mutexes(redis.mutexes("stall"))
            .build()
            .unwrap()
    };
    let (unbroken, broken) = (handle(u32::MAX), handle(3));
    let (blocking, guarded) = (region(&unbroken), region(&broken));
    let asynchronous = region(&unbroken).to_async();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created = AtomicU64::new(0);
    let create = |key: u64| {
        created.fetch_add(1, Ordering::SeqCst);
        key
    };
    for key in 0..KEYS {
        assert_eq!(blocking.get_with(&key, || create(key)), key);
        assert_eq!(guarded.get_with(&key, || create(key)), key);
        assert_eq!(
            rt.block_on(asynchronous.get_with(&key, || async move { key })),
            key
        );
    }
    assert_eq!(created.load(Ordering::SeqCst), KEYS);
    let before = cluster.keys_per_node();
    assert!(before[2] > 0, "values on the node to stall: {before:?}");

    cluster.freeze(2);
    let timed = |call: &mut dyn FnMut()| {
        let began = Instant::now();
        call();
        began.elapsed()
    };
    let mut blocking_calls = Vec::new();
    let mut async_calls = Vec::new();
    for key in 0..KEYS {
        blocking_calls.push(timed(&mut || {
            assert_eq!(blocking.get_with(&key, || create(key)), key);
        }));
        async_calls.push(timed(&mut || {
            let value = rt.block_on(asynchronous.get_with(&key, || async move { key }));
            assert_eq!(value, key);
        }));
    }
    let guarded_calls: Vec<Duration> = (0..KEYS)
        .map(|key| timed(&mut || assert_eq!(guarded.get_with(&key, || create(key)), key)))
        .collect();
    cluster.thaw(2);
    let paid = |times: &[Duration]| times.iter().filter(|took| **took >= TIMEOUT / 2).count();
    let slowest = |times: &[Duration]| *times.iter().max().unwrap();
    eprintln!(
        "node 2 of 3 stalled, timeout {TIMEOUT:?}, {:?} keys per node: blocking {} of {KEYS} \
         calls paid a timeout, slowest {:?}; async {}, slowest {:?}; with the breaker {}, \
         slowest {:?}, the rest at most {:?}",
        before,
        paid(&blocking_calls),
        slowest(&blocking_calls),
        paid(&async_calls),
        slowest(&async_calls),
        paid(&guarded_calls),
        slowest(&guarded_calls),
        guarded_calls
            .iter()
            .filter(|took| **took < TIMEOUT / 2)
            .max(),
    );
    eprintln!("blocking {blocking_calls:?}\nasync {async_calls:?}\nguarded {guarded_calls:?}");
    // A blocking call that failed drops its connection, and the next one connects again, to
    // every node: the stalled one's share of that is up to half a timeout, and the command
    // may be retried once.
    let bounds = [
        ("blocking", &blocking_calls, TIMEOUT * 3),
        ("async", &async_calls, TIMEOUT * 2),
    ];
    for (what, times, bound) in bounds {
        assert!(
            slowest(times) < bound,
            "a {what} call took {:?}: more than {bound:?}",
            slowest(times)
        );
        let stalled = paid(times);
        assert!(
            stalled > 0 && stalled < KEYS as usize,
            "{what}: {stalled} calls paid, not those of the stalled node's keys alone"
        );
    }
    assert_eq!(paid(&guarded_calls), 3, "{guarded_calls:?}");
    assert!(
        guarded_calls.iter().all(|took| *took < TIMEOUT * 3),
        "{guarded_calls:?}"
    );
    // Blocking, the calls of the stalled node's keys and at most one after each (it
    // connects again) paid; async, only the calls whose keys live on the stalled node.
    assert!(
        paid(&blocking_calls) <= 2 * usize::try_from(before[2]).unwrap(),
        "{blocking_calls:?}"
    );
    assert!(
        paid(&async_calls) <= usize::try_from(before[2]).unwrap(),
        "{async_calls:?}"
    );
    let stats = guarded.statistics();
    assert_eq!(
        (stats.breaker_opens, stats.backend_failures),
        (1, 3),
        "{stats}"
    );

    // The breaker closes by itself after its cool-down; from then every key is in the store,
    // those of the stalled node too.
    let thawed = Instant::now();
    loop {
        let fresh = (0..KEYS)
            .filter(|key| guarded.get_with_served(key, || create(*key)) == (*key, Served::Fresh))
            .count();
        if fresh == KEYS as usize {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(10),
            "{fresh} of {KEYS} keys fresh 10 s after the node came back: {}",
            guarded.statistics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "all {KEYS} keys fresh {:?} after the thaw; {}",
        thawed.elapsed(),
        guarded.statistics()
    );
    // The async handle kept its cluster connection through the stall: it serves every key
    // from the store again, the stalled node's too.
    let fresh = (0..KEYS)
        .filter(|key| {
            let served = rt.block_on(asynchronous.get_with_served(key, || async { u64::MAX }));
            served == (*key, Served::Fresh)
        })
        .count();
    assert_eq!(fresh, KEYS as usize, "{}", asynchronous.statistics());
}

/// A blocking and an async region on `cluster` through one handle (timeout 200 ms, a breaker
/// that opens after `breaker_failures`), in `namespace`, and a runtime for the async calls.
fn failover_regions(
    cluster: &Cluster,
    namespace: &str,
    breaker_failures: u32,
) -> (ClusterRegion, AsyncClusterRegion, tokio::runtime::Runtime) {
    let redis = Redis::builder(&cluster.url())
        .timeout(Duration::from_millis(200))
        .breaker_failures(breaker_failures)
        .build()
        .unwrap();
    let region = || -> ClusterRegion {
        Region::builder()
            .name(namespace)
            .expiry(Duration::from_secs(600))
            .store(redis.store(namespace))
            .mutexes(redis.mutexes(namespace))
            .build()
            .unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (region(), region().to_async(), runtime)
}

/// Stores keys `0..keys` through `region`, and waits until `victim`'s replica has them: a
/// failover of `victim` then loses none.
fn store_every_key(
    cluster: &Cluster,
    victim: usize,
    region: &AsyncClusterRegion,
    rt: &tokio::runtime::Runtime,
    keys: u64,
) {
    for key in 0..keys {
        assert_eq!(
            rt.block_on(region.get_with(&key, || async move { key })),
            key
        );
    }
    cluster.wait_replicated(victim);
}

/// A primary stalls (SIGSTOP) and stays stalled past the cluster's node timeout (2 s here),
/// so the cluster promotes its replica. Async calls on a handle that was connected before
/// reach the promoted replica and are served from the store again, while the old primary is
/// still stopped: the cluster connection kept across the stall's timeouts (so that the live
/// nodes' keys do not pay for one) is replaced in the background, and the new one reads the
/// new slots. (Kept as it was, it sent the stalled primary's keys to it for as long as it
/// stayed silent: a silent node sends no `MOVED`.) Blocking calls, whose failed connections
/// are dropped, follow too.
#[test]
fn calls_follow_the_failover_of_a_stalled_primary() {
    const KEYS: u64 = 48;
    let cluster = Cluster::start_with(1, 2_000);
    let victim = 2;
    assert!(
        cluster.is_primary(victim),
        "node {victim} starts as a primary"
    );
    let (blocking, asynchronous, rt) = failover_regions(&cluster, "stalled", u32::MAX);
    store_every_key(&cluster, victim, &asynchronous, &rt, KEYS);

    cluster.freeze(victim);
    let frozen = Instant::now();
    let mut rounds = 0;
    let followed = loop {
        rounds += 1;
        let fresh = (0..KEYS)
            .filter(|key| {
                let served = rt.block_on(asynchronous.get_with_served(key, || async { u64::MAX }));
                served == (*key, Served::Fresh)
            })
            .count();
        if fresh == KEYS as usize {
            break frozen.elapsed();
        }
        if frozen.elapsed() > Duration::from_secs(30) {
            cluster.thaw(victim);
            panic!(
                "{fresh} of {KEYS} keys served from the store async, 30 s after node {victim} \
                 stalled: {}",
                asynchronous.statistics()
            );
        }
    };
    let blocking_fresh = (0..KEYS)
        .filter(|key| blocking.get_with_served(key, || u64::MAX) == (*key, Served::Fresh))
        .count();
    cluster.thaw(victim);
    eprintln!(
        "node {victim} stalled: every key served from the store async again {followed:?} after \
         (round {rounds}), blocking {blocking_fresh} of {KEYS} then; {}",
        asynchronous.statistics()
    );
    assert!(
        followed > Duration::from_secs(2),
        "before the node timeout: no failover yet?"
    );
    assert_eq!(blocking_fresh, KEYS as usize);
}

/// A primary killed (its connections reset, new ones refused) and failed over to its
/// replica, under a handle with the default breaker whose blocking connections (several,
/// kept from a load on four threads) and async connection all knew the old slots: how many
/// calls fail before every key is served from the store again, blocking and async: none
/// opened the breaker (the cluster client retrying a command three times, as it did, 14
/// commands went unanswered; retrying once, as now, none), and every key was fresh again
/// 4.2-4.5 s after the kill (a 2 s node timeout).
#[test]
fn calls_follow_the_failover_of_a_killed_primary() {
    const KEYS: u64 = 48;
    let mut cluster = Cluster::start_with(1, 2_000);
    let victim = 2;
    assert!(
        cluster.is_primary(victim),
        "node {victim} starts as a primary"
    );
    let (blocking, asynchronous, rt) = failover_regions(&cluster, "killed", 3);
    // Four threads at once leave four blocking connections idle.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for key in 0..KEYS {
                    assert_eq!(blocking.get_with(&key, || key), key);
                }
            });
        }
    });
    store_every_key(&cluster, victim, &asynchronous, &rt, KEYS);

    cluster.kill(victim);
    let killed = Instant::now();
    let (mut blocking_done, mut async_done) = (None, None);
    while blocking_done.is_none() || async_done.is_none() {
        let all_fresh = |served: &dyn Fn(u64) -> (u64, Served)| {
            (0..KEYS).all(|key| served(key) == (key, Served::Fresh))
        };
        if blocking_done.is_none() && all_fresh(&|key| blocking.get_with_served(&key, || u64::MAX))
        {
            blocking_done = Some(killed.elapsed());
        }
        if async_done.is_none()
            && all_fresh(&|key| {
                rt.block_on(asynchronous.get_with_served(&key, || async { u64::MAX }))
            })
        {
            async_done = Some(killed.elapsed());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not every key served from the store 30 s after the kill: blocking {blocking_done:?}, \
             async {async_done:?}; {}",
            blocking.statistics()
        );
    }
    let stats = blocking.statistics();
    assert_eq!(stats.breaker_opens, 0, "{stats}");
    eprintln!(
        "node {victim} killed: every key from the store again after {blocking_done:?} blocking, \
         {async_done:?} async; {} backend failures, {} breaker opens; {stats}",
        stats.backend_failures, stats.breaker_opens
    );
}
