//! Async calls on a Redis region, against a real `redis-server` that this harness starts on a
//! free loopback port: they await the server and never block the executor, even while the
//! server stalls; and a lock command or a creator caught in a stall leaves no orphan lock and
//! no stale write behind.
//!
//! Needs `redis-server` on the `PATH` (`.ci/run` installs it if missing).
#![cfg(all(feature = "redis", feature = "tokio"))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::redis::{BreakerState, Redis, RedisMutex, RedisStore};
use dogpile_runtime::region::AsyncRegion;
use dogpile_runtime::Region;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::Server;

type AsyncRedisRegion = AsyncRegion<u64, u64, RedisStore<u64, u64>, RedisMutex>;

fn region(redis: &Redis, namespace: &'static str, expiry: Duration) -> AsyncRedisRegion {
    Region::builder()
        .name(namespace)
        .expiry(expiry)
        .store(redis.store(namespace))
        .mutexes(redis.mutexes(namespace))
        .build()
        .unwrap()
        .to_async()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One worker thread, 50 tasks reading a Redis region, the server paused for a second
/// (`CLIENT PAUSE 1000`): a ticker task on the same thread keeps ticking every 10 ms, because
/// the reads await the server instead of blocking the thread. With the blocking client on this
/// path, the ticker stalls for the whole pause.
#[test]
fn a_stalled_server_never_stalls_the_executor() {
    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_secs(3))
        .lease(Duration::from_secs(10))
        .build()
        .unwrap();
    let region = region(&redis, "ticker", Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    let worst_gap = current_thread().block_on(async {
        assert_eq!(region.get_with(&1, || async { 7 }).await, 7);

        let ticker = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut worst = Duration::ZERO;
                let mut last = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let now = Instant::now();
                    worst = worst.max(now - last);
                    last = now;
                }
                worst
            }
        });
        let readers: Vec<_> = (0..50)
            .map(|_| {
                let (region, stop, reads) = (region.clone(), stop.clone(), reads.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        assert_eq!(region.get_with(&1, || async { 7 }).await, 7);
                        reads.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();

        // The pause comes from another thread, as from another client.
        let pauser = thread::spawn({
            let url = server.url();
            move || {
                thread::sleep(Duration::from_millis(200));
                let mut c = redis::Client::open(url)
                    .unwrap()
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .unwrap();
                redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(1000)
                    .query::<()>(&mut c)
                    .unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(1600)).await;
        stop.store(true, Ordering::SeqCst);
        for reader in readers {
            reader.await.unwrap();
        }
        pauser.join().unwrap();
        ticker.await.unwrap()
    });

    assert!(
        reads.load(Ordering::SeqCst) > 50,
        "the readers read: {}",
        reads.load(Ordering::SeqCst)
    );
    assert!(
        worst_gap < Duration::from_millis(100),
        "the executor stalled for {worst_gap:?} while the server was paused"
    );
}

/// Async tasks on a missing key of a Redis region: one creator; the others wait for it
/// without blocking the thread, then read its value.
#[test]
fn async_tasks_on_a_missing_key_share_one_creator() {
    let server = Server::start();
    let redis = Redis::open(&server.url()).unwrap();
    let region = region(&redis, "herd", Duration::from_secs(60));
    let created = Arc::new(AtomicUsize::new(0));

    current_thread().block_on(async {
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (region, created) = (region.clone(), created.clone());
                tokio::spawn(async move {
                    region
                        .get_with(&9, || async move {
                            created.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            81
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 81);
        }
    });
    assert_eq!(created.load(Ordering::SeqCst), 1);
    assert!(server.locks("herd").is_empty(), "no lock left");
}

/// The async form of the stalled lock command: a `SET NX` awaited while the server stalls
/// (`DEBUG SLEEP`) times out, but the server applies it afterwards. Its token is released once
/// the server answers again (the circuit breaker, opened by the stall, has closed), so the next
/// async miss regenerates at once instead of waiting out the lease (5 s) for a lock nobody
/// holds, and no lock key is left.
#[test]
fn an_async_lock_command_lost_in_a_stall_leaves_no_lock_behind() {
    use dogpile_runtime::lock::AsyncRawMutex;

    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(redis.lease(), Duration::from_secs(5));
    let region = region(&redis, "stall", Duration::from_secs(60));
    let runtime = current_thread();
    // The shared async connection is open, so the lock command is sent on it.
    assert_eq!(runtime.block_on(region.get_with(&0, || async { 0 })), 0);
    let stall = thread::spawn({
        let mut admin = server.connection();
        move || {
            redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(1.5)
                .query::<()>(&mut admin)
                .unwrap();
        }
    });
    thread::sleep(Duration::from_millis(200));
    let lost = runtime.block_on(redis.mutex("stall", &1u64).try_acquire_async());
    assert!(lost.is_err(), "the stalled server cannot answer: {lost:?}");
    stall.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.breaker().state != BreakerState::Closed {
        assert!(Instant::now() < deadline, "the breaker never closed");
        thread::sleep(Duration::from_millis(5));
    }

    let after = Instant::now();
    assert_eq!(runtime.block_on(region.get_with(&1, || async { 2 })), 2);
    let took = after.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the first async miss after the stall waited {took:?} for a lock nobody held"
    );
    assert!(server.locks("stall").is_empty(), "no lock left behind");
}

/// The async form of the fence: a creator whose lease ran out while the server stalled
/// finishes after a blocking caller took the lock and stored a newer value. Its write is
/// refused and counted, its caller still gets its value, and the successor's value stands.
#[test]
fn an_async_creator_that_outlived_its_lease_cannot_overwrite_its_successor() {
    let server = Server::start();
    // The circuit breaker would refuse the late creator's write outright, unsent, once the
    // stall's timeouts opened it: this test is about the fence, which the write must reach.
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(100))
        .lease(Duration::from_millis(300))
        .breaker_failures(1_000)
        .build()
        .unwrap();
    // Two regions on one namespace: two hosts, as far as the lock and the store can tell.
    let (late, successor) = (
        region(&redis, "fenced", Duration::from_secs(60)),
        region(&redis, "fenced", Duration::from_secs(60))
            .as_sync()
            .clone(),
    );
    let (started, successor_done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let first = thread::spawn({
        let (late, started, successor_done) =
            (late.clone(), started.clone(), successor_done.clone());
        move || {
            current_thread().block_on(late.get_with(&1, || async move {
                started.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !successor_done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                1
            }))
        }
    });
    while !started.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(5));
    }
    // The server stalls for twice the lease: the first creator's lock expires meanwhile.
    redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0.6)
        .query::<()>(&mut server.connection())
        .unwrap();
    let second = successor.get_with(&1, || 2);
    successor_done.store(true, Ordering::SeqCst);
    assert_eq!(second, 2, "the successor created its own value");
    assert_eq!(
        first.join().unwrap(),
        1,
        "the late creator's caller gets its value"
    );
    assert_eq!(late.statistics().refused_writes, 1, "{}", late.statistics());
    assert_eq!(successor.statistics().refused_writes, 0);
    assert_eq!(
        successor.get_with(&1, || unreachable!()),
        2,
        "the successor's value stands"
    );
}

/// A value of 50 MB through async calls: made once, stored, and read back whole by another
/// handle (the blocking twin, and why the timeout is 5 s, are in `redis.rs`).
#[test]
fn a_value_of_50_mb_is_made_once_and_read_back_whole_by_async_calls() {
    const SIZE: usize = 50 << 20;
    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_secs(5))
        .lease(Duration::from_secs(30))
        .build()
        .unwrap();
    let handle = || -> AsyncRegion<u64, Vec<u8>, RedisStore<u64, Vec<u8>>, RedisMutex> {
        Region::builder()
            .name("large")
            .expiry(Duration::from_secs(60))
            .store(redis.store("large"))
            .mutexes(redis.mutexes("large"))
            .build()
            .unwrap()
            .to_async()
    };
    let (one, other) = (handle(), handle());
    let calls = AtomicUsize::new(0);
    let (made, read) = current_thread().block_on(async {
        let made = one
            .get_with(&1, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                let mut value = (0..251).collect::<Vec<u8>>().repeat(SIZE / 251 + 1);
                value.truncate(SIZE);
                value
            })
            .await;
        let read = other
            .get_with(&1, || async { unreachable!("stored in Redis") })
            .await;
        (made, read)
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(read.len(), SIZE);
    assert!(read == made, "read back byte for byte");
    assert_eq!(one.statistics().backend_failures, 0);
    assert_eq!(other.statistics().backend_failures, 0);
}
