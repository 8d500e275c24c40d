//! The near cache (a Redis region with a memory tier in front) against an in-memory region
//! and a plain Redis region, on one `redis-server` this bench starts on a free loopback port:
//!
//! 1. a fresh hit, one thread, warm key: near vs in-memory (its S1) vs plain Redis;
//! 2. 100 async tasks on 1,000 warm keys (2 worker threads): hits/s, near vs plain Redis vs
//!    redis-rs's own `GET` on a multiplexed connection;
//! 3. visibility: a value written (or invalidated) through one handle, until a reader on
//!    another handle (its own connections and subscription, as another process has) first sees
//!    it: median and p99; then the same right after `CLIENT KILL TYPE pubsub` cut the reader's
//!    subscription.
//!
//! `cargo bench --bench near_hits --features redis,tokio`

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dogpile::backend::redis::{NearRegion, Redis, RedisMutex, RedisStore};
use dogpile::Region;

#[path = "../dogpile-runtime/tests/support/redis_server.rs"]
mod redis_server;

const EXPIRY: Duration = Duration::from_secs(3600);
const KEYS: u64 = 1_000;

fn near(redis: &Redis, namespace: &str) -> NearRegion<u64, u64> {
    let store = redis
        .store(namespace)
        .near(10_000, Duration::from_secs(600))
        .expect("a near store");
    let began = Instant::now();
    while !store.listening() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "never subscribed"
        );
        thread::sleep(Duration::from_millis(1));
    }
    Region::builder()
        .name(namespace)
        .expiry(EXPIRY)
        .store(store)
        .mutexes(redis.mutexes(namespace))
        .build()
        .expect("a region")
}

fn plain(redis: &Redis, namespace: &str) -> Region<u64, u64, RedisStore<u64, u64>, RedisMutex> {
    Region::builder()
        .name(namespace)
        .expiry(EXPIRY)
        .store(redis.store(namespace))
        .mutexes(redis.mutexes(namespace))
        .build()
        .expect("a region")
}

/// The median time of one `op`, over `rounds` batches of `batch` calls.
fn per_call(rounds: usize, batch: usize, mut op: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let began = Instant::now();
            for _ in 0..batch {
                op();
            }
            began.elapsed() / u32::try_from(batch).expect("a small batch")
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn main() {
    let server = redis_server::Server::start();
    let redis = Redis::open(&server.url()).expect("an address");
    fresh_hit(&redis);
    many_tasks(&server, &redis);
    visibility(&server);
}

fn fresh_hit(redis: &Redis) {
    let memory: Region<u64, u64> = Region::builder()
        .expiry(EXPIRY)
        .capacity(10_000)
        .build()
        .expect("a region");
    let near = near(redis, "near-hit");
    let plain = plain(redis, "plain-hit");
    assert_eq!(memory.get_with(&1, || 1), 1);
    assert_eq!(near.get_with(&1, || 1), 1);
    assert_eq!(plain.get_with(&1, || 1), 1);
    let s1 = per_call(201, 10_000, || {
        black_box(memory.get_with(black_box(&1), || unreachable!()));
    });
    let two_tier = per_call(201, 10_000, || {
        black_box(near.get_with(black_box(&1), || unreachable!()));
    });
    let far = per_call(51, 200, || {
        black_box(plain.get_with(black_box(&1), || unreachable!()));
    });
    // What coherence costs a write: the near store publishes after writing.
    let mut n = 0;
    let near_write = per_call(51, 200, || {
        n += 1;
        near.insert(&2, n).expect("a write");
    });
    let plain_write = per_call(51, 200, || {
        n += 1;
        plain.insert(&2, n).expect("a write");
    });
    println!("## fresh hit, one thread, warm key (median per call)");
    println!("| region | per hit | vs in-memory |");
    println!("|---|---|---|");
    println!("| in-memory (S1) | {:.1} ns | 1.00× |", nanos(s1));
    println!(
        "| near (memory tier over Redis) | {:.1} ns | {:.2}× |",
        nanos(two_tier),
        nanos(two_tier) / nanos(s1)
    );
    println!(
        "| plain Redis | {:.1} µs | {:.0}× |",
        micros(far),
        nanos(far) / nanos(s1)
    );
    println!();
    println!(
        "insert (one thread): near {:.1} µs (the write script publishes), plain Redis {:.1} µs",
        micros(near_write),
        micros(plain_write)
    );
    println!();
}

/// Hits per row of the many-tasks table.
const HITS: usize = 200_000;

fn many_tasks(server: &redis_server::Server, redis: &Redis) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let near = near(redis, "near-tasks").to_async();
    let plain = plain(redis, "plain-tasks").to_async();
    runtime.block_on(async {
        for key in 0..KEYS {
            assert_eq!(near.get_with(&key, || async move { key }).await, key);
            assert_eq!(plain.get_with(&key, || async move { key }).await, key);
        }
        let client = redis::Client::open(server.url()).expect("an address");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("a connection");
        let mut set = connection.clone();
        for key in 0..KEYS {
            redis::cmd("SET")
                .arg(format!("floor:{key}"))
                .arg(key)
                .query_async::<()>(&mut set)
                .await
                .expect("SET");
        }
        let tasks = 100;
        let run = |hits: usize, op: Arc<dyn Fn(u64) -> futures_like::Boxed + Send + Sync>| async move {
            let began = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let op = op.clone();
                    tokio::spawn(async move {
                        let mut key = t as u64;
                        for _ in 0..hits / tasks {
                            op(key).await;
                            key = (key + 7) % KEYS;
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.await.expect("a task");
            }
            hits as f64 / began.elapsed().as_secs_f64()
        };
        let near_rate = run(
            HITS * 10,
            Arc::new(move |key| {
                let near = near.clone();
                Box::pin(async move {
                    assert_eq!(near.get_with(&key, || async { unreachable!() }).await, key);
                })
            }),
        )
        .await;
        let plain_rate = run(
            HITS / 4,
            Arc::new(move |key| {
                let plain = plain.clone();
                Box::pin(async move {
                    assert_eq!(
                        plain.get_with(&key, || async { unreachable!() }).await,
                        key
                    );
                })
            }),
        )
        .await;
        let get_rate = run(
            HITS / 4,
            Arc::new(move |key| {
                let mut c = connection.clone();
                Box::pin(async move {
                    let v: u64 = redis::cmd("GET")
                        .arg(format!("floor:{key}"))
                        .query_async(&mut c)
                        .await
                        .expect("GET");
                    assert_eq!(v, key);
                })
            }),
        )
        .await;
        println!("## 100 async tasks on {KEYS} warm keys, 2 worker threads");
        println!("| what | hits/s | vs raw GET |");
        println!("|---|---|---|");
        println!(
            "| near region | {near_rate:.0} | {:.1}× |",
            near_rate / get_rate
        );
        println!(
            "| plain Redis region | {plain_rate:.0} | {:.2}× |",
            plain_rate / get_rate
        );
        println!("| raw `GET` (redis-rs, multiplexed) | {get_rate:.0} | 1.00× |");
        println!();
    });
}

/// How many changes are timed.
const CHANGES: usize = 1_000;
/// How many times the subscription is cut.
const KILLS: usize = 20;

fn visibility(server: &redis_server::Server) {
    let writer = near(&Redis::open(&server.url()).expect("an address"), "seen");
    let reader = near(&Redis::open(&server.url()).expect("an address"), "seen");
    writer.insert(&1, 0).expect("a write");
    assert_eq!(reader.get_with(&1, || unreachable!()), 0);
    let timed = |change: &dyn Fn(u64), seen: &dyn Fn(u64) -> bool, n: u64| {
        // From the call that makes the change: its own round trips are counted too.
        let began = Instant::now();
        change(n);
        while !seen(n) {
            assert!(began.elapsed() < Duration::from_secs(10), "never seen");
            std::hint::spin_loop();
        }
        began.elapsed()
    };
    let mut writes = Vec::with_capacity(CHANGES);
    let mut invalidations = Vec::with_capacity(CHANGES);
    for n in 1..=CHANGES as u64 {
        writes.push(timed(
            &|n| writer.insert(&1, n).expect("a write"),
            &|n| reader.peek(&1) == Some(n),
            n,
        ));
        // Warm again, then invalidate.
        assert_eq!(reader.get_with(&1, || unreachable!()), n);
        invalidations.push(timed(
            &|_| writer.invalidate(&1).expect("an invalidation"),
            &|_| reader.peek(&1).is_none(),
            n,
        ));
        writer.insert(&1, n).expect("a write");
        while reader.peek(&1) != Some(n) {}
        assert_eq!(reader.get_with(&1, || unreachable!()), n);
    }
    writes.sort();
    invalidations.sort();
    let mut killed = Vec::with_capacity(KILLS);
    let connection = std::cell::RefCell::new(server.connection());
    for k in 0..KILLS as u64 {
        let regained = reader.statistics().near_listener_regained;
        let n = 1_000_000 + k;
        killed.push(timed(
            &|n| {
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query::<u64>(&mut *connection.borrow_mut())
                    .expect("CLIENT KILL");
                writer.insert(&1, n).expect("a write");
            },
            &|n| reader.peek(&1) == Some(n),
            n,
        ));
        while reader.statistics().near_listener_regained == regained {
            thread::sleep(Duration::from_millis(1));
        }
        // Both listeners back: warm the reader again.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(reader.get_with(&1, || unreachable!()), n);
    }
    killed.sort();
    println!("## visibility in another handle (own connections and subscription), loopback");
    println!("| change | median | p99 | max |");
    println!("|---|---|---|---|");
    for (what, times) in [
        ("new value (`insert`)", &writes),
        ("`invalidate`", &invalidations),
        ("new value right after `CLIENT KILL TYPE pubsub`", &killed),
    ] {
        println!(
            "| {what} | {:.0} µs | {:.0} µs | {:.0} µs |",
            micros(percentile(times, 50)),
            micros(percentile(times, 99)),
            micros(*times.last().expect("timed")),
        );
    }
}

mod futures_like {
    /// A boxed future of nothing, for the table's rows.
    pub type Boxed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}
