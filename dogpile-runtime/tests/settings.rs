//! Every public constructor and setting of the runtime at its edges: zero, one nanosecond and
//! `Duration::MAX` for durations; 0, 1 and the largest value for counts. Each is either refused
//! with a `ConfigError` naming the option, or accepted and shown working through the public
//! API; never a panic, a hang (every case runs under a deadline), or an object that silently
//! does nothing.
//!
//! The constructors without a setting to get wrong (`LocalMutex::new`, `ReadWriteMutex::new`,
//! `NameRegistry::new`, `Fence::new`, `ManualClock::new`, `Pool::shared`, `Region::builder`,
//! `Region::to_async`, `Region::with_on_backend_error`,
//! `FileLocks::mutex`, the error types' `new`) are not listed.
#![allow(deprecated)] // the legacy API's constructors are checked too

use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::file::{FileLocks, FileReadWriteMutex};
use dogpile_runtime::clock::{ManualClock, Timestamp};
use dogpile_runtime::legacy::{Dogpile, SyncReaderDogpile};
use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard, RawMutex};
use dogpile_runtime::region::{MemoryStore, Pool, RegionBuilder, Stamp, Store};
use dogpile_runtime::{ConfigError, Lock, LockError, NeedRegeneration, Region};

const ZERO: Duration = Duration::ZERO;
const NANO: Duration = Duration::from_nanos(1);
const MAX: Duration = Duration::MAX;
/// How long any one case may take.
const BOUND: Duration = Duration::from_secs(10);

/// What a setting is expected to do at an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// Refused with a `ConfigError` naming the option.
    Refused,
    /// Accepted, and works.
    Works,
}
use Edge::{Refused, Works};

/// Runs `case` on a thread of its own and fails if it panics or outlasts `BOUND`.
fn bounded(name: &str, case: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let handle = thread::spawn(move || {
        case();
        let _ = done.send(());
    });
    match finished.recv_timeout(BOUND) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("{name} ended without reporting"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name} hung"),
    }
}

/// Checks one edge: refused naming `option`, or accepted and then `works` on the result.
fn expect<T>(
    name: &str,
    option: &str,
    edge: Edge,
    built: Result<T, ConfigError>,
    works: impl FnOnce(T),
) {
    match (edge, built) {
        (Refused, Err(err)) => {
            assert_eq!(err.option(), option, "{name}: {err}");
            assert!(!err.to_string().is_empty());
        }
        (Works, Ok(built)) => works(built),
        (Refused, Ok(_)) => panic!("{name} was accepted; it cannot work"),
        (Works, Err(err)) => panic!("{name} was refused: {err}"),
    }
}

/// A region's core promise: a missing value is made by one of many concurrent callers, and
/// every caller gets it; then the value is served.
fn serves(region: Region<u32, u32>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (region, runs) = (region.clone(), runs.clone());
            thread::spawn(move || {
                region.get_with(&1, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    7
                })
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap(), 7);
    }
    assert!(runs.load(Ordering::SeqCst) >= 1);
    assert_eq!(region.get_with(&2, || 8), 8);
    assert!(matches!(region.get_with(&2, || 9), 8 | 9));
}

/// `serves`, and only one creator for the concurrent callers (settings that do not let a
/// waiter give up or a value expire at once).
fn serves_once(region: Region<u32, u32>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (region, runs) = (region.clone(), runs.clone());
            thread::spawn(move || {
                region.get_with(&1, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    7
                })
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap(), 7);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator");
    assert_eq!(region.get_with(&1, || 9), 7, "then served");
}

type Builder = RegionBuilder<u32, u32>;

/// A builder with an expiry, which the lifetime policies (`max_stale`, `stale_if_error`)
/// work on.
fn expiring() -> Builder {
    Region::builder().expiry(Duration::from_secs(60))
}

fn region_duration(
    option: &'static str,
    set: fn(Builder, Duration) -> Builder,
    edges: [Edge; 3],
    works: fn(Region<u32, u32>),
) {
    for (value, edge) in [ZERO, NANO, MAX].into_iter().zip(edges) {
        let name = format!("RegionBuilder::{option}({value:?})");
        bounded(&name.clone(), move || {
            let base = match option {
                "expiry" => Region::builder(),
                _ => expiring(),
            };
            let built = set(base, value).build();
            expect(&name, option, edge, built, works);
        });
    }
}

#[test]
fn region_builder_durations() {
    region_duration("expiry", Builder::expiry, [Refused, Works, Refused], serves);
    region_duration(
        "lock_timeout",
        Builder::lock_timeout,
        [Refused, Works, Refused],
        serves,
    );
    region_duration(
        "max_stale",
        Builder::max_stale,
        [Works, Works, Refused],
        serves_once,
    );
    region_duration(
        "stale_if_error",
        Builder::stale_if_error,
        [Refused, Works, Refused],
        serves_once,
    );
    region_duration(
        "clock_tolerance",
        Builder::clock_tolerance,
        [Works, Works, Refused],
        serves_once,
    );
    region_duration(
        "fail_safe_throttle",
        Builder::fail_safe_throttle,
        [Works, Works, Refused],
        fails_once_then_recovers,
    );
    region_duration(
        "hard_timeout",
        Builder::hard_timeout,
        [Refused, Works, Refused],
        waiters_give_up_and_the_value_stays,
    );
}

/// A failing creator is called once for concurrent callers, who all get its error; then (once
/// the throttle is over, at once for the shortest) a creator that succeeds is called.
fn fails_once_then_recovers(region: Region<u32, u32>) {
    let runs = Arc::new(AtomicUsize::new(0));
    // Released together, and a creator slow enough that none comes after it failed (with no
    // throttle, such a caller would rightly call again).
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (region, runs, barrier) = (region.clone(), runs.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                region.try_get_with(&1, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(300));
                    Err::<u32, _>("down")
                })
            })
        })
        .collect();
    for caller in callers {
        assert!(caller.join().unwrap().is_err());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator for the herd");
    while region.try_get_with(&1, || Ok::<_, &str>(7)).is_err() {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(region.get_with(&1, || 9), 7, "then served");
}

/// A creator slower than the hard timeout: its caller gets its value, a caller waiting for it
/// gives up with `RegionError::Timeout` (or gets the value, if it came late), and the value
/// is stored.
fn waiters_give_up_and_the_value_stays(region: Region<u32, u32>) {
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let region = region.clone();
            thread::spawn(move || {
                region.try_get_with(&1, || {
                    thread::sleep(Duration::from_millis(20));
                    Ok::<_, Infallible>(7)
                })
            })
        })
        .collect();
    let answers: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().any(|a| matches!(a, Ok(7))), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(7) | Err(dogpile_runtime::RegionError::Timeout(_)))),
        "{answers:?}"
    );
    assert_eq!(region.get_with(&1, || 9), 7, "stored");
}

#[test]
fn region_builder_shares() {
    for (share, edge) in [
        (0.0, Refused),
        (f64::MIN_POSITIVE, Works),
        (0.5, Works),
        (1.0, Refused),
        (f64::MAX, Refused),
        (f64::NAN, Refused),
    ] {
        for option in ["jitter", "refresh_ahead"] {
            let name = format!("RegionBuilder::{option}({share})");
            bounded(&name.clone(), move || {
                let builder = match option {
                    "jitter" => expiring().jitter(share),
                    _ => expiring().refresh_ahead(share),
                };
                expect(&name, option, edge, builder.build(), serves_once);
            });
        }
    }
}

#[test]
fn region_and_store_counts() {
    for (count, edge) in [(0, Refused), (1, Works), (usize::MAX, Works)] {
        let name = format!("RegionBuilder::capacity({count})");
        bounded(&name.clone(), move || {
            let built = Region::builder().capacity(count).build();
            expect(
                &name,
                "capacity",
                edge,
                built,
                |region: Region<u32, u32>| {
                    for key in 0..100 {
                        assert_eq!(region.get_with(&key, || key), key);
                    }
                    assert!(region.len() <= count.min(100), "{} values", region.len());
                    assert!(!region.is_empty());
                },
            );
        });

        let name = format!("MemoryStore::new(Some({count}))");
        bounded(&name.clone(), move || {
            expect(
                &name,
                "capacity",
                edge,
                MemoryStore::new(Some(count)),
                fills(count),
            );
        });

        let name = format!("MemoryStoreBuilder::capacity({count})");
        bounded(&name.clone(), move || {
            let built = MemoryStore::builder().capacity(count).build();
            expect(&name, "capacity", edge, built, fills(count));
        });
    }
    bounded("MemoryStore::new(None)", || {
        fills(usize::MAX)(MemoryStore::new(None).unwrap())
    });
    for (weight, edge) in [(0, Refused), (1, Works), (u64::MAX, Works)] {
        let name = format!("max_weight({weight})");
        bounded(&name.clone(), move || {
            let built = MemoryStore::builder()
                .max_weight(weight)
                .weigher(|_, _| 1)
                .build();
            let bound = usize::try_from(weight).unwrap_or(usize::MAX);
            expect(&name, "max_weight", edge, built, fills(bound));
            let built = Region::<u32, u32>::builder()
                .max_weight(weight)
                .weigher(|_, _| 1)
                .build();
            expect(&name, "max_weight", edge, built, |region| {
                assert_eq!(region.get_with(&1, || 1), 1);
            });
        });
    }
}

/// A store that keeps values, at most `bound` of them.
fn fills(bound: usize) -> impl FnOnce(MemoryStore<u32, u32>) {
    move |store| {
        for key in 0..100u32 {
            store
                .put(&key, &key, Stamp::new(Timestamp::from_nanos(1)))
                .unwrap();
        }
        let count = store.count().unwrap();
        assert!(count >= 1 && count <= bound.min(100), "{count} values kept");
    }
}

#[test]
fn region_with_expiry() {
    for (expiry, edge) in [(ZERO, Refused), (NANO, Works), (MAX, Refused)] {
        let name = format!("Region::with_expiry(Some({expiry:?}))");
        bounded(&name.clone(), move || {
            let region: Region<u32, u32> = Region::builder().build().unwrap();
            expect(
                &name,
                "expiry",
                edge,
                region.with_expiry(Some(expiry)),
                serves,
            );
        });
    }
    bounded("Region::with_expiry(None)", || {
        let region: Region<u32, u32> = Region::builder()
            .expiry(Duration::from_secs(1))
            .build()
            .unwrap();
        serves_once(region.with_expiry(None).unwrap());
    });
}

/// `expire_with` shortens lifetimes, so a handle whose values never expire refuses it.
#[test]
fn region_with_expire_with() {
    bounded("Region::with_expire_with", || {
        let clock = Arc::new(ManualClock::starting_now());
        let region: Region<u32, u32> = Region::builder()
            .expiry(Duration::from_secs(60))
            .clock(clock.clone())
            .build()
            .unwrap();
        let short = region.with_expire_with(|_| Duration::from_secs(1)).unwrap();
        assert_eq!(short.get_with(&1, || 1), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(short.get_with(&1, || 2), 2, "lived one second");
        let never = region.with_expiry(None).unwrap();
        let built = never.with_expire_with(|_| Duration::from_secs(1));
        expect(
            "with_expire_with without expiry",
            "expire_with",
            Refused,
            built,
            drop,
        );
    });
}

#[test]
fn pool_counts() {
    for (threads, edge) in [(0, Refused), (1, Works), (usize::MAX, Works)] {
        for queue in [0, 1, usize::MAX] {
            let name = format!("Pool::new({threads}, {queue})");
            bounded(&name.clone(), move || {
                expect(&name, "threads", edge, Pool::new(threads, queue), |pool| {
                    let (ran, done) = mpsc::channel();
                    pool.try_spawn(move || ran.send(()).unwrap()).unwrap();
                    done.recv_timeout(BOUND).expect("the job ran");
                });
            });
        }
    }
}

/// A `Lock` is one call; its settings are checked when it is entered, as a builder checks its
/// own when built.
#[test]
fn lock_durations() {
    let enter = |expiry: Option<Duration>, timeout: Option<Duration>, held: bool| {
        let mutex = Arc::new(LocalMutex::new());
        let _creating = held.then(|| OwnedMutexGuard::acquire(mutex.clone()).unwrap());
        let mut lock = Lock::new(
            &mutex,
            || Ok::<_, Infallible>(5),
            || Err(NeedRegeneration),
            expiry,
        );
        if let Some(timeout) = timeout {
            lock = lock.with_lock_timeout(timeout);
        }
        lock.enter()
    };
    let checked = |result: Result<u32, LockError<Infallible>>| match result {
        Err(LockError::Config(err)) => Err(err),
        other => Ok(other),
    };
    for (expiry, edge) in [(ZERO, Refused), (NANO, Works), (MAX, Refused)] {
        let name = format!("Lock::new(.., Some({expiry:?}))");
        bounded(&name.clone(), move || {
            expect(
                &name,
                "expiry",
                edge,
                checked(enter(Some(expiry), None, false)),
                |v| {
                    assert_eq!(v.unwrap(), 5);
                },
            );
        });
    }
    // Zero is a lock that never waits: it gives up at once on a held mutex.
    for (timeout, edge) in [(ZERO, Works), (NANO, Works), (MAX, Refused)] {
        let name = format!("Lock::with_lock_timeout({timeout:?})");
        bounded(&name.clone(), move || {
            let free = checked(enter(None, Some(timeout), false));
            expect(&name, "lock_timeout", edge, free, |v| {
                assert_eq!(v.unwrap(), 5)
            });
            let held = checked(enter(None, Some(timeout), true));
            expect(&name, "lock_timeout", edge, held, |v| {
                assert!(matches!(v, Err(LockError::Timeout(t)) if t == timeout));
            });
        });
    }
}

/// Waiting for a mutex with a timeout is a call, not a setting: every timeout is taken, and
/// `Duration::MAX` waits for as long as it takes.
#[test]
fn mutex_timeouts() {
    for timeout in [ZERO, NANO, MAX] {
        bounded(&format!("acquire_timeout({timeout:?})"), move || {
            let mutex = Arc::new(LocalMutex::new());
            let guard = OwnedMutexGuard::acquire_timeout(mutex.clone(), timeout).unwrap();
            let guard = guard.expect("free: taken");
            let releaser = thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                drop(guard);
            });
            let start = Instant::now();
            let again = OwnedMutexGuard::acquire_timeout(mutex.clone(), timeout).unwrap();
            assert_eq!(again.is_some(), timeout == MAX, "{:?}", start.elapsed());
            releaser.join().unwrap();

            let dir = std::env::temp_dir().join(format!("dogpile-settings-{}", std::process::id()));
            let locks = FileLocks::builder(&dir).stripes(1).build().unwrap();
            let (a, b) = (locks.mutex("a"), locks.mutex("a"));
            assert!(a.acquire_timeout(timeout).unwrap());
            if timeout != MAX {
                assert!(!b.acquire_timeout(timeout).unwrap(), "held by `a`");
            }
            a.release().unwrap();
            assert!(b.acquire_timeout(timeout).unwrap());
            b.release().unwrap();
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}

#[test]
fn legacy_constructors() {
    for (expiry, edge) in [(ZERO, Refused), (NANO, Works), (MAX, Refused)] {
        let name = format!("Dogpile::new(Some({expiry:?}))");
        bounded(&name.clone(), move || {
            let clock = Arc::new(ManualClock::starting_now());
            let works = |dogpile: Dogpile| {
                let dogpile = dogpile.with_clock(clock.clone());
                dogpile.acquire(|| Ok::<_, ()>(())).unwrap();
                assert!(dogpile.has_value());
                clock.advance(Duration::from_nanos(2));
                assert!(dogpile.is_expired(), "past its expiry of 1 ns");
            };
            expect(&name, "expiry", edge, Dogpile::new(Some(expiry)), works);
            let with_mutex = Dogpile::with_mutex(Some(expiry), Arc::new(LocalMutex::new()));
            expect(&name, "expiry", edge, with_mutex, |d| {
                assert!(!d.has_value())
            });
            expect(
                &name,
                "expiry",
                edge,
                SyncReaderDogpile::new(Some(expiry)),
                |d| {
                    assert!(!d.dogpile().has_value());
                },
            );
        });
    }
}

#[test]
fn file_settings() {
    for (stripes, edge) in [(0, Refused), (1, Works), (usize::MAX, Refused)] {
        let name = format!("FileLocksBuilder::stripes({stripes})");
        bounded(&name.clone(), move || {
            let dir = std::env::temp_dir().join(format!("dogpile-stripes-{}", std::process::id()));
            let built = FileLocks::builder(&dir).stripes(stripes).build();
            expect(&name, "stripes", edge, built, |locks| {
                let m = locks.mutex(&1u8);
                assert!(m.try_acquire().unwrap());
                m.release().unwrap();
            });
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
    assert_eq!(FileLocks::new("").unwrap_err().option(), "dir");
    assert_eq!(FileReadWriteMutex::new("").unwrap_err().option(), "path");
    assert_eq!(
        FileReadWriteMutex::with_mode("x.lock", 0)
            .unwrap_err()
            .option(),
        "mode"
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_durations() {
    use dogpile_runtime::backend::redis::{Redis, RedisBuilder};

    type Set = fn(RedisBuilder, Duration) -> RedisBuilder;
    let options: [(&str, Set); 3] = [
        ("timeout", RedisBuilder::timeout),
        ("lease", RedisBuilder::lease),
        ("renew_every", RedisBuilder::renew_every),
    ];
    // Commands, leases and renewals are sent in milliseconds: each edge is refused.
    for (option, set) in options {
        for value in [ZERO, NANO, MAX] {
            let name = format!("RedisBuilder::{option}({value:?})");
            let built = set(Redis::builder("redis://127.0.0.1:1/"), value).build();
            expect(&name, option, Refused, built, |_| {});
        }
    }
    let store = || {
        Redis::open("redis://127.0.0.1:1/")
            .unwrap()
            .store::<u32, u32>("settings")
    };
    for value in [ZERO, NANO, MAX] {
        let name = format!("RedisStore::retain({value:?})");
        expect(&name, "retain", Refused, store().retain(value), |_| {});
    }
}

/// A `Debug` form for every accepted object, so none is a silent placeholder.
#[test]
fn accepted_objects_describe_themselves() {
    fn shown(value: impl Debug) {
        assert!(!format!("{value:?}").is_empty());
    }
    shown(MemoryStore::<u8, u8>::new(Some(1)).unwrap());
    shown(Pool::new(1, 0).unwrap());
    shown(FileLocks::builder("/tmp/l").stripes(1).build().unwrap());
    shown(FileReadWriteMutex::new("/tmp/l.lock").unwrap());
}
