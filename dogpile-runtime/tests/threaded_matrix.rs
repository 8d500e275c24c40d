//! A port of the Python reference's threaded concurrency matrix (`ConcurrencyTest._test_multi`):
//! ten threads share one `Lock` mutex and use a value across many expiries, with a creator that
//! sleeps and a getter that may simulate an evicting cache, and the counts of regenerations,
//! slow waiters and stale values must stay within the reference's bounds.
//!
//! It sleeps for real and takes about a minute, so it lives in its own test binary, and its
//! seven scenarios run in parallel threads of one test, whatever the harness's thread count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::clock::{Clock, SystemClock, Timestamp};
use dogpile_runtime::lock::LocalMutex;
use dogpile_runtime::{Lock, NeedRegeneration};

const THREADS: usize = 10;

#[derive(Clone, Copy)]
enum Cache {
    None,
    /// Evicts after `(expire + create) * 1.1`: never before the lock's own expiry.
    Safe,
    /// Evicts after `expire * 0.8`: before the lock's expiry, so callers find no value.
    Unsafe,
}

struct Scenario {
    name: &'static str,
    expire: f64,
    create: f64,
    usages: usize,
    usage: f64,
    delay: f64,
    cache: Cache,
}

#[derive(Debug)]
struct Outcome {
    name: &'static str,
    run: f64,
    expected_run: f64,
    generations: usize,
    max_generations: usize,
    slow_waiters: usize,
    max_slow_waiters: usize,
    max_age: f64,
    max_stale: f64,
    failures: Vec<String>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn age(created: Timestamp) -> f64 {
    created.elapsed_at(SystemClock.now()).as_secs_f64()
}

fn run(s: &Scenario) -> Outcome {
    let cache_expire = match s.cache {
        Cache::None => None,
        Cache::Safe => Some((s.expire + s.create) * 1.1),
        Cache::Unsafe => Some(s.expire * 0.8),
    };
    let eff_expire = cache_expire.map_or(s.expire, |c| c.min(s.expire));
    let max_stale = (eff_expire + s.create + s.usage + s.delay) * 1.1;

    let mutex = Arc::new(LocalMutex::new());
    let resource: Arc<Mutex<Vec<Timestamp>>> = Arc::default();
    let creating = Arc::new(Mutex::new(()));
    let slow_waiters = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let max_age = Arc::new(Mutex::new(0f64));
    let expiry = secs(s.expire);

    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let fail = |msg: String| failures.lock().unwrap().push(msg);
                let create = || {
                    // No two creators may ever run at once.
                    let Ok(_only) = creating.try_lock() else {
                        fail("two creators ran concurrently".into());
                        return Err(());
                    };
                    thread::sleep(secs(s.create));
                    let now = SystemClock.now();
                    resource.lock().unwrap().push(now);
                    Ok(now)
                };
                let get = || {
                    let last = *resource.lock().unwrap().last().ok_or(NeedRegeneration)?;
                    if let Some(cache_expire) = cache_expire {
                        if age(last) > cache_expire {
                            if cache_expire >= s.expire {
                                fail(format!(
                                    "the cache evicted at {cache_expire:.2}s, after the \
                                     expiry {:.2}s",
                                    s.expire
                                ));
                            }
                            return Err(NeedRegeneration);
                        }
                    }
                    Ok((last, last))
                };
                for _ in 0..s.usages {
                    let asked = Instant::now();
                    match Lock::new(&mutex, create, get, Some(expiry)).enter() {
                        Ok(value) => {
                            if asked.elapsed() > Duration::from_millis(10) {
                                slow_waiters.fetch_add(1, Ordering::SeqCst);
                            }
                            let value_age = age(value);
                            let mut max = max_age.lock().unwrap();
                            *max = max.max(value_age);
                            if value_age >= max_stale {
                                fail(format!(
                                    "a value {value_age:.3}s old, max stale {max_stale:.3}s"
                                ));
                            }
                        }
                        Err(e) => fail(format!("enter failed: {e:?}")),
                    }
                    thread::sleep(secs(s.usage));
                    thread::sleep(secs(s.delay));
                }
            });
        }
    });
    let run = started.elapsed().as_secs_f64();

    let mut expected_run = s.usages as f64 * (s.usage + s.delay) * 1.1;
    let max_generations = (expected_run / eff_expire).ceil() as usize;
    let max_slow_waiters = match s.cache {
        Cache::Unsafe => max_generations * THREADS,
        _ => max_generations + THREADS - 1,
    };
    expected_run += s.create;
    expected_run += max_slow_waiters as f64 * s.create / THREADS as f64;
    expected_run *= 1.1;

    let generations = resource.lock().unwrap().len();
    let max_age = *max_age.lock().unwrap();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Outcome {
        name: s.name,
        run,
        expected_run,
        generations,
        max_generations,
        slow_waiters: slow_waiters.load(Ordering::SeqCst),
        max_slow_waiters,
        max_age,
        max_stale,
        failures,
    }
}

#[test]
fn threaded_matrix() {
    #[rustfmt::skip]
    let scenarios = [
        Scenario { name: "quick", expire: 2.0, create: 0.5, usages: 50, usage: 0.05, delay: 0.1, cache: Cache::None },
        Scenario { name: "slow", expire: 5.0, create: 2.0, usages: 50, usage: 0.1, delay: 0.1, cache: Cache::None },
        Scenario { name: "return_while_in_progress", expire: 5.0, create: 2.0, usages: 50, usage: 1.0, delay: 0.1, cache: Cache::None },
        Scenario { name: "long_create", expire: 2.0, create: 2.5, usages: 50, usage: 0.05, delay: 0.1, cache: Cache::None },
        Scenario { name: "registry_unsafe_cache", expire: 1.0, create: 0.6, usages: 100, usage: 0.05, delay: 0.1, cache: Cache::Unsafe },
        Scenario { name: "registry_safe_cache_quick", expire: 2.0, create: 0.5, usages: 50, usage: 0.05, delay: 0.1, cache: Cache::Safe },
        Scenario { name: "registry_safe_cache_slow", expire: 5.0, create: 2.0, usages: 50, usage: 0.1, delay: 0.1, cache: Cache::Safe },
    ];
    let outcomes: Vec<Outcome> = thread::scope(|scope| {
        let runs: Vec<_> = scenarios.iter().map(|s| scope.spawn(|| run(s))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });

    println!(
        "| scenario | run s (expected) | generations (bound) | slow waiters (bound) | oldest value s (max stale) | failures |"
    );
    println!("|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {:.1} ({:.1}) | {} ({}) | {} ({}) | {:.2} ({:.2}) | {} |",
            o.name,
            o.run,
            o.expected_run,
            o.generations,
            o.max_generations,
            o.slow_waiters,
            o.max_slow_waiters,
            o.max_age,
            o.max_stale,
            o.failures.len()
        );
    }
    for o in &outcomes {
        assert!(
            o.failures.is_empty(),
            "{}: failures {:?}",
            o.name,
            o.failures
        );
        assert!(
            o.generations <= o.max_generations,
            "{}: {} generations, bound {}",
            o.name,
            o.generations,
            o.max_generations
        );
        assert!(
            o.slow_waiters <= o.max_slow_waiters,
            "{}: {} slow waiters, bound {}",
            o.name,
            o.slow_waiters,
            o.max_slow_waiters
        );
        assert!(
            o.max_age < o.max_stale,
            "{}: value older than max stale",
            o.name
        );
    }
}
