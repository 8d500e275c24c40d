//! A region without a capacity but with `max_stale`, fed a million keys it has never seen and
//! never asks for again, drops them once they are too stale to serve: its entries and its
//! memory follow the keys still alive, not every key ever seen. One test in this file: it reads
//! the whole process's resident memory, which other tests running beside it would disturb.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::{ManualClock, Timestamp};
use dogpile_runtime::Region;

/// The process's resident memory, in bytes (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_million_keys_asked_for_once_leave_once_too_stale_to_serve() {
    const KEYS: u64 = 1_000_000;
    // 10 ms pass every 100 keys; a value expires after 100 ms and is not served 100 ms later:
    // 2,000 keys after its creation, it is dead.
    const DEAD_AFTER: u64 = 2_000;
    let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(
        1_700_000_000_000_000_000,
    )));
    let region: Region<u64, u64> = Region::builder()
        .expiry(Duration::from_millis(100))
        .max_stale(Duration::from_millis(100))
        .clock(clock.clone())
        .build()
        .unwrap();
    let feed = |keys: std::ops::Range<u64>| {
        let mut most = 0;
        for key in keys {
            assert_eq!(region.get_with(&key, || key + 1), key + 1);
            if key % 100 == 99 {
                clock.advance(Duration::from_millis(10));
            }
            most = most.max(region.len());
        }
        most
    };
    // Let the map reach its working size.
    feed(0..100_000);
    let start = resident_bytes();
    let most = feed(100_000..KEYS);
    // Purges run after as many stores as the last one left, at least 1,024: the store holds
    // the live values, the dead ones since the last purge, and as many again, about 6,000,
    // plus what is stored while a purge runs on its thread (more if it is descheduled): far
    // from the million an unpurged store holds.
    assert!(
        most <= 50_000,
        "{most} entries at most, while {DEAD_AFTER} keys are alive at a time"
    );
    // Once the last purge has run, only the live values and those since are left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut key = KEYS;
    while region.len() > 2 * (DEAD_AFTER as usize + 1_024) {
        assert!(Instant::now() < deadline, "{} entries left", region.len());
        region.get_with(&key, || key + 1);
        key += 1;
        if key % 100 == 99 {
            clock.advance(Duration::from_millis(10));
        }
    }
    let stats = region.statistics();
    assert_eq!(stats.misses, key);
    assert_eq!(stats.regenerations, key);
    if let (Some(start), Some(end)) = (start, resident_bytes()) {
        let grown = end.saturating_sub(start);
        eprintln!(
            "{most} entries at most; resident memory grew by {} KiB",
            grown >> 10
        );
        // Kept, the million values would take about 150 MiB; purged, the growth is the
        // allocator's: 1 to 4.5 MiB measured here, with other builds on the machine.
        assert!(
            grown < 8 << 20,
            "resident memory grew by {} KiB over {KEYS} keys",
            grown >> 10
        );
    }
}
