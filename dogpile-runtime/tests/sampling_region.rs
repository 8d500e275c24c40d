//! A bounded region large enough to sample keys for its policy's miniature simulations, under
//! two threads of skewed traffic over millions of keys. A file of its own: its two busy threads
//! would starve the timing of tests running beside it (a cold burst's 32 threads must all ask
//! within the creator's 20 ms).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use dogpile_runtime::Region;

/// A region large enough that its policy samples keys for the simulations that choose its
/// admission margin (131,072 values: one key in 16), under two threads of skewed traffic over
/// two million keys (a key of rank r asked for about 1/r as often), with hits logged by both
/// threads: every call gets its key's value, the bound holds, and the hit ratio is within 2% of
/// a strict LRU's of the same size on the same requests (taken in turns from the two threads).
#[test]
fn a_sampling_region_under_skewed_traffic_over_two_million_keys_serves_every_key() {
    const CAPACITY: usize = 1 << 17;
    const REQUESTS: usize = 300_000;
    fn requests(seed: u64) -> Vec<u64> {
        let mut x = seed;
        (0..REQUESTS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
                2_000_000f64.powf(unit) as u64
            })
            .collect()
    }
    let streams = [requests(1), requests(2)];
    // A strict LRU's hits on the two streams taken in turns.
    let (mut used, mut order) = (HashMap::new(), BTreeMap::new());
    let mut lru_hits = 0;
    for at in 0..2 * REQUESTS {
        let key = streams[at % 2][at / 2];
        if let Some(last) = used.insert(key, at) {
            order.remove(&last);
            lru_hits += 1;
        } else if used.len() > CAPACITY {
            let (_, oldest) = order.pop_first().expect("a key to evict");
            used.remove(&oldest);
        }
        order.insert(at, key);
    }
    let region: Region<u64, u64> = Region::builder().capacity(CAPACITY).build().unwrap();
    // Bounded in time (1.3 s in a debug build here): a hang fails instead of stalling CI.
    let (done, finished) = mpsc::channel();
    let reader = region.clone();
    thread::spawn(move || {
        thread::scope(|s| {
            for stream in &streams {
                let region = &reader;
                s.spawn(move || {
                    for &key in stream {
                        assert_eq!(region.get_with(&key, || key * 3), key * 3);
                    }
                });
            }
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("both threads served every request within 60 s");
    let stats = region.statistics();
    assert_eq!(stats.hits + stats.misses, 2 * REQUESTS as u64);
    assert!(region.len() <= CAPACITY, "{} entries", region.len());
    // Equal here within a few dozen hits (the store is filling for most of the run); two
    // points below would be a policy that lost its way.
    assert!(
        stats.hits * 50 >= lru_hits * 49,
        "{} hits against a strict LRU's {lru_hits}",
        stats.hits
    );
}
