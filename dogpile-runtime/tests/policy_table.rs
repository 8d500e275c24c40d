//! Every expiry policy through every kind of call, blocking and async: the table that keeps the
//! kinds of call from drifting apart again.
//!
//! | policy \ call            | get | try | optional | served | with_expiry | batch | background | refresh | insert |
//! |--------------------------|-----|-----|----------|--------|-------------|-------|------------|---------|--------|
//! | expire_with              | ✓   | ✓   | ✓        | ✓      | ✓           | ✓     | ✓          | ✓       | ✓      |
//! | jitter                   | ✓   | ✓   | ✓        | ✓      | ✓           | ✓     | ✓          | ✓       | ✓      |
//! | refresh_ahead            | ignored: refreshes only where the creator can be handed off | | | | | | ✓ | — | — |
//! | max_stale                | ✓   | ✓   | ✓        | ✓      | ✓           | ✓     | ✓          | ✓       | ✓      |
//! | stale_if_error, Err      | —   | ✓   | ✓ (None) | ✓      | ✓           | ✓     | ✓          | —       | —      |
//! | stale_if_error, panic    | ✓   | ✓   | ✓        | ✓      | ✓           | ✓     | ✓          | —       | —      |
//! | recursion                | ✓   | ✓   | ✓        | ✓      | ✓           | ✓     | ✓          | ✓       | —      |
//!
//! ✓ checked here; — meaningless: `get_with` has no error; `refresh` regenerates whatever the
//! value's age, and a failed refresh reaches its caller (there is no stale value it stands in
//! for: the value in the store stays); `insert` runs no creator. The region refuses every
//! policy of a value's lifetime without an expiry (`ConfigError`), and `refresh_ahead` is
//! accepted on any region, acting where a call can hand its creator off (`background`, the
//! attribute's `refresh_ahead`).

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::ManualClock;
use dogpile_runtime::region::{Pool, RegionBuilder};
use dogpile_runtime::{Region, RegionError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Get,
    Try,
    Optional,
    Served,
    WithExpiry,
    Batch,
    Background,
    Refresh,
    Insert,
}

const CALLS: [Call; 9] = [
    Call::Get,
    Call::Try,
    Call::Optional,
    Call::Served,
    Call::WithExpiry,
    Call::Batch,
    Call::Background,
    Call::Refresh,
    Call::Insert,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Colour {
    Blocking,
    Async,
}

const COLOURS: [Colour; 2] = [Colour::Blocking, Colour::Async];

/// What a creator does.
#[derive(Clone, Copy, Debug)]
enum Make {
    Value(u64),
    Fail,
    Panic,
    /// Asks for its own key (after invalidating it, so that there is no value to serve).
    Recurse,
}

/// What the caller got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    Value(u64),
    Failed,
    Panicked,
    Recursion,
}

#[derive(Debug)]
struct Down;

type Fut = Pin<Box<dyn Future<Output = Result<u64, Down>> + Send>>;

const EXPIRY: Duration = Duration::from_secs(100);

/// A region on a clock the test moves, the creator runs it saw, and the recursion a creator met.
struct Harness {
    region: Region<u64, u64>,
    clock: Arc<ManualClock>,
    runs: Arc<AtomicU64>,
    recursion: Arc<AtomicBool>,
    rt: tokio::runtime::Runtime,
}

impl Harness {
    fn new(configure: impl FnOnce(RegionBuilder<u64, u64>) -> RegionBuilder<u64, u64>) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let builder = Region::builder()
            .expiry(EXPIRY)
            .background(Pool::new(1, 64).unwrap())
            .clock(clock.clone());
        Harness {
            region: configure(builder).build().unwrap(),
            clock,
            runs: Arc::default(),
            recursion: Arc::default(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
        }
    }

    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    fn creator(&self, key: u64, make: Make) -> impl FnOnce() -> Result<u64, Down> + Send + 'static {
        let (runs, region, recursion) = (
            self.runs.clone(),
            self.region.clone(),
            self.recursion.clone(),
        );
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            match make {
                Make::Value(v) => Ok(v),
                Make::Fail => Err(Down),
                Make::Panic => panic!("the upstream panicked"),
                Make::Recurse => {
                    region.invalidate(&key).unwrap();
                    let again = region.try_get_with(&key, || Ok::<_, Down>(0));
                    if matches!(again, Err(RegionError::Recursion { .. })) {
                        recursion.store(true, Ordering::SeqCst);
                    }
                    Ok(1)
                }
            }
        }
    }

    fn async_creator(&self, key: u64, make: Make) -> impl FnOnce() -> Fut + Send + 'static {
        let (runs, region, recursion) = (
            self.runs.clone(),
            self.region.clone(),
            self.recursion.clone(),
        );
        move || {
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                match make {
                    Make::Value(v) => Ok(v),
                    Make::Fail => Err(Down),
                    Make::Panic => panic!("the upstream panicked"),
                    Make::Recurse => {
                        let region = region.to_async();
                        region.invalidate(&key).await.unwrap();
                        let again = region
                            .try_get_with(&key, || async { Ok::<_, Down>(0) })
                            .await;
                        if matches!(again, Err(RegionError::Recursion { .. })) {
                            recursion.store(true, Ordering::SeqCst);
                        }
                        Ok(1)
                    }
                }
            })
        }
    }

    /// One call of `call` on `key`, whose creator does `make` (or, for an insert, which
    /// inserts `make`'s value); then waits for a background creator to finish.
    fn call(&self, call: Call, colour: Colour, key: u64, make: Make) -> Got {
        let got = panic::catch_unwind(AssertUnwindSafe(|| match colour {
            Colour::Blocking => self.blocking(call, key, make),
            Colour::Async => self.rt.block_on(self.awaiting(call, key, make)),
        }));
        self.settle();
        match got {
            Ok(got) => got,
            Err(_) => Got::Panicked,
        }
    }

    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.region.mutexes_in_use() > 0 {
            assert!(Instant::now() < deadline, "a creator never ended");
            // Spawned async creators run while the runtime is driven.
            self.rt
                .block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
            thread::yield_now();
        }
    }

    fn blocking(&self, call: Call, key: u64, make: Make) -> Got {
        let region = &self.region;
        let c = self.creator(key, make);
        let answer = match call {
            Call::Get => Ok(region.get_with(&key, || c().expect("get_with has no error"))),
            Call::Try => region.try_get_with(&key, c),
            Call::Optional => {
                return region
                    .optionally_get_with(&key, || c().ok())
                    .map_or(Got::Failed, Got::Value)
            }
            Call::Served => region.try_get_with_served(&key, c).map(|(v, _)| v),
            Call::WithExpiry => region
                .with_expiry(Some(EXPIRY))
                .unwrap()
                .try_get_with(&key, c),
            Call::Batch => region
                .try_get_with_many(&[key], |keys| c().map(|v| vec![v; keys.len()]))
                .map(|values| values[0]),
            Call::Background => region.background().try_get_with(&key, c),
            Call::Refresh => region.refresh(&key, c),
            Call::Insert => {
                let Make::Value(value) = make else {
                    unreachable!("an insert takes a value")
                };
                region.insert(&key, value).unwrap();
                Ok(value)
            }
        };
        got(answer)
    }

    async fn awaiting(&self, call: Call, key: u64, make: Make) -> Got {
        let region = self.region.to_async();
        let c = self.async_creator(key, make);
        let answer = match call {
            Call::Get => Ok(region
                .get_with(&key, || async { c().await.expect("get_with has no error") })
                .await),
            Call::Try => region.try_get_with(&key, c).await,
            Call::Optional => {
                return region
                    .optionally_get_with(&key, || async { c().await.ok() })
                    .await
                    .map_or(Got::Failed, Got::Value)
            }
            Call::Served => region.try_get_with_served(&key, c).await.map(|(v, _)| v),
            Call::WithExpiry => {
                self.region
                    .with_expiry(Some(EXPIRY))
                    .unwrap()
                    .to_async()
                    .try_get_with(&key, c)
                    .await
            }
            Call::Batch => region
                .try_get_with_many(&[key], |keys| {
                    let n = keys.len();
                    async move { c().await.map(|v| vec![v; n]) }
                })
                .await
                .map(|values| values[0]),
            Call::Background => region.background().try_get_with(&key, c).await,
            Call::Refresh => region.refresh(&key, c).await,
            Call::Insert => {
                let Make::Value(value) = make else {
                    unreachable!("an insert takes a value")
                };
                region.insert(&key, value).await.unwrap();
                Ok(value)
            }
        };
        got(answer)
    }
}

fn got(answer: Result<u64, RegionError<Down>>) -> Got {
    match answer {
        Ok(v) => Got::Value(v),
        Err(RegionError::Creator(_)) => Got::Failed,
        Err(RegionError::Recursion { .. }) => Got::Recursion,
        Err(other) => panic!("unexpected: {other}"),
    }
}

/// Runs `check` for every call and colour, and names the failing cell.
fn each(calls: &[Call], check: impl Fn(Call, Colour)) {
    for &call in calls {
        for colour in COLOURS {
            let checked = panic::catch_unwind(AssertUnwindSafe(|| check(call, colour)));
            if let Err(panic) = checked {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{call:?}, {colour:?}: {message}");
            }
        }
    }
}

/// Whether the next plain call of `key` regenerates it (the creator runs).
fn regenerates(h: &Harness, key: u64) -> bool {
    let before = h.runs();
    h.call(Call::Try, Colour::Blocking, key, Make::Value(99));
    h.runs() > before
}

#[test]
fn expire_with_gives_each_value_its_own_lifetime() {
    each(&CALLS, |call, colour| {
        // Odd values live 5 s, even ones the region's expiry.
        let h = Harness::new(|b| {
            b.expire_with(|v: &u64| {
                if v % 2 == 1 {
                    Duration::from_secs(5)
                } else {
                    EXPIRY
                }
            })
        });
        assert_eq!(h.call(call, colour, 1, Make::Value(1)), Got::Value(1));
        assert_eq!(h.call(call, colour, 2, Make::Value(2)), Got::Value(2));
        h.clock.advance(Duration::from_secs(6));
        assert!(regenerates(&h, 1), "a 5 s value fresh after 6 s");
        assert!(!regenerates(&h, 2), "a 100 s value expired after 6 s");
    });
}

#[test]
fn jitter_spreads_the_expiry_of_values_made_together() {
    each(&CALLS, |call, colour| {
        let h = Harness::new(|b| b.jitter(0.5)); // each lives 50 to 100 s
        for key in 0..60 {
            assert_eq!(h.call(call, colour, key, Make::Value(key)), Got::Value(key));
        }
        h.clock.advance(Duration::from_secs(75));
        let expired = (0..60).filter(|&key| regenerates(&h, key)).count();
        assert!((10..=50).contains(&expired), "{expired} of 60 expired");
    });
}

#[test]
fn refresh_ahead_refreshes_in_the_background_at_the_values_own_refresh_point() {
    // A value of 10 s, refreshed at 80 % of its life.
    let short = |b: RegionBuilder<u64, u64>| {
        b.refresh_ahead(0.8)
            .expire_with(|_| Duration::from_secs(10))
    };
    each(&[Call::Background], |call, colour| {
        let h = Harness::new(short);
        assert_eq!(h.call(call, colour, 1, Make::Value(1)), Got::Value(1));
        h.clock.advance(Duration::from_secs(5));
        assert_eq!(h.call(call, colour, 1, Make::Value(2)), Got::Value(1));
        assert_eq!(h.runs(), 1, "refreshed at half its life");
        h.clock.advance(Duration::from_millis(3500));
        assert_eq!(h.call(call, colour, 1, Make::Value(3)), Got::Value(1));
        assert_eq!(h.runs(), 2, "not refreshed at 85 % of its life");
        assert_eq!(h.call(call, colour, 1, Make::Value(4)), Got::Value(3));
    });
    // Calls that cannot hand their creator off serve a due value as fresh.
    let direct = [
        Call::Get,
        Call::Try,
        Call::Optional,
        Call::Served,
        Call::WithExpiry,
        Call::Batch,
    ];
    each(&direct, |call, colour| {
        let h = Harness::new(short);
        assert_eq!(h.call(call, colour, 1, Make::Value(1)), Got::Value(1));
        h.clock.advance(Duration::from_millis(8500));
        assert_eq!(h.call(call, colour, 1, Make::Value(2)), Got::Value(1));
        assert_eq!(h.runs(), 1);
    });
}

#[test]
fn max_stale_stops_serving_values_too_stale() {
    each(&CALLS, |call, colour| {
        let h = Harness::new(|b| b.max_stale(Duration::from_secs(10)));
        assert_eq!(h.call(call, colour, 1, Make::Value(1)), Got::Value(1));
        h.clock.advance(EXPIRY + Duration::from_secs(5));
        assert_eq!(h.region.peek(&1), Some(1), "within max_stale");
        h.clock.advance(Duration::from_secs(10));
        assert_eq!(h.region.peek(&1), None, "served past max_stale");
        if call != Call::Insert {
            // Too stale to serve: created in the caller, even by a background call.
            assert_eq!(h.call(call, colour, 1, Make::Value(2)), Got::Value(2));
        }
    });
}

/// The calls whose creator's failure a stale value can stand in for.
const RESCUABLE: [Call; 7] = [
    Call::Get,
    Call::Try,
    Call::Optional,
    Call::Served,
    Call::WithExpiry,
    Call::Batch,
    Call::Background,
];

fn stale_if_error(make: Make, calls: &[Call]) {
    each(calls, |call, colour| {
        let h = Harness::new(|b| b.stale_if_error(Duration::from_secs(60)));
        assert_eq!(h.call(call, colour, 1, Make::Value(1)), Got::Value(1));
        h.clock.advance(EXPIRY + Duration::from_secs(30));
        // Within the window: the stale value (a background call returns it at once anyway).
        assert_eq!(h.call(call, colour, 1, make), Got::Value(1));
        let stats = h.region.statistics();
        if call != Call::Background {
            assert_eq!(stats.stale_on_error, 1);
        }
        if matches!(make, Make::Panic) {
            assert_eq!(stats.panics, 1, "a panic not counted");
        }
        // Past the window: the failure reaches the caller (a background call creates in
        // the caller once the value is too stale to stand in).
        h.clock.advance(Duration::from_secs(60));
        let expected = match (make, call) {
            (_, Call::Background) => Got::Value(1),
            (Make::Panic, _) => Got::Panicked,
            _ => Got::Failed,
        };
        assert_eq!(h.call(call, colour, 1, make), expected);
    });
}

#[test]
fn stale_if_error_covers_a_creator_that_returns_an_error() {
    let fallible: Vec<Call> = RESCUABLE.into_iter().filter(|&c| c != Call::Get).collect();
    stale_if_error(Make::Fail, &fallible);
}

#[test]
fn stale_if_error_covers_a_creator_that_panics() {
    stale_if_error(Make::Panic, &RESCUABLE);
}

#[test]
fn a_creator_asking_for_its_own_key_gets_recursion_in_every_kind_of_call() {
    let calls: Vec<Call> = CALLS.into_iter().filter(|&c| c != Call::Insert).collect();
    each(&calls, |call, colour| {
        let h = Harness::new(|b| b);
        if call == Call::Background {
            // A background call hands off only an expired value.
            assert_eq!(h.call(call, colour, 1, Make::Value(1)), Got::Value(1));
            h.clock.advance(EXPIRY * 2);
        }
        h.call(call, colour, 1, Make::Recurse);
        assert!(
            h.recursion.load(Ordering::SeqCst),
            "the creator's own key was not refused"
        );
    });
}
