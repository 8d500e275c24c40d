//! Failure without a stampede: one upstream call per key and attempt when the upstream fails,
//! the failure shared with every caller that waited for it and with those that come within the
//! failure throttle, background regenerations backing off, and stale-if-error a window of its
//! own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::{Clock, ManualClock};
use dogpile_runtime::region::{Pool, Served, Stamp, Store, StoreFuture};
use dogpile_runtime::{BackendError, Region, RegionError};

const CALLERS: usize = 50;
const UPSTREAM: Duration = Duration::from_millis(100);

/// A tokio runtime with `workers` threads (1: the current thread only).
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_time().build().unwrap()
}

/// What one caller of the herd got.
type Answer = Result<(u32, Served), RegionError<String>>;

/// 50 threads at once on one key whose upstream fails after 100 ms: how many upstream calls,
/// what each caller got, and how long the slowest waited.
fn herd(region: &Region<u32, u32>) -> (usize, Vec<Answer>, Duration) {
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let got = region.try_get_with_served(&1, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(UPSTREAM);
                    Err("the upstream is down".to_string())
                });
                (got, start.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut results = Vec::new();
    for thread in threads {
        let (got, took) = thread.join().unwrap();
        slowest = slowest.max(took);
        results.push(got);
    }
    (calls.load(Ordering::SeqCst), results, slowest)
}

#[test]
fn a_failing_upstream_is_called_once_for_a_herd_on_a_new_key() {
    let region: Region<u32, u32> = Region::builder().build().unwrap();
    let (calls, results, slowest) = herd(&region);
    eprintln!("{CALLERS} callers, failing upstream: {calls} call(s), slowest {slowest:?}");
    assert_eq!(calls, 1);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(RegionError::Creator(e)) if **e == "the upstream is down")));
    // Before, every waiter called in turn: 50 × 100 ms.
    assert!(
        slowest < UPSTREAM * 10,
        "the slowest caller waited {slowest:?}"
    );
    let stats = region.statistics();
    assert_eq!(
        (stats.errors, stats.shared_failures),
        (1, CALLERS as u64 - 1)
    );
}

#[test]
fn a_failing_upstream_is_called_once_for_a_herd_on_a_stale_key_and_nobody_gets_an_error() {
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_millis(50))
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    region.insert(&1, 7).unwrap();
    thread::sleep(Duration::from_millis(60));
    let (calls, results, _) = herd(&region);
    assert_eq!(calls, 1);
    assert!(results.iter().all(|r| matches!(r, Ok((7, Served::Stale)))));
}

#[test]
fn an_async_herd_on_a_failing_upstream_makes_one_call() {
    let region: Region<u32, u32> = Region::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let runtime = runtime(2);
    let (errors, slowest) = runtime.block_on(async {
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (region, calls) = (region.to_async(), calls.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let got = region
                        .try_get_with(&1, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(UPSTREAM).await;
                            Err::<u32, _>("the upstream is down".to_string())
                        })
                        .await;
                    (got.is_err(), start.elapsed())
                })
            })
            .collect();
        let mut errors = 0;
        let mut slowest = Duration::ZERO;
        for task in tasks {
            let (failed, took) = task.await.unwrap();
            errors += usize::from(failed);
            slowest = slowest.max(took);
        }
        (errors, slowest)
    });
    eprintln!(
        "{CALLERS} tasks, failing upstream: {} call(s), slowest {slowest:?}",
        calls.load(Ordering::SeqCst)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(errors, CALLERS);
    assert!(
        slowest < UPSTREAM * 10,
        "the slowest task waited {slowest:?}"
    );
}

#[test]
fn within_the_throttle_callers_get_the_failure_or_the_stale_value_without_calling() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(60))
        .fail_safe_throttle(Duration::from_secs(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = AtomicUsize::new(0);
    let failing = || {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>("down")
    };
    // A new key: the failure, then the same failure without a call.
    assert!(region.try_get_with(&1, failing).is_err());
    clock.advance(Duration::from_secs(1));
    assert!(region.try_get_with(&1, failing).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Past the throttle: one call again.
    clock.advance(Duration::from_millis(1500));
    assert!(region.try_get_with(&1, failing).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A key with a stale value: the stale value, without a call, while the throttle lasts.
    region.insert(&2, 20).unwrap();
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        region.try_get_with_served(&2, failing).unwrap(),
        (20, Served::Stale)
    );
    assert_eq!(
        region.try_get_with_served(&2, failing).unwrap(),
        (20, Served::Stale)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // A success clears the key's failure.
    clock.advance(Duration::from_secs(3));
    assert_eq!(region.try_get_with(&2, || Ok::<_, &str>(21)).unwrap(), 21);
    let stats = region.statistics();
    assert_eq!(stats.shared_failures, 2);
}

/// A region on a manual clock whose key 1 holds the value 1, expired (past its 10 s), and
/// which regenerates in the background with `throttle` as its failure throttle.
fn expired_in_the_background(throttle: Duration) -> (Arc<ManualClock>, Region<u32, u32>) {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_secs(10))
        .fail_safe_throttle(throttle)
        .background(Pool::new(1, 8).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(Duration::from_secs(11));
    (clock, region)
}

/// One call for key 1 whose background regeneration (if it runs) fails, counted in `calls`:
/// the stale value at once, and the background creator ended before it returns.
fn fail_in_the_background(region: &Region<u32, u32>, calls: &Arc<AtomicUsize>) {
    let calls = calls.clone();
    let got = region.background().try_get_with(&1, move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>("down")
    });
    assert_eq!(got.unwrap(), 1, "the stale value, always");
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.mutexes_in_use() > 0 {
        assert!(
            Instant::now() < deadline,
            "a background creator never ended"
        );
        thread::yield_now();
    }
}

#[test]
fn a_failing_background_regeneration_backs_off_exponentially() {
    let (clock, region) = expired_in_the_background(Duration::from_secs(1));
    let calls = Arc::new(AtomicUsize::new(0));
    // A call every 100 ms for 60 s of the region's clock.
    for _ in 0..600 {
        fail_in_the_background(&region, &calls);
        clock.advance(Duration::from_millis(100));
    }
    // Back-offs of about 1, 2, 4, 8, 16, 32 s (each between half and all of it): a few calls,
    // not one every 100 ms.
    let calls = calls.load(Ordering::SeqCst);
    assert!((5..=12).contains(&calls), "{calls} calls in 60 s");
}

/// The region's clock stepped back by an hour after a failure: the failure's time is then an
/// hour ahead of the clock. Read as a negative age, it would keep the throttle, the back-off and
/// a direct value's sharing going for the hour; it ends them, as it expires a value stamped then.
const STEP_BACK: Duration = Duration::from_secs(3600);

#[test]
fn a_clock_stepped_back_ends_the_failure_throttle_instead_of_stretching_it() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .fail_safe_throttle(Duration::from_secs(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = AtomicUsize::new(0);
    let failing = || {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>("down")
    };
    assert!(region.try_get_with(&1, failing).is_err());
    // A step back within the clock's tolerance (1 s) is trusted: the throttle goes on.
    clock.set(clock.now() - Duration::from_millis(500));
    assert!(region.try_get_with(&1, failing).is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "shared within the throttle"
    );
    // An hour back: the failure is "an hour ahead", and the upstream is asked again at once.
    clock.set(clock.now() - STEP_BACK);
    assert!(region.try_get_with(&1, failing).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "retried after the step");
    // The new failure is stamped with the corrected clock: the throttle holds again.
    assert!(region.try_get_with(&1, failing).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_clock_stepped_back_ends_a_background_back_off() {
    let (clock, region) = expired_in_the_background(Duration::from_secs(60));
    let calls = Arc::new(AtomicUsize::new(0));
    let call = || fail_in_the_background(&region, &calls);
    call();
    call();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "backing off for 30 to 60 s"
    );
    clock.set(clock.now() - STEP_BACK);
    call();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the back-off ended with the step"
    );
}

#[test]
fn a_clock_stepped_back_ends_the_sharing_of_a_value_made_with_the_store_down() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32, Down> = Region::builder()
        .store(Down)
        .fail_safe_throttle(Duration::from_secs(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = AtomicUsize::new(0);
    let make = || calls.fetch_add(1, Ordering::SeqCst) as u32 + 10;
    assert_eq!(region.get_with_served(&1, make), (10, Served::Direct));
    assert_eq!(region.get_with_served(&1, make), (10, Served::Waited));
    clock.set(clock.now() - STEP_BACK);
    assert_eq!(region.get_with_served(&1, make), (11, Served::Direct));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_handle_that_shares_no_failures_retries_at_once_and_gets_its_own_error() {
    let region: Region<u32, u32> = Region::builder().build().unwrap();
    let own = region.with_shared_failures(false);
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let Err(RegionError::Creator(err)) = own.try_get_with(&1, || {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<u32, _>("down".to_string())
        }) else {
            panic!("expected the creator's error");
        };
        assert_eq!(Arc::try_unwrap(err).unwrap(), "down");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn stale_if_error_longer_than_max_stale_is_refused() {
    let refused = Region::<u8, u8>::builder()
        .expiry(Duration::from_secs(1))
        .max_stale(Duration::from_secs(3))
        .stale_if_error(Duration::from_secs(10))
        .build()
        .expect_err("a window max_stale cuts short");
    assert_eq!(refused.option(), "stale_if_error");
    assert!(Region::<u8, u8>::builder()
        .expiry(Duration::from_secs(1))
        .max_stale(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(10))
        .build()
        .is_ok());
}

// ---- the hard timeout ------------------------------------------------------------------------

#[test]
fn an_async_creator_past_the_hard_timeout_is_cancelled_and_its_waiters_share_the_timeout() {
    let region: Region<u32, u32> = Region::builder()
        .hard_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let runtime = runtime(2);
    let outcomes = runtime.block_on(async {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (region, calls) = (region.to_async(), calls.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let got = region
                        .try_get_with(&1, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            Ok::<u32, String>(1)
                        })
                        .await;
                    (got, start.elapsed())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for (got, took) in &outcomes {
        assert!(
            matches!(got, Err(RegionError::Timeout(t)) if *t == Duration::from_millis(100)),
            "{got:?}"
        );
        assert!(*took < Duration::from_secs(5), "a caller waited {took:?}");
    }
    assert_eq!(region.peek(&1), None, "a cancelled creator stores nothing");
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn an_async_creator_past_the_hard_timeout_is_answered_with_the_stale_value_within_the_window() {
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_millis(20))
        .stale_if_error(Duration::from_secs(60))
        .hard_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    region.insert(&1, 7).unwrap();
    thread::sleep(Duration::from_millis(30));
    let runtime = runtime(1);
    let got = runtime.block_on(region.to_async().try_get_with_served(&1, || async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<u32, String>(8)
    }));
    assert_eq!(got.unwrap(), (7, Served::Stale));
}

#[test]
fn blocking_waiters_give_up_at_the_hard_timeout_while_the_creator_finishes_and_stores() {
    let region: Region<u32, u32> = Region::builder()
        .hard_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let creator = {
        let (region, barrier) = (region.clone(), barrier.clone());
        thread::spawn(move || {
            region.try_get_with(&1, || {
                barrier.wait();
                thread::sleep(Duration::from_millis(400));
                Ok::<u32, String>(5)
            })
        })
    };
    barrier.wait();
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let region = region.clone();
            thread::spawn(move || {
                let start = Instant::now();
                let got = region.try_get_with(&1, || Ok::<u32, String>(6));
                (got, start.elapsed())
            })
        })
        .collect();
    for waiter in waiters {
        let (got, took) = waiter.join().unwrap();
        assert!(matches!(got, Err(RegionError::Timeout(_))), "{got:?}");
        assert!(
            took < Duration::from_millis(350),
            "a waiter waited {took:?}"
        );
    }
    // A thread cannot be stopped: the creator finishes, its caller gets its value, it is stored.
    assert_eq!(creator.join().unwrap().unwrap(), 5);
    assert_eq!(region.peek(&1), Some(5));
}

#[test]
fn get_with_past_the_hard_timeout_panics_with_the_timeout() {
    let region: Region<u32, u32> = Region::builder()
        .hard_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let runtime = runtime(1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(region.to_async().get_with(&1, || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            1
        }))
    }))
    .expect_err("get_with has no error to return");
    let message = panicked
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("hard timeout"), "{message}");
}

// ---- a store that is down: direct calls in single flight -------------------------------------

/// A store that is down: every call fails at once (as with a Redis breaker open).
struct Down;

impl dogpile_runtime::region::Store<u32, u32> for Down {
    fn get(&self, _: &u32) -> Result<Option<(u32, Stamp)>, BackendError> {
        Err(BackendError::new("down"))
    }
    fn put(&self, _: &u32, _: &u32, _: Stamp) -> Result<(), BackendError> {
        Err(BackendError::new("down"))
    }
    fn restamp(&self, _: &u32, _: Stamp, _: Stamp) -> Result<bool, BackendError> {
        Err(BackendError::new("down"))
    }
    fn remove(&self, _: &u32) -> Result<(), BackendError> {
        Err(BackendError::new("down"))
    }
    fn clear(&self) -> Result<(), BackendError> {
        Err(BackendError::new("down"))
    }
    fn count(&self) -> Option<usize> {
        None
    }
}

/// It answers at once, so an async region calls its blocking methods.
impl dogpile_runtime::region::AsyncStore<u32, u32> for Down {
    fn answers_at_once(&self) -> bool {
        true
    }
    fn get_async<'a>(&'a self, key: &'a u32) -> StoreFuture<'a, Option<(u32, Stamp)>> {
        Box::pin(std::future::ready(self.get(key)))
    }
    fn put_async<'a>(&'a self, key: &'a u32, value: &'a u32, stamp: Stamp) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.put(key, value, stamp)))
    }
    fn remove_async<'a>(&'a self, key: &'a u32) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.remove(key)))
    }
    fn clear_async(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(self.clear()))
    }
}

#[test]
fn with_the_store_down_a_herd_makes_one_upstream_call_per_key_in_the_process() {
    let region: Region<u32, u32, Down> = Region::builder().store(Down).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                region.get_with_served(&1, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(UPSTREAM);
                    42
                })
            })
        })
        .collect();
    let served: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "{served:?}");
    assert!(served.iter().all(|(v, _)| *v == 42));
    assert_eq!(
        served.iter().filter(|(_, s)| *s == Served::Direct).count(),
        1
    );
    let stats = region.statistics();
    assert_eq!((stats.direct_calls, stats.waits), (1, 19));
}

#[test]
fn with_the_store_down_an_async_herd_makes_one_upstream_call_per_key_in_the_process() {
    let region: Region<u32, u32, Down> = Region::builder().store(Down).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let runtime = runtime(2);
    let values = runtime.block_on(async {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (region, calls) = (region.to_async(), calls.clone());
                tokio::spawn(async move {
                    region
                        .get_with(&1, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(UPSTREAM).await;
                            42
                        })
                        .await
                })
            })
            .collect();
        let mut values = Vec::new();
        for task in tasks {
            values.push(task.await.unwrap());
        }
        values
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(values.iter().all(|v| *v == 42));
}

/// `invalidate_all` makes every value created until now count as missing in this process,
/// whatever the store says; with the store down, a value made directly before it is not
/// shared after it either (it was, within the failure throttle: the next call got the value
/// the invalidation was meant to drop instead of running its creator). The same for one key's
/// invalidation, hard or soft, an insert and a clear.
#[test]
fn with_the_store_down_a_value_made_before_invalidate_all_is_not_shared_after_it() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32, Down> = Region::builder()
        .store(Down)
        .fail_safe_throttle(Duration::from_secs(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(region.get_with_served(&1, || 10), (10, Served::Direct));
    clock.advance(Duration::from_millis(10));
    region.invalidate_all().unwrap();
    clock.advance(Duration::from_millis(10));
    assert_eq!(region.get_with_served(&1, || 11), (11, Served::Direct));
    // Within the throttle, shared; then invalidated, by key, hard and soft.
    assert_eq!(region.get_with_served(&1, || 12), (11, Served::Waited));
    assert!(region.invalidate(&1).is_err(), "the store is down: queued");
    assert_eq!(region.get_with_served(&1, || 13), (13, Served::Direct));
    assert!(
        region.soft_invalidate(&1).is_err(),
        "the store is down: queued"
    );
    assert_eq!(region.get_with_served(&1, || 14), (14, Served::Direct));
    region.soft_invalidate_all().unwrap();
    assert_eq!(region.get_with_served(&1, || 15), (15, Served::Direct));
    // A value inserted (the store down: not stored), and a clear, are newer than it too.
    assert!(region.insert(&1, 16).is_err(), "the store is down");
    assert_eq!(region.get_with_served(&1, || 17), (17, Served::Direct));
    let _ = region.clear();
    assert_eq!(region.get_with_served(&1, || 18), (18, Served::Direct));
}
