//! Why `MemoryStore` never sweeps its map: a reproduction of papaya 0.2's behaviour when a map
//! under churn is trimmed by removing what its iterator yields first.
//!
//! `cargo run --release -p dogpile-runtime --example papaya_iterate_remove [incremental]`
//!
//! Two maps of about 10,000 live keys each take a stream of new keys, and remove one key per
//! insert once over 10,000:
//!
//! - **by key, oldest first** (what the store's policy does): memory stays flat;
//! - **the first key the iterator yields** (what a sweep over the map, such as the CLOCK sweep
//!   the store had before, ends up doing): with blocking resizes, within some tens of thousands
//!   of keys an insert starts allocating table after table without returning, and the process
//!   reaches gigabytes; with incremental resizes it crawls (each `next()` walks the tombstones
//!   the removals left at the front of the table) and memory grows. The run stops at 512 MiB of
//!   resident memory, or after 10 seconds.
//!
//! Seen with papaya 0.2.5.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use papaya::{HashMap, ResizeMode};

const LIVE: u64 = 10_000;
const KEYS: u64 = 1_000_000;
const MEMORY_LIMIT: u64 = 512 << 20;
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// Keys inserted so far by the current run.
static DONE: AtomicU64 = AtomicU64::new(0);

/// The process's resident memory, in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

type Map = HashMap<u64, u64, foldhash::fast::RandomState>;

fn map(incremental: bool) -> Map {
    HashMap::builder()
        .hasher(foldhash::fast::RandomState::default())
        .capacity(LIVE as usize)
        .resize_mode(if incremental {
            ResizeMode::Incremental(1024)
        } else {
            ResizeMode::Blocking
        })
        .build()
}

/// Ends the process once it holds more than [`MEMORY_LIMIT`] or has run [`TIME_LIMIT`]: an
/// insert that never returns cannot check the limits itself.
fn watchdog() {
    let start = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        if resident_bytes() > MEMORY_LIMIT || start.elapsed() > TIME_LIMIT {
            println!(
                "  stopped after {:.1?} at key {}: {} MiB resident",
                start.elapsed(),
                DONE.load(Ordering::Relaxed),
                resident_bytes() >> 20,
            );
            std::process::exit(0);
        }
    });
}

/// Feeds new keys, removing one per insert with `victim`; how it went.
fn churn(incremental: bool, victim: impl Fn(&Map, u64) -> Option<u64>) -> String {
    let start = Instant::now();
    let map = map(incremental);
    let base = resident_bytes();
    for key in 0..KEYS {
        let guard = map.guard();
        map.insert(key, key, &guard);
        DONE.store(key + 1, Ordering::Relaxed);
        if key >= LIVE {
            if let Some(victim) = victim(&map, key) {
                map.remove(&victim, &guard);
            }
        }
    }
    format!(
        "{KEYS} keys in {:.1?}, {} live, resident memory grew {} KiB",
        start.elapsed(),
        map.len(),
        resident_bytes().saturating_sub(base) >> 10
    )
}

fn main() {
    let incremental = std::env::args().nth(1).as_deref() == Some("incremental");
    let mode = if incremental {
        "incremental"
    } else {
        "blocking"
    };
    println!("papaya, {mode} resize, {LIVE} live keys, one removal per insert:");
    println!(
        "- by key, oldest first: {}",
        churn(incremental, |_, key| Some(key - LIVE))
    );
    // Last: the watchdog may have to end the process.
    println!("- the iterator's first key:");
    watchdog();
    let outcome = churn(incremental, |map, _| {
        map.iter(&map.guard()).next().map(|(key, _)| *key)
    });
    println!("  {outcome}");
}
