//! What a region keeps for the failure throttle stays within its bound of 65,536 keys, however
//! many keys fail: the last error of each key whose creator failed, and the values made
//! directly while the store is down. Beyond the bound nothing more is kept (the process's
//! memory stops growing), every call still gets its own key's error or value, a key kept is
//! still throttled, a key beyond is retried instead of lost, and once the throttle has passed
//! the records make room for new ones.
//!
//! One binary of its own: it counts the process's allocations, and its tests take turns.

use std::alloc::System;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::ManualClock;
use dogpile_runtime::region::{Served, Stamp};
use dogpile_runtime::{BackendError, Region, RegionError};
use stats_alloc::{Region as Allocations, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The most keys a region keeps a failure, or a direct value, for (`MOST` in
/// `region/failures.rs` and `region/direct.rs`).
const BOUND: u64 = 65_536;
/// Keys failing beyond the bound. Each cost a search of the full map (nothing in it is old
/// enough to drop: 1.4-3.3 ms in this debug build, 0.37 ms in release), so there were 1,000;
/// a search that finds no room is now repeated only after a sixteenth of the throttle, and a
/// key beyond costs about 3-4 µs here.
const BEYOND: u64 = 50_000;
const THROTTLE: Duration = Duration::from_secs(10);

/// The tests take turns: each counts the whole process's allocations.
fn alone() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What `f` left allocated when it returned, in bytes (negative: it freed more than it took).
fn retained_by(f: impl FnOnce()) -> i64 {
    let counted = Allocations::new(GLOBAL);
    f();
    let change = counted.change();
    change.bytes_allocated as i64 - change.bytes_deallocated as i64
}

/// What each of the keys within the bound kept, in bytes, on average: a key beyond it that
/// kept a quarter of that would be a bound that does not hold.
fn kept_per_key(within: i64) -> i64 {
    within / BOUND as i64
}

/// The upstream refused `key`, and says why. The failures and the values of these tests carry
/// about 120 bytes on the heap each: a map that kept more keys than its bound would show in the
/// bytes kept, which the room in its table (it doubles only past 114,688 keys) would hide for
/// entries of a fixed size.
#[derive(Debug, PartialEq)]
struct Refused {
    key: u64,
    why: String,
}

fn refused(key: u64) -> Refused {
    Refused {
        key,
        why: format!("the upstream refused key {key:>100}"),
    }
}

/// A region on a manual clock, with the failure throttle.
fn throttled<V, S>(store: S) -> (Arc<ManualClock>, Region<u64, V, S>)
where
    V: Clone + Send + Sync + 'static,
    S: dogpile_runtime::region::Store<u64, V>,
{
    let clock = Arc::new(ManualClock::starting_now());
    let region = Region::builder()
        .store(store)
        .fail_safe_throttle(THROTTLE)
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, region)
}

/// `key`'s call with a creator that always fails, counted in `calls`: the creator's error for
/// that key, whether it ran or was shared.
fn fail(region: &Region<u64, u64>, key: u64, calls: &AtomicUsize) -> Arc<Refused> {
    let got = region.try_get_with(&key, || {
        calls.fetch_add(1, Ordering::Relaxed);
        Err::<u64, _>(refused(key))
    });
    match got {
        Err(RegionError::Creator(err)) => {
            assert_eq!(*err, refused(key), "another key's error");
            err
        }
        other => panic!("key {key}: expected the creator's error, got {other:?}"),
    }
}

/// 66,536 keys fail, 1,000 of them beyond the bound: the process's memory stops growing at the
/// bound, and within the throttle the 65,536 keys kept get their failure again without an
/// upstream call while those beyond call it again; a herd on a key beyond calls it once per
/// caller, one at a time; past the throttle the records make room, and a new failure is
/// throttled again.
#[test]
fn failures_of_more_keys_than_the_bound_keep_the_first_and_retry_the_rest() {
    let _turn = alone();
    let (clock, region) = throttled(dogpile_runtime::region::MemoryStore::new(None).unwrap());
    let calls = AtomicUsize::new(0);
    let began = Instant::now();

    let mut first = None;
    let within = retained_by(|| {
        for key in 0..BOUND {
            let err = fail(&region, key, &calls);
            if key == 0 {
                first = Some(err);
            }
        }
    });
    let filled = began.elapsed();
    let beyond = retained_by(|| {
        for key in BOUND..BOUND + BEYOND {
            fail(&region, key, &calls);
        }
    });
    let swept = began.elapsed() - filled;
    judge_bound("failures", (within, filled), (beyond, swept));
    assert_eq!(calls.load(Ordering::Relaxed), (BOUND + BEYOND) as usize);

    // Within the throttle: the keys kept share their failure, those beyond run their creator.
    clock.advance(THROTTLE / 2);
    let shared_before = region.statistics().shared_failures;
    calls.store(0, Ordering::Relaxed);
    let again = fail(&region, 0, &calls);
    assert!(
        Arc::ptr_eq(&again, first.as_ref().unwrap()),
        "not the error recorded"
    );
    for key in 1..BOUND + BEYOND {
        fail(&region, key, &calls);
    }
    let shared = region.statistics().shared_failures - shared_before;
    eprintln!(
        "within the throttle: {shared} shared, {} upstream calls",
        calls.load(Ordering::Relaxed)
    );
    assert_eq!(shared, BOUND, "the keys kept, and only they, are throttled");
    assert_eq!(calls.load(Ordering::Relaxed), BEYOND as usize);

    // A herd on a key beyond the bound: no failure kept to share, every caller calls the
    // upstream in turn, never two at once.
    let herd = 8;
    let (calls, running, most) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let barrier = Barrier::new(herd);
    let key = BOUND + BEYOND;
    thread::scope(|s| {
        for _ in 0..herd {
            s.spawn(|| {
                barrier.wait();
                let got = region.try_get_with(&key, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Err::<u64, _>(refused(key))
                });
                assert!(matches!(got, Err(RegionError::Creator(e)) if *e == refused(key)));
            });
        }
    });
    eprintln!(
        "a herd of {herd} on a key beyond the bound: {} calls, at most {} at once",
        calls.load(Ordering::SeqCst),
        most.load(Ordering::SeqCst)
    );
    assert_eq!(calls.load(Ordering::SeqCst), herd);
    assert_eq!(most.load(Ordering::SeqCst), 1);

    // Past the throttle: the records are old enough to drop, a new key's failure is kept and
    // throttled again, and a key kept before calls its upstream again.
    clock.advance(THROTTLE);
    let calls = AtomicUsize::new(0);
    let fresh = BOUND + BEYOND + 1;
    fail(&region, fresh, &calls);
    clock.advance(Duration::from_secs(1));
    fail(&region, fresh, &calls);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "a new failure is throttled"
    );
    fail(&region, 0, &calls);
    assert_eq!(calls.load(Ordering::Relaxed), 2, "an old failure is not");
    eprintln!("in all {:?}", began.elapsed());
}

/// A store that is down: every call fails at once (as with a Redis breaker open).
struct Down;

impl dogpile_runtime::region::Store<u64, String> for Down {
    fn get(&self, _: &u64) -> Result<Option<(String, Stamp)>, BackendError> {
        Err(BackendError::new("down"))
    }
    fn put(&self, _: &u64, _: &String, _: Stamp) -> Result<(), BackendError> {
        Err(BackendError::new("down"))
    }
    fn restamp(&self, _: &u64, _: Stamp, _: Stamp) -> Result<bool, BackendError> {
        Err(BackendError::new("down"))
    }
    fn remove(&self, _: &u64) -> Result<(), BackendError> {
        Err(BackendError::new("down"))
    }
    fn clear(&self) -> Result<(), BackendError> {
        Err(BackendError::new("down"))
    }
    fn count(&self) -> Option<usize> {
        None
    }
}

/// The value of `key`, whoever makes it.
fn value_of(key: u64) -> String {
    format!("the value of key {key:>100}")
}

/// `key`'s call with the store down, its creator counted in `calls`: the key's value, and how
/// it was served.
fn direct(region: &Region<u64, String, Down>, key: u64, calls: &AtomicUsize) -> Served {
    let (value, served) = region.get_with_served(&key, || {
        calls.fetch_add(1, Ordering::Relaxed);
        value_of(key)
    });
    assert_eq!(value, value_of(key), "key {key} got another key's value");
    served
}

/// With the store down, 66,536 keys are made directly, 1,000 of them beyond the bound: the
/// process's memory stops growing at the bound, every call gets its own key's value, and
/// within the throttle the 65,536 values kept are shared without an upstream call while the
/// keys beyond call it again; past the throttle a kept value is no longer shared, and the full
/// map makes room for a new one.
#[test]
fn direct_values_of_more_keys_than_the_bound_keep_the_first_and_make_the_rest_again() {
    let _turn = alone();
    let (clock, region) = throttled(Down);
    let calls = AtomicUsize::new(0);
    let began = Instant::now();

    let within = retained_by(|| {
        for key in 0..BOUND {
            assert_eq!(direct(&region, key, &calls), Served::Direct);
        }
    });
    let filled = began.elapsed();
    let beyond = retained_by(|| {
        for key in BOUND..BOUND + BEYOND {
            assert_eq!(direct(&region, key, &calls), Served::Direct);
        }
    });
    let swept = began.elapsed() - filled;
    judge_bound("direct values", (within, filled), (beyond, swept));
    assert_eq!(calls.load(Ordering::Relaxed), (BOUND + BEYOND) as usize);

    // Within the throttle: the values kept are shared, the keys beyond are made again.
    clock.advance(THROTTLE / 2);
    let before = region.statistics();
    calls.store(0, Ordering::Relaxed);
    let mut shared = 0;
    for key in 0..BOUND + BEYOND {
        match direct(&region, key, &calls) {
            Served::Waited => {
                assert!(key < BOUND, "key {key}, beyond the bound, was kept");
                shared += 1;
            }
            Served::Direct => assert!(key >= BOUND, "key {key}'s value was not kept"),
            other => panic!("key {key} served {other:?} with the store down"),
        }
    }
    let stats = region.statistics();
    eprintln!(
        "within the throttle: {shared} shared, {} upstream calls",
        calls.load(Ordering::Relaxed)
    );
    assert_eq!(shared, BOUND);
    assert_eq!(stats.waits - before.waits, BOUND);
    assert_eq!(calls.load(Ordering::Relaxed), BEYOND as usize);
    assert_eq!(stats.direct_calls - before.direct_calls, BEYOND);

    // Past the throttle: a kept value is no longer shared (key 0 is made again, and kept
    // again), and the full map drops the others, old enough, to keep a new key's value.
    clock.advance(THROTTLE);
    let calls = AtomicUsize::new(0);
    assert_eq!(direct(&region, 0, &calls), Served::Direct, "an old value");
    let fresh = BOUND + BEYOND;
    assert_eq!(direct(&region, fresh, &calls), Served::Direct);
    assert_eq!(
        direct(&region, fresh, &calls),
        Served::Waited,
        "a new value"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    eprintln!("in all {:?}", began.elapsed());
}

/// A store that fails while `down` is set, and otherwise answers but keeps nothing (every call
/// creates): what the region itself keeps is then all the process keeps.
struct Flaky {
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn answer<T>(&self, answer: T) -> Result<T, BackendError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BackendError::new("down"))
        } else {
            Ok(answer)
        }
    }
}

impl dogpile_runtime::region::Store<u64, Vec<u8>> for Flaky {
    fn get(&self, _: &u64) -> Result<Option<(Vec<u8>, Stamp)>, BackendError> {
        self.answer(None)
    }
    fn put(&self, _: &u64, _: &Vec<u8>, _: Stamp) -> Result<(), BackendError> {
        self.answer(())
    }
    fn restamp(&self, _: &u64, _: Stamp, _: Stamp) -> Result<bool, BackendError> {
        self.answer(false)
    }
    fn remove(&self, _: &u64) -> Result<(), BackendError> {
        self.answer(())
    }
    fn clear(&self) -> Result<(), BackendError> {
        self.answer(())
    }
    fn count(&self) -> Option<usize> {
        None
    }
}

/// Values made directly are let go once the store answers again: a key's at once when its
/// key is made through the store, and every other past the throttle, when any value is made
/// through the store. 64 values of 256 KiB made while the store is down, then one key made
/// again and, past the throttle, one new key: none is held. They were kept until a later
/// direct call of their key or a full map dropped them: 16 MiB that no call could be served,
/// for as long as no outage came back, and up to 65,536 values; and then until their own key
/// was asked for again.
#[test]
fn direct_values_are_let_go_once_the_store_answers_again() {
    const KEYS: u64 = 64;
    const SIZE: usize = 256 << 10;
    let _turn = alone();
    let down = Arc::new(AtomicBool::new(true));
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u64, Vec<u8>, Flaky> = Region::builder()
        .store(Flaky { down: down.clone() })
        .fail_safe_throttle(THROTTLE)
        .clock(clock.clone())
        .build()
        .unwrap();
    let make = |key: u64| vec![key as u8; SIZE];
    let held = retained_by(|| {
        for key in 0..KEYS {
            let (value, served) = region.get_with_served(&key, || make(key));
            assert_eq!(
                (value[0], value.len(), served),
                (key as u8, SIZE, Served::Direct)
            );
        }
        // The store answers again: key 0 is made through it, within the throttle; then,
        // past it, a key never made before. Keys 1 to 63 are not asked for again.
        down.store(false, Ordering::SeqCst);
        for (key, after) in [(0, Duration::ZERO), (KEYS, THROTTLE * 2)] {
            clock.advance(after);
            let (value, served) = region.get_with_served(&key, || make(key));
            assert_eq!(
                (value[0], value.len(), served),
                (key as u8, SIZE, Served::Created)
            );
        }
    });
    eprintln!(
        "{KEYS} values of {} KiB made during the outage: {} KiB still held after it",
        SIZE >> 10,
        held >> 10
    );
    assert!(
        held < SIZE as i64,
        "{} KiB still held for {KEYS} values made directly, {:?} after the throttle",
        held >> 10,
        THROTTLE
    );
}

/// Reports what the keys within the bound kept (`within` bytes, in `filled`) and those
/// beyond it (`beyond` bytes, in `swept`), and checks that the bound held: the keys within
/// kept something, those beyond far less than as many keys within keep.
fn judge_bound(what: &str, (within, filled): (i64, Duration), (beyond, swept): (i64, Duration)) {
    eprintln!(
        "{BOUND} {what} kept {} KiB ({filled:?}); {BEYOND} beyond the bound, {beyond} bytes \
         ({swept:?}, {:?} each)",
        within >> 10,
        swept / BEYOND as u32
    );
    assert!(
        within > 1 << 20,
        "{BOUND} {what} kept took only {within} bytes"
    );
    assert!(
        beyond < kept_per_key(within) * BEYOND as i64 / 4,
        "{BEYOND} {what} beyond the bound kept {beyond} bytes"
    );
}

/// A value made directly is not shared after a newer one went through the store: the store
/// down, key 1 is made directly; the store back, a step writes key 1 (an `insert`, a batch
/// that makes it) or clears every key; the store down again, within the throttle, the next
/// call of key 1 makes its own value instead of getting the one from before the step. (Each
/// got it, `Served::Waited`, before.)
#[test]
fn a_value_made_directly_is_not_shared_after_a_newer_one_went_through_the_store() {
    type Step = fn(&Region<u64, Vec<u8>, Flaky>);
    let steps: [(&str, Step); 3] = [
        ("insert", |region| region.insert(&1, vec![2]).unwrap()),
        ("batch", |region| {
            let made = region.try_get_with_many(&[1], |_| Ok::<_, ()>(vec![vec![3]]));
            assert_eq!(made.unwrap(), [vec![3]]);
        }),
        ("clear", |region| region.clear().unwrap()),
    ];
    let _turn = alone();
    for (what, step) in steps {
        let down = Arc::new(AtomicBool::new(true));
        let region: Region<u64, Vec<u8>, Flaky> = Region::builder()
            .store(Flaky { down: down.clone() })
            .fail_safe_throttle(THROTTLE)
            .clock(Arc::new(ManualClock::starting_now()))
            .build()
            .unwrap();
        assert_eq!(
            region.get_with_served(&1, || vec![1]),
            (vec![1], Served::Direct)
        );
        down.store(false, Ordering::SeqCst);
        step(&region);
        down.store(true, Ordering::SeqCst);
        assert_eq!(
            region.get_with_served(&1, || vec![4]),
            (vec![4], Served::Direct),
            "after {what}"
        );
    }
}
