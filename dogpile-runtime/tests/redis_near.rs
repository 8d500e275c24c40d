//! The near cache (a Redis store with a memory tier in front), against a real `redis-server`
//! this harness starts on a free loopback port, and real child processes of this test binary:
//! a warm hit never touches Redis; every kind of write and invalidation made by one process
//! reaches the memory tiers of two others; a subscriber killed on the server makes its tier
//! suspect until it subscribes again; Redis stopped and restarted under load; a value written
//! with another serde layout is a miss.
//!
//! Needs `redis-server` on the `PATH` (`.ci/run` installs it if missing).
#![cfg(feature = "redis")]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile_runtime::backend::redis::{NearRegion, Redis};
use dogpile_runtime::clock::{Clock, SystemClock};
use dogpile_runtime::region::{Served, Stamp, Store};
use dogpile_runtime::Region;
use serde::{Deserialize, Serialize};

#[path = "support/children.rs"]
mod children;
use children::{fresh_dir, spawn_child, wait_for};

#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "tracing")]
#[path = "support/events.rs"]
mod events;
use redis_server::Server;

const TIMEOUT: Duration = Duration::from_millis(200);
/// Longer than any test: a copy that changed elsewhere goes only on a notification.
const NEAR: Duration = Duration::from_secs(60);
/// The longest a test waits for something to be seen.
const BOUND: Duration = Duration::from_secs(5);
const ROLE: &str = "DOGPILE_NEAR_ROLE";
const URL: &str = "DOGPILE_NEAR_URL";
const DIR: &str = "DOGPILE_NEAR_DIR";
const ID: &str = "DOGPILE_NEAR_ID";

fn handle(url: &str) -> Redis {
    Redis::builder(url)
        .timeout(TIMEOUT)
        .breaker_cool_down(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// A near region of `u64`s on `namespace`, its listener subscribed.
fn region<V>(redis: &Redis, namespace: &str) -> NearRegion<u64, V>
where
    V: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    region_expiring(redis, namespace, Duration::from_secs(60), NEAR)
}

fn region_expiring<V>(
    redis: &Redis,
    namespace: &str,
    expiry: Duration,
    near: Duration,
) -> NearRegion<u64, V>
where
    V: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    region_holding(redis, namespace, 1_000, expiry, near)
}

/// A near region whose memory tier holds at most `capacity` values, its listener subscribed.
fn region_holding<V>(
    redis: &Redis,
    namespace: &str,
    capacity: usize,
    expiry: Duration,
    near: Duration,
) -> NearRegion<u64, V>
where
    V: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let store = redis.store(namespace).near(capacity, near).unwrap();
    let began = Instant::now();
    while !store.listening() {
        assert!(began.elapsed() < BOUND, "the listener never subscribed");
        thread::sleep(Duration::from_millis(1));
    }
    Region::builder()
        .name(namespace)
        .expiry(expiry)
        .store(store)
        .mutexes(redis.mutexes(namespace))
        .build()
        .unwrap()
}

/// Calls `check` until it says yes, within the bound; how long it took.
fn until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !check() {
        assert!(began.elapsed() < BOUND, "never saw {what}");
        thread::yield_now();
    }
    began.elapsed()
}

/// Writes `path` whole: written aside, then renamed, so that a process waiting for it never
/// reads it half-written.
fn publish_file(path: &Path, text: &str) {
    let aside = path.with_extension("part");
    fs::write(&aside, text).unwrap();
    fs::rename(&aside, path).unwrap();
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
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
    match role.as_str() {
        "watch" => watch(&url, &dir, &std::env::var(ID).unwrap()),
        "layout" => write_another_layout(&url),
        "burst" => burst(&url, &dir, &std::env::var(ID).unwrap()),
        other => panic!("unknown role {other}"),
    }
}

/// A warm key is served from memory: not one Redis command for a thousand hits.
#[test]
fn a_warm_hit_never_touches_redis() {
    let server = Server::start();
    let redis = handle(&server.url());
    let users = region::<u64>(&redis, "warm");
    assert_eq!(users.get_with_served(&1, || 10), (10, Served::Created));
    server.reset_stats();
    for _ in 0..1_000 {
        assert_eq!(users.get_with(&1, || unreachable!()), 10);
    }
    let calls = server.command_calls();
    assert!(
        calls.iter().all(|(name, _)| name.starts_with("config")),
        "hits reached Redis: {calls:?}"
    );
    let stats = users.statistics();
    // Only the creation read Redis: its first read, and again under the key's lock.
    assert_eq!((stats.hits, stats.near_misses), (1_000, 2), "{stats:?}");
    // Idle past two heartbeats (a `PING` on the subscription after 0.5 s of silence): still
    // subscribed, still served from memory.
    thread::sleep(Duration::from_millis(1_200));
    assert_eq!(users.get_with(&1, || unreachable!()), 10);
    let stats = users.statistics();
    assert_eq!(
        (stats.near_listener_lost, stats.near_misses),
        (0, 2),
        "{stats:?}"
    );
}

/// Forty times more keys than the memory tier's capacity, read through it twice: the tier
/// holds at most its capacity (what it took in less what it evicted; what a second pass finds
/// in it without Redis), and every read, from memory or from Redis, is the key's value.
#[test]
fn many_more_keys_than_the_capacity_leave_at_most_the_capacity_in_memory() {
    const CAPACITY: usize = 500;
    const KEYS: u64 = 20_000;
    let value_of = |key: u64| key * 3 + 1;
    let server = Server::start();
    let redis = handle(&server.url());
    // Written by a plain store: in Redis only, nothing in the memory tier yet.
    let stamp = Stamp::from(SystemClock.now());
    let far = redis.store::<u64, u64>("capacity");
    for key in 0..KEYS {
        far.put(&key, &value_of(key), stamp).unwrap();
    }
    let near = region_holding::<u64>(&redis, "capacity", CAPACITY, Duration::from_secs(60), NEAR);
    let began = Instant::now();
    // Forwards, then backwards: the second pass meets first the keys read last.
    let passes: [Vec<u64>; 2] = [(0..KEYS).collect(), (0..KEYS).rev().collect()];
    let mut from_redis = [0; 2];
    for (pass, keys) in passes.iter().enumerate() {
        let before = near.statistics().near_misses;
        for &key in keys {
            assert_eq!(near.get_with(&key, || unreachable!()), value_of(key));
        }
        from_redis[pass] = near.statistics().near_misses - before;
    }
    let stats = near.statistics();
    // Every read from Redis put its copy in memory (one process, no notification, no write).
    let taken_in = from_redis[0] + from_redis[1];
    let held = taken_in - stats.evictions;
    let from_memory = KEYS - from_redis[1];
    eprintln!(
        "{KEYS} keys twice through a tier of {CAPACITY}: {from_redis:?} reads from Redis, \
         {from_memory} from memory on the second pass, {} evicted, {held} held, listener lost \
         {} times ({:?})",
        stats.evictions,
        stats.near_listener_lost,
        began.elapsed()
    );
    assert_eq!(from_redis[0], KEYS, "nothing was in memory at first");
    assert_eq!(stats.hits, 2 * KEYS, "every read a fresh hit");
    assert!(
        from_memory <= CAPACITY as u64,
        "{from_memory} values served from memory"
    );
    // A listener that lost its subscription (a heartbeat unanswered on a busy machine) empties
    // the tier when it subscribes again, without counting evictions: `held` then over-counts,
    // and reads while it was down went to Redis.
    if stats.near_listener_lost == 0 {
        assert!(held <= CAPACITY as u64, "the tier holds {held} values");
        assert!(from_memory > 0, "the tier served nothing");
    }
}

/// One step of the coherence run: what the parent does, and what the children wait to see.
#[derive(Clone, Copy, Debug)]
enum Step {
    Insert(u64),
    Invalidate,
    Regenerate(u64),
    SoftInvalidate,
    InvalidateAll,
    SoftInvalidateAll,
}

const STEPS: [Step; 9] = [
    Step::Insert(2),
    Step::Invalidate,
    Step::Regenerate(3),
    Step::SoftInvalidate,
    Step::Insert(5),
    Step::InvalidateAll,
    Step::Insert(7),
    Step::SoftInvalidateAll,
    Step::Insert(9),
];

/// Three processes on one namespace, each with a warm memory tier and a copy that would live
/// a minute: every kind of write and invalidation made by one reaches the two others within
/// the bound, which only a notification can explain.
#[test]
fn every_write_and_invalidation_reaches_two_other_processes() {
    let server = Server::start();
    let dir = fresh_dir("near-coherence");
    let redis = handle(&server.url());
    let parent = region::<u64>(&redis, "coherence");
    parent.insert(&1, 1).unwrap();
    let children: Vec<_> = (0..2)
        .map(|id| {
            spawn_child(&[
                (ROLE, "watch"),
                (URL, &server.url()),
                (DIR, &dir.display().to_string()),
                (ID, &id.to_string()),
            ])
        })
        .collect();
    for id in 0..2 {
        wait_for(&dir.join(format!("ready-{id}")));
    }
    let mut seen = Vec::new();
    for (n, step) in STEPS.iter().enumerate() {
        match *step {
            Step::Insert(value) => parent.insert(&1, value).unwrap(),
            Step::Invalidate => parent.invalidate(&1).unwrap(),
            Step::Regenerate(value) => assert_eq!(parent.get_with(&1, || value), value),
            Step::SoftInvalidate => parent.soft_invalidate(&1).unwrap(),
            Step::InvalidateAll => parent.invalidate_all().unwrap(),
            Step::SoftInvalidateAll => parent.soft_invalidate_all().unwrap(),
        }
        publish_file(&dir.join(format!("go-{n}")), &now_micros().to_string());
        for id in 0..2 {
            let path = dir.join(format!("seen-{n}-{id}"));
            wait_for(&path);
            seen.push((*step, fs::read_to_string(&path).unwrap()));
        }
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a child failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("near_dropped="), "{stdout}");
    }
    eprintln!("seen after (µs, step, child): {seen:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// A child of the coherence run: warms its copy, then waits for each step's change.
fn watch(url: &str, dir: &Path, id: &str) {
    let redis = handle(url);
    let region = region::<u64>(&redis, "coherence");
    assert_eq!(region.get_with(&1, || unreachable!()), 1);
    fs::write(dir.join(format!("ready-{id}")), "").unwrap();
    for (n, step) in STEPS.iter().enumerate() {
        let go = dir.join(format!("go-{n}"));
        wait_for(&go);
        let sent: u128 = fs::read_to_string(&go).unwrap().trim().parse().unwrap();
        until(&format!("{step:?}"), || match *step {
            Step::Insert(value) | Step::Regenerate(value) => region.peek(&1) == Some(value),
            Step::Invalidate | Step::InvalidateAll => region.peek(&1).is_none(),
            // Expired now: regenerated here or by the other child, or served stale.
            Step::SoftInvalidate | Step::SoftInvalidateAll => {
                let (value, served) = region.get_with_served(&1, || 100);
                value == 100 || served != Served::Fresh
            }
        });
        let took = now_micros().saturating_sub(sent);
        publish_file(&dir.join(format!("seen-{n}-{id}")), &took.to_string());
    }
    let stats = region.statistics();
    assert!(stats.near_dropped >= 7, "{stats:?}");
    println!("near_dropped={}", stats.near_dropped);
}

/// `CLIENT KILL TYPE pubsub` cuts every subscriber: a change made then is never notified, yet
/// the process that missed it reads through to Redis as soon as its listener notices, and
/// its memory tier serves again once subscribed (and emptied).
#[test]
fn a_killed_subscriber_reads_through_until_it_has_subscribed_again() {
    #[cfg(feature = "tracing")]
    let events = events::collect();
    let server = Server::start();
    let writer = region::<u64>(&handle(&server.url()), "killed");
    let reader = region::<u64>(&handle(&server.url()), "killed");
    writer.insert(&1, 1).unwrap();
    assert_eq!(reader.get_with(&1, || unreachable!()), 1);
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(killed, 2, "both listeners were subscribed");
    writer.insert(&1, 2).unwrap();
    let took = until("the value written while unsubscribed", || {
        reader.peek(&1) == Some(2)
    });
    until("the listener subscribed again", || {
        reader.statistics().near_listener_regained == 1
    });
    let stats = reader.statistics();
    eprintln!("after CLIENT KILL, the change was seen in {took:?}; {stats:?}");
    assert_eq!(stats.near_listener_lost, 1, "{stats:?}");
    // Subscribed again, it serves from memory and hears changes.
    assert_eq!(reader.get_with(&1, || unreachable!()), 2);
    writer.insert(&1, 3).unwrap();
    until("a change after resubscribing", || {
        reader.peek(&1) == Some(3)
    });
    // Both listeners said so, once each way.
    #[cfg(feature = "tracing")]
    {
        until("the writer's listener back too", || {
            writer.statistics().near_listener_regained == 1
        });
        let address = server.url();
        let address = address.trim_end_matches('/');
        let ours: Vec<(String, String)> = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.address.as_deref() == Some(address))
            .map(|e| (e.level.clone(), e.message.clone()))
            .collect();
        let count = |level: &str, words: &str| {
            ours.iter()
                .filter(|(l, m)| l == level && m.contains(words))
                .count()
        };
        eprintln!("events: {ours:?}");
        assert_eq!(count("WARN", "lost its notifications"), 2, "{ours:?}");
        assert_eq!(count("INFO", "subscribed again"), 2, "{ours:?}");
    }
}

/// A server that stops answering without closing anything (SIGSTOP) is noticed by the
/// listener's heartbeat: a `PING` after 0.5 s of silence, unanswered within the timeout. The
/// tier is then suspect; what it holds still answers while Redis cannot.
#[test]
fn a_stalled_server_is_noticed_by_the_heartbeat() {
    let server = Server::start();
    let region = region::<u64>(&handle(&server.url()), "stalled");
    region.insert(&1, 1).unwrap();
    server.freeze();
    let noticed = until("the stall noticed", || {
        region.statistics().near_listener_lost == 1
    });
    eprintln!("a stall noticed after {noticed:?} (heartbeat 500 ms, timeout {TIMEOUT:?})");
    assert_eq!(region.get_with(&1, || unreachable!()), 1);
    assert!(region.statistics().near_outage_served >= 1);
    server.thaw();
    until("subscribed again", || {
        region.statistics().near_listener_regained == 1
    });
}

/// Redis stopped and restarted (keeping its data) under load: no call waits a timeout, warm
/// keys are served from memory throughout, an invalidation made during the outage reaches
/// the other process once Redis is back, and both memory tiers subscribe again.
#[test]
fn redis_stopped_and_restarted_under_load() {
    let mut server = Server::start_persistent();
    let writer = region::<u64>(&handle(&server.url()), "outage");
    let other = region::<u64>(&handle(&server.url()), "outage");
    for key in 0..32 {
        writer.insert(&key, key).unwrap();
        assert_eq!(other.get_with(&key, || unreachable!()), key);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (region, stop, slowest) = (writer.clone(), stop.clone(), slowest.clone());
            thread::spawn(move || {
                let mut key = 1 + t;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    assert_eq!(region.get_with(&key, || key), key);
                    let took = began.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                    key = 1 + (key + 4) % 31;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    server.stop();
    let err = writer.invalidate(&0).expect_err("Redis is down");
    assert!(err.is_queued_for_replay(), "{err}");
    // Honoured here at once; a miss during the outage is created directly.
    assert_eq!(writer.get_with(&0, || 1_000), 1_000);
    thread::sleep(Duration::from_millis(500));
    let during = writer.statistics();
    server.resume();
    thread::sleep(Duration::from_millis(300));
    // The other process sees the invalidation once it is replayed.
    until("the invalidation replayed", || other.peek(&0).is_none());
    until("both listeners subscribed again", || {
        writer.statistics().near_listener_regained >= 1
            && other.statistics().near_listener_regained >= 1
    });
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let slowest = *slowest.lock().unwrap();
    let after = writer.statistics();
    eprintln!("slowest call {slowest:?}; during the outage {during:?}; after {after:?}");
    assert!(slowest < TIMEOUT, "a call waited {slowest:?}");
    assert!(during.near_outage_served > 0, "{during:?}");
    assert!(during.breaker_opens >= 1, "{during:?}");
    assert!(after.invalidations_replayed >= 1, "{after:?}");
}

/// Another program's value, written with another serde layout by another process: a miss
/// here, counted, regenerated; never a panic.
#[test]
fn a_value_written_with_another_layout_is_a_miss() {
    let server = Server::start();
    let dir = fresh_dir("near-layout");
    let child = spawn_child(&[
        (ROLE, "layout"),
        (URL, &server.url()),
        (DIR, &dir.display().to_string()),
    ]);
    assert!(child.wait_with_output().unwrap().status.success());
    let region = region::<u8>(&handle(&server.url()), "layout");
    assert_eq!(region.get_with_served(&1, || 7), (7, Served::Created));
    assert_eq!(region.get_with(&1, || unreachable!()), 7);
    let stats = region.statistics();
    // Read twice: by the call's first read, and again under the key's lock.
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert!(stats.undecodable >= 1, "{stats:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// The other layout: a struct of strings where the parent reads a `u8`.
#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    name: String,
    tags: Vec<String>,
}

fn write_another_layout(url: &str) {
    let region = region::<Profile>(&handle(url), "layout");
    let profile = Profile {
        name: "ann".into(),
        tags: vec!["admin".into(), "ops".into()],
    };
    region.insert(&1, profile).unwrap();
}

/// 8 processes of 16 threads each burst on one expired key, twice (the second time on the
/// value the first made, in every process's memory tier until it expired): one regeneration
/// per expiry across the processes, as on a plain Redis region.
#[test]
fn eight_processes_of_sixteen_threads_regenerate_once_per_expiry() {
    let server = Server::start();
    let url = server.url();
    let dir = fresh_dir("near-burst");
    // An old value: expired everywhere.
    let redis = handle(&url);
    redis
        .store::<u64, u64>("burst")
        .put(
            &1,
            &0,
            dogpile_runtime::clock::Timestamp::from_nanos(1_000_000_000).into(),
        )
        .unwrap();
    let children: Vec<_> = (0..8)
        .map(|id| {
            spawn_child(&[
                (ROLE, "burst"),
                (URL, &url),
                (DIR, &dir.display().to_string()),
                (ID, &id.to_string()),
            ])
        })
        .collect();
    for round in 1..=2 {
        for id in 0..8 {
            wait_for(&dir.join(format!("ready-{round}-{id}")));
        }
        if round == 2 {
            // Let the first regeneration's value expire (1 s).
            thread::sleep(Duration::from_millis(1300));
        }
        publish_file(&dir.join(format!("go-{round}")), "");
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
    eprintln!(
        "8 processes x 16 threads, 2 expiries: {creations} creations, {stale} stale, {new} new"
    );
    assert_eq!(creations, 2, "one regeneration per expiry, two expiries");
    assert_eq!(stale + new, 8 * 16 * 2);
    assert!(server.locks("burst").is_empty(), "no lock left behind");
    let _ = fs::remove_dir_all(&dir);
}

/// A child of the burst: 16 threads on key 1 at each go; how many got the stale value.
fn burst(url: &str, dir: &Path, id: &str) {
    let redis = Redis::builder(url)
        .timeout(TIMEOUT)
        .lease(Duration::from_secs(1))
        .build()
        .unwrap();
    let region = region_expiring::<u64>(
        &redis,
        "burst",
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let (mut stale, mut new) = (0, 0);
    for round in 1..=2u64 {
        publish_file(&dir.join(format!("ready-{round}-{id}")), "");
        wait_for(&dir.join(format!("go-{round}")));
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (region, barrier, url) = (region.clone(), barrier.clone(), url.to_string());
                thread::spawn(move || {
                    barrier.wait();
                    region.get_with(&1, || {
                        let mut c = redis::Client::open(url.as_str())
                            .unwrap()
                            .get_connection_with_timeout(Duration::from_secs(2))
                            .unwrap();
                        let generation: u64 =
                            redis::cmd("INCR").arg("creations").query(&mut c).unwrap();
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
