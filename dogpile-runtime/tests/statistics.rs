//! What `Statistics` tells a dashboard, through the public API: creator runs, failures and
//! their times, the time waited for another caller's creator, the weight evicted, and a
//! handle's own statistics on a shared region.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use dogpile_runtime::{Region, RegionError};

const BOUND: Duration = Duration::from_secs(10);

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

#[test]
fn creator_runs_failures_and_their_times() {
    bounded(|| {
        let region: Region<u32, u32> = Region::builder().name("loads").build().unwrap();
        let slow = Duration::from_millis(30);
        region.get_with(&1, || {
            thread::sleep(slow);
            1
        });
        let failed = region.try_get_with(&2, || {
            thread::sleep(Duration::from_millis(10));
            Err::<u32, _>("upstream down")
        });
        assert!(matches!(failed, Err(RegionError::Creator(_))));
        // A hit runs no creator.
        region.get_with(&1, || unreachable!());
        let stats = region.statistics();
        assert_eq!((stats.creator_runs, stats.creator_failures), (2, 1));
        assert_eq!((stats.regenerations, stats.errors, stats.hits), (1, 1, 1));
        assert!(stats.creator_time >= slow + Duration::from_millis(10));
        assert!(stats.creator_time_max >= slow);
        assert!(stats.creator_time_max <= stats.creator_time);
        assert!(stats.creator_failure_time >= Duration::from_millis(10));
        assert!(stats.creator_failure_time < stats.creator_time);
        // The average load penalty: one division.
        let penalty = stats.creator_time / stats.creator_runs as u32;
        assert!(penalty >= Duration::from_millis(20));
        // Nobody waited.
        assert_eq!(stats.wait_time, Duration::ZERO);
        let shown = stats.to_string();
        assert!(shown.contains("2 creator runs (1 failed)"), "{shown}");
    });
}

#[test]
fn a_panicking_creator_is_a_failed_run() {
    bounded(|| {
        let region: Region<u32, u32> = Region::builder().build().unwrap();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            region.get_with(&1, || panic!("creator panicked"))
        }));
        assert!(caught.is_err());
        let stats = region.statistics();
        assert_eq!((stats.creator_runs, stats.creator_failures), (1, 1));
        assert_eq!(stats.panics, 1);
    });
}

#[test]
fn time_waited_for_another_callers_creator() {
    bounded(|| {
        let region: Region<u32, u32> = Region::builder().build().unwrap();
        let started = Arc::new(Barrier::new(2));
        let creator = {
            let (region, started) = (region.clone(), Arc::clone(&started));
            thread::spawn(move || {
                region.get_with(&1, || {
                    started.wait();
                    thread::sleep(Duration::from_millis(80));
                    1
                })
            })
        };
        started.wait();
        // The creator holds the key's mutex: this call waits for it.
        assert_eq!(region.get_with(&1, || unreachable!()), 1);
        assert_eq!(creator.join().unwrap(), 1);
        let stats = region.statistics();
        assert_eq!((stats.waits, stats.misses, stats.creator_runs), (1, 2, 1));
        assert!(stats.wait_time >= Duration::from_millis(40), "{stats}");
        assert!(stats.wait_time_max >= Duration::from_millis(40), "{stats}");
        assert!(stats.wait_time <= stats.creator_time + Duration::from_millis(50));
    });
}

#[test]
fn weight_evicted() {
    let region: Region<u32, String> = Region::builder()
        .max_weight(100)
        .weigher(|_, value: &String| value.len() as u32)
        .build()
        .unwrap();
    for key in 0..10 {
        region.insert(&key, "x".repeat(30)).unwrap();
    }
    let stats = region.statistics();
    assert!(stats.evictions >= 7, "{stats}");
    assert_eq!(stats.eviction_weight, 30 * stats.evictions);
    // Too heavy to keep at all: evicted at once, its weight counted.
    region.insert(&99, "y".repeat(200)).unwrap();
    let after = region.statistics();
    assert_eq!(after.evictions, stats.evictions + 1);
    assert_eq!(after.eviction_weight, stats.eviction_weight + 200);
}

#[test]
fn handles_with_their_own_statistics_count_their_own_calls() {
    let region: Region<(&'static str, u32), u32> = Region::builder().build().unwrap();
    let prices = region.with_own_statistics("prices");
    let stock = region
        .with_own_statistics("stock")
        .with_expiry(Some(Duration::from_secs(60)))
        .unwrap();
    for _ in 0..3 {
        prices.get_with(&("prices", 1), || 10);
    }
    stock.get_with(&("stock", 1), || 5);
    let failed = stock.try_get_with(&("stock", 2), || Err::<u32, _>("down"));
    assert!(failed.is_err());
    region.get_with(&("other", 1), || 0);

    let p = prices.statistics();
    assert_eq!(
        (p.hits, p.misses, p.regenerations, p.creator_runs),
        (2, 1, 1, 1)
    );
    let s = stock.statistics();
    assert_eq!((s.hits, s.misses, s.regenerations, s.errors), (0, 2, 1, 1));
    assert_eq!((s.creator_runs, s.creator_failures), (2, 1));
    // The region counts every call; what the store says is the region's on every handle.
    let all = region.statistics();
    assert_eq!((all.hits, all.misses, all.creator_runs), (2, 4, 4));
    assert_eq!((p.entries, s.entries, all.entries), (3, 3, 3));
    // A clone keeps counting into the handle's own statistics.
    prices.clone().get_with(&("prices", 1), || unreachable!());
    assert_eq!(prices.statistics().hits, 3);
    assert_eq!(prices.statistics_name(), Some("prices"));
    assert_eq!(region.statistics_name(), None);
}
