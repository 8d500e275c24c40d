//! Expiry policies beyond a lifetime: bounded staleness (`max_stale`), stale-if-error and
//! refresh-ahead, blocking and async, on a manual clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::{ManualClock, Timestamp};
use dogpile_runtime::region::{EvictionCause, Pool, RegionBuilder, Served};
use dogpile_runtime::{Region, RegionError};

const MINUTE: Duration = Duration::from_secs(60);
const BOUND: Duration = Duration::from_secs(10);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_nanos(
        1_700_000_000_000_000_000,
    )))
}

fn builder(clock: &Arc<ManualClock>) -> RegionBuilder<u8, usize> {
    Region::builder().expiry(MINUTE).clock(clock.clone())
}

// ---- max_stale ------------------------------------------------------------------------------

#[test]
fn a_value_stale_beyond_max_stale_is_not_served_and_callers_wait() {
    let clock = clock();
    let region = builder(&clock)
        .max_stale(Duration::from_secs(30))
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();

    // Twenty seconds past its expiry: stale, served while one caller regenerates.
    clock.advance(MINUTE + Duration::from_secs(20));
    assert_eq!(region.peek(&1), Some(1));
    assert_eq!(region.get_with_served(&1, || 2), (2, Served::Created));

    // Forty seconds past: not served. Sixteen callers wait for one creator, as on a first miss.
    clock.advance(MINUTE * 2 + Duration::from_secs(40));
    assert_eq!(region.peek(&1), None);
    let created = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (region, created, barrier) = (region.clone(), created.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                region.get_with(&1, || {
                    created.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(50));
                    3
                })
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(
            caller.join().unwrap(),
            3,
            "nobody got the value stale for 40 s"
        );
    }
    assert_eq!(created.load(Ordering::SeqCst), 1);
}

#[test]
fn max_stale_of_zero_serves_no_stale_value() {
    let clock = clock();
    let region = builder(&clock).max_stale(Duration::ZERO).build().unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(MINUTE + Duration::from_nanos(1));
    assert_eq!(region.peek(&1), None);
}

/// Values too stale for every handle leave the store once enough values were stored after
/// them, with `EvictionCause::Expired`; a value that a handle with a longer expiry would still
/// serve stays, and so does one stored again meanwhile. With and without a capacity.
#[test]
fn values_too_stale_for_every_handle_are_purged_and_no_others() {
    for capacity in [None, Some(100_000)] {
        let clock = clock();
        let expired = Arc::new(AtomicUsize::new(0));
        let mut builder: RegionBuilder<u32, usize> = Region::builder()
            .expiry(MINUTE)
            .max_stale(MINUTE)
            .clock(clock.clone())
            .on_evict({
                let expired = expired.clone();
                move |_, _, cause| {
                    if cause == EvictionCause::Expired {
                        expired.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        if let Some(capacity) = capacity {
            builder = builder.capacity(capacity);
        }
        let short = builder.build().unwrap();
        // Dead after 11 minutes: its expiry and the minute of max_stale.
        let long = short.with_expiry(Some(MINUTE * 10)).unwrap();
        for key in 0..500 {
            short.insert(&key, 1).unwrap();
            long.insert(&(1_000 + key), 2).unwrap();
        }
        // Three minutes on, the short handle would serve none of its values, but the long
        // one would: nothing goes, whichever handle stores.
        clock.advance(MINUTE * 3);
        long.insert(&0, 3).unwrap(); // stored again
        for key in 10_000..12_000 {
            short.get_with(&key, || 4);
        }
        assert_eq!(short.peek(&1), None);
        assert_eq!(expired.load(Ordering::SeqCst), 0, "capacity {capacity:?}");
        assert_eq!(short.len(), 1_000 + 2_000, "capacity {capacity:?}");
        // Twelve minutes from the start, the first values are dead for every handle, and go
        // as more are stored (a purge runs on a thread of its own, after as many stores as
        // the values the last one left); the value stored again and those made at three
        // minutes stay.
        clock.advance(MINUTE * 9);
        let deadline = Instant::now() + BOUND;
        let mut key = 20_000;
        while expired.load(Ordering::SeqCst) < 999 {
            assert!(Instant::now() < deadline, "capacity {capacity:?}: no purge");
            short.get_with(&key, || 5);
            key += 1;
        }
        assert_eq!(expired.load(Ordering::SeqCst), 999, "capacity {capacity:?}");
        assert_eq!(short.len(), 1 + 2_000 + (key - 20_000) as usize);
        assert_eq!(long.peek(&0), Some(3));
        assert_eq!(long.get_with_served(&10_000, || 0), (4, Served::Fresh));
        assert_eq!(short.statistics().evictions, 0, "purges are not evictions");
    }
}

// ---- stale-if-error -------------------------------------------------------------------------

#[test]
fn a_failed_regeneration_serves_the_stale_value_within_the_window() {
    let clock = clock();
    let region = builder(&clock)
        .stale_if_error(Duration::from_secs(300))
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(MINUTE * 2);

    // An error: the caller gets the stale value, the failure is counted, nothing stored.
    let got = region.try_get_with_served(&1, || Err::<usize, _>("upstream down"));
    assert_eq!(got.unwrap(), (1, Served::Stale));
    // Within the failure throttle, the next caller gets the stale value without calling.
    assert_eq!(region.get_with(&1, || unreachable!()), 1);
    // Past it, a panic is rescued too.
    clock.advance(Duration::from_secs(2));
    assert_eq!(region.get_with(&1, || panic!("upstream exploded")), 1);
    let stats = region.statistics();
    assert_eq!(
        (stats.stale_on_error, stats.errors, stats.panics),
        (3, 1, 1)
    );
    assert_eq!(stats.shared_failures, 1);
    // The next caller past the throttle tries again, and succeeds.
    clock.advance(Duration::from_secs(2));
    assert_eq!(region.get_with_served(&1, || 2), (2, Served::Created));
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn a_failure_beyond_the_window_reaches_its_caller() {
    let clock = clock();
    let region = builder(&clock)
        .stale_if_error(Duration::from_secs(30))
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(MINUTE * 2); // a minute past its expiry, beyond the 30 s window
    let err = region
        .try_get_with(&1, || Err::<usize, _>("upstream down"))
        .unwrap_err();
    assert!(matches!(err, RegionError::Creator(e) if *e == "upstream down"));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        region.get_with(&1, || panic!("boom"))
    }));
    assert!(panicked.is_err(), "the panic reaches its caller");
    // Without the option, failures reach their caller whatever the value's age.
    let plain = builder(&clock).build().unwrap();
    plain.insert(&1, 1).unwrap();
    clock.advance(MINUTE * 2);
    assert!(plain.try_get_with(&1, || Err::<usize, _>("down")).is_err());
}

#[test]
fn a_first_miss_has_nothing_to_fall_back_on() {
    let region = builder(&clock())
        .stale_if_error(Duration::from_secs(300))
        .build()
        .unwrap();
    assert!(region.try_get_with(&1, || Err::<usize, _>("down")).is_err());
}

// ---- refresh-ahead --------------------------------------------------------------------------

#[test]
fn a_hit_late_in_a_value_s_life_refreshes_it_in_the_background_once() {
    let clock = clock();
    let region = builder(&clock)
        .refresh_ahead(0.8)
        .background(Pool::new(2, 16).unwrap())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();

    // Before 80% of its minute: a plain hit.
    clock.advance(Duration::from_secs(40));
    let created = Arc::new(AtomicUsize::new(0));
    assert_eq!(region.background().get_with(&1, || unreachable!()), 1);

    // Past 80%: sixteen callers get the value at once; one refresh runs in the background.
    clock.advance(Duration::from_secs(10));
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let barrier = Arc::new(Barrier::new(16));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (region, created, barrier, gate) = (
                region.clone(),
                created.clone(),
                barrier.clone(),
                gate.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let value = region.background().get_with(&1, move || {
                    created.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.lock().unwrap().recv();
                    2
                });
                (value, start.elapsed())
            })
        })
        .collect();
    for caller in callers {
        let (value, took) = caller.join().unwrap();
        assert_eq!(value, 1, "the value, not yet refreshed");
        assert!(took < Duration::from_secs(1), "a caller waited {took:?}");
    }
    drop(release);
    let deadline = Instant::now() + BOUND;
    while region.peek(&1) != Some(2) {
        assert!(Instant::now() < deadline, "the refresh never stored");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(created.load(Ordering::SeqCst), 1);
    // Refreshed: fresh again for its whole minute.
    clock.advance(Duration::from_secs(40));
    assert_eq!(region.background().get_with(&1, || unreachable!()), 2);
}

#[test]
fn calls_that_cannot_hand_off_serve_a_value_due_for_refresh_as_fresh() {
    let clock = clock();
    let region = builder(&clock).refresh_ahead(0.5).build().unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(Duration::from_secs(45));
    assert_eq!(region.get_with_served(&1, || 2), (1, Served::Fresh));
}

#[test]
fn out_of_range_settings_are_config_errors() {
    for share in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
        let err = builder(&clock()).refresh_ahead(share).build().unwrap_err();
        assert_eq!(err.option(), "refresh_ahead");
    }
    let err = builder(&clock())
        .stale_if_error(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.option(), "stale_if_error");
    let err = builder(&clock())
        .max_stale(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err.option(), "max_stale");
}

#[cfg(feature = "tokio")]
#[test]
fn async_calls_follow_the_same_policies() {
    let clock = clock();
    let region = builder(&clock)
        .max_stale(Duration::from_secs(30))
        .stale_if_error(Duration::from_secs(20))
        .refresh_ahead(0.8)
        .build()
        .unwrap()
        .to_async();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            region.insert(&1, 1).await.unwrap();
            // Due for refresh: served at once, refreshed in a spawned task.
            clock.advance(Duration::from_secs(50));
            let got = region.background().get_with(&1, || async { 2 }).await;
            assert_eq!(got, 1);
            let deadline = Instant::now() + BOUND;
            while region.peek(&1).await != Some(2) {
                assert!(Instant::now() < deadline, "the refresh never stored");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Ten seconds past its expiry: a failure is answered with the stale value.
            clock.advance(MINUTE + Duration::from_secs(10));
            let got = region
                .try_get_with_served(&1, || async { Err::<usize, _>("down") })
                .await;
            assert_eq!(got.unwrap(), (2, Served::Stale));
            let got = region
                .get_with(&1, || async { panic!("upstream exploded") })
                .await;
            assert_eq!(got, 2);
            // Forty seconds past: too stale to serve; this caller creates.
            clock.advance(Duration::from_secs(30));
            let got = region.get_with_served(&1, || async { 3 }).await;
            assert_eq!(got, (3, Served::Created));
        });
}

// ---- per-value lifetimes and jitter ---------------------------------------------------------

#[test]
fn a_value_lives_as_long_as_its_creator_says_at_most_the_expiry() {
    let clock = clock();
    let region = builder(&clock).build().unwrap();
    let token = |name: &str, secs| Ok::<_, ()>((name.len(), Duration::from_secs(secs)));
    assert_eq!(
        region.try_get_with_expiry(&1, || token("ab", 10)).unwrap(),
        2
    );
    assert_eq!(
        region
            .try_get_with_expiry(&2, || token("abc", 600))
            .unwrap(),
        3
    );
    clock.advance(Duration::from_secs(11));
    // Its own ten seconds are over; the region's minute is not.
    assert_eq!(region.get_with_served(&1, || 9), (9, Served::Created));
    // Ten minutes asked for: the region's minute is the most a value lives.
    assert_eq!(region.get_with(&2, || 9), 3);
    clock.advance(MINUTE);
    assert_eq!(region.get_with(&2, || 9), 9);
}

#[test]
fn expire_with_gives_each_value_its_lifetime_from_the_value() {
    let clock = clock();
    // (value, seconds it may live)
    let region: Region<u8, (u8, u64)> = Region::builder()
        .expiry(MINUTE)
        .clock(clock.clone())
        .expire_with(|&(_, secs): &(u8, u64)| Duration::from_secs(secs))
        .build()
        .unwrap();
    region.get_with(&1, || (1, 5));
    region.get_with(&2, || (2, 50));
    clock.advance(Duration::from_secs(6));
    assert_eq!(region.get_with(&1, || (10, 5)).0, 10);
    assert_eq!(region.get_with(&2, || (20, 50)).0, 2);
    // A handle of its own, on a region without the option.
    let plain = builder(&clock).build().unwrap();
    let short = plain.with_expire_with(|_| Duration::from_secs(1)).unwrap();
    short.get_with(&1, || 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        plain.get_with(&1, || 2),
        2,
        "stored with the one-second lifetime"
    );
}

#[test]
fn jitter_spreads_the_expiry_of_keys_created_together() {
    let clock = clock();
    let region = builder(&clock).jitter(0.2).build().unwrap();
    for k in 0..=255u8 {
        region.get_with(&k, || 0);
    }
    // Created together: without jitter all 256 would expire at the same instant. With up to
    // a fifth off, none has expired at 47 s, and at 53 s (half-way through the spread) about
    // half have. A call on an expired key regenerates it, so count those not served fresh.
    let expired = || {
        (0..=255u8)
            .filter(|k| region.get_with_served(k, || 1).1 != Served::Fresh)
            .count()
    };
    clock.advance(Duration::from_secs(47));
    assert_eq!(expired(), 0, "a fifth off at most");
    clock.advance(Duration::from_secs(6));
    let early = expired();
    assert!(
        (64..=192).contains(&early),
        "about half of 256 expired by 53 s, got {early}"
    );
}

/// One `build` reports every setting it refuses, in the order they were found, not only the
/// first: a service's configuration is fixed in one round.
#[test]
fn every_refused_setting_of_one_build_is_reported() {
    let err = Region::<u8, u8>::builder()
        .expiry(Duration::ZERO)
        .lock_timeout(Duration::MAX)
        .refresh_ahead(1.5)
        .jitter(0.5)
        .capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.options().collect::<Vec<_>>(),
        ["expiry", "lock_timeout", "refresh_ahead", "capacity"]
    );
    assert_eq!(err.option(), "expiry");
    let message = err.to_string();
    for option in ["expiry", "lock_timeout", "refresh_ahead", "capacity"] {
        assert!(
            message.contains(&format!("invalid `{option}`: ")),
            "{message}"
        );
    }
    assert_eq!(message.matches("; invalid").count(), 3, "{message}");
    // A setting that needs another reports with the rest.
    let err = Region::<u8, u8>::builder()
        .jitter(0.1)
        .capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(err.options().collect::<Vec<_>>(), ["capacity", "jitter"]);
}

#[test]
fn jitter_and_expire_with_need_an_expiry() {
    let err = Region::<u8, u8>::builder().jitter(0.1).build().unwrap_err();
    assert_eq!(err.option(), "jitter");
    let err = Region::<u8, u8>::builder()
        .expire_with(|_| MINUTE)
        .build()
        .unwrap_err();
    assert_eq!(err.option(), "expire_with");
}

#[cfg(feature = "tokio")]
#[test]
fn async_values_live_as_long_as_their_creator_says() {
    let clock = clock();
    let region = builder(&clock).build().unwrap().to_async();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let got = region
                .try_get_with_expiry(&1, || async { Ok::<_, ()>((1, Duration::from_secs(10))) })
                .await;
            assert_eq!(got.unwrap(), 1);
            clock.advance(Duration::from_secs(11));
            assert_eq!(
                region.get_with_served(&1, || async { 2 }).await,
                (2, Served::Created)
            );
        });
}

/// A creator that gives its value no lifetime at all (0, or 1 ns: a token already expired when
/// it arrives): the herd that waited for it gets that value, instead of regenerating one
/// after the other (20 creator calls, four seconds); a caller that comes after the value
/// expired makes it again while the others get the expired one meanwhile (with a creator of
/// 50 ms, 1 call in 27 of 30 herds, 2 in the others; this one takes 200 ms, so that a thread
/// late to start is rarer). Then, on a manual clock: the value is fresh at the instant it is
/// made, and made again as soon as the clock moves.
#[test]
fn a_herd_on_a_value_made_with_no_lifetime_is_served_by_one_creator() {
    for lifetime in [Duration::ZERO, Duration::from_nanos(1)] {
        let region: Region<u32, u32> = Region::builder()
            .expiry(Duration::from_secs(60))
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(20));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    region.try_get_with_expiry(&1, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(200));
                        Ok::<_, ()>((42, lifetime))
                    })
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap().unwrap(), 42);
        }
        let calls = calls.load(Ordering::SeqCst);
        assert!((1..=3).contains(&calls), "{lifetime:?}: {calls} calls");
    }
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .expiry(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let made = |value| move || Ok::<_, ()>((value, Duration::ZERO));
    assert_eq!(region.try_get_with_expiry(&1, made(1)).unwrap(), 1);
    assert_eq!(region.try_get_with_expiry(&1, made(2)).unwrap(), 1);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(region.try_get_with_expiry(&1, made(3)).unwrap(), 3);
}
