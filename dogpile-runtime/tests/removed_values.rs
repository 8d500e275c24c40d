//! A value that leaves the in-memory store (replaced by a regeneration, an `insert` or a soft
//! invalidation's restamp, invalidated, removed, evicted, purged, cleared) is freed once no
//! reader holds it, not kept until the writing thread has removed a batch more: the map frees
//! removed entries in batches per thread, and a 50 MB value replaced once an hour used to stay
//! in memory up to 31 times over.
//!
//! Each value counts its live copies (itself and its clones) in a counter of its own test.

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::{CoarseClock, Timestamp};
use dogpile_runtime::region::{MemoryStore, Stamp, Store};
use dogpile_runtime::Region;

/// A value of 64 KiB that counts its live copies.
struct Counted {
    live: Arc<AtomicIsize>,
    _bytes: Vec<u8>,
}

impl Counted {
    fn new(live: &Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Counted {
            live: Arc::clone(live),
            _bytes: vec![7; 64 * 1024],
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(&self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn live(counter: &Arc<AtomicIsize>) -> isize {
    counter.load(Ordering::SeqCst)
}

fn regions() -> Vec<(&'static str, Region<u32, Counted>)> {
    vec![
        ("unbounded", Region::builder().build().unwrap()),
        ("capacity", Region::builder().capacity(100).build().unwrap()),
        (
            "weight",
            Region::builder()
                .max_weight(1_000)
                .weigher(|_: &u32, _: &Counted| 1)
                .build()
                .unwrap(),
        ),
    ]
}

#[test]
fn a_regenerated_value_leaves_one_copy_in_memory() {
    for (name, region) in regions() {
        let counter = Arc::new(AtomicIsize::new(0));
        for round in 0..40 {
            drop(region.get_with(&1, || Counted::new(&counter)));
            assert_eq!(
                live(&counter),
                1,
                "{name}: round {round}, after the regeneration"
            );
            region.invalidate(&1).unwrap();
            assert_eq!(
                live(&counter),
                0,
                "{name}: round {round}, after the invalidation"
            );
        }
        for round in 0..40 {
            region.insert(&1, Counted::new(&counter)).unwrap();
            assert_eq!(live(&counter), 1, "{name}: round {round}, after an insert");
        }
        for round in 0..40 {
            region.soft_invalidate(&1).unwrap();
            assert_eq!(
                live(&counter),
                1,
                "{name}: round {round}, after a soft invalidation"
            );
            drop(region.get_with(&1, || Counted::new(&counter)));
            assert_eq!(
                live(&counter),
                1,
                "{name}: round {round}, after its regeneration"
            );
        }
        region.invalidate(&1).unwrap();
        assert_eq!(live(&counter), 0, "{name}: after the last invalidation");
    }
}

#[test]
fn values_replaced_while_other_threads_read_are_freed_when_they_stop() {
    for (name, region) in regions() {
        let counter = Arc::new(AtomicIsize::new(0));
        region.insert(&1, Counted::new(&counter)).unwrap();
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        drop(region.get_with(&1, || Counted::new(&counter)));
                    }
                });
            }
            for _ in 0..300 {
                region.insert(&1, Counted::new(&counter)).unwrap();
            }
            // Meanwhile a reader preempted in the middle of a read keeps every value retired
            // since it began (as any epoch-based reclamation does); the readers free them as
            // they leave, and what could not be handed over waits for the next release.
            stop.store(true, Ordering::Relaxed);
        });
        region.insert(&1, Counted::new(&counter)).unwrap();
        assert_eq!(live(&counter), 1, "{name}: once the readers stopped");
    }
}

#[test]
fn values_evicted_for_capacity_are_freed() {
    let t = Stamp::new(Timestamp::from_nanos(1));

    // Bounded by weight: at each eviction.
    let counter = Arc::new(AtomicIsize::new(0));
    let weighed = MemoryStore::builder()
        .max_weight(8)
        .weigher(|_: &u32, _: &Counted| 1)
        .build()
        .unwrap();
    for key in 0..200 {
        weighed.put(&key, &Counted::new(&counter), t).unwrap();
        let held = weighed.count().unwrap() as isize;
        assert_eq!(live(&counter), held, "after the put of key {key}");
    }

    // Bounded by count: at most once per clock tick, so a burst may leave up to one batch
    // (32) of evicted values until the next eviction after the tick.
    let counter = Arc::new(AtomicIsize::new(0));
    let counted = MemoryStore::new(Some(8)).unwrap();
    for key in 0..200 {
        counted.put(&key, &Counted::new(&counter), t).unwrap();
        assert!(live(&counter) <= 8 + 32, "after the put of key {key}");
    }
    thread::sleep(2 * CoarseClock::resolution() + Duration::from_millis(2));
    counted.put(&200, &Counted::new(&counter), t).unwrap();
    assert_eq!(live(&counter), 8, "after an eviction a tick later");

    // Purged and cleared.
    let counter = Arc::new(AtomicIsize::new(0));
    let store = MemoryStore::new(None).unwrap();
    for key in 0..50 {
        store.put(&key, &Counted::new(&counter), t).unwrap();
    }
    assert_eq!(store.purge(&|_| true).unwrap(), 50);
    assert_eq!(live(&counter), 0, "after the purge");
    for key in 0..50 {
        store.put(&key, &Counted::new(&counter), t).unwrap();
    }
    store.clear().unwrap();
    assert_eq!(live(&counter), 0, "after the clear");
}
