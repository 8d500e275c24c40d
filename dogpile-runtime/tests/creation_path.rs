//! One creation path: the promises that broke when the code around the protocol existed once per
//! colour and per kind of call. Each test here failed before every creator ran through one
//! `Creation` and every store write through one `Write`.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::ManualClock;
use dogpile_runtime::region::{Pool, Served};
use dogpile_runtime::{Region, RegionError};

/// Waits until no key of `region` has a mutex (a background creator has finished).
fn settle<K, V, S, M>(region: &Region<K, V, S, M>)
where
    K: dogpile_runtime::region::CacheKey,
    V: dogpile_runtime::region::CacheValue,
    S: dogpile_runtime::region::Store<K, V>,
    M: dogpile_runtime::lock::RawMutex + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.mutexes_in_use() > 0 {
        assert!(
            Instant::now() < deadline,
            "a background creator never ended"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

// ---- refresh-ahead reads a value against its own lifetime -----------------------------------

/// A region of 10 s values refreshed at 80 % of their life, on a clock the test moves.
fn refreshing(clock: &Arc<ManualClock>) -> Region<u8, u64> {
    Region::builder()
        .expiry(Duration::from_secs(10))
        .refresh_ahead(0.8)
        .background(Pool::new(1, 8).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn refresh_ahead_finds_a_short_lived_values_own_refresh_point_blocking() {
    let clock = Arc::new(ManualClock::starting_now());
    let region = refreshing(&clock);
    let runs = Arc::new(AtomicU64::new(0));
    let get = || {
        let runs = Arc::clone(&runs);
        region
            .background()
            .try_get_with_expiry(&1, move || {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, ()>((n, Duration::from_secs(1))) // lives 1 s of the 10
            })
            .unwrap()
    };
    assert_eq!(get(), 1);
    // Half its second: fresh, not due (it was due from its creation, measured against the
    // region's 10 s).
    clock.advance(Duration::from_millis(500));
    assert_eq!(get(), 1);
    settle(&region);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "refreshed at half its life");
    // 85 % of its second: due, refreshed once in the background.
    clock.advance(Duration::from_millis(350));
    assert_eq!(get(), 1);
    settle(&region);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn refresh_ahead_finds_a_short_lived_values_own_refresh_point_with_expire_with_async() {
    let clock = Arc::new(ManualClock::starting_now());
    let region = refreshing(&clock)
        .with_expire_with(|_| Duration::from_secs(1))
        .unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        let from_async = region.to_async();
        let get = || {
            let runs = Arc::clone(&runs);
            let from_async = from_async.clone();
            async move {
                from_async
                    .background()
                    .get_with(&1, move || async move {
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }
        };
        assert_eq!(get().await, 1);
        clock.advance(Duration::from_millis(500));
        assert_eq!(get().await, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "refreshed at half its life");
        clock.advance(Duration::from_millis(350));
        assert_eq!(get().await, 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "never refreshed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

// ---- a batch whose creator panics is rescued by stale-if-error, and counted -----------------

fn rescuing(clock: &Arc<ManualClock>) -> Region<u32, u32> {
    let region = Region::builder()
        .expiry(Duration::from_secs(60))
        .stale_if_error(Duration::from_secs(600))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 10).unwrap();
    region.insert(&2, 20).unwrap();
    clock.advance(Duration::from_secs(120));
    region
}

#[test]
fn a_batch_whose_creator_panics_gets_its_stale_values_and_counts_the_panic() {
    let clock = Arc::new(ManualClock::starting_now());
    let region = rescuing(&clock);
    let got = panic::catch_unwind(AssertUnwindSafe(|| {
        region.try_get_with_many(&[1, 2], |_| -> Result<Vec<u32>, ()> { panic!("upstream") })
    }));
    assert_eq!(
        got.expect("the stale values cover the panic").unwrap(),
        [10, 20]
    );
    let stats = region.statistics();
    assert_eq!((stats.panics, stats.stale_on_error), (1, 2));
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn an_async_batch_whose_creator_panics_gets_its_stale_values_and_counts_the_panic() {
    let clock = Arc::new(ManualClock::starting_now());
    let region = rescuing(&clock);
    let got = runtime().block_on(async {
        region
            .to_async()
            .try_get_with_many(&[1, 2], |_| async {
                if true {
                    panic!("upstream");
                }
                Ok::<Vec<u32>, ()>(Vec::new())
            })
            .await
    });
    assert_eq!(got.unwrap(), [10, 20]);
    let stats = region.statistics();
    assert_eq!((stats.panics, stats.stale_on_error), (1, 2));
    assert_eq!(region.mutexes_in_use(), 0);
}

// ---- insert stamps as a creation does --------------------------------------------------------

#[test]
fn insert_follows_expire_with() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(60))
        .expire_with(|_| Duration::from_secs(5))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    runtime().block_on(region.to_async().insert(&2, 2)).unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(region.get_with_served(&1, || 9), (9, Served::Created));
    assert_eq!(region.get_with_served(&2, || 9), (9, Served::Created));
}

#[test]
fn values_inserted_together_do_not_expire_together_with_jitter() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_secs(100))
        .jitter(0.5) // each lives between 50 and 100 s
        .clock(clock.clone())
        .build()
        .unwrap();
    for k in 0..400 {
        region.insert(&k, k).unwrap();
    }
    clock.advance(Duration::from_secs(75));
    let expired = (0..400)
        .filter(|k| region.get_with_served(k, || 0).1 != Served::Fresh)
        .count();
    // About half: a quarter to three quarters, whatever the draws.
    assert!((100..=300).contains(&expired), "{expired} of 400 expired");
}

#[test]
fn async_inserts_count_toward_the_purge_of_values_past_max_stale() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_secs(1))
        .max_stale(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let from_async = region.to_async();
    runtime().block_on(async {
        for k in 0..2000 {
            from_async.insert(&k, k).await.unwrap();
        }
        clock.advance(Duration::from_secs(10)); // every one of them too stale to serve
        for k in 2000..3100 {
            from_async.insert(&k, k).await.unwrap();
        }
    });
    // The purge runs on a thread of its own once enough values were stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.len() > 1100 {
        assert!(
            Instant::now() < deadline,
            "no purge: {} values kept",
            region.len()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

// ---- a background creator is marked as holding its key --------------------------------------

#[test]
fn a_background_creator_asking_for_its_own_key_gets_recursion_not_a_wait_on_itself() {
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u8, u8> = Region::builder()
        .expiry(Duration::from_secs(60))
        .background(Pool::new(1, 8).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(Duration::from_secs(120));
    let (tx, rx) = mpsc::channel();
    let inner = region.clone();
    let stale = region.background().get_with(&1, move || {
        inner.invalidate(&1).unwrap();
        let again = inner.try_get_with(&1, || Ok::<_, ()>(3));
        let _ = tx.send(matches!(again, Err(RegionError::Recursion { .. })));
        2
    });
    assert_eq!(stale, 1);
    let recursion = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the background creator waits for itself");
    assert!(recursion);
}

// ---- soft invalidation never brings a value back nor replaces a newer one -------------------

/// Races `soft_invalidate` (in `soft`, another thread) against `invalidate` and `insert` of a
/// newer value for `rounds` rounds or `budget`, whichever ends first: the count of rounds where a
/// value removed was readable after `invalidate` returned, or an older value replaced a newer.
fn race_soft_invalidation(
    region: &Region<u64, u64>,
    soft: impl Fn(&Region<u64, u64>) + Send + Sync + 'static,
    budget: Duration,
) -> (u64, u64) {
    let round = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let invalidator = {
        let (region, round, done, stop) =
            (region.clone(), round.clone(), done.clone(), stop.clone());
        thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Acquire) {
                let now = round.load(Ordering::Acquire);
                if now == seen {
                    // Yield, not spin: on a busy 2-core machine two spinning threads starve.
                    thread::yield_now();
                    continue;
                }
                seen = now;
                soft(&region);
                done.store(now, Ordering::Release);
            }
        })
    };
    let (mut rounds, mut resurrected, mut aged) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline && rounds < 200_000 {
        rounds += 1;
        // An old value, then, racing the soft invalidation: its removal, or a newer value.
        region.insert(&7, 2 * rounds).unwrap();
        round.store(rounds, Ordering::Release);
        if rounds % 2 == 0 {
            region.invalidate(&7).unwrap();
        } else {
            region.insert(&7, 2 * rounds + 1).unwrap();
        }
        while done.load(Ordering::Acquire) != rounds {
            thread::yield_now();
        }
        match (rounds % 2, region.peek(&7)) {
            (0, Some(_)) => resurrected += 1,
            (1, Some(value)) if value != 2 * rounds + 1 => aged += 1,
            _ => {}
        }
    }
    stop.store(true, Ordering::Release);
    invalidator.join().unwrap();
    assert!(rounds > 200, "only {rounds} rounds ran");
    (resurrected, aged)
}

#[test]
fn soft_invalidation_never_brings_back_a_removed_value_nor_replaces_a_newer_one() {
    let region: Region<u64, u64> = Region::builder()
        .expiry(Duration::from_secs(60))
        .build()
        .unwrap();
    let (resurrected, aged) = race_soft_invalidation(
        &region,
        |r| r.soft_invalidate(&7).unwrap(),
        Duration::from_secs(2),
    );
    assert_eq!((resurrected, aged), (0, 0));
}

#[test]
fn async_soft_invalidation_never_brings_back_a_removed_value_nor_replaces_a_newer_one() {
    let region: Region<u64, u64> = Region::builder()
        .expiry(Duration::from_secs(60))
        .build()
        .unwrap();
    let rt = Arc::new(runtime());
    let (resurrected, aged) = race_soft_invalidation(
        &region,
        move |r| rt.block_on(r.to_async().soft_invalidate(&7)).unwrap(),
        Duration::from_secs(2),
    );
    assert_eq!((resurrected, aged), (0, 0));
}

// ---- settings that need an expiry -------------------------------------------------------------

#[test]
fn policies_of_a_values_lifetime_are_refused_without_an_expiry() {
    let refused = |built: Result<Region<u8, u8>, dogpile_runtime::ConfigError>| {
        built.expect_err("accepted without an expiry").option()
    };
    assert_eq!(
        refused(Region::builder().refresh_ahead(0.8).build()),
        "refresh_ahead"
    );
    assert_eq!(
        refused(Region::builder().max_stale(Duration::from_secs(1)).build()),
        "max_stale"
    );
    assert_eq!(
        refused(
            Region::builder()
                .stale_if_error(Duration::from_secs(1))
                .build()
        ),
        "stale_if_error"
    );
    assert_eq!(refused(Region::builder().jitter(0.1).build()), "jitter");
}
