//! The dogpile lock's rules, one test each, and the burst behaviour on one expired key.

use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
use dogpile_runtime::lock::{Got, LocalMutex, OwnedMutexGuard, RawMutex};
use dogpile_runtime::{BackendError, Lock, LockError, NeedRegeneration};

const EXPIRY: Duration = Duration::from_secs(10);
const BOUND: Duration = Duration::from_secs(10);

/// A value store with creation times, as a cache would be.
#[derive(Default)]
struct Store(Mutex<Option<(u64, Timestamp)>>);

impl Store {
    fn with(value: u64, created: Timestamp) -> Self {
        Store(Mutex::new(Some((value, created))))
    }
    fn get(&self) -> Got<u64> {
        self.0.lock().unwrap().ok_or(NeedRegeneration)
    }
    fn put(&self, value: u64, created: Timestamp) {
        *self.0.lock().unwrap() = Some((value, created));
    }
    fn value(&self) -> Option<u64> {
        self.0.lock().unwrap().map(|(v, _)| v)
    }
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_nanos(1_000_000_000_000))
}

/// Wraps a `LocalMutex` and counts the calls made to it.
#[derive(Default)]
struct Counted {
    inner: LocalMutex,
    calls: AtomicUsize,
    blocking: AtomicUsize,
}

impl RawMutex for Counted {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.try_acquire()
    }
    fn acquire(&self) -> Result<(), BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.blocking.fetch_add(1, Ordering::SeqCst);
        self.inner.acquire()
    }
    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.blocking.fetch_add(1, Ordering::SeqCst);
        self.inner.acquire_timeout(timeout)
    }
    fn release(&self) -> Result<(), BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.release()
    }
}

/// Runs `f` on another thread and fails the test if it does not finish within `BOUND`, so that
/// a test of "does not block" fails instead of hanging.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(BOUND).expect("the call blocked")
}

// ---- bursts on one key: the winner reads again before creating ---------------------------

fn burst(latency: Duration, start_with_value: bool) -> usize {
    const THREADS: usize = 50;
    let clock = Arc::new(clock());
    let store = Arc::new(if start_with_value {
        Store::with(0, clock.now() - EXPIRY * 2)
    } else {
        Store::default()
    });
    let mutex = Arc::new(LocalMutex::new());
    let created = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (clock, store, mutex, created, barrier) = (
                clock.clone(),
                store.clone(),
                mutex.clone(),
                created.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                Lock::new(
                    &mutex,
                    || {
                        let n = created.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                        store.put(n, clock.now());
                        Ok::<_, Infallible>(n)
                    },
                    || {
                        // A slow getter returns what the store held when it was asked, as a
                        // network round trip does.
                        let got = store.get();
                        if !latency.is_zero() {
                            thread::sleep(latency);
                        }
                        got
                    },
                    Some(EXPIRY),
                )
                .with_clock(&*clock)
                .enter()
                .unwrap()
            })
        })
        .collect();
    for t in threads {
        let value = t.join().unwrap();
        if !start_with_value {
            assert_eq!(
                value, 1,
                "a waiter got something other than the one created value"
            );
        }
    }
    created.load(Ordering::SeqCst)
}

#[test]
fn burst_on_expired_value_creates_once_whatever_the_getter_latency() {
    for latency_us in [0, 500, 5_000] {
        let calls = burst(Duration::from_micros(latency_us), true);
        assert_eq!(
            calls, 1,
            "getter latency {latency_us} us: {calls} creator calls"
        );
    }
}

#[test]
fn burst_on_missing_value_creates_once_whatever_the_getter_latency() {
    for latency_us in [0, 500, 5_000] {
        let calls = burst(Duration::from_micros(latency_us), false);
        assert_eq!(
            calls, 1,
            "getter latency {latency_us} us: {calls} creator calls"
        );
    }
}

// ---- the edge table ---------------------------------------------------------------------------

fn never_called() -> Result<u64, Infallible> {
    panic!("the creator must not run")
}

#[test]
fn age_equal_to_expiry_is_fresh_and_one_nanosecond_more_is_expired() {
    let clock = clock();
    let mutex = Arc::new(LocalMutex::new());
    let store = Store::with(7, clock.now() - EXPIRY);
    let v = Lock::new(&mutex, never_called, || store.get(), Some(EXPIRY))
        .with_clock(&clock)
        .enter()
        .unwrap();
    assert_eq!(v, 7);

    clock.advance(Duration::from_nanos(1));
    let v = Lock::new(
        &mutex,
        || Ok::<_, Infallible>(8),
        || store.get(),
        Some(EXPIRY),
    )
    .with_clock(&clock)
    .enter()
    .unwrap();
    assert_eq!(v, 8, "an expired value with a free mutex is regenerated");
}

#[test]
fn no_expiry_never_expires() {
    let clock = clock();
    let mutex = Arc::new(LocalMutex::new());
    let store = Store::with(7, Timestamp::from_nanos(1));
    clock.advance(Duration::from_secs(100 * 365 * 24 * 3600));
    let v = Lock::new(&mutex, never_called, || store.get(), None)
        .with_clock(&clock)
        .enter()
        .unwrap();
    assert_eq!(v, 7);
}

#[test]
fn a_creation_time_that_is_not_positive_means_no_value() {
    let clock = clock();
    for created in [0, -1, i64::MIN] {
        let mutex = Arc::new(Counted::default());
        let store = Store::with(7, Timestamp::from_nanos(created));
        let v = Lock::new(&mutex, || Ok::<_, Infallible>(9), || store.get(), None)
            .with_clock(&clock)
            .enter()
            .unwrap();
        assert_eq!(v, 9, "created = {created}");
        assert_eq!(
            mutex.blocking.load(Ordering::SeqCst),
            1,
            "created = {created}: no value takes the blocking path"
        );
    }
}

#[test]
fn a_fresh_value_never_touches_the_mutex_even_when_it_is_held() {
    let clock = clock();
    let mutex = Arc::new(Counted::default());
    let held = OwnedMutexGuard::acquire(mutex.clone()).unwrap();
    let calls_before = mutex.calls.load(Ordering::SeqCst);
    let store = Store::with(7, clock.now());
    let v = Lock::new(&mutex, never_called, || store.get(), Some(EXPIRY))
        .with_clock(&clock)
        .enter()
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(mutex.calls.load(Ordering::SeqCst), calls_before);
    drop(held);
}

#[test]
fn an_expired_value_with_the_mutex_held_elsewhere_returns_stale_without_blocking() {
    let mutex = Arc::new(LocalMutex::new());
    let _held = OwnedMutexGuard::acquire(mutex.clone()).unwrap();
    let v = bounded(move || {
        let clock = clock();
        let store = Store::with(7, clock.now() - EXPIRY * 2);
        Lock::new(&mutex, never_called, || store.get(), Some(EXPIRY))
            .with_clock(&clock)
            .enter()
            .unwrap()
    });
    assert_eq!(v, 7);
}

#[test]
fn the_winner_rereads_and_does_not_create_when_the_value_became_fresh() {
    let clock = clock();
    let mutex = Arc::new(LocalMutex::new());
    let reads = AtomicUsize::new(0);
    let getter = || {
        // The first read sees the expired value; by the second, someone else refreshed it.
        let created = if reads.fetch_add(1, Ordering::SeqCst) == 0 {
            clock.now() - EXPIRY * 2
        } else {
            clock.now()
        };
        Ok((reads.load(Ordering::SeqCst) as u64, created))
    };
    let v = Lock::new(&mutex, never_called, getter, Some(EXPIRY))
        .with_clock(&clock)
        .enter()
        .unwrap();
    assert_eq!(v, 2);
    assert!(mutex.try_acquire().unwrap(), "the mutex was released");
}

#[test]
fn the_async_creator_receives_the_mutex_and_its_drop_releases_it() {
    let clock = Arc::new(clock());
    let mutex = Arc::new(LocalMutex::new());
    let store = Arc::new(Store::with(1, clock.now() - EXPIRY * 2));
    let (started_tx, started_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let background = Mutex::new(None);
    let v = Lock::new(&mutex, never_called, || store.get(), Some(EXPIRY))
        .with_clock(&*clock)
        .with_async_creator(|guard| {
            let (store, clock) = (store.clone(), clock.clone());
            *background.lock().unwrap() = Some(thread::spawn(move || {
                started_tx.send(()).unwrap();
                finish_rx.recv().unwrap();
                store.put(2, clock.now());
                drop(guard);
            }));
            Ok::<_, Infallible>(())
        })
        .enter()
        .unwrap();
    assert_eq!(v, 1, "the caller gets the stale value at once");
    started_rx.recv_timeout(BOUND).unwrap();
    assert!(
        !mutex.try_acquire().unwrap(),
        "the background creator holds the mutex"
    );

    // Meanwhile, other callers get the stale value without waiting.
    let v = Lock::new(&mutex, never_called, || store.get(), Some(EXPIRY))
        .with_clock(&*clock)
        .enter()
        .unwrap();
    assert_eq!(v, 1);

    finish_tx.send(()).unwrap();
    background.lock().unwrap().take().unwrap().join().unwrap();
    assert!(
        mutex.try_acquire().unwrap(),
        "released when the guard dropped"
    );
    mutex.release().unwrap();
    assert_eq!(store.value(), Some(2));
}

#[test]
fn the_async_creator_is_never_used_on_a_missing_value() {
    let mutex = Arc::new(LocalMutex::new());
    let v = Lock::new(
        &mutex,
        || Ok::<_, Infallible>(5),
        || Err(NeedRegeneration),
        None,
    )
    .with_async_creator(|_guard| panic!("the async creator must not run on a miss"))
    .enter()
    .unwrap();
    assert_eq!(v, 5);
}

#[test]
fn a_failing_async_creator_releases_the_mutex_and_returns_its_error() {
    let clock = clock();
    let mutex = Arc::new(LocalMutex::new());
    let store = Store::with(1, clock.now() - EXPIRY * 2);
    let err = Lock::new(&mutex, || Ok(0), || store.get(), Some(EXPIRY))
        .with_clock(&clock)
        .with_async_creator(|_guard| Err("pool is full"))
        .enter()
        .unwrap_err();
    assert!(matches!(err, LockError::Creator("pool is full")), "{err:?}");
    assert!(mutex.try_acquire().unwrap(), "the mutex was released");
}

#[test]
fn a_failing_creator_releases_the_mutex_stores_nothing_and_a_waiter_then_creates() {
    let mutex = Arc::new(Counted::default());
    let store = Arc::new(Store::default());
    let (go_tx, go_rx) = mpsc::channel::<()>();

    let failing = {
        let (mutex, store) = (mutex.clone(), store.clone());
        thread::spawn(move || {
            Lock::new(
                &mutex,
                || {
                    go_rx.recv().unwrap();
                    Err::<u64, _>("backend down")
                },
                || store.get(),
                None,
            )
            .enter()
        })
    };
    // Wait until the failing creator holds the mutex, then start a waiter behind it.
    while !matches!(mutex.inner.try_acquire(), Ok(false)) {
        mutex.inner.release().unwrap();
        thread::yield_now();
    }
    let waiter = {
        let (mutex, store) = (mutex.clone(), store.clone());
        thread::spawn(move || {
            Lock::new(
                &mutex,
                || {
                    store.put(11, Timestamp::from_nanos(1));
                    Ok::<_, &str>(11)
                },
                || store.get(),
                None,
            )
            .enter()
        })
    };
    while mutex.blocking.load(Ordering::SeqCst) < 2 {
        thread::yield_now();
    }
    go_tx.send(()).unwrap();
    let err = failing.join().unwrap().unwrap_err();
    assert!(matches!(err, LockError::Creator("backend down")), "{err:?}");
    assert_eq!(waiter.join().unwrap().unwrap(), 11);
    assert_eq!(store.value(), Some(11));
}

#[test]
fn a_panicking_creator_releases_the_mutex_and_a_waiter_then_creates() {
    let mutex = Arc::new(Counted::default());
    let store = Arc::new(Store::default());
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (holding_tx, holding_rx) = mpsc::channel::<()>();

    let panicking = {
        let (mutex, store) = (mutex.clone(), store.clone());
        thread::spawn(move || {
            Lock::new(
                &mutex,
                || -> Result<u64, Infallible> {
                    holding_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    panic!("creator exploded")
                },
                || store.get(),
                None,
            )
            .enter()
        })
    };
    holding_rx.recv_timeout(BOUND).unwrap();
    let waiter = {
        let (mutex, store) = (mutex.clone(), store.clone());
        thread::spawn(move || {
            Lock::new(
                &mutex,
                || {
                    store.put(12, Timestamp::from_nanos(1));
                    Ok::<_, Infallible>(12)
                },
                || store.get(),
                None,
            )
            .enter()
            .unwrap()
        })
    };
    while mutex.blocking.load(Ordering::SeqCst) < 2 {
        thread::yield_now();
    }
    go_tx.send(()).unwrap();
    let panic = panicking.join().unwrap_err();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"creator exploded"));
    assert_eq!(bounded(move || waiter.join().unwrap()), 12);
}

#[test]
fn a_panic_in_the_creator_reaches_its_caller_and_leaves_the_lock_usable() {
    let mutex = Arc::new(LocalMutex::new());
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        Lock::new(
            &mutex,
            || -> Result<u64, Infallible> { panic!("boom") },
            || Err(NeedRegeneration),
            None,
        )
        .enter()
    }));
    assert!(result.is_err());
    let v = Lock::new(
        &mutex,
        || Ok::<_, Infallible>(3),
        || Err(NeedRegeneration),
        None,
    )
    .enter()
    .unwrap();
    assert_eq!(v, 3);
}

#[test]
fn a_lock_timeout_on_the_blocking_path_is_an_error_not_a_value() {
    let mutex = Arc::new(LocalMutex::new());
    let _held = OwnedMutexGuard::acquire(mutex.clone()).unwrap();
    let err = bounded(move || {
        Lock::new(&mutex, never_called, || Err(NeedRegeneration), None)
            .with_lock_timeout(Duration::from_millis(20))
            .enter()
            .unwrap_err()
    });
    assert!(
        matches!(err, LockError::Timeout(t) if t == Duration::from_millis(20)),
        "{err:?}"
    );
}

#[test]
fn a_lock_timeout_that_is_met_returns_the_value_created_meanwhile() {
    let mutex = Arc::new(LocalMutex::new());
    let store = Arc::new(Store::default());
    let held = OwnedMutexGuard::acquire(mutex.clone()).unwrap();
    let waiter = {
        let (mutex, store) = (mutex.clone(), store.clone());
        thread::spawn(move || {
            Lock::new(&mutex, never_called, || store.get(), None)
                .with_lock_timeout(BOUND)
                .enter()
                .unwrap()
        })
    };
    thread::sleep(Duration::from_millis(20));
    store.put(4, Timestamp::from_nanos(1));
    drop(held);
    assert_eq!(waiter.join().unwrap(), 4);
}

#[test]
fn a_creator_waiting_for_its_own_value_fails_instead_of_hanging() {
    let mutex = Arc::new(LocalMutex::new());
    let inner = bounded({
        let mutex = mutex.clone();
        move || {
            Lock::new(
                &mutex,
                || {
                    let inner = Lock::new(
                        &mutex,
                        || Ok::<u64, Infallible>(1),
                        || Err(NeedRegeneration),
                        None,
                    )
                    .enter();
                    Ok::<_, Infallible>(inner.map_err(|e| e.to_string()))
                },
                || Err(NeedRegeneration),
                None,
            )
            .enter()
            .unwrap()
        }
    });
    let message = inner.unwrap_err();
    assert!(
        message.contains("would wait for itself forever"),
        "{message}"
    );
    assert!(
        mutex.try_acquire().unwrap(),
        "the outer creator released it"
    );
}

#[test]
fn a_cycle_through_another_value_is_detected_too() {
    let a = Arc::new(LocalMutex::new());
    let b = Arc::new(LocalMutex::new());
    let result = bounded(move || {
        Lock::new(
            &a,
            || {
                Lock::new(
                    &b,
                    || {
                        Lock::new(&a, never_called, || Err(NeedRegeneration), None)
                            .enter()
                            .map_err(|e| matches!(e, LockError::WouldDeadlock))
                    },
                    || Err(NeedRegeneration),
                    None,
                )
                .enter()
                .map_err(|e| matches!(e, LockError::Creator(true)))
            },
            || Err(NeedRegeneration),
            None,
        )
        .enter()
    });
    assert!(
        matches!(result, Err(LockError::Creator(true))),
        "{result:?}"
    );
}

#[test]
fn a_creator_reading_its_own_expired_value_gets_the_stale_one() {
    let clock = clock();
    let mutex = Arc::new(LocalMutex::new());
    let store = Store::with(1, clock.now() - EXPIRY * 2);
    let v = Lock::new(
        &mutex,
        || {
            // Re-entry on the non-blocking path is not a deadlock: it sees the stale value.
            let inner = Lock::new(&mutex, never_called, || store.get(), Some(EXPIRY))
                .with_clock(&clock)
                .enter()
                .unwrap();
            Ok::<_, Infallible>(inner + 1)
        },
        || store.get(),
        Some(EXPIRY),
    )
    .with_clock(&clock)
    .enter()
    .unwrap();
    assert_eq!(v, 2);
}

#[test]
fn a_mutex_that_fails_is_reported() {
    struct Down;
    impl RawMutex for Down {
        fn try_acquire(&self) -> Result<bool, BackendError> {
            Err(BackendError::new("server unreachable"))
        }
        fn acquire(&self) -> Result<(), BackendError> {
            Err(BackendError::new("server unreachable"))
        }
        fn acquire_timeout(&self, _: Duration) -> Result<bool, BackendError> {
            Err(BackendError::new("server unreachable"))
        }
        fn release(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }
    let mutex = Arc::new(Down);
    let err = Lock::new(&mutex, never_called, || Err(NeedRegeneration), None)
        .enter()
        .unwrap_err();
    assert_eq!(err.to_string(), "the dogpile mutex failed");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some("dogpile backend: server unreachable")
    );
    let dyn_mutex: Arc<dyn RawMutex> = mutex;
    let clock = clock();
    let store = Store::with(1, clock.now() - EXPIRY * 2);
    let err = Lock::new(&dyn_mutex, never_called, || store.get(), Some(EXPIRY))
        .with_clock(&clock)
        .enter()
        .unwrap_err();
    assert!(matches!(err, LockError::Mutex(_)), "{err:?}");
}
