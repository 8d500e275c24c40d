//! Fresh hits, keyed, against the caches users would otherwise pick: S1 (one thread, ns/op) and
//! S2 (two threads, total throughput and its ratio to one thread).
//!
//! `cargo bench --bench fresh_hit` prints two markdown tables, one per value type: an
//! `Arc<str>` (each clone writes the shared reference count, which limits two-thread scaling
//! for every contender) and a `u64` (clones write nothing shared: the cache's own scaling).
//! Medians of 5 repetitions, the contenders in rotating order.
//! `cargo bench --bench fresh_hit -- --contender NAME --iters N [--value u64]` runs one
//! contender's loop once, for `valgrind --tool=callgrind` instruction counts.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cached::{Cached, TtlCache};
use dogpile::Region;

const KEYS: u64 = 1_000;
const ITERS: u64 = 5_000_000;
const REPS: usize = 5;
const TTL: Duration = Duration::from_secs(3600);

/// A cached value type.
trait Value: Clone + Send + Sync + 'static {
    fn make(k: u64) -> Self;
}

impl Value for Arc<str> {
    fn make(k: u64) -> Self {
        Arc::from(format!("value number {k:>20}"))
    }
}

impl Value for u64 {
    fn make(k: u64) -> Self {
        k * 3
    }
}

trait Contender<V>: Send + Sync {
    fn get(&self, key: u64) -> Option<V>;
}

struct Dogpile<V: Value>(Region<u64, V>);
impl<V: Value> Contender<V> for Dogpile<V> {
    #[inline]
    fn get(&self, key: u64) -> Option<V> {
        Some(self.0.get_or_create(&key, || unreachable!("preloaded")))
    }
}

struct Moka<V>(moka::sync::Cache<u64, V>);
impl<V: Value> Contender<V> for Moka<V> {
    #[inline]
    fn get(&self, key: u64) -> Option<V> {
        self.0.get(&key)
    }
}

/// What `#[cached(ttl = ...)]` expands to: a TTL store behind a mutex.
struct CachedTtl<V>(Mutex<TtlCache<u64, V>>);
impl<V: Value> Contender<V> for CachedTtl<V> {
    #[inline]
    fn get(&self, key: u64) -> Option<V> {
        self.0.lock().unwrap().cache_get(&key).cloned()
    }
}

/// No expiry at all: a floor for what a concurrent map read and clone cost.
struct QuickCache<V: Value>(quick_cache::sync::Cache<u64, V>);
impl<V: Value> Contender<V> for QuickCache<V> {
    #[inline]
    fn get(&self, key: u64) -> Option<V> {
        self.0.get(&key)
    }
}

fn value<V: Value>(k: u64) -> V {
    V::make(k)
}

fn build<V: Value>(name: &str) -> Arc<dyn Contender<V>> {
    match name {
        "dogpile" => {
            let region = Region::builder().expiry(TTL).capacity(10_000).build();
            for k in 0..KEYS {
                region.insert(&k, value(k)).unwrap();
            }
            Arc::new(Dogpile(region))
        }
        "moka" => {
            let cache = moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TTL)
                .build();
            for k in 0..KEYS {
                cache.insert(k, value(k));
            }
            Arc::new(Moka(cache))
        }
        "cached" => {
            let mut cache = TtlCache::new(TTL);
            for k in 0..KEYS {
                cache.cache_set(k, value(k));
            }
            Arc::new(CachedTtl(Mutex::new(cache)))
        }
        "quick_cache" => {
            let cache = quick_cache::sync::Cache::new(10_000);
            for k in 0..KEYS {
                cache.insert(k, value(k));
            }
            Arc::new(QuickCache(cache))
        }
        other => panic!("unknown contender {other}"),
    }
}

/// Reads `iters` keys in a fixed pseudo-random order; returns the elapsed time.
fn run<V>(cache: &dyn Contender<V>, iters: u64, seed: u64) -> Duration {
    let mut x = seed | 1;
    let start = Instant::now();
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        black_box(cache.get(black_box(x % KEYS)));
    }
    start.elapsed()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--contender") {
        let name = &args[i + 1];
        let iters = args
            .iter()
            .position(|a| a == "--iters")
            .map_or(ITERS, |j| args[j + 1].parse().unwrap());
        if args.iter().any(|a| a == "u64") {
            run(&*build::<u64>(name), iters, 7);
        } else {
            run(&*build::<Arc<str>>(name), iters, 7);
        }
        return;
    }
    println!("Values: Arc<str>\n");
    table::<Arc<str>>();
    println!("\nValues: u64\n");
    table::<u64>();
}

fn table<V: Value>() {
    let names = ["dogpile", "moka", "cached", "quick_cache"];
    let mut s1 = vec![Vec::new(); names.len()];
    let mut s2 = vec![Vec::new(); names.len()];
    for rep in 0..REPS {
        for turn in 0..names.len() {
            let i = (turn + rep) % names.len();
            let cache = build::<V>(names[i]);
            run(&*cache, ITERS / 10, 3); // warm up
            let one = run(&*cache, ITERS, 7);
            s1[i].push(one.as_nanos() as f64 / ITERS as f64);
            let barrier = Arc::new(Barrier::new(2));
            let start = Instant::now();
            thread::scope(|s| {
                for seed in [7, 11] {
                    let (cache, barrier) = (&cache, barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        run(&**cache, ITERS, seed)
                    });
                }
            });
            let two = start.elapsed();
            s2[i].push(2.0 * ITERS as f64 / two.as_secs_f64() / 1e6);
        }
    }
    let ours = median(s1[0].clone());
    println!("| contender | S1 ns/op | S1 vs dogpile | S2 Mops/s (2 threads) | S2 scaling |");
    println!("|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let one = median(s1[i].clone());
        let two = median(s2[i].clone());
        println!(
            "| {name} | {one:.1} | {:.2}x | {two:.1} | {:.2} |",
            one / ours,
            two / (1e3 / one)
        );
    }
}
