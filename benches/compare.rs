//! dogpile beside the caches users would otherwise pick, on the scenarios that matter for a
//! dogpile lock. `cargo bench --bench compare` runs every scenario, each repetition in a fresh
//! process (this binary, run with `--run SCENARIO CONTENDER`), contenders in rotating order,
//! and prints medians and ratios against dogpile as a markdown table; it also writes them to
//! `target/bench/compare.md` and `target/bench/compare.json`.
//!
//! - S1 fresh hit, 1,000 keys preloaded, one thread: ns/op, with the keys in a pseudo-random
//!   order and in order (0, 1, 2, ...)
//! - S2 the same on two threads: Mops/s, and its ratio to one thread; once more with `u64`
//!   values, whose clones write nothing shared, for the caches' own scaling
//! - S3 fresh hit of a function without arguments: ns/op
//! - S1a the fresh hit of S1 awaited in an async task (one thread, tokio's current-thread
//!   runtime): `AsyncRegion::get_with`, `#[dogpile]` on an `async fn`, moka's `future::Cache`,
//!   beside the blocking `Region::get_with` in the same run: ns/op
//! - S4 32 threads released together on one missing key, creator 20 ms: creator calls, wall ms
//! - S5 expiry 100 ms, creator 100 ms, 32 threads calling for 250 ms (one expiry, at 100 ms;
//!   the next falls due near 300 ms, where a clock tick would decide whether it is in the run):
//!   creator calls; for the calls that did not run the creator, the slowest and how many took
//!   over 1 ms
//! - S6 1,000,000 distinct keys through get-or-create: bytes per key (resident memory
//!   growth) and ns per insert
//! - S7-S9 a cache bounded to 10,000 values (`compare/bounded.rs`): Zipf(0.9) over 1,000,000
//!   keys, the same with bursts of one-time keys, and pure churn: hit ratio, ns/op, peak
//!   resident memory, slowest call
//!
//! Options: `--callgrind` adds instructions per op for S1 (both orders), S1a and S3 (`valgrind --tool=callgrind`,
//! difference of two run lengths); `--plot FILE.svg` draws the slowest reader of S5 over time
//! for dogpile, moka and cached (the README's `docs/reader-latency.svg`); `--reps N` (default 5).
//! `--hits LOOP CONTENDER N` runs one loop alone, for callgrind by hand: `s1`, `s1_in_order`,
//! `s1a`, `s3`, `misses` (N new keys through a cache full at 10,000 `u64` values),
//! `misses_async` (the same awaited in a task: `dogpile async` or `moka future`), or
//! `misses_str` (the same by `String` keys read as `&str`: `dogpile`, `moka`, `quick_cache`).
//!
//! Built with `--features metrics`, each repetition first installs a Prometheus recorder
//! (`metrics-exporter-prometheus`), so that dogpile's counts reach real counters: the cost of
//! the feature as a service pays it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use cached::{Cached, TtlCache};
use dogpile::dogpile;
use dogpile::Region;

#[path = "compare/bounded.rs"]
mod bounded;
#[path = "compare/zipf.rs"]
mod zipf;

type Value = Arc<str>;

/// A cached value type: `Arc<str>` everywhere, and `u64` for a second S2, whose clones write
/// nothing shared (so it shows the cache's own scaling, without the values' reference counts).
trait BenchValue: Clone + Send + Sync + 'static {
    fn make(k: u64) -> Self;
}

impl BenchValue for Arc<str> {
    fn make(k: u64) -> Self {
        value(k)
    }
}

impl BenchValue for u64 {
    fn make(k: u64) -> Self {
        k * 3
    }
}

const KEYS: u64 = 1_000;
const HIT_ITERS: u64 = 3_000_000;
const HOUR: Duration = Duration::from_secs(3600);

fn value(k: u64) -> Value {
    Arc::from(format!("value number {k:>20}"))
}

// ---- the contenders -----------------------------------------------------------------------

/// What a memoized function does, for each contender: a get-or-create.
trait Contender<V = Value>: Send + Sync {
    fn get_with(&self, key: u64, create: &dyn Fn() -> V) -> V;
}

struct DogpileRegion<V: BenchValue>(Region<u64, V>);
impl<V: BenchValue> Contender<V> for DogpileRegion<V> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> V) -> V {
        self.0.get_with(&key, create)
    }
}

#[dogpile(expire = 3600, capacity = 2_000_000)]
fn memoized(key: u64) -> Value {
    value(key)
}

/// The attribute's own path: only for hits (its body makes `value(key)`).
struct DogpileAttribute;
impl Contender for DogpileAttribute {
    #[inline]
    fn get_with(&self, key: u64, _: &dyn Fn() -> Value) -> Value {
        memoized(key)
    }
}

struct Moka<V>(moka::sync::Cache<u64, V>);
impl<V: BenchValue> Contender<V> for Moka<V> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> V) -> V {
        self.0.get_with(key, create)
    }
}

/// What `#[cached(ttl = ...)]` expands to: a TTL store behind a mutex, checked under the lock,
/// computed outside it, then inserted.
struct CachedTtl<V>(Mutex<TtlCache<u64, V>>);
impl<V: BenchValue> Contender<V> for CachedTtl<V> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> V) -> V {
        if let Some(v) = self.0.lock().unwrap().cache_get(&key) {
            return v.clone();
        }
        let v = create();
        self.0.lock().unwrap().cache_set(key, v.clone());
        v
    }
}

/// No expiry at all: a floor for a concurrent map read and clone.
struct QuickCache<V: BenchValue>(quick_cache::sync::Cache<u64, V>);
impl<V: BenchValue> Contender<V> for QuickCache<V> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> V) -> V {
        self.0
            .get_or_insert_with(&key, || Ok::<_, ()>(create()))
            .unwrap_or_else(|()| unreachable!())
    }
}

fn contender(name: &str, ttl: Duration, capacity: usize) -> Arc<dyn Contender> {
    match name {
        "dogpile #[dogpile]" => Arc::new(DogpileAttribute),
        other => contender_of(other, ttl, capacity),
    }
}

fn contender_of<V: BenchValue>(
    name: &str,
    ttl: Duration,
    capacity: usize,
) -> Arc<dyn Contender<V>> {
    match name {
        "dogpile" => Arc::new(DogpileRegion(
            Region::builder()
                .expiry(ttl)
                .capacity(capacity)
                .build()
                .unwrap(),
        )),
        "moka" => Arc::new(Moka(
            moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .time_to_live(ttl)
                .build(),
        )),
        "cached" => Arc::new(CachedTtl(Mutex::new(TtlCache::new(ttl)))),
        "quick_cache" => Arc::new(QuickCache(quick_cache::sync::Cache::new(capacity))),
        "cached LRU" => Arc::new(bounded::CachedLru::new(capacity)),
        other => panic!("unknown contender {other}"),
    }
}

// ---- the scenarios, each in its own process -------------------------------------------------

/// Reads `iters` keys in a fixed pseudo-random order; the elapsed time.
fn read_loop<V>(cache: &dyn Contender<V>, iters: u64, seed: u64, keys: u64) -> Duration {
    let mut x = seed | 1;
    let miss = || -> V { unreachable!("preloaded") };
    let start = Instant::now();
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        black_box(cache.get_with(black_box(x % keys), &miss));
    }
    start.elapsed()
}

/// Reads `iters` keys in order, 0 to `keys - 1` and around again; the elapsed time.
fn read_loop_in_order<V>(cache: &dyn Contender<V>, iters: u64, keys: u64) -> Duration {
    let miss = || -> V { unreachable!("preloaded") };
    let mut key = 0;
    let start = Instant::now();
    for _ in 0..iters {
        black_box(cache.get_with(black_box(key), &miss));
        key += 1;
        if key == keys {
            key = 0;
        }
    }
    start.elapsed()
}

fn preloaded(name: &str, keys: u64) -> Arc<dyn Contender> {
    let cache = contender(name, HOUR, 10_000);
    for k in 0..keys {
        cache.get_with(k, &|| value(k));
    }
    cache
}

fn preloaded_of<V: BenchValue>(name: &str, keys: u64) -> Arc<dyn Contender<V>> {
    let cache = contender_of::<V>(name, HOUR, 10_000);
    for k in 0..keys {
        cache.get_with(k, &|| V::make(k));
    }
    cache
}

fn s1_s2(name: &str, iters: u64) -> BTreeMap<&'static str, f64> {
    let cache = preloaded(name, KEYS);
    let mut figures = hits_on_one_and_two_threads(cache.clone(), iters);
    let in_order = read_loop_in_order(&*cache, iters, KEYS);
    figures.insert("s1_in_order_ns", in_order.as_nanos() as f64 / iters as f64);
    figures
}

fn s2_u64(name: &str, iters: u64) -> BTreeMap<&'static str, f64> {
    let figures = hits_on_one_and_two_threads(preloaded_of::<u64>(name, KEYS), iters);
    BTreeMap::from([
        ("u64_s1_ns", figures["s1_ns"]),
        ("u64_s2_mops", figures["s2_mops"]),
        ("u64_s2_scaling", figures["s2_scaling"]),
    ])
}

fn hits_on_one_and_two_threads<V>(
    cache: Arc<dyn Contender<V>>,
    iters: u64,
) -> BTreeMap<&'static str, f64> {
    read_loop(&*cache, iters / 10, 3, KEYS); // warm up
    let one = read_loop(&*cache, iters, 7, KEYS);
    let barrier = Arc::new(Barrier::new(2));
    let start = Instant::now();
    thread::scope(|s| {
        for seed in [7, 11] {
            let (cache, barrier) = (&cache, barrier.clone());
            s.spawn(move || {
                barrier.wait();
                read_loop(&**cache, iters, seed, KEYS)
            });
        }
    });
    let two = start.elapsed();
    let s1 = one.as_nanos() as f64 / iters as f64;
    let s2 = 2.0 * iters as f64 / two.as_secs_f64() / 1e6;
    BTreeMap::from([
        ("s1_ns", s1),
        ("s2_mops", s2),
        ("s2_scaling", s2 / (1e3 / s1)),
    ])
}

#[dogpile(expire = 3600)]
fn config() -> Value {
    value(0)
}

static ONCE: OnceLock<Value> = OnceLock::new();

fn s3(name: &str, iters: u64) -> BTreeMap<&'static str, f64> {
    let elapsed = match name {
        "dogpile #[dogpile]" => {
            config();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(config());
            }
            start.elapsed()
        }
        "OnceLock" => {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(black_box(&ONCE).get_or_init(|| value(0)).clone());
            }
            start.elapsed()
        }
        _ => {
            let cache = preloaded(name, 1);
            read_loop(&*cache, iters, 7, 1)
        }
    };
    BTreeMap::from([("s3_ns", elapsed.as_nanos() as f64 / iters as f64)])
}

#[dogpile(expire = 3600, capacity = 10_000)]
async fn memoized_async(key: u64) -> Value {
    value(key)
}

/// S1's random-order hits, awaited in one task of a current-thread runtime; the elapsed time.
fn s1_async_loop(name: &str, iters: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let miss = || async { unreachable!("preloaded") };
        let next = |x: &mut u64| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            black_box(*x % KEYS)
        };
        let mut x = 7u64;
        match name {
            "dogpile async" => {
                let region = Region::<u64, Value>::builder()
                    .expiry(HOUR)
                    .capacity(10_000)
                    .build()
                    .unwrap()
                    .to_async();
                for k in 0..KEYS {
                    region.get_with(&k, || async move { value(k) }).await;
                }
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(region.get_with(&next(&mut x), miss).await);
                }
                start.elapsed()
            }
            "dogpile async #[dogpile]" => {
                for k in 0..KEYS {
                    memoized_async(k).await;
                }
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(memoized_async(next(&mut x)).await);
                }
                start.elapsed()
            }
            "moka future" => {
                let cache: moka::future::Cache<u64, Value> = moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(HOUR)
                    .build();
                for k in 0..KEYS {
                    cache.get_with(k, async move { value(k) }).await;
                }
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.get_with(next(&mut x), miss()).await);
                }
                start.elapsed()
            }
            blocking => {
                let cache = preloaded(blocking, KEYS);
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.get_with(next(&mut x), &|| unreachable!("preloaded")));
                }
                start.elapsed()
            }
        }
    })
}

fn s1_async(name: &str, iters: u64) -> BTreeMap<&'static str, f64> {
    let elapsed = s1_async_loop(name, iters);
    BTreeMap::from([("s1a_ns", elapsed.as_nanos() as f64 / iters as f64)])
}

fn s4(name: &str) -> BTreeMap<&'static str, f64> {
    const THREADS: usize = 32;
    let cache = contender(name, HOUR, 10_000);
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                cache.get_with(1, &|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    value(1)
                })
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    BTreeMap::from([
        ("s4_creator_calls", calls.load(Ordering::SeqCst) as f64),
        ("s4_wall_ms", start.elapsed().as_secs_f64() * 1e3),
    ])
}

thread_local! {
    static CREATED_HERE: Cell<bool> = const { Cell::new(false) };
}

/// S5's calls: (time since start, latency, ran the creator).
/// How long S5's threads call: past the one expiry and its regeneration, and clear of the
/// next expiry, so that every contender has exactly one regeneration to make.
const S5_RUN: Duration = Duration::from_millis(250);

fn s5_calls(name: &str) -> (Vec<(Duration, Duration, bool)>, usize) {
    const THREADS: usize = 32;
    let ttl = Duration::from_millis(100);
    let cache = contender(name, ttl, 10_000);
    let calls = Arc::new(AtomicUsize::new(0));
    let create = {
        let calls = calls.clone();
        move || {
            CREATED_HERE.with(|c| c.set(true));
            calls.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(100));
            value(1)
        }
    };
    cache.get_with(1, &create); // the first value, before the measured run
    let created_before = calls.load(Ordering::SeqCst);
    let barrier = Arc::new(Barrier::new(THREADS));
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (cache, barrier, create) = (cache.clone(), barrier.clone(), create.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut seen = Vec::new();
                while start.elapsed() < S5_RUN {
                    CREATED_HERE.with(|c| c.set(false));
                    let asked = Instant::now();
                    black_box(cache.get_with(1, &create));
                    let took = asked.elapsed();
                    seen.push((asked - start, took, CREATED_HERE.with(Cell::get)));
                    thread::sleep(Duration::from_micros(500));
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap());
    }
    (all, calls.load(Ordering::SeqCst) - created_before)
}

fn s5(name: &str) -> BTreeMap<&'static str, f64> {
    let (calls, creations) = s5_calls(name);
    let others: Vec<Duration> = calls
        .iter()
        .filter(|(_, _, created)| !created)
        .map(|(_, took, _)| *took)
        .collect();
    BTreeMap::from([
        ("s5_creator_calls", creations as f64),
        (
            "s5_max_wait_ms",
            others
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
        ),
        (
            "s5_over_1ms",
            others
                .iter()
                .filter(|t| **t > Duration::from_millis(1))
                .count() as f64,
        ),
        ("s5_calls", calls.len() as f64),
    ])
}

fn resident_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

fn s6(name: &str) -> BTreeMap<&'static str, f64> {
    const N: u64 = 1_000_000;
    let cache = contender(name, HOUR, 2_000_000);
    let before = resident_bytes();
    let start = Instant::now();
    for k in 0..N {
        black_box(cache.get_with(k, &|| value(k)));
    }
    let elapsed = start.elapsed();
    let after = resident_bytes();
    black_box(&cache);
    // The values themselves (an Arc<str> of 36 bytes: 52 with its counts, 64 allocated) are
    // the same for everyone and included.
    BTreeMap::from([
        ("s6_bytes_per_key", (after - before) / N as f64),
        ("s6_ns_per_insert", elapsed.as_nanos() as f64 / N as f64),
    ])
}

fn run_one(scenario: &str, name: &str, iters: Option<u64>) -> BTreeMap<&'static str, f64> {
    match scenario {
        "s1" => s1_s2(name, iters.unwrap_or(HIT_ITERS)),
        "s2u64" => s2_u64(name, iters.unwrap_or(HIT_ITERS)),
        "s3" => s3(name, iters.unwrap_or(HIT_ITERS)),
        "s1a" => s1_async(name, iters.unwrap_or(HIT_ITERS)),
        "s4" => s4(name),
        "s5" => s5(name),
        "s6" => s6(name),
        "s7" | "s8" | "s9" => bounded::run(scenario, name),
        other => panic!("unknown scenario {other}"),
    }
}

/// One hit loop only (no second thread), for callgrind.
fn run_hits_only(scenario: &str, name: &str, iters: u64) {
    match scenario {
        "s1" => {
            let cache = preloaded(name, KEYS);
            read_loop(&*cache, iters, 7, KEYS);
        }
        // S1 on a region large enough (131,072 values) that its policy samples keys for its
        // miniature simulations: one key in 16 logs its hits.
        "s1_sampling" => {
            let cache = contender(name, HOUR, 1 << 17);
            for k in 0..KEYS {
                cache.get_with(k, &|| value(k));
            }
            read_loop(&*cache, iters, 7, KEYS);
        }
        "s1_in_order" => {
            let cache = preloaded(name, KEYS);
            read_loop_in_order(&*cache, iters, KEYS);
        }
        "s1a" => {
            s1_async_loop(name, iters);
        }
        // Misses only, through a cache full at 10,000 `u64` values: each makes a new key
        // (nothing to compute) and evicts one.
        "misses" => {
            let cache = contender_of::<u64>(name, HOUR, 10_000);
            for k in 0..20_000 {
                cache.get_with(k, &|| k);
            }
            for k in 20_000..20_000 + iters {
                black_box(cache.get_with(black_box(k), &|| k));
            }
        }
        // The same misses by `String` keys, each read by a borrowed `&str` as a service reads
        // its keys (a request's path or id): what the owned keys cost each cache beyond `u64`
        // keys. The key is written into one reused buffer (the same work for every contender).
        "misses_str" => string_misses(name, iters),
        // The same misses awaited in one task (current-thread runtime): `dogpile async`
        // (`AsyncRegion::get_with`) or `moka future`.
        "misses_async" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                match name {
                    "dogpile async" => {
                        let region = Region::<u64, u64>::builder()
                            .expiry(HOUR)
                            .capacity(10_000)
                            .build()
                            .unwrap()
                            .to_async();
                        for k in 0..20_000 + iters {
                            black_box(region.get_with(&black_box(k), || async move { k }).await);
                        }
                    }
                    "moka future" => {
                        let cache: moka::future::Cache<u64, u64> = moka::future::Cache::builder()
                            .max_capacity(10_000)
                            .time_to_live(HOUR)
                            .build();
                        for k in 0..20_000 + iters {
                            black_box(cache.get_with(black_box(k), async move { k }).await);
                        }
                    }
                    other => panic!("unknown async contender {other}"),
                }
            });
        }
        _ => {
            s3(name, iters);
        }
    }
}

/// `misses` by `String` keys read as `&str`: `dogpile`, `moka` (`get_with_by_ref`) or
/// `quick_cache` (`get_or_insert_with`), each full at 10,000 values first.
fn string_misses(name: &str, iters: u64) {
    /// `k` as 16 hex digits after a fixed prefix, in `buffer`.
    fn key(buffer: &mut String, k: u64) -> &str {
        buffer.truncate(4);
        for shift in (0..16).rev() {
            let digit = (k >> (shift * 4)) & 0xf;
            buffer.push(char::from_digit(digit as u32, 16).unwrap_or('0'));
        }
        buffer
    }
    let mut buffer = String::from("key-");
    // 20,000 to fill the cache and evict, then the `iters` measured.
    let keys = 0..20_000 + iters;
    match name {
        "dogpile" => {
            let region = Region::<String, u64>::builder()
                .expiry(HOUR)
                .capacity(10_000)
                .build()
                .unwrap();
            for k in keys {
                black_box(region.get_with(key(&mut buffer, black_box(k)), || k));
            }
        }
        "moka" => {
            let cache: moka::sync::Cache<String, u64> = moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(HOUR)
                .build();
            for k in keys {
                black_box(cache.get_with_by_ref(key(&mut buffer, black_box(k)), || k));
            }
        }
        "quick_cache" => {
            let cache = quick_cache::sync::Cache::<String, u64>::new(10_000);
            for k in keys {
                let made = cache.get_or_insert_with(key(&mut buffer, black_box(k)), || {
                    Ok::<_, std::convert::Infallible>(k)
                });
                black_box(made.unwrap_or_else(|never| match never {}));
            }
        }
        other => panic!("unknown contender {other} for misses_str"),
    }
}

// ---- the orchestration ----------------------------------------------------------------------

const SCENARIOS: [(&str, &[&str]); 10] = [
    (
        "s1",
        &[
            "dogpile",
            "dogpile #[dogpile]",
            "moka",
            "cached",
            "quick_cache",
        ],
    ),
    ("s2u64", &["dogpile", "moka", "cached", "quick_cache"]),
    (
        "s3",
        &[
            "dogpile #[dogpile]",
            "OnceLock",
            "moka",
            "cached",
            "quick_cache",
        ],
    ),
    (
        "s1a",
        &[
            "dogpile",
            "dogpile async",
            "dogpile async #[dogpile]",
            "moka future",
        ],
    ),
    ("s4", &["dogpile", "moka", "cached", "quick_cache"]),
    ("s5", &["dogpile", "moka", "cached"]),
    ("s6", &["dogpile", "moka", "cached", "quick_cache"]),
    ("s7", &["dogpile", "moka", "cached LRU", "quick_cache"]),
    ("s8", &["dogpile", "moka", "cached LRU", "quick_cache"]),
    ("s9", &["dogpile", "moka", "cached LRU", "quick_cache"]),
];

fn child(args: &[&str]) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .expect("running a repetition");
    assert!(
        output.status.success(),
        "a repetition failed: {args:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn parse(line: &str) -> BTreeMap<String, f64> {
    line.trim()
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn callgrind_per_op(scenario: &str, name: &str) -> Option<f64> {
    let count = |iters: u64| -> Option<f64> {
        let output = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(std::env::current_exe().unwrap())
            .args(["--hits", scenario, name, &iters.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stderr);
        let line = text.lines().find(|l| l.contains("Collected"))?;
        line.split(':').nth(1)?.trim().replace(',', "").parse().ok()
    };
    Some((count(400_000)? - count(200_000)?) / 200_000.0)
}

/// With the `metrics` feature, a repetition reports to a Prometheus recorder, as a service
/// would.
fn install_recorder() {
    // Without its upkeep thread, whose runs would blur the instruction counts.
    #[cfg(feature = "metrics")]
    metrics::set_global_recorder(
        metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
    )
    .expect("installing the Prometheus recorder");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| args.iter().position(|a| a == flag).map(|i| i + 1);
    if arg("--run").is_some() || arg("--hits").is_some() {
        install_recorder();
    }
    if let Some(i) = arg("--run") {
        let iters = arg("--iters").map(|j| args[j].parse().unwrap());
        let result = run_one(&args[i], &args[i + 1], iters);
        let line: Vec<String> = result.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", line.join(" "));
        return;
    }
    if let Some(i) = arg("--hits") {
        run_hits_only(&args[i], &args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if let Some(i) = arg("--plot") {
        plot(&args[i]);
        return;
    }
    let reps: usize = arg("--reps").map_or(5, |i| args[i].parse().unwrap());
    let callgrind = args.iter().any(|a| a == "--callgrind");
    // `--only s1,s7`: these scenarios only.
    let only: Option<Vec<&str>> = arg("--only").map(|i| args[i].split(',').collect());

    // results[scenario][contender][metric] = every repetition's figure
    let mut results: BTreeMap<&str, BTreeMap<&str, BTreeMap<String, Vec<f64>>>> = BTreeMap::new();
    for rep in 0..reps {
        for (scenario, names) in SCENARIOS {
            if only.as_ref().is_some_and(|only| !only.contains(&scenario)) {
                continue;
            }
            if matches!(scenario, "s6" | "s7" | "s8" | "s9") && rep >= 3 {
                continue; // slow, and steady: three are enough
            }
            for turn in 0..names.len() {
                let name = names[(turn + rep) % names.len()];
                let line = child(&["--run", scenario, name]);
                for (metric, figure) in parse(&line) {
                    results
                        .entry(scenario)
                        .or_default()
                        .entry(name)
                        .or_default()
                        .entry(metric)
                        .or_default()
                        .push(figure);
                }
            }
        }
        eprintln!("repetition {} of {reps} done", rep + 1);
    }
    let mut medians: BTreeMap<&str, BTreeMap<&str, BTreeMap<String, f64>>> = BTreeMap::new();
    for (scenario, by_name) in &results {
        for (name, metrics) in by_name {
            for (metric, figures) in metrics {
                medians
                    .entry(scenario)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(metric.clone(), median(figures.clone()));
            }
        }
    }
    if callgrind {
        let measured = [
            ("s1", "s1"),
            ("s1", "s1_in_order"),
            ("s1a", "s1a"),
            ("s3", "s3"),
        ];
        for (scenario, loop_name) in measured {
            if only.as_ref().is_some_and(|only| !only.contains(&scenario)) {
                continue;
            }
            let names = SCENARIOS
                .iter()
                .find(|(s, _)| *s == scenario)
                .map_or(&[][..], |(_, n)| *n);
            for name in names {
                if let Some(per_op) = callgrind_per_op(loop_name, name) {
                    medians
                        .entry(scenario)
                        .or_default()
                        .entry(name)
                        .or_default()
                        .insert(format!("{loop_name}_instructions"), per_op);
                }
            }
        }
    }
    let markdown = report(&medians, reps);
    print!("{markdown}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("compare.md"), &markdown);
    let _ = std::fs::write(dir.join("compare.json"), json(&medians));
}

type Medians<'a> = BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<String, f64>>>;

fn report(m: &Medians, reps: usize) -> String {
    let get = |s: &str, n: &str, k: &str| {
        m.get(s)
            .and_then(|x| x.get(n))
            .and_then(|x| x.get(k))
            .copied()
    };
    let ratio = |s: &str, n: &str, k: &str, base: &str| match (get(s, n, k), get(s, base, k)) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let fmt = |x: Option<f64>, digits: usize| x.map_or("-".into(), |x| format!("{x:.digits$}"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Medians of {reps} repetitions, each in a fresh process, contenders in rotating order.\n"
    );
    let _ = writeln!(out, "| S1/S2 keyed fresh hit | S1 ns/op, random order | vs quick_cache | instr/op | S1 ns/op, in order | vs quick_cache | instr/op | S2 Mops/s | S2/S1 scaling |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (_, names) in &SCENARIOS[..1] {
        for n in *names {
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt(get("s1", n, "s1_ns"), 1),
                ratio("s1", n, "s1_ns", "quick_cache"),
                fmt(get("s1", n, "s1_instructions"), 0),
                fmt(get("s1", n, "s1_in_order_ns"), 1),
                ratio("s1", n, "s1_in_order_ns", "quick_cache"),
                fmt(get("s1", n, "s1_in_order_instructions"), 0),
                fmt(get("s1", n, "s2_mops"), 1),
                fmt(get("s1", n, "s2_scaling"), 2),
            );
        }
    }
    let names = |scenario: &str| {
        SCENARIOS
            .iter()
            .find(|(s, _)| *s == scenario)
            .map_or(&[][..], |(_, n)| *n)
    };
    let _ = writeln!(out, "\n| S2 again, `u64` values (clones write nothing shared) | S1 ns/op | S2 Mops/s | S2/S1 scaling |");
    let _ = writeln!(out, "|---|---|---|---|");
    for n in names("s2u64") {
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} |",
            fmt(get("s2u64", n, "u64_s1_ns"), 1),
            fmt(get("s2u64", n, "u64_s2_mops"), 1),
            fmt(get("s2u64", n, "u64_s2_scaling"), 2),
        );
    }
    let _ = writeln!(
        out,
        "\n| S3 function without arguments | ns/op | vs OnceLock | instr/op |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for n in names("s3") {
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} |",
            fmt(get("s3", n, "s3_ns"), 1),
            ratio("s3", n, "s3_ns", "OnceLock"),
            fmt(get("s3", n, "s3_instructions"), 0),
        );
    }
    let _ = writeln!(
        out,
        "\n| S1a fresh hit awaited in a task | ns/op | vs blocking dogpile | instr/op |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for n in names("s1a") {
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} |",
            fmt(get("s1a", n, "s1a_ns"), 1),
            ratio("s1a", n, "s1a_ns", "dogpile"),
            fmt(get("s1a", n, "s1a_instructions"), 0),
        );
    }
    let _ = writeln!(
        out,
        "\n| S4 32 threads, one missing key, creator 20 ms | creator calls | wall ms |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for n in names("s4") {
        let _ = writeln!(
            out,
            "| {n} | {} | {} |",
            fmt(get("s4", n, "s4_creator_calls"), 0),
            fmt(get("s4", n, "s4_wall_ms"), 1),
        );
    }
    let _ = writeln!(out, "\n| S5 expiry 100 ms, creator 100 ms, 32 threads for 250 ms | creator calls | calls | other calls over 1 ms | slowest other call ms |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for n in names("s5") {
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} | {} |",
            fmt(get("s5", n, "s5_creator_calls"), 0),
            fmt(get("s5", n, "s5_calls"), 0),
            fmt(get("s5", n, "s5_over_1ms"), 0),
            fmt(get("s5", n, "s5_max_wait_ms"), 1),
        );
    }
    let _ = writeln!(
        out,
        "\n| S6 1,000,000 keys | bytes/key | vs dogpile | ns/insert | vs dogpile |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for n in names("s6") {
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} | {} |",
            fmt(get("s6", n, "s6_bytes_per_key"), 0),
            ratio("s6", n, "s6_bytes_per_key", "dogpile"),
            fmt(get("s6", n, "s6_ns_per_insert"), 0),
            ratio("s6", n, "s6_ns_per_insert", "dogpile"),
        );
    }
    for (scenario, title) in [
        ("s7", "S7 Zipf(0.9), 1M keys, capacity 10,000, 2M requests"),
        (
            "s8",
            "S8 S7 with a burst of 20,000 one-time keys in every 50,000 requests",
        ),
        ("s9", "S9 4M distinct keys, capacity 10,000"),
    ] {
        let _ = writeln!(
            out,
            "\n| {title} | hit ratio | ns/op | peak RSS MB | slowest call, CPU µs (lower of 2 runs) | slowest call, wall µs |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for n in names(scenario) {
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {} |",
                fmt(get(scenario, n, "hit_ratio"), 4),
                fmt(get(scenario, n, "ns_per_op"), 0),
                fmt(get(scenario, n, "peak_mb"), 1),
                fmt(get(scenario, n, "slowest_cpu_us"), 0),
                fmt(get(scenario, n, "slowest_wall_us"), 0),
            );
        }
    }
    out
}

fn json(m: &Medians) -> String {
    let mut out = String::from("{\n");
    let scenarios: Vec<String> = m
        .iter()
        .map(|(s, by_name)| {
            let names: Vec<String> = by_name
                .iter()
                .map(|(n, metrics)| {
                    let fields: Vec<String> = metrics
                        .iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    format!("    \"{n}\": {{ {} }}", fields.join(", "))
                })
                .collect();
            format!("  \"{s}\": {{\n{}\n  }}", names.join(",\n"))
        })
        .collect();
    out.push_str(&scenarios.join(",\n"));
    out.push_str("\n}\n");
    out
}

/// The README's plot: for each contender, the slowest S5 call that did not run the creator in
/// each 5 ms of the run (log scale), so a regeneration that makes readers wait shows as a spike.
fn plot(path: &str) {
    const BUCKET: Duration = Duration::from_millis(5);
    let buckets = (S5_RUN.as_nanos() / BUCKET.as_nanos()) as usize;
    let series: Vec<(&str, &str, Vec<Duration>)> = [
        ("dogpile", "#1b9e77"),
        ("moka", "#d95f02"),
        ("cached", "#7570b3"),
    ]
    .into_iter()
    .map(|(name, colour)| {
        let mut slowest = vec![Duration::ZERO; buckets];
        for (at, took, created) in s5_calls(name).0 {
            let i = ((at.as_nanos() / BUCKET.as_nanos()) as usize).min(buckets - 1);
            if !created {
                slowest[i] = slowest[i].max(took);
            }
        }
        (name, colour, slowest)
    })
    .collect();
    let (w, h, left, bottom, top, right) = (720.0, 360.0, 70.0, 40.0, 30.0, 150.0);
    let x = |i: usize| left + (i as f64 + 0.5) / buckets as f64 * (w - left - right);
    // Latency from 1 µs to 1 s, log scale.
    let y = |d: Duration| {
        let us = (d.as_secs_f64() * 1e6).clamp(1.0, 1e6);
        top + (1.0 - us.log10() / 6.0) * (h - top - bottom)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\">Slowest reader per 5 ms that did not regenerate (S5: expiry 100 ms, creator 100 ms, 32 threads)</text>\n"
    );
    for (label, us) in [("1 µs", 1.0), ("1 ms", 1e3), ("100 ms", 1e5), ("1 s", 1e6)] {
        let yy = y(Duration::from_secs_f64(us / 1e6));
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"8\" y=\"{:.1}\">{label}</text>",
            w - right,
            yy + 4.0
        );
    }
    for ms in [0_u32, 100, 200] {
        let xx = left + f64::from(ms) / (S5_RUN.as_secs_f64() * 1e3) * (w - left - right);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\">{ms} ms</text>",
            xx - 12.0,
            h - bottom + 18.0
        );
    }
    for (i, (name, colour, slowest)) in series.iter().enumerate() {
        let points: Vec<String> = slowest
            .iter()
            .enumerate()
            .map(|(b, d)| format!("{:.1},{:.1}", x(b), y(*d)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            points.join(" ")
        );
        let ly = top + 20.0 + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            w - right + 14.0,
            w - right + 34.0,
            w - right + 40.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg).expect("writing the plot");
    eprintln!("wrote {path}");
}
