//! S7-S9: a bounded cache (capacity 10,000) fed keys from a skewed, a scanned and a churning
//! trace, through get-or-create: hit ratio, ns/op, peak resident memory and the slowest call.
//!
//! - S7: Zipf(0.9) over 1,000,000 keys, 2,000,000 requests.
//! - S8: the same traffic, but in every 50,000 requests the last 20,000 are a burst of keys
//!   asked for once (so 1,200,000 Zipf requests and 800,000 one-time keys).
//! - S9: 4,000,000 distinct keys, each asked for once.
//!
//! The traces are made before the clock starts, by a seeded generator written here (the same
//! for every contender and every run): no dependency, and the same keys everywhere.
//!
//! Each run goes through the trace twice, on a fresh cache each time: once timed as a whole
//! (hit ratio, ns/op, peak memory), once timing every call (the slowest call). A call's time is
//! taken both on the wall clock, which counts the time the thread was descheduled (on a shared
//! machine, milliseconds at random calls), and in the thread's CPU time, which counts only the
//! work done in the call: eviction work shows in both, preemption only in the first.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cached::{Cached, LruCache};

use super::zipf::{SplitMix, Zipf};
use super::{contender_of, resident_bytes, value, BenchValue, Contender, Value, HOUR};

pub const CAPACITY: usize = 10_000;
const REQUESTS: u64 = 2_000_000;
const UNIVERSE: u64 = 1_000_000;
const BLOCK: u64 = 50_000;
const BURST: u64 = 20_000;
const CHURN: u64 = 4_000_000;
const SEED: u64 = 0x5EED_CAFE;

/// cached's `LruCache` (strict LRU) behind a mutex, as `#[cached(size = ...)]` uses it: checked
/// under the lock, computed outside it, then inserted.
pub struct CachedLru<V>(Mutex<LruCache<u64, V>>);

impl<V: BenchValue> CachedLru<V> {
    pub fn new(capacity: usize) -> Self {
        let lru = LruCache::builder()
            .max_size(capacity)
            .build()
            .expect("a valid LRU size");
        CachedLru(Mutex::new(lru))
    }
}

impl<V: BenchValue> Contender<V> for CachedLru<V> {
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

/// A rank's key: scattered, so the popular keys are not 1, 2, 3...
fn key_of(rank: u64) -> u64 {
    rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555
}

pub fn trace(scenario: &str) -> Vec<u64> {
    let zipf = Zipf::new(UNIVERSE, 0.9);
    let mut rng = SplitMix(SEED);
    match scenario {
        "s7" => (0..REQUESTS)
            .map(|_| key_of(zipf.sample(&mut rng)))
            .collect(),
        "s8" => {
            let mut once = 0;
            (0..REQUESTS)
                .map(|i| {
                    if i % BLOCK >= BLOCK - BURST {
                        once += 1;
                        (1 << 63) | once
                    } else {
                        key_of(zipf.sample(&mut rng))
                    }
                })
                .collect()
        }
        "s9" => (0..CHURN).map(|k| (1 << 62) | k).collect(),
        other => panic!("unknown trace {other}"),
    }
}

/// The peak resident memory of this process so far, in bytes (`VmHWM`).
fn peak_resident_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

fn cache(name: &str) -> Box<dyn Contender<Value>> {
    match name {
        "cached LRU" => Box::new(CachedLru::new(CAPACITY)),
        other => Box::new(ArcContender(contender_of::<Value>(other, HOUR, CAPACITY))),
    }
}

/// This thread's CPU time.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// No thread CPU clock here: every call counts as taking none.
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    Duration::ZERO
}

/// Runs the trace through a fresh cache, timing each call: every call's CPU time in ns, and
/// the slowest call on the wall clock.
fn probe(name: &str, keys: &[u64]) -> (Vec<u32>, Duration) {
    let cache = cache(name);
    let mut cpu = Vec::with_capacity(keys.len());
    let mut slowest_wall = Duration::ZERO;
    let (mut last_wall, mut last_cpu) = (Instant::now(), thread_cpu_time());
    for &key in keys {
        black_box(cache.get_with(key, &|| value(key)));
        let (wall, now) = (Instant::now(), thread_cpu_time());
        slowest_wall = slowest_wall.max(wall - last_wall);
        let took = now.saturating_sub(last_cpu).as_nanos();
        cpu.push(u32::try_from(took).unwrap_or(u32::MAX));
        (last_wall, last_cpu) = (wall, now);
    }
    (cpu, slowest_wall)
}

pub fn run(scenario: &str, name: &str) -> BTreeMap<&'static str, f64> {
    let keys = trace(scenario);
    let requests = keys.len() as f64;

    // Pass 1: the whole trace, timed as one.
    let before = resident_bytes();
    let timed = cache(name);
    let misses = Cell::new(0u64);
    let start = Instant::now();
    for &key in &keys {
        black_box(timed.get_with(key, &|| {
            misses.set(misses.get() + 1);
            value(key)
        }));
    }
    let elapsed = start.elapsed();
    let peak = peak_resident_bytes() - before;
    drop(timed);

    // Passes 2 and 3: every call timed, on the CPU clock and (pass 2) the wall clock.
    let (cpu_2, slowest_wall) = probe(name, &keys);
    let (cpu_3, _) = probe(name, &keys);
    // A call slow in both passes did slow work; one slow in a single pass was interrupted.
    let slowest_cpu = cpu_2
        .iter()
        .zip(&cpu_3)
        .map(|(a, b)| *a.min(b))
        .max()
        .unwrap_or(0);

    BTreeMap::from([
        ("hit_ratio", 1.0 - misses.get() as f64 / requests),
        ("ns_per_op", elapsed.as_nanos() as f64 / requests),
        ("peak_mb", peak / 1e6),
        ("slowest_wall_us", slowest_wall.as_secs_f64() * 1e6),
        ("slowest_cpu_us", f64::from(slowest_cpu) / 1e3),
    ])
}

struct ArcContender(std::sync::Arc<dyn Contender<Value>>);

impl Contender<Value> for ArcContender {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> Value) -> Value {
        self.0.get_with(key, create)
    }
}
