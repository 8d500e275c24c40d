//! `#[dogpile(capacity = ..)]` fed a million keys it has never seen holds its bound, in
//! entries and in memory. One test in this file: it reads the whole process's resident memory,
//! which other tests running beside it would disturb.

use dogpile::dogpile;

const CAPACITY: usize = 10_000;

#[dogpile(expire = 3600, capacity = 10_000)]
fn square(n: u64) -> u64 {
    n * n
}

/// The process's resident memory, in bytes (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_million_new_keys_stay_within_the_capacity_in_entries_and_memory() {
    const KEYS: u64 = 1_000_000;
    // Fill it, and let the map, the policy and its sketch reach their working size.
    for n in 0..10 * CAPACITY as u64 {
        square(n);
    }
    let start = resident_bytes();
    for n in 10 * CAPACITY as u64..KEYS {
        assert_eq!(square(n), n * n);
        if n % 100_000 == 0 {
            let entries = square_statistics().entries;
            assert!(entries <= CAPACITY, "{entries} entries at key {n}");
        }
    }
    let stats = square_statistics();
    assert_eq!(stats.entries, CAPACITY);
    assert_eq!(stats.misses, KEYS);
    assert_eq!(stats.evictions, KEYS - CAPACITY as u64);
    if let (Some(start), Some(end)) = (start, resident_bytes()) {
        let grown = end.saturating_sub(start);
        assert!(
            grown < 4 << 20,
            "resident memory grew by {} KiB over {KEYS} keys",
            grown >> 10
        );
    }
}
