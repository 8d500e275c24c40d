//! The Redis store and mutex against a real `redis-server` that this harness starts on a free
//! loopback port (and stops, and restarts): processes bursting on one expired key, one round
//! trip per fresh hit, a killed holder, lease renewal, an outage, corrupt bytes.
//!
//! Needs `redis-server` on the `PATH` (`.ci/run` installs it if missing).
#![cfg(feature = "redis")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
use dogpile_runtime::clock::{CoarseClock, Timestamp};
use dogpile_runtime::region::{OnBackendError, Store};
use dogpile_runtime::{Region, RegionError};

#[path = "support/children.rs"]
mod children;
use children::{fresh_dir, wait_for};

const ROLE: &str = "DOGPILE_REDIS_ROLE";
const URL: &str = "DOGPILE_REDIS_URL";
const DIR: &str = "DOGPILE_REDIS_DIR";

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::Server;

fn spawn_child(role: &str, url: &str, dir: &Path) -> Child {
    children::spawn_child(&[(ROLE, role), (URL, url), (DIR, &dir.display().to_string())])
}

type RedisRegion = Region<u64, u64, RedisStore<u64, u64>, RedisMutex>;

fn region(redis: &Redis, namespace: &'static str, expiry: Duration) -> RedisRegion {
    Region::builder()
        .name(namespace)
        .expiry(expiry)
        .store(redis.store(namespace))
        .mutexes(redis.mutexes(namespace))
        .build()
        .unwrap()
}

fn incr(redis_url: &str, counter: &str) -> u64 {
    let mut c = redis::Client::open(redis_url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    redis::cmd("INCR").arg(counter).query(&mut c).unwrap()
}

/// What a child process does, by its role; nothing when run as a normal test.
#[test]
fn child() {
    let (Ok(role), Ok(url), Ok(dir)) =
        (std::env::var(ROLE), std::env::var(URL), std::env::var(DIR))
    else {
        return;
    };
    let dir = PathBuf::from(dir);
    let redis = Redis::builder(&url)
        .timeout(Duration::from_millis(200))
        .lease(Duration::from_secs(1))
        .build()
        .unwrap();
    match role.split_once(':') {
        Some(("burst", n)) => {
            let region = region(&redis, "burst", Duration::from_secs(1));
            let (mut stale, mut new) = (0, 0);
            for round in 1..=2u64 {
                fs::write(dir.join(format!("ready-{round}-{n}")), "").unwrap();
                wait_for(&dir.join(format!("go-{round}")));
                let barrier = Arc::new(Barrier::new(16));
                let threads: Vec<_> = (0..16)
                    .map(|_| {
                        let (region, barrier, url) = (region.clone(), barrier.clone(), url.clone());
                        thread::spawn(move || {
                            barrier.wait();
                            region.get_with(&1, || {
                                let generation = incr(&url, "creations");
                                thread::sleep(Duration::from_millis(300));
                                generation
                            })
                        })
                    })
                    .collect();
                for t in threads {
                    if t.join().unwrap() == round {
                        new += 1;
                    } else {
                        stale += 1;
                    }
                }
            }
            println!("stale={stale} new={new}");
        }
        Some(("holder", _)) => {
            let region = region(&redis, "killed", Duration::from_secs(60));
            region.get_with(&1, || {
                fs::write(dir.join("creating"), "").unwrap();
                thread::sleep(Duration::from_secs(3600));
                0
            });
        }
        Some(("invalidate", n)) => invalidation_child(&redis, &url, &dir, n),
        _ => panic!("unknown role {role}"),
    }
}

/// The invalidations of the test below, one per phase, each on its own key.
const PHASES: [&str; 4] = [
    "invalidate_all",
    "soft_invalidate_all",
    "invalidate",
    "soft_invalidate",
];

/// Child `n` of the invalidation test: every child reads each phase's key (fresh); child 0
/// then invalidates, and the others race 4 threads each on the key.
fn invalidation_child(redis: &Redis, url: &str, dir: &Path, n: &str) {
    let region = region(redis, "inval", Duration::from_secs(60));
    for (phase, what) in PHASES.iter().enumerate() {
        let key = phase as u64 + 1;
        wait_for(&dir.join(format!("go-{phase}")));
        assert_eq!(region.get_with(&key, || unreachable!("fresh")), 0);
        fs::write(dir.join(format!("read-{phase}-{n}")), "").unwrap();
        if n == "0" {
            wait_for(&dir.join(format!("invalidate-{phase}")));
            match *what {
                "invalidate_all" => region.invalidate_all(),
                "soft_invalidate_all" => region.soft_invalidate_all(),
                "invalidate" => region.invalidate(&key),
                _ => region.soft_invalidate(&key),
            }
            .expect("the server answers");
            fs::write(dir.join(format!("invalidated-{phase}")), "").unwrap();
            continue;
        }
        wait_for(&dir.join(format!("invalidated-{phase}")));
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (region, barrier, url) = (region.clone(), barrier.clone(), url.to_string());
                thread::spawn(move || {
                    barrier.wait();
                    region.get_with(&key, || {
                        incr(&url, &format!("created-{phase}"));
                        thread::sleep(Duration::from_millis(300));
                        100 + key
                    })
                })
            })
            .collect();
        let served: Vec<String> = threads
            .into_iter()
            .map(|t| t.join().unwrap().to_string())
            .collect();
        println!("phase {phase} served {}", served.join(" "));
    }
}

/// Three processes share a region. After one of them invalidates (all keys or one; hard or
/// soft) and the call returns, the others see it at their next call: hard, they regenerate
/// once and every caller gets the new value; soft, one regenerates while the others are
/// served the stale value.
#[test]
fn invalidation_in_one_process_reaches_the_others() {
    let server = Server::start();
    let url = server.url();
    let dir = fresh_dir("inval");
    let redis = Redis::open(&url).unwrap();
    let here = region(&redis, "inval", Duration::from_secs(60));
    let children: Vec<Child> = (0..3)
        .map(|n| spawn_child(&format!("invalidate:{n}"), &url, &dir))
        .collect();
    for phase in 0..PHASES.len() {
        here.insert(&(phase as u64 + 1), 0).unwrap();
        fs::write(dir.join(format!("go-{phase}")), "").unwrap();
        for n in 0..3 {
            wait_for(&dir.join(format!("read-{phase}-{n}")));
        }
        fs::write(dir.join(format!("invalidate-{phase}")), "").unwrap();
        // The next phase's value must be written after this invalidation, and on a later
        // tick of the coarse clock: the invalidating process also keeps its own cutoff, which
        // covers values stamped within the tick it was made in.
        wait_for(&dir.join(format!("invalidated-{phase}")));
        thread::sleep(CoarseClock::resolution() + Duration::from_millis(5));
    }
    let mut served: Vec<Vec<u64>> = vec![Vec::new(); PHASES.len()];
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // libtest may print its own words before ours on the first line.
            let Some(at) = line.find("phase ") else {
                continue;
            };
            let rest = &line[at + "phase ".len()..];
            let (phase, values) = rest.split_once(" served ").unwrap();
            served[phase.parse::<usize>().unwrap()]
                .extend(values.split(' ').map(|v| v.parse::<u64>().unwrap()));
        }
    }
    let mut admin = server.connection();
    for (phase, what) in PHASES.iter().enumerate() {
        let new = phase as u64 + 101;
        let created: Option<u64> = redis::cmd("GET")
            .arg(format!("created-{phase}"))
            .query(&mut admin)
            .unwrap();
        let served = &served[phase];
        assert_eq!(served.len(), 8, "{what}: {served:?}");
        assert_eq!(created, Some(1), "{what}: one regeneration, {served:?}");
        let fresh = served.iter().filter(|&&v| v == new).count();
        if what.starts_with("soft") {
            // One caller regenerates; the others, in both processes, get the stale value.
            assert!((1..=2).contains(&fresh), "{what}: {served:?}");
            assert!(
                served.iter().all(|&v| v == new || v == 0),
                "{what}: {served:?}"
            );
        } else {
            assert_eq!(fresh, 8, "{what}: every caller waits for the new value");
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn eight_processes_of_sixteen_threads_regenerate_once_per_expiry() {
    let server = Server::start();
    let url = server.url();
    let dir = fresh_dir("burst");
    // An old value: expired everywhere.
    let redis = Redis::open(&url).unwrap();
    redis
        .store::<u64, u64>("burst")
        .put(&1, &0, Timestamp::from_nanos(1_000_000_000).into())
        .unwrap();
    let children: Vec<Child> = (0..8)
        .map(|n| spawn_child(&format!("burst:{n}"), &url, &dir))
        .collect();
    for round in 1..=2 {
        for n in 0..8 {
            wait_for(&dir.join(format!("ready-{round}-{n}")));
        }
        if round == 2 {
            // Let the first regeneration's value expire (1 s).
            thread::sleep(Duration::from_millis(1300));
        }
        fs::write(dir.join(format!("go-{round}")), "").unwrap();
    }
    let (mut stale, mut new) = (0, 0);
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed");
        let text = String::from_utf8_lossy(&output.stdout);
        let counts = text.split("stale=").nth(1).expect("no counts");
        let mut numbers = counts
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap());
        stale += numbers.next().unwrap();
        new += numbers.next().unwrap();
    }
    let creations: u64 = redis::cmd("GET")
        .arg("creations")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(creations, 2, "one regeneration per expiry, two expiries");
    assert_eq!(stale + new, 8 * 16 * 2);
    assert!(
        stale >= 8 * 16 * 2 - 40,
        "stale values served meanwhile: {stale} stale, {new} new"
    );
    eprintln!(
        "8 processes x 16 threads, 2 expiries: {creations} creations, {stale} stale, {new} new"
    );
    assert!(server.locks("burst").is_empty(), "no lock left behind");
    let _ = fs::remove_dir_all(&dir);
}

/// A fresh hit is one command: the read script, which reads the value and its shard's epoch
/// on the server (the `HMGET`s it runs are counted by the server too, but cost no round trip).
#[test]
fn a_fresh_hit_is_one_round_trip() {
    let server = Server::start();
    let redis = Redis::open(&server.url()).unwrap();
    let region = region(&redis, "hits", Duration::from_secs(60));
    assert_eq!(region.get_with(&5, || 50), 50);
    server.reset_stats();
    for _ in 0..100 {
        assert_eq!(region.get_with(&5, || unreachable!()), 50);
    }
    let calls = server.command_calls();
    let sent: Vec<_> = calls
        .iter()
        .filter(|(name, _)| name != "hmget" && !name.starts_with("config"))
        .collect();
    assert_eq!(sent, [&("evalsha".to_string(), 100)], "{calls:?}");
    // Two reads inside each script: the value and the epoch.
    let inside = calls.iter().find(|(name, _)| name == "hmget");
    assert_eq!(inside, Some(&("hmget".to_string(), 200)), "{calls:?}");
}

/// A value of 50 MB: made once, stored, and read back whole by another handle on the same
/// server (as another process would). The timeout is 5 s: this build is not optimized (its
/// serde takes seconds over 50 MB), and the machine may be loaded; an optimized build on an
/// idle machine takes about 0.4 s each way (README).
#[test]
fn a_value_of_50_mb_is_made_once_and_read_back_whole() {
    const SIZE: usize = 50 << 20;
    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_secs(5))
        .lease(Duration::from_secs(30))
        .build()
        .unwrap();
    let handle = || -> Region<u64, Vec<u8>, RedisStore<u64, Vec<u8>>, RedisMutex> {
        Region::builder()
            .name("large")
            .expiry(Duration::from_secs(60))
            .store(redis.store("large"))
            .mutexes(redis.mutexes("large"))
            .build()
            .unwrap()
    };
    let (one, other) = (handle(), handle());
    let calls = AtomicUsize::new(0);
    let make = || {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut value = (0..251).collect::<Vec<u8>>().repeat(SIZE / 251 + 1);
        value.truncate(SIZE);
        value
    };
    let began = Instant::now();
    let made = one.get_with(&1, make);
    let stored = began.elapsed();
    let began = Instant::now();
    let read = other.get_with(&1, || unreachable!("stored in Redis"));
    let fetched = began.elapsed();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(read.len(), SIZE);
    assert!(read == made, "read back byte for byte");
    assert_eq!(one.statistics().backend_failures, 0);
    assert_eq!(other.statistics().backend_failures, 0);
    eprintln!("50 MB: made and stored in {stored:?}, read by another handle in {fetched:?}");
}

#[test]
fn a_holder_killed_mid_creation_is_replaced_within_the_lease() {
    let server = Server::start();
    let url = server.url();
    let dir = fresh_dir("killed");
    let redis = Redis::builder(&url)
        .timeout(Duration::from_millis(200))
        .lease(Duration::from_secs(1))
        .build()
        .unwrap();
    redis
        .store::<u64, u64>("killed")
        .put(&1, &0, Timestamp::from_nanos(1_000_000_000).into())
        .unwrap();
    let mut holder = spawn_child("holder:0", &url, &dir);
    wait_for(&dir.join("creating"));
    holder.kill().unwrap(); // SIGKILL: no release
    holder.wait().unwrap();
    let killed = Instant::now();
    let region = region(&redis, "killed", Duration::from_secs(60));
    // Stale values meanwhile; then this process takes over once the lease runs out.
    loop {
        let value = region.get_with(&1, || 1);
        if value == 1 {
            break;
        }
        assert_eq!(value, 0, "the stale value");
        assert!(killed.elapsed() < Duration::from_secs(5), "never took over");
        thread::sleep(Duration::from_millis(20));
    }
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(1500),
        "took over after {took:?}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_creator_longer_than_the_lease_keeps_the_lock_by_renewal() {
    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(100))
        .lease(Duration::from_millis(300))
        .build()
        .unwrap();
    // Two regions on one namespace: two hosts, as far as the lock can tell.
    let (a, b) = (
        region(&redis, "long", Duration::from_secs(60)),
        region(&redis, "long", Duration::from_secs(60)),
    );
    let creations = Arc::new(AtomicUsize::new(0));
    let slow = {
        let creations = creations.clone();
        thread::spawn(move || {
            a.get_with(&1, || {
                creations.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(1200)); // four leases
                7
            })
        })
    };
    thread::sleep(Duration::from_millis(100));
    let others: Vec<_> = (0..4)
        .map(|_| {
            let (b, creations) = (b.clone(), creations.clone());
            thread::spawn(move || {
                b.get_with(&1, || {
                    creations.fetch_add(1, Ordering::SeqCst);
                    8
                })
            })
        })
        .collect();
    assert_eq!(slow.join().unwrap(), 7);
    for other in others {
        assert_eq!(other.join().unwrap(), 7);
    }
    assert_eq!(creations.load(Ordering::SeqCst), 1, "no second creator");
    assert_eq!(redis.leases_lost(), 0);
}

#[test]
fn an_outage_gets_the_chosen_policy_and_the_region_recovers() {
    let mut server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(200))
        .lease(Duration::from_secs(2))
        .build()
        .unwrap();
    let direct = region(&redis, "outage", Duration::from_millis(100));
    let strict: RedisRegion = Region::builder()
        .name("outage-strict")
        .expiry(Duration::from_millis(100))
        .store(redis.store("outage-strict"))
        .mutexes(redis.mutexes("outage-strict"))
        .on_backend_error(OnBackendError::ReturnError)
        .build()
        .unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (direct, stop, slowest) = (direct.clone(), stop.clone(), slowest.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let value = direct.get_with(&(n % 10), || t);
                    assert!(value < 4);
                    let took = start.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                    n += 1;
                    thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    server.stop();
    thread::sleep(Duration::from_millis(200));
    let failed = strict.try_get_with(&1, || Ok::<_, ()>(1));
    assert!(
        matches!(failed, Err(RegionError::Backend(_))),
        "the strict region returns the error: {failed:?}"
    );
    thread::sleep(Duration::from_millis(300));
    let during = direct.statistics().direct_calls;
    assert!(during > 0, "calls went to the creator directly");
    server.resume();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for thread in load {
        thread.join().expect("a caller panicked");
    }
    let slowest = *slowest.lock().unwrap();
    assert!(slowest < Duration::from_secs(2), "a call took {slowest:?}");
    // Working again: stored and then served fresh.
    let hits = direct.statistics().hits;
    assert_eq!(direct.get_with(&99, || 3), 3);
    assert_eq!(direct.get_with(&99, || unreachable!()), 3);
    assert!(direct.statistics().hits > hits);
    assert_eq!(strict.try_get_with(&1, || Ok::<_, ()>(1)).unwrap(), 1);
    // No lock key stuck: every lock taken was released or expires with its lease.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !server.locks("outage").is_empty() {
        assert!(Instant::now() < deadline, "lock keys stuck");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn corrupt_bytes_under_a_key_are_a_miss() {
    let server = Server::start();
    let redis = Redis::open(&server.url()).unwrap();
    let store = redis.store::<u64, u64>("corrupt");
    store.put(&1, &1, Timestamp::from_nanos(1).into()).unwrap();
    store.put(&2, &2, Timestamp::from_nanos(1).into()).unwrap();
    let keys = server.values("corrupt");
    assert_eq!(keys.len(), 2);
    let mut admin = server.connection();
    // Bytes that are not ours in our hash, and a key of another type altogether.
    redis::cmd("HSET")
        .arg(&keys[0])
        .arg("d")
        .arg("{\"not\": \"ours\"}")
        .query::<()>(&mut admin)
        .unwrap();
    redis::cmd("DEL")
        .arg(&keys[1])
        .query::<()>(&mut admin)
        .unwrap();
    redis::cmd("SET")
        .arg(&keys[1])
        .arg("a plain string")
        .query::<()>(&mut admin)
        .unwrap();
    let region: RedisRegion = Region::builder()
        .expiry(Duration::from_secs(60))
        .store(store)
        .mutexes(redis.mutexes("corrupt"))
        .build()
        .unwrap();
    for key in [1, 2] {
        assert_eq!(region.peek(&key), None);
        assert_eq!(region.get_with(&key, || 10 + key), 10 + key);
        assert_eq!(region.get_with(&key, || unreachable!()), 10 + key);
    }
    assert!(region.statistics().misses >= 2);
}

/// A `SET NX` sent while the server stalls (`DEBUG SLEEP`) times out on the client but is
/// applied by the server afterwards. Its token is released once the server answers again (the
/// circuit breaker, opened by the stall, has closed), so the key is not locked in nobody's name
/// for the lease (5 s): the next miss regenerates at once, and no lock key is left.
#[test]
fn a_lock_command_lost_in_a_stall_leaves_no_lock_behind() {
    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(redis.lease(), Duration::from_secs(5));
    let region = region(&redis, "stall", Duration::from_secs(60));
    // An open connection, so that the lock command is sent (a new one would fail to connect).
    assert_eq!(region.get_with(&0, || 0), 0);
    let stall = thread::spawn({
        let mut admin = server.connection();
        move || {
            redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(1.5)
                .query::<()>(&mut admin)
                .unwrap();
        }
    });
    thread::sleep(Duration::from_millis(200));
    use dogpile_runtime::lock::RawMutex;
    let lost = redis.mutex("stall", &1u64).try_acquire();
    assert!(lost.is_err(), "the stalled server cannot answer: {lost:?}");
    stall.join().unwrap();
    breaker_closes(&redis);

    let after = Instant::now();
    assert_eq!(region.get_with(&1, || 2), 2);
    let took = after.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the first miss after the stall waited {took:?} for a lock nobody held"
    );
    assert!(server.locks("stall").is_empty(), "no lock left behind");
    eprintln!("first miss after a 1.5 s stall regenerated in {took:?} (lease 5 s)");
}

/// A creator whose lease ran out while the server stalled (`DEBUG SLEEP` past the lease)
/// finishes after another process took the lock and stored a newer value: its write is
/// refused (the fenced script sees another token), counted in `refused_writes`, and its
/// caller still gets its value.
/// Waits (bounded) until the handle's circuit breaker lets calls through again.
fn breaker_closes(redis: &Redis) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.breaker().state != dogpile_runtime::backend::redis::BreakerState::Closed {
        assert!(Instant::now() < deadline, "the breaker never closed");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_creator_that_outlived_its_lease_cannot_overwrite_its_successor() {
    let server = Server::start();
    // The circuit breaker would refuse the late creator's write outright, unsent, once the
    // stall's timeouts opened it: this test is about the fence, which the write must reach.
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(100))
        .lease(Duration::from_millis(300))
        .breaker_failures(1_000)
        .build()
        .unwrap();
    // Two regions on one namespace: two hosts, as far as the lock and the store can tell.
    let (a, b) = (
        region(&redis, "fenced", Duration::from_secs(60)),
        region(&redis, "fenced", Duration::from_secs(60)),
    );
    let (started, successor_done) = (
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let first = thread::spawn({
        let (a, started, successor_done) = (a.clone(), started.clone(), successor_done.clone());
        move || {
            a.get_with(&1, || {
                started.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !successor_done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                1
            })
        }
    });
    while !started.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(5));
    }
    // The server stalls for twice the lease: the first creator's lock expires meanwhile.
    redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0.6)
        .query::<()>(&mut server.connection())
        .unwrap();
    let second = b.get_with(&1, || 2);
    successor_done.store(true, Ordering::SeqCst);
    assert_eq!(second, 2, "the successor created its own value");
    assert_eq!(
        first.join().unwrap(),
        1,
        "the late creator's caller gets its value"
    );
    assert_eq!(a.statistics().refused_writes, 1, "{}", a.statistics());
    assert_eq!(b.statistics().refused_writes, 0);
    assert_eq!(
        b.get_with(&1, || unreachable!()),
        2,
        "the successor's value stands"
    );
}

/// Durations that cannot work are refused when the handle is built, each naming its option.
/// A short but valid lease renews at its own pace: a 500 ms creation under a 300 ms lease
/// sends a handful of commands (a lease of 0 used to send thousands).
#[test]
fn durations_that_cannot_work_are_refused_when_built() {
    let builder = || Redis::builder("redis://127.0.0.1:1/");
    let refused =
        |result: Result<Redis, dogpile_runtime::ConfigError>| result.expect_err("refused").option();
    let (ms, s) = (Duration::from_millis, Duration::from_secs);
    assert_eq!(refused(builder().lease(Duration::ZERO).build()), "lease");
    assert_eq!(refused(builder().lease(Duration::MAX).build()), "lease");
    assert_eq!(
        refused(builder().lease(s(200 * 365 * 86400)).build()),
        "lease"
    );
    assert_eq!(
        refused(builder().timeout(Duration::ZERO).build()),
        "timeout"
    );
    assert_eq!(refused(builder().timeout(Duration::MAX).build()), "timeout");
    assert_eq!(
        refused(builder().timeout(s(2)).lease(s(1)).build()),
        "lease"
    );
    assert_eq!(
        refused(builder().timeout(s(1)).lease(s(1)).build()),
        "lease"
    );
    assert_eq!(
        refused(builder().lease(s(3)).renew_every(s(3)).build()),
        "renew_every"
    );
    assert_eq!(
        refused(builder().lease(s(3)).renew_every(Duration::ZERO).build()),
        "renew_every"
    );
    // A renewal plus one command timeout must fit in the lease.
    assert_eq!(
        refused(builder().timeout(s(1)).lease(ms(1200)).build()),
        "renew_every"
    );
    // Renewals sent more often than one may take to land: a lease shorter than renewal can
    // sustain (2 ms under a 1 ms timeout used to send thousands of renewals a second).
    assert_eq!(
        refused(builder().timeout(ms(1)).lease(ms(2)).build()),
        "lease"
    );
    assert_eq!(
        refused(builder().timeout(s(1)).lease(ms(2999)).build()),
        "lease"
    );
    assert!(builder().timeout(s(1)).lease(s(3)).build().is_ok());
    assert_eq!(
        refused(
            builder()
                .timeout(s(1))
                .lease(s(10))
                .renew_every(ms(999))
                .build()
        ),
        "renew_every"
    );
    assert!(builder()
        .timeout(s(1))
        .lease(s(10))
        .renew_every(s(1))
        .build()
        .is_ok());
    assert_eq!(refused(Redis::builder("memcached://x").build()), "url");
    // Every refused setting of one build, not only the first.
    let every = Redis::builder("memcached://x")
        .timeout(Duration::ZERO)
        .lease(Duration::MAX)
        .build()
        .expect_err("refused");
    assert_eq!(
        every.options().collect::<Vec<_>>(),
        ["timeout", "lease", "url"]
    );
    let store = || builder().build().unwrap().store::<u64, u64>("r");
    assert_eq!(
        store().retain(Duration::ZERO).unwrap_err().option(),
        "retain"
    );
    assert_eq!(
        store().retain(Duration::MAX).unwrap_err().option(),
        "retain"
    );
    assert!(store().retain(s(3600)).is_ok());

    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(ms(100))
        .lease(ms(300))
        .build()
        .unwrap();
    let region = region(&redis, "paced", Duration::from_secs(60));
    // Loads the scripts, so that only this creation's commands are counted.
    region.get_with(&0, || 0);
    server.reset_stats();
    assert_eq!(
        region.get_with(&1, || {
            thread::sleep(ms(500));
            1
        }),
        1
    );
    let sent: u64 = server
        .command_calls()
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "evalsha" | "eval" | "set" | "script|load"))
        .map(|(_, calls)| calls)
        .sum();
    // Two reads, the lock, about five renewals, the write, the release.
    assert!(sent <= 12, "{sent} commands: {:?}", server.command_calls());
    assert_eq!(redis.leases_lost(), 0);
}
