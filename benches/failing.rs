//! An upstream that fails, under a herd: how many upstream calls each cache lets through and how
//! long its slowest caller waits, dogpile beside moka and cached in the same run. `cargo bench
//! --bench failing` prints a markdown table of medians (5 repetitions, each on keys of its own).
//!
//! - F1: 50 threads at once on a new key; the upstream fails after 100 ms.
//! - F2: the same on a key whose value expired 10 ms ago (dogpile with `stale_if_error`, cached
//!   with `result_fallback` (which it allows without `sync_writes` only); moka keeps no
//!   expired value).
//! - F3: F1 with 50 tokio tasks on 2 worker threads.
//!
//! Contenders: dogpile's `Region::try_get_with` (failures shared, 1 s throttle); moka's
//! `try_get_with` (errors shared as `Arc<E>`); cached's `#[cached]` on a `Result` function (only
//! `Ok` stored), with its defaults and with `sync_writes = "by_key"`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cached::macros::cached;
use dogpile::Region;

const CALLERS: usize = 50;
const UPSTREAM: Duration = Duration::from_millis(100);
const TTL: Duration = Duration::from_millis(50);
const REPS: usize = 5;

static CALLS: AtomicUsize = AtomicUsize::new(0);
static FAILING: AtomicBool = AtomicBool::new(false);

/// The upstream: 100 ms, then an error while `FAILING`.
fn upstream(key: u64) -> Result<u64, String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    thread::sleep(UPSTREAM);
    if FAILING.load(Ordering::SeqCst) {
        Err(format!("the upstream is down for {key}"))
    } else {
        Ok(key)
    }
}

async fn upstream_async(key: u64) -> Result<u64, String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(UPSTREAM).await;
    if FAILING.load(Ordering::SeqCst) {
        Err(format!("the upstream is down for {key}"))
    } else {
        Ok(key)
    }
}

#[cached(ttl_millis = 50, result_fallback = true)]
fn cached_default(key: u64) -> Result<u64, String> {
    upstream(key)
}

#[cached(ttl_millis = 50, sync_writes = "by_key")]
fn cached_by_key(key: u64) -> Result<u64, String> {
    upstream(key)
}

#[cached(ttl_millis = 50)]
async fn cached_async(key: u64) -> Result<u64, String> {
    upstream_async(key).await
}

#[cached(ttl_millis = 50, sync_writes = "by_key")]
async fn cached_async_by_key(key: u64) -> Result<u64, String> {
    upstream_async(key).await
}

/// A blocking get-or-create that can fail, for each contender.
type Call = Arc<dyn Fn(u64) -> Result<u64, String> + Send + Sync>;

fn contender(name: &str) -> Call {
    match name {
        "dogpile" => {
            let region: Region<u64, u64> = Region::builder()
                .expiry(TTL)
                .stale_if_error(Duration::from_secs(60))
                .build()
                .unwrap();
            Arc::new(move |key| {
                region
                    .try_get_with(&key, || upstream(key))
                    .map_err(|e| e.to_string())
            })
        }
        "moka" => {
            let cache = moka::sync::Cache::builder().time_to_live(TTL).build();
            Arc::new(move |key| {
                cache
                    .try_get_with(key, || upstream(key))
                    .map_err(|e| e.to_string())
            })
        }
        "cached" => Arc::new(cached_default),
        "cached by_key" => Arc::new(cached_by_key),
        other => panic!("unknown contender {other}"),
    }
}

/// One herd: the upstream calls, the errors, and the slowest caller.
struct Herd {
    calls: usize,
    errors: usize,
    slowest: Duration,
}

fn herd(call: &Call, key: u64) -> Herd {
    CALLS.store(0, Ordering::SeqCst);
    let barrier = Arc::new(Barrier::new(CALLERS));
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (call, barrier) = (call.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let failed = call(key).is_err();
                (failed, start.elapsed())
            })
        })
        .collect();
    let mut herd = Herd {
        calls: 0,
        errors: 0,
        slowest: Duration::ZERO,
    };
    for thread in threads {
        let (failed, took) = thread.join().unwrap();
        herd.errors += usize::from(failed);
        herd.slowest = herd.slowest.max(took);
    }
    herd.calls = CALLS.load(Ordering::SeqCst);
    herd
}

/// F1 (`stale` false) or F2: a fresh contender per repetition, on a key of its own.
fn blocking(name: &str, rep: usize, stale: bool) -> Herd {
    let call = contender(name);
    let key = rep as u64 + if stale { 1_000 } else { 0 };
    if stale {
        FAILING.store(false, Ordering::SeqCst);
        call(key).unwrap();
        thread::sleep(TTL + Duration::from_millis(10));
    }
    FAILING.store(true, Ordering::SeqCst);
    herd(&call, key)
}

/// F3: 50 tasks on a new key.
fn tasks(name: &str, rep: usize) -> Herd {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let key = 2_000 + rep as u64;
    FAILING.store(true, Ordering::SeqCst);
    CALLS.store(0, Ordering::SeqCst);
    let region: Region<u64, u64> = Region::builder().expiry(TTL).build().unwrap();
    let moka = moka::future::Cache::builder().time_to_live(TTL).build();
    let results = runtime.block_on(async {
        let handles: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (name, region, moka) = (name.to_string(), region.to_async(), moka.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let failed = match name.as_str() {
                        "dogpile" => region
                            .try_get_with(&key, || upstream_async(key))
                            .await
                            .is_err(),
                        "moka" => moka.try_get_with(key, upstream_async(key)).await.is_err(),
                        "cached" => cached_async(key).await.is_err(),
                        "cached by_key" => cached_async_by_key(key).await.is_err(),
                        other => panic!("unknown contender {other}"),
                    };
                    (failed, start.elapsed())
                })
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.unwrap());
        }
        results
    });
    Herd {
        calls: CALLS.load(Ordering::SeqCst),
        errors: results.iter().filter(|(failed, _)| *failed).count(),
        slowest: results
            .iter()
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default(),
    }
}

/// One scenario, run for a contender and a repetition.
type Scenario = dyn Fn(&str, usize) -> Herd;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let names = ["dogpile", "moka", "cached", "cached by_key"];
    let scenarios: [(&str, &Scenario); 3] = [
        (
            "F1 50 threads, new key, upstream fails after 100 ms",
            &|n, r| blocking(n, r, false),
        ),
        ("F2 the same, the key's value expired 10 ms ago", &|n, r| {
            blocking(n, r, true)
        }),
        ("F3 F1 with 50 tokio tasks", &tasks),
    ];
    println!("Medians of {REPS} repetitions, each on a key of its own.\n");
    for (title, run) in scenarios {
        println!("| {title} | upstream calls | callers given an error | slowest caller, ms |");
        println!("|---|---|---|---|");
        for name in names {
            let herds: Vec<Herd> = (0..REPS).map(|rep| run(name, rep)).collect();
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} |",
                median(herds.iter().map(|h| h.calls as f64).collect()),
                median(herds.iter().map(|h| h.errors as f64).collect()),
                median(
                    herds
                        .iter()
                        .map(|h| h.slowest.as_secs_f64() * 1e3)
                        .collect()
                ),
            );
        }
        println!();
    }
}
