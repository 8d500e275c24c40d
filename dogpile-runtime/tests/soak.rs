//! A bounded soak: blocking and async callers, background regeneration, creators that panic,
//! fail or are slow, invalidations of every kind, and a bounded store, for about half a
//! minute (`DOGPILE_SOAK_SECS` to change it). Asserts that nothing hangs, no mutex is left held,
//! every value returned belongs to its key, and creator counts are exact where the rules make
//! them so.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::region::Pool;
use dogpile_runtime::{Region, RegionError};

/// A value says which key it was made for, and by which creation.
type Value = (u32, u64);

const KEYS: u32 = 2_000;

fn soak_time() -> Duration {
    let secs = std::env::var("DOGPILE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A small deterministic generator per caller.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A key, skewed: half the calls go to the first 1% of keys.
    fn key(&mut self) -> u32 {
        let n = self.next();
        let range = if n.is_multiple_of(2) {
            KEYS / 100
        } else {
            KEYS
        };
        u32::try_from((n >> 8) % u64::from(range)).unwrap()
    }
}

struct Shared {
    region: Region<u32, Value>,
    creations: AtomicU64,
    stop: AtomicBool,
    calls: AtomicUsize,
    failures_seen: AtomicUsize,
}

/// What a creator does this time: mostly a value, sometimes slow, an error or a panic.
fn create(shared: &Shared, key: u32, roll: u64) -> Result<Value, String> {
    let n = shared.creations.fetch_add(1, Ordering::SeqCst);
    match roll % 100 {
        0 => panic!("creator of {key} panicked, as planned"),
        1..=2 => Err(format!("creator of {key} failed, as planned")),
        3..=5 => {
            thread::sleep(Duration::from_millis(2));
            Ok((key, n))
        }
        _ => Ok((key, n)),
    }
}

fn check(key: u32, result: &Result<Value, RegionError<String>>, shared: &Shared) {
    match result {
        Ok((made_for, _)) => assert_eq!(*made_for, key, "a value served for the wrong key"),
        Err(RegionError::Creator(_)) => {
            shared.failures_seen.fetch_add(1, Ordering::Relaxed);
        }
        Err(other) => panic!("an unexpected region error: {other}"),
    }
}

fn blocking_caller(shared: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    while !shared.stop.load(Ordering::Relaxed) {
        let key = rng.key();
        let roll = rng.next();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| match roll % 3 {
            0 => shared
                .region
                .try_get_with(&key, || create(shared, key, roll >> 8)),
            1 => {
                let keys = [key, key.wrapping_add(1) % KEYS, key];
                shared
                    .region
                    .try_get_with_many(&keys, |asked| {
                        asked
                            .iter()
                            .map(|&k| create(shared, k, (roll >> 8) | 7))
                            .collect()
                    })
                    .map(|values| values[0])
            }
            _ => shared
                .region
                .try_get_with(&key, || create(shared, key, roll >> 8)),
        }));
        if let Ok(result) = outcome {
            check(key, &result, shared);
        }
        shared.calls.fetch_add(1, Ordering::Relaxed);
    }
}

async fn async_caller(shared: Arc<Shared>, seed: u64) {
    let region = shared.region.to_async();
    let mut rng = Rng(seed);
    while !shared.stop.load(Ordering::Relaxed) {
        let key = rng.key();
        let roll = rng.next();
        let result = if roll.is_multiple_of(2) {
            let shared = shared.clone();
            // A spawned task: a panicking creator ends that task only.
            let region = region.clone();
            let task = tokio::spawn(async move {
                region
                    .background()
                    .try_get_with(&key, move || async move { create(&shared, key, roll >> 8) })
                    .await
            });
            match task.await {
                Ok(result) => result,
                Err(_panicked) => continue,
            }
        } else {
            let inner = shared.clone();
            let call = region.try_get_with(&key, || async move {
                tokio::task::yield_now().await;
                create(&inner, key, (roll >> 8) | 1)
            });
            // Some calls are cancelled mid-way, as a request that times out.
            match tokio::time::timeout(Duration::from_micros(roll % 3000), call).await {
                Ok(result) => result,
                Err(_cancelled) => continue,
            }
        };
        check(key, &result, &shared);
        shared.calls.fetch_add(1, Ordering::Relaxed);
    }
}

fn invalidator(shared: &Shared) {
    let mut rng = Rng(99);
    while !shared.stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(20));
        match rng.next() % 10 {
            0 => shared.region.invalidate_all(),
            1 => shared.region.soft_invalidate_all(),
            2..=5 => shared.region.invalidate(&rng.key()),
            _ => shared.region.soft_invalidate(&rng.key()),
        }
        .expect("a memory store never fails");
    }
}

#[test]
fn a_half_minute_of_everything_at_once() {
    // Planned panics are expected; keep the output readable.
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("as planned"));
        if !planned {
            quiet(info);
        }
    }));

    let shared = Arc::new(Shared {
        region: Region::builder()
            .expiry(Duration::from_millis(50))
            .capacity(500)
            .stale_if_error(Duration::from_millis(100))
            .max_stale(Duration::from_secs(1))
            .lock_timeout(Duration::from_secs(5))
            .background(Pool::new(2, 64).unwrap())
            .build()
            .unwrap(),
        creations: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
        failures_seen: AtomicUsize::new(0),
    });

    let (done, finished) = mpsc::channel();
    let mut threads = Vec::new();
    for seed in 1..=3u64 {
        let (shared, done) = (shared.clone(), done.clone());
        threads.push(thread::spawn(move || {
            blocking_caller(&shared, seed * 7919);
            done.send(()).unwrap();
        }));
    }
    {
        let (shared, done) = (shared.clone(), done.clone());
        threads.push(thread::spawn(move || {
            invalidator(&shared);
            done.send(()).unwrap();
        }));
    }
    {
        let (shared, done) = (shared.clone(), done.clone());
        threads.push(thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let tasks: Vec<_> = (1..=8u64)
                    .map(|seed| tokio::spawn(async_caller(shared.clone(), seed * 104_729)))
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
            done.send(()).unwrap();
        }));
    }

    thread::sleep(soak_time());
    shared.stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..threads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        finished
            .recv_timeout(left)
            .expect("a caller hung: it did not stop within 30 s");
    }
    for thread in threads {
        thread.join().unwrap();
    }

    // Background regenerations may still be finishing: every mutex is released soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.region.mutexes_in_use() != 0 {
        assert!(Instant::now() < deadline, "a mutex was left held");
        thread::sleep(Duration::from_millis(5));
    }
    let stats = shared.region.statistics();
    assert!(
        stats.entries <= 500,
        "{} entries over the bound",
        stats.entries
    );
    assert!(
        shared.calls.load(Ordering::Relaxed) > 1_000,
        "too few calls to mean anything: {}",
        shared.calls.load(Ordering::Relaxed)
    );
    assert!(stats.panics > 0 && stats.errors > 0 && stats.stale_on_error > 0);

    // After all that, the rules still hold exactly: 16 threads released together on each of 20
    // new keys, one creator per key.
    let _ = panic::take_hook();
    let created = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let (region, created, barrier) =
                (shared.region.clone(), created.clone(), barrier.clone());
            thread::spawn(move || {
                for key in KEYS..KEYS + 20 {
                    barrier.wait();
                    let value = region.get_with(&key, || {
                        created.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(1));
                        (key, 0)
                    });
                    assert_eq!(value.0, key);
                }
            })
        })
        .collect();
    for thread in burst {
        thread.join().unwrap();
    }
    assert_eq!(created.load(Ordering::SeqCst), 20);
    assert_eq!(shared.region.mutexes_in_use(), 0);
}
