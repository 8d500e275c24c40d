//! `MemoryStore` bounded by a capacity or a weight: what it keeps, what its listener hears, and
//! the configurations it refuses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::Timestamp;
use dogpile_runtime::region::{EvictionCause, MemoryStore, Stamp, Store};
use dogpile_runtime::Region;

const T: Stamp = Stamp::new(Timestamp::from_nanos(1));

type Log<K, V> = Arc<Mutex<Vec<(K, V, EvictionCause)>>>;

/// A store of `capacity` whose listener logs every departure.
fn logged(capacity: usize) -> (MemoryStore<u32, String>, Log<u32, String>) {
    let log: Log<u32, String> = Arc::default();
    let sink = log.clone();
    let store = MemoryStore::builder()
        .capacity(capacity)
        .on_evict(move |key: &u32, value: &String, cause| {
            sink.lock().unwrap().push((*key, value.clone(), cause))
        })
        .build()
        .unwrap();
    (store, log)
}

#[test]
fn a_capacity_bounds_the_entries_and_each_eviction_is_counted_and_heard() {
    let (store, log) = logged(100);
    for k in 0..1000 {
        store.put(&k, &k.to_string(), T).unwrap();
        assert!(store.count().unwrap() <= 100);
    }
    assert_eq!(store.count(), Some(100));
    assert_eq!(store.evictions(), 900);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 900);
    for (key, value, cause) in log.iter() {
        assert_eq!(*cause, EvictionCause::Capacity);
        assert_eq!(
            *value,
            key.to_string(),
            "the listener gets the evicted key's own value"
        );
        assert_eq!(store.get(key).unwrap(), None, "an evicted key is gone");
    }
}

#[test]
fn the_listener_hears_each_cause() {
    let (store, log) = logged(10);
    let region_log: Log<u32, String> = Arc::default();
    let sink = region_log.clone();
    let region: Region<u32, String> = Region::builder()
        .capacity(10)
        .on_evict(move |key: &u32, value: &String, cause| {
            sink.lock().unwrap().push((*key, value.clone(), cause))
        })
        .build()
        .unwrap();

    store.put(&1, &"a".into(), T).unwrap();
    store.put(&1, &"b".into(), T).unwrap();
    store.invalidate(&1).unwrap();
    store.put(&2, &"c".into(), T).unwrap();
    store.remove(&2).unwrap();
    store.remove(&2).unwrap(); // nothing to remove: nothing heard
    store.put(&3, &"d".into(), T).unwrap();
    store.put(&4, &"e".into(), T).unwrap();
    store.clear().unwrap();
    assert_eq!(store.count(), Some(0));
    let mut heard = log.lock().unwrap().clone();
    // `clear` reports in no particular order.
    heard[3..].sort_by_key(|(key, _, _)| *key);
    assert_eq!(
        heard,
        [
            (1, "a".into(), EvictionCause::Replaced),
            (1, "b".into(), EvictionCause::Invalidated),
            (2, "c".into(), EvictionCause::Removed),
            (3, "d".into(), EvictionCause::Removed),
            (4, "e".into(), EvictionCause::Removed),
        ]
    );

    // Through a region: a regeneration replaces, `invalidate` invalidates, `clear` removes.
    region.insert(&7, "old".into()).unwrap();
    region.refresh(&7, || Ok::<_, ()>("new".into())).unwrap();
    region.invalidate(&7).unwrap();
    region.insert(&8, "x".into()).unwrap();
    region.clear().unwrap();
    assert_eq!(
        *region_log.lock().unwrap(),
        [
            (7, "old".into(), EvictionCause::Replaced),
            (7, "new".into(), EvictionCause::Invalidated),
            (8, "x".into(), EvictionCause::Removed),
        ]
    );
}

#[test]
fn an_unbounded_store_reports_replacements_and_removals_too() {
    let log: Log<u32, u32> = Arc::default();
    let sink = log.clone();
    let store = MemoryStore::builder()
        .on_evict(move |k: &u32, v: &u32, cause| sink.lock().unwrap().push((*k, *v, cause)))
        .build()
        .unwrap();
    store.put(&1, &10, T).unwrap();
    store.put(&1, &11, T).unwrap();
    store.invalidate(&1).unwrap();
    store.put(&2, &20, T).unwrap();
    store.clear().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            (1, 10, EvictionCause::Replaced),
            (1, 11, EvictionCause::Invalidated),
            (2, 20, EvictionCause::Removed),
        ]
    );
    assert_eq!(store.evictions(), 0);
}

#[test]
fn weights_bound_the_total_weight() {
    const MAX: u64 = 1000;
    let log: Log<u32, Vec<u8>> = Arc::default();
    let sink = log.clone();
    let store = MemoryStore::builder()
        .max_weight(MAX)
        .weigher(|_key: &u32, value: &Vec<u8>| value.len() as u32)
        .on_evict(move |key: &u32, value: &Vec<u8>, cause| {
            sink.lock().unwrap().push((*key, value.clone(), cause))
        })
        .build()
        .unwrap();
    // The weight of each value held, as the listener accounts for it.
    let mut held: HashMap<u32, u64> = HashMap::new();
    let mut x = 7u64;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = (x % 300) as u32;
        let value = vec![0u8; (x >> 32) as usize % 60 + 1];
        store.put(&key, &value, T).unwrap();
        held.insert(key, value.len() as u64);
        for (key, value, cause) in log.lock().unwrap().drain(..) {
            if cause != EvictionCause::Replaced {
                assert_eq!(held.remove(&key), Some(value.len() as u64), "departs once");
            }
        }
        let total: u64 = held.values().sum();
        assert!(total <= MAX, "{total} held, at most {MAX}");
        assert_eq!(store.count(), Some(held.len()));
    }
    assert!(store.evictions() > 0);
}

#[test]
fn a_value_heavier_than_the_maximum_is_not_kept() {
    let log: Log<u8, String> = Arc::default();
    let sink = log.clone();
    let store = MemoryStore::builder()
        .max_weight(10)
        .weigher(|_: &u8, v: &String| v.len() as u32)
        .on_evict(move |k: &u8, v: &String, cause| {
            sink.lock().unwrap().push((*k, v.clone(), cause))
        })
        .build()
        .unwrap();
    store.put(&1, &"small".into(), T).unwrap();
    store.put(&1, &"far too large".into(), T).unwrap();
    assert_eq!(store.get(&1).unwrap(), None);
    assert_eq!(store.count(), Some(0));
    assert_eq!(store.evictions(), 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            (1, "small".into(), EvictionCause::Replaced),
            (1, "far too large".into(), EvictionCause::Capacity),
        ]
    );
}

#[test]
fn the_listener_runs_outside_the_store_lock_and_may_use_the_store() {
    let store: Arc<OnceLock<Weak<MemoryStore<u32, u32>>>> = Arc::default();
    let handle = store.clone();
    let reinserted = Arc::new(AtomicU64::new(0));
    let count = reinserted.clone();
    let built = Arc::new(
        MemoryStore::builder()
            .capacity(8)
            .on_evict(move |key: &u32, value: &u32, cause| {
                // Under the store's lock, each of these calls would deadlock.
                let store = handle.get().and_then(Weak::upgrade).expect("the store");
                assert_eq!(store.get(key).unwrap(), None);
                if cause == EvictionCause::Capacity && *key < 1000 {
                    store.put(&(key + 1000), value, T).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build()
            .unwrap(),
    );
    store.set(Arc::downgrade(&built)).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let worker = built.clone();
    thread::spawn(move || {
        for k in 0..100 {
            worker.put(&k, &k, T).unwrap();
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("no deadlock: the listener was called outside the lock");
    assert!(reinserted.load(Ordering::Relaxed) > 0);
    assert_eq!(built.count(), Some(8));
}

#[test]
fn threads_racing_keep_the_bound_and_every_departure_is_heard_once() {
    const CAPACITY: usize = 64;
    let departures = Arc::new(AtomicU64::new(0));
    let replaced = Arc::new(AtomicU64::new(0));
    let (d, r) = (departures.clone(), replaced.clone());
    let store = Arc::new(
        MemoryStore::builder()
            .capacity(CAPACITY)
            .on_evict(move |_: &u64, _: &u64, cause| {
                let counter = if cause == EvictionCause::Replaced {
                    &r
                } else {
                    &d
                };
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap(),
    );
    let puts = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (store, puts) = (store.clone(), puts.clone());
            thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15 ^ t;
                for _ in 0..50_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % 500;
                    match x >> 60 {
                        0 => store.remove(&key).unwrap(),
                        1 => store.invalidate(&key).unwrap(),
                        2..=7 => {
                            store.put(&key, &key, T).unwrap();
                            puts.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            if let Some((v, _)) = store.get(&key).unwrap() {
                                assert_eq!(v, key);
                            }
                        }
                    }
                    // Inserts evict under the same lock the count is taken under.
                    let count = store.count().unwrap();
                    assert!(count <= CAPACITY, "{count} values in a store of {CAPACITY}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every put added a value or replaced one; every other departure took one away.
    let held = puts.load(Ordering::Relaxed)
        - replaced.load(Ordering::Relaxed)
        - departures.load(Ordering::Relaxed);
    assert_eq!(store.count(), Some(held as usize));
    assert!(held <= CAPACITY as u64);
}

#[test]
fn configurations_that_cannot_work_are_config_errors() {
    type Builder = dogpile_runtime::region::MemoryStoreBuilder<u8, String>;
    let cases: [(Builder, &str); 5] = [
        (MemoryStore::builder().capacity(0), "capacity"),
        (MemoryStore::builder().max_weight(0), "max_weight"),
        (
            MemoryStore::builder().capacity(5).max_weight(5),
            "max_weight",
        ),
        (
            MemoryStore::builder().weigher(|_, v: &String| v.len() as u32),
            "weigher",
        ),
        (
            MemoryStore::builder()
                .capacity(5)
                .weigher(|_, v: &String| v.len() as u32),
            "weigher",
        ),
    ];
    for (builder, option) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.option(), option, "{err}");
    }
    assert!(MemoryStore::<u8, u8>::builder().build().is_ok());
    let err = MemoryStore::<u8, u8>::new(Some(0)).unwrap_err();
    assert_eq!(
        err.option(),
        "capacity",
        "a capacity of 0 would keep nothing: {err}"
    );
}

#[test]
fn a_region_counts_its_store_evictions() {
    let region: Region<u32, u32> = Region::builder().capacity(100).build().unwrap();
    for k in 0..150 {
        region.get_with(&k, || k);
    }
    let stats = region.statistics();
    assert_eq!((stats.entries, stats.evictions), (100, 50));
    assert!(stats.to_string().contains("50 evictions"));
}
