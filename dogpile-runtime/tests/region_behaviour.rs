//! The region through its public API: bursts, stale serving, independence of keys, errors,
//! panics, recursion, lock timeouts, invalidation, eviction, background regeneration, memory.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::{ManualClock, Timestamp};
use dogpile_runtime::lock::{LocalMutex, RawMutex, WakeOnRelease};
use dogpile_runtime::region::{Pool, Served, Stamp};
use dogpile_runtime::{BackendError, Region, RegionError};
use std::task::Waker;

const BOUND: Duration = Duration::from_secs(10);

fn manual() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000_000)))
}

/// Runs `f` on a thread and fails instead of hanging if it takes longer than `BOUND`.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(BOUND).expect("the call hung") {
        Ok(v) => v,
        Err(p) => panic::resume_unwind(p),
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn cold_burst_creates_once_and_everyone_gets_the_value() {
    const THREADS: usize = 32;
    let region: Region<&str, u64> = Region::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                region.get_with(&"k", || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    42
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 42);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = region.statistics();
    assert_eq!((stats.misses, stats.regenerations), (32, 1));
    assert_eq!(stats.waits + stats.hits, 31, "{stats}");
}

#[test]
fn expiry_with_stale_values_blocks_no_one_but_the_creator() {
    const THREADS: usize = 32;
    let region: Region<&str, u64> = Region::builder()
        .expiry(Duration::from_millis(100))
        .build()
        .unwrap();
    region.get_with(&"k", || 0);
    let calls = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (region, calls, running, overlaps, barrier) = (
                region.clone(),
                calls.clone(),
                running.clone(),
                overlaps.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                let mut slowest = Duration::ZERO;
                while start.elapsed() < Duration::from_millis(300) {
                    let asked = Instant::now();
                    let mut created = false;
                    region.get_with(&"k", || {
                        created = true;
                        if running.fetch_add(1, Ordering::SeqCst) > 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        thread::sleep(Duration::from_millis(100));
                        running.fetch_sub(1, Ordering::SeqCst);
                        calls.fetch_add(1, Ordering::SeqCst) as u64 + 1
                    });
                    if !created {
                        slowest = slowest.max(asked.elapsed());
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                slowest
            })
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap();
    let calls = calls.load(Ordering::SeqCst);
    println!("creator calls {calls}, slowest non-creator call {slowest:?}");
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two creators ran at once"
    );
    assert!((1..=4).contains(&calls), "{calls} creator calls in 300 ms");
    assert!(
        slowest < Duration::from_millis(5),
        "a non-creator call took {slowest:?}"
    );
}

#[test]
fn unrelated_keys_never_wait_on_each_other() {
    let region: Region<&str, u64> = Region::builder().build().unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let slow = {
        let region = region.clone();
        thread::spawn(move || {
            region.get_with(&"a", || {
                started_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(500));
                1
            })
        })
    };
    started_rx.recv_timeout(BOUND).unwrap();
    let asked = Instant::now();
    assert_eq!(region.get_with(&"b", || 2), 2);
    assert!(asked.elapsed() < Duration::from_millis(250));
    assert_eq!(slow.join().unwrap(), 1);
}

#[test]
fn an_error_is_not_stored_and_the_waiters_share_it() {
    const THREADS: usize = 8;
    let region: Region<&str, u64> = Region::builder()
        .fail_safe_throttle(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (region, calls, running, barrier) = (
                region.clone(),
                calls.clone(),
                running.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                region.try_get_with(&"k", || {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
                    thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<u64, _>("down".to_string())
                })
            })
        })
        .collect();
    let errors: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().unwrap().expect_err("nothing was stored"))
        .collect();
    // One upstream call; every caller got its failure, the very same one.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let RegionError::Creator(first) = &errors[0] else {
        panic!("{:?}", errors[0])
    };
    for err in &errors {
        assert!(matches!(err, RegionError::Creator(e) if Arc::ptr_eq(e, first)));
    }
    let stats = region.statistics();
    assert_eq!(
        (stats.errors, stats.shared_failures),
        (1, THREADS as u64 - 1)
    );
    assert_eq!(region.peek(&"k"), None);
    // Past the throttle, the next caller tries again.
    thread::sleep(Duration::from_millis(150));
    assert_eq!(region.try_get_with(&"k", || Ok::<_, String>(7)).unwrap(), 7);
}

#[test]
fn options_and_the_cache_predicate_decide_what_is_stored() {
    let region: Region<u8, u8> = Region::builder()
        .should_cache(|v: &u8| *v != 0)
        .build()
        .unwrap();
    assert_eq!(region.optionally_get_with(&1, || None), None);
    assert_eq!(region.peek(&1), None);
    assert_eq!(region.get_with(&2, || 0), 0);
    assert_eq!(region.peek(&2), None, "the predicate refused 0");
    assert_eq!(region.get_with(&2, || 5), 5);
    assert_eq!(region.optionally_get_with(&1, || Some(3)), Some(3));
    assert_eq!(region.optionally_get_with(&1, || None), Some(3));
    assert_eq!(region.statistics().errors, 2);
}

#[test]
fn a_panicking_creator_poisons_nothing_and_the_next_caller_creates() {
    // A panic is not shared: it reaches its own caller, and the next caller creates.
    let region: Region<u8, u8> = Region::builder().build().unwrap();
    let r = region.clone();
    let panicked = thread::spawn(move || r.get_with(&1, || panic!("creator exploded")))
        .join()
        .unwrap_err();
    assert_eq!(panic_message(panicked), "creator exploded");
    assert_eq!(region.get_with(&1, || 9), 9);
    assert_eq!(region.statistics().panics, 1);
}

#[test]
fn recursion_names_the_key_instead_of_hanging() {
    let region: Region<String, u8> = Region::builder().name("reports").build().unwrap();
    let r = region.clone();
    let message = bounded(move || {
        let inner = r.clone();
        let p = panic::catch_unwind(AssertUnwindSafe(|| {
            r.get_with(&"day-7".to_string(), || {
                inner.get_with(&"day-7".to_string(), || 1)
            })
        }))
        .unwrap_err();
        panic_message(p)
    });
    assert!(message.contains("\"day-7\""), "{message}");
    assert!(message.contains("\"reports\""), "{message}");

    // Through another key: a -> b -> a.
    let r = region.clone();
    let err = bounded(move || {
        r.try_get_with(&"a".to_string(), || {
            r.try_get_with(&"b".to_string(), || {
                r.try_get_with(&"a".to_string(), || Ok::<_, String>(1))
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| match e {
                RegionError::Creator(inner) => inner.to_string(),
                other => other.to_string(),
            })
        })
    })
    .unwrap_err();
    let RegionError::Creator(message) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("asked for key \"a\" again"), "{message}");
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn a_waiter_that_times_out_runs_the_creator_itself() {
    let region: Region<u8, u8> = Region::builder()
        .lock_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let slow = {
        let region = region.clone();
        thread::spawn(move || {
            region.get_with(&1, || {
                started_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(500));
                1
            })
        })
    };
    started_rx.recv_timeout(BOUND).unwrap();
    let asked = Instant::now();
    assert_eq!(region.get_with(&1, || 2), 2);
    assert!(asked.elapsed() < Duration::from_millis(400));
    assert_eq!(region.statistics().lock_timeouts, 1);
    slow.join().unwrap();
}

/// A `LocalMutex` that counts how often it is taken.
struct Counted(LocalMutex, Arc<AtomicUsize>);

impl RawMutex for Counted {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        let taken = self.0.try_acquire()?;
        self.1.fetch_add(usize::from(taken), Ordering::SeqCst);
        Ok(taken)
    }

    fn acquire(&self) -> Result<(), BackendError> {
        self.0.acquire()?;
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        let taken = self.0.acquire_timeout(timeout)?;
        self.1.fetch_add(usize::from(taken), Ordering::SeqCst);
        Ok(taken)
    }

    fn release(&self) -> Result<(), BackendError> {
        self.0.release()
    }

    fn wake_on_release(&self, waker: &Waker) -> WakeOnRelease {
        self.0.wake_on_release(waker)
    }
}

#[test]
fn the_waiters_of_a_first_miss_read_the_value_without_taking_the_mutex_in_turn() {
    const THREADS: usize = 16;
    let taken = Arc::new(AtomicUsize::new(0));
    let counting = taken.clone();
    let region: Region<&str, u64, _, Counted> = Region::builder()
        .mutexes(move |_: &&str| Counted(LocalMutex::new(), counting.clone()))
        .build()
        .unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (region, barrier) = (region.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                region.get_with_served(&"k", || {
                    thread::sleep(Duration::from_millis(50));
                    42
                })
            })
        })
        .collect();
    let served: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(served.iter().all(|(v, _)| *v == 42));
    let waited = served.iter().filter(|(_, s)| *s == Served::Waited).count();
    let created = served.iter().filter(|(_, s)| *s == Served::Created).count();
    assert_eq!(created, 1);
    // Every waiter was woken by the release and read the value: the creator held the mutex,
    // and at most a caller or two that found it free just after the release (taking it in
    // turn, the 15 waiters would each have held it).
    let taken = taken.load(Ordering::SeqCst);
    assert!(taken <= 3, "taken {taken} times, {waited} waited");
    assert!(waited >= THREADS / 2, "{waited} of {THREADS} waited");
}

/// A region keeps the default mutexes its calls give back for the next keys' misses; a
/// factory's mutex may be its key's (a file lock's path), so it is made for every key's miss
/// and never handed to another key.
#[test]
fn a_factory_mutex_is_made_for_its_own_key_only() {
    let made = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recording = made.clone();
    let region: Region<u64, u64, _, Counted> = Region::builder()
        .mutexes(move |key: &u64| {
            recording.lock().unwrap().push(*key);
            Counted(LocalMutex::new(), Arc::new(AtomicUsize::new(0)))
        })
        .build()
        .unwrap();
    for key in 0..100u64 {
        assert_eq!(region.get_with(&key, || key * 2), key * 2);
    }
    assert_eq!(*made.lock().unwrap(), (0..100).collect::<Vec<_>>());

    // The default mutexes, reused from key to key, still keep one creator per key.
    let region: Region<u64, u64> = Region::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for key in 0..20u64 {
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (region, barrier, calls) = (region.clone(), barrier.clone(), calls.clone());
                thread::spawn(move || {
                    barrier.wait();
                    region.get_with(&key, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(5));
                        key
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), key);
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20, "one creator call per key");
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn the_lock_timeout_counts_from_the_first_wait_across_failing_holders() {
    // Holders that fail one after the other, each in 60 ms: a caller with a lock timeout of
    // 150 ms runs its own creator after about 150 ms, not after every holder has failed.
    let region: Region<u8, u8> = Region::builder()
        .lock_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing: Vec<_> = (0..3)
        .map(|_| {
            let (region, stop) = (region.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = region.try_get_with(&1, || {
                        thread::sleep(Duration::from_millis(60));
                        Err::<u8, _>("down")
                    });
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(10));
    let asked = Instant::now();
    let value = bounded({
        let region = region.clone();
        move || region.get_with(&1, || 2)
    });
    let took = asked.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in failing {
        t.join().unwrap();
    }
    assert_eq!(value, 2);
    assert!(took < Duration::from_millis(1000), "waited {took:?}");
}

#[test]
fn expiry_is_strict_and_none_never_expires() {
    let clock = manual();
    let region: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.get_with(&1, || 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(region.get_with(&1, || 2), 1, "age == expiry is fresh");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(region.get_with(&1, || 2), 2);

    let forever: Region<u8, u8> = Region::builder().clock(clock.clone()).build().unwrap();
    forever.get_with(&1, || 1);
    clock.advance(Duration::from_secs(1 << 30));
    assert_eq!(forever.get_with(&1, || 2), 1);
}

#[test]
fn soft_invalidation_serves_stale_while_one_regenerates() {
    let clock = manual();
    let region: Region<u8, u8> = Region::builder().clock(clock.clone()).build().unwrap();
    region.get_with(&1, || 1);
    region.soft_invalidate(&1).unwrap();
    assert_eq!(region.peek(&1), Some(1));

    let (started_tx, started_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let regenerating = {
        let region = region.clone();
        thread::spawn(move || {
            region.get_with(&1, || {
                started_tx.send(()).unwrap();
                finish_rx.recv().unwrap();
                2
            })
        })
    };
    started_rx.recv_timeout(BOUND).unwrap();
    let r = region.clone();
    assert_eq!(bounded(move || r.get_with(&1, || 3)), 1, "stale, at once");
    finish_tx.send(()).unwrap();
    assert_eq!(regenerating.join().unwrap(), 2);
    assert_eq!(region.get_with(&1, || 3), 2);

    region.get_with(&5, || 5);
    region.soft_invalidate_all().unwrap();
    assert_eq!(region.peek(&5), Some(5));
    assert_eq!(region.get_with(&5, || 6), 6);
    assert_eq!(region.get_with(&5, || 7), 6, "no regeneration loop");
}

#[test]
fn hard_invalidation_removes_values() {
    let clock = manual();
    let region: Region<u8, u8> = Region::builder().clock(clock).build().unwrap();
    region.get_with(&1, || 1);
    region.invalidate(&1).unwrap();
    assert_eq!(region.peek(&1), None);
    assert_eq!(region.get_with(&1, || 2), 2);

    region.get_with(&3, || 3);
    region.invalidate_all().unwrap();
    assert_eq!(region.peek(&1), None);
    assert_eq!(region.peek(&3), None);
    assert_eq!(region.get_with(&3, || 4), 4);
    assert_eq!(
        region.get_with(&3, || 5),
        4,
        "values after the invalidation are fresh"
    );
}

#[test]
fn capacity_bounds_the_store_and_keeps_hot_keys() {
    let region: Region<u64, u64> = Region::builder().capacity(1000).build().unwrap();
    for k in 0..100 {
        region.get_with(&k, || k);
    }
    for k in 100..10_000 {
        region.get_with(&k, || k);
        if k % 10 == 0 {
            for hot in 0..100 {
                region.peek(&hot);
            }
        }
    }
    assert!(region.len() <= 1000, "{} values", region.len());
    let hot_alive = (0..100).filter(|k| region.peek(k).is_some()).count();
    assert!(hot_alive >= 80, "only {hot_alive} of 100 hot keys survived");
}

/// Skewed traffic through `get_with` with a scan of one-time keys in between, through the
/// public API: 400 keys asked for again and again, each request among them followed by five
/// keys never seen before, through a region of 1,000. Between two requests for one of them come
/// about 2,000 new keys, so a plain LRU (simulated beside it) keeps few of them; the region
/// keeps them and hits on nearly every request for them.
#[test]
fn a_scan_of_one_time_keys_does_not_flush_the_keys_asked_for_again() {
    const CAPACITY: usize = 1000;
    const HOT: u64 = 400;
    let region: Region<u64, u64> = Region::builder().capacity(CAPACITY).build().unwrap();
    let mut last_asked = std::collections::HashMap::new();
    let mut by_last = std::collections::BTreeMap::new();
    let (mut asked, mut hits, mut lru_hits) = (0u64, 0u64, 0u64);
    let mut fresh = 1_000_000u64;
    let mut x = 7u64;
    for request in 0..200_000u64 {
        let key = if request % 6 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            asked += 1;
            x % HOT
        } else {
            fresh += 1;
            fresh
        };
        let (_, served) = region.get_with_served(&key, || key);
        let hot = key < HOT;
        if hot && served == Served::Fresh {
            hits += 1;
        }
        // The LRU: each key's last request, and the keys by it.
        if let Some(last) = last_asked.insert(key, request) {
            by_last.remove(&last);
            lru_hits += u64::from(hot);
        } else if by_last.len() == CAPACITY {
            let (_, oldest) = by_last.pop_first().unwrap();
            last_asked.remove(&oldest);
        }
        by_last.insert(request, key);
    }
    assert!(region.len() <= CAPACITY);
    let (ratio, lru_ratio) = (hits as f64 / asked as f64, lru_hits as f64 / asked as f64);
    eprintln!("hit ratio on the keys asked for again: {ratio:.3}, LRU {lru_ratio:.3}");
    assert!(
        lru_ratio < 0.5,
        "the LRU beside it kept them: {lru_ratio:.3}"
    );
    assert!(
        ratio > 0.9,
        "hit ratio on the keys asked for again: {ratio:.3} (LRU {lru_ratio:.3})"
    );
}

#[test]
fn background_regeneration_returns_stale_at_once() {
    let clock = manual();
    let region: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(1))
        .clock(clock.clone())
        .background(Pool::new(2, 16).unwrap())
        .build()
        .unwrap();
    region.get_with(&1, || 1);
    clock.advance(Duration::from_secs(2));
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let finish_rx = std::sync::Mutex::new(finish_rx);
    let r = region.clone();
    let v = bounded(move || {
        r.background().get_with(&1, move || {
            finish_rx.lock().unwrap().recv().unwrap();
            2
        })
    });
    assert_eq!(v, 1, "the winner returns the stale value");
    assert_eq!(region.background().get_with(&1, || 3), 1, "others too");
    finish_tx.send(()).unwrap();
    let deadline = Instant::now() + BOUND;
    while region.peek(&1) != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the background creator never stored"
        );
        thread::sleep(Duration::from_millis(1));
    }
    while region.mutexes_in_use() != 0 {
        assert!(
            Instant::now() < deadline,
            "the background creator kept the mutex"
        );
        thread::sleep(Duration::from_millis(1));
    }

    // A full pool regenerates in the caller instead of growing.
    let busy = Pool::new(1, 0).unwrap();
    let (free_tx, free_rx) = mpsc::channel::<()>();
    busy.try_spawn(move || {
        let _ = free_rx.recv();
    })
    .unwrap();
    let full: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(1))
        .clock(clock.clone())
        .background(busy)
        .build()
        .unwrap();
    full.get_with(&1, || 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        full.background().get_with(&1, || 2),
        2,
        "a refused hand-off creates here, and this caller gets the new value"
    );
    assert_eq!(full.peek(&1), Some(2));
    drop(free_tx);
}

#[test]
fn refresh_peek_and_insert() {
    let region: Region<u8, u8> = Region::builder().build().unwrap();
    region.insert(&1, 1).unwrap();
    assert_eq!(region.get_with(&1, || 9), 1);
    assert_eq!(region.refresh(&1, || Ok::<_, ()>(2)).unwrap(), 2);
    assert_eq!(region.peek(&1), Some(2));
    let before = region.statistics();
    assert_eq!(region.peek(&7), None);
    assert_eq!(region.peek(&7), None);
    assert_eq!(
        region.statistics(),
        before,
        "peek neither creates nor counts"
    );
}

#[test]
fn statistics_follow_a_scripted_sequence() {
    let clock = manual();
    let region: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.get_with(&1, || 1); // miss, regeneration
    region.get_with(&1, || 1); // hit
    clock.advance(Duration::from_secs(2));
    region.get_with(&1, || 2); // expired: regeneration in this caller
    let _ = region.try_get_with(&2, || Err::<u8, _>(())); // miss, error
    let s = region.statistics();
    assert_eq!(
        (
            s.hits,
            s.misses,
            s.regenerations,
            s.errors,
            s.stale_hits,
            s.waits,
            s.entries
        ),
        (1, 2, 2, 1, 0, 0, 1)
    );
}

#[test]
fn a_million_keys_leave_no_mutexes_behind() {
    let region: Region<u64, u64> = Region::builder().build().unwrap();
    for k in 0..1_000_000u64 {
        region.get_with(&k, || k);
        if k % 100_000 == 0 {
            assert!(region.mutexes_in_use() < 100);
        }
    }
    assert_eq!(region.len(), 1_000_000);
    assert_eq!(region.mutexes_in_use(), 0);
    region.clear().unwrap();
    assert!(region.is_empty());
}

#[test]
fn invalidating_all_twice_within_one_clock_tick_covers_values_made_between() {
    // A coarse clock may not move between the two calls: the second cutoff must still cover
    // the value stamped just past the first one.
    let clock = manual();
    let region: Region<u8, u8> = Region::builder().clock(clock.clone()).build().unwrap();
    region.insert(&1, 1).unwrap();
    region.soft_invalidate_all().unwrap();
    assert_eq!(region.get_with(&1, || 2), 2);
    region.invalidate_all().unwrap();
    assert_eq!(region.peek(&1), None);
    assert_eq!(region.get_with(&1, || 3), 3);
    region.soft_invalidate_all().unwrap();
    assert_eq!(region.get_with(&1, || 4), 4);
    assert_eq!(region.get_with(&1, || 5), 4);
}

#[test]
fn statistics_count_exactly_with_more_threads_than_owned_stripes() {
    // 64 threads at once: 32 own a stripe, the others share one; none loses a count.
    const THREADS: usize = 64;
    let region: Region<u8, u8> = Region::builder().build().unwrap();
    region.insert(&1, 1).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (region, barrier) = (region.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..1000 {
                    region.get_with(&1, || unreachable!());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // And threads that ended gave their stripes back to the next ones, counts kept.
    let more: Vec<_> = (0..THREADS)
        .map(|_| {
            let region = region.clone();
            thread::spawn(move || region.get_with(&1, || unreachable!()))
        })
        .collect();
    for t in more {
        t.join().unwrap();
    }
    assert_eq!(region.statistics().hits, (THREADS * 1000 + THREADS) as u64);
}

/// A store that is down.
struct Down;

impl dogpile_runtime::region::Store<u8, u8> for Down {
    fn get(&self, _: &u8) -> Result<Option<(u8, Stamp)>, dogpile_runtime::BackendError> {
        Err(dogpile_runtime::BackendError::new("down"))
    }
    fn put(&self, _: &u8, _: &u8, _: Stamp) -> Result<(), dogpile_runtime::BackendError> {
        Err(dogpile_runtime::BackendError::new("down"))
    }
    fn restamp(&self, _: &u8, _: Stamp, _: Stamp) -> Result<bool, dogpile_runtime::BackendError> {
        Err(dogpile_runtime::BackendError::new("down"))
    }
    fn remove(&self, _: &u8) -> Result<(), dogpile_runtime::BackendError> {
        Err(dogpile_runtime::BackendError::new("down"))
    }
    fn clear(&self) -> Result<(), dogpile_runtime::BackendError> {
        Err(dogpile_runtime::BackendError::new("down"))
    }
    fn count(&self) -> Option<usize> {
        None
    }
}

#[test]
fn a_failing_store_gets_the_policy_where_an_error_can_be_returned_and_a_direct_call_elsewhere() {
    use dogpile_runtime::region::OnBackendError;
    let strict: Region<u8, u8, Down> = Region::builder()
        .store(Down)
        .on_backend_error(OnBackendError::ReturnError)
        .build()
        .unwrap();
    assert!(matches!(
        strict.try_get_with(&1, || Ok::<_, ()>(1)),
        Err(RegionError::Backend(_))
    ));
    // The calls that cannot return an error call the creator, never panic (each on a key of
    // its own: a direct value is kept for the failure throttle, for the key's next callers).
    assert_eq!(strict.get_with(&2, || 2), 2);
    assert_eq!(strict.optionally_get_with(&3, || Some(3)), Some(3));
    assert_eq!(strict.background().get_with(&4, || 4), 4);
    assert_eq!(strict.statistics().direct_calls, 3);
    // A handle with the other policy, on the same region.
    let lenient = strict.with_on_backend_error(OnBackendError::CallDirectly);
    assert_eq!(lenient.try_get_with(&5, || Ok::<_, ()>(5)).unwrap(), 5);
    assert_eq!(strict.statistics().direct_calls, 4);
    // Within the throttle, the key's next caller gets the value its direct call made.
    assert_eq!(
        strict.get_with_served(&2, || 6),
        (2, dogpile_runtime::Served::Waited)
    );
}

/// A key soft-invalidated after every key was hard-invalidated counts as expired (served stale
/// while one caller regenerates), not missing; a hard invalidation after it still covers it.
#[test]
fn soft_and_hard_invalidations_in_either_order() {
    let clock = manual();
    let region: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    region.invalidate_all().unwrap();
    assert_eq!(region.get_with(&1, || 2), 2);
    clock.advance(Duration::from_secs(1));
    region.soft_invalidate(&1).unwrap();
    assert_eq!(
        region.peek(&1),
        Some(2),
        "soft after hard: still there, expired"
    );
    assert_eq!(
        region.get_with_served(&1, || 3),
        (3, dogpile_runtime::region::Served::Created),
        "and regenerated by the next caller"
    );
    clock.advance(Duration::from_secs(1));
    region.soft_invalidate(&1).unwrap();
    region.invalidate_all().unwrap();
    assert_eq!(region.peek(&1), None, "hard after soft: gone");
}

/// `String` keys of many lengths churned by four threads through a small bounded region: the
/// mutex registry copies new keys into the buffers of keys it let go, and every call still
/// gets its own key's value, with the region within its bound and no mutex left held.
#[test]
fn string_keys_churned_by_four_threads_each_get_their_own_value() {
    fn value_of(key: &str) -> u64 {
        key.bytes().fold(key.len() as u64, |sum, b| {
            sum.wrapping_mul(31).wrapping_add(u64::from(b))
        })
    }
    let region: Region<String, u64> = Region::builder().capacity(200).build().unwrap();
    let served = bounded({
        let region = region.clone();
        move || {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let region = region.clone();
                    thread::spawn(move || {
                        let mut served = 0;
                        for round in 0..2 {
                            for n in 0..5_000u64 {
                                // Overlapping key ranges, lengths 2 to 60.
                                let n = (n * 7 + t * 1_000 + round) % 6_000;
                                let key = format!("{n}{}", "x".repeat((n % 59) as usize));
                                let got = region.get_with(key.as_str(), || value_of(&key));
                                assert_eq!(got, value_of(&key), "{key:?}");
                                served += 1;
                            }
                        }
                        served
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum::<u64>()
        }
    });
    assert_eq!(served, 40_000);
    assert!(region.len() <= 200, "{} entries", region.len());
    assert_eq!(region.mutexes_in_use(), 0);
}
