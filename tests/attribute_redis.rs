//! `#[dogpile(region = ...)]` on a region configured on Redis, from sync and async functions,
//! against a `redis-server` this test starts.
#![cfg(all(feature = "redis", feature = "tokio"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use dogpile::backend::redis::{NearRegion, Redis, RedisMutex, RedisStore};
use dogpile::dogpile;
use dogpile::Region;

#[path = "../dogpile-runtime/tests/support/redis_server.rs"]
mod redis_server;
use redis_server::Server;

/// Set by the test, which owns the server (and stops it when done).
static REDIS: OnceLock<Redis> = OnceLock::new();

fn redis() -> &'static Redis {
    REDIS.get().expect("the test starts the server first")
}

fn open(url: &str) -> Redis {
    Redis::builder(url)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

fn on_redis(namespace: &'static str) -> Region<u64, String, RedisStore<u64, String>, RedisMutex> {
    Region::builder()
        .name(namespace)
        .expiry(Duration::from_secs(3600))
        .store(redis().store(namespace))
        .mutexes(redis().mutexes(namespace))
        .build()
        .unwrap()
}

static USERS: LazyLock<Region<u64, String, RedisStore<u64, String>, RedisMutex>> =
    LazyLock::new(|| on_redis("users"));
static PROFILES: LazyLock<Region<u64, String, RedisStore<u64, String>, RedisMutex>> =
    LazyLock::new(|| on_redis("profiles"));

/// A region set to return backend errors to its own callers.
static STRICT: LazyLock<Region<u64, String, RedisStore<u64, String>, RedisMutex>> =
    LazyLock::new(|| {
        Region::builder()
            .name("strict")
            .expiry(Duration::from_secs(3600))
            .store(redis().store("strict"))
            .mutexes(redis().mutexes("strict"))
            .on_backend_error(dogpile::region::OnBackendError::ReturnError)
            .build()
            .unwrap()
    });

#[dogpile(expire = 60, region = STRICT, namespace = none)]
fn strict_user(id: u64) -> Result<String, std::fmt::Error> {
    Ok(format!("strict {id}"))
}

static USER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 60, region = USERS, namespace = none)]
fn user(id: u64) -> String {
    USER_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("user {id}")
}

static PROFILE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 60, region = PROFILES, namespace = none)]
async fn profile(id: u64) -> String {
    PROFILE_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    format!("profile {id}")
}

/// A near region (memory tier over Redis) shared by functions, each under its namespace: keys
/// `(&'static str, u64)`.
fn near(name: &'static str) -> NearRegion<(&'static str, u64), String> {
    let store = redis()
        .store(name)
        .near(1_000, Duration::from_secs(60))
        .unwrap();
    let began = std::time::Instant::now();
    while !store.listening() {
        assert!(began.elapsed() < Duration::from_secs(5), "never subscribed");
        std::thread::sleep(Duration::from_millis(1));
    }
    Region::builder()
        .name(name)
        .expiry(Duration::from_secs(3600))
        .store(store)
        .mutexes(redis().mutexes(name))
        .build()
        .unwrap()
}

static NEAR: LazyLock<NearRegion<(&'static str, u64), String>> = LazyLock::new(|| near("near"));

static NEAR_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 60, region = NEAR, namespace = "accounts")]
fn account(id: u64) -> String {
    NEAR_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("account {id}")
}

#[dogpile(expire = 60, region = NEAR, namespace = "teams")]
async fn team(id: u64) -> String {
    NEAR_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("team {id}")
}

/// Functions on a near region: created once, then served from memory; an invalidation made
/// through another process's region (here, another handle with its own subscription) reaches
/// the function's memory tier.
fn functions_on_a_near_region(runtime: &tokio::runtime::Runtime) {
    let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(|| account(1))).collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "account 1");
    }
    assert_eq!(runtime.block_on(team(1)), "team 1");
    assert_eq!(runtime.block_on(team(1)), "team 1");
    assert_eq!(NEAR_CALLS.load(Ordering::SeqCst), 2);
    // `account`'s own calls: the 8 above made and waited for the value; this one hits.
    assert_eq!(account(1), "account 1");
    let stats = account_statistics();
    assert!(stats.hits >= 1 && stats.near_misses <= 20, "{stats:?}");
    let elsewhere = near("near");
    assert_eq!(
        elsewhere.peek(&("accounts", 1)).as_deref(),
        Some("account 1")
    );
    elsewhere.invalidate(&("accounts", 1)).unwrap();
    let began = std::time::Instant::now();
    while account(1) != "account 1" || NEAR_CALLS.load(Ordering::SeqCst) != 3 {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the invalidation never arrived"
        );
    }
    assert_eq!(runtime.block_on(team(1)), "team 1");
    assert_eq!(
        NEAR_CALLS.load(Ordering::SeqCst),
        3,
        "a team is still cached"
    );
}

#[test]
fn functions_on_redis_regions_sync_and_async() {
    let mut server = Server::start();
    REDIS.set(open(&server.url())).unwrap();
    a_sync_function_on_a_redis_region();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(an_async_function_on_a_redis_region());
    functions_on_a_near_region(&runtime);

    // With Redis down, an annotated function runs its body directly, even on a region that
    // returns backend errors to its own callers: the attribute has no error to hand back.
    assert_eq!(strict_user(5).unwrap(), "strict 5");
    server.stop();
    let start = std::time::Instant::now();
    assert_eq!(strict_user(6).unwrap(), "strict 6");
    assert_eq!(user(7), "user 7");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(
        STRICT.try_get_with(&8, || Ok::<_, ()>(String::new())),
        Err(dogpile::RegionError::Backend(_))
    ));
    assert!(user_statistics().direct_calls >= 1);
    // An invalidation that cannot reach Redis says so, and that it is queued for replay.
    let err = user_invalidate(7).expect_err("Redis is down");
    assert!(err.is_queued_for_replay(), "{err}");
    let err = user_soft_invalidate_region().expect_err("Redis is down");
    assert!(err.is_queued_for_replay(), "{err}");
    assert_eq!(user_statistics().invalidations_queued, 2);
}

fn a_sync_function_on_a_redis_region() {
    let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(|| user(1))).collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "user 1");
    }
    assert_eq!(USER_CALLS.load(Ordering::SeqCst), 1);
    // The value is in Redis, where another process would find it.
    let elsewhere = on_redis("users");
    assert_eq!(elsewhere.peek(&1).as_deref(), Some("user 1"));
    user_invalidate(1).unwrap();
    assert_eq!(elsewhere.peek(&1), None);
}

async fn an_async_function_on_a_redis_region() {
    let tasks: Vec<_> = (0..50).map(|_| tokio::spawn(profile(2))).collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "profile 2");
    }
    assert_eq!(PROFILE_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(profile_statistics().regenerations, 1);
}
