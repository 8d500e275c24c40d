//! Redis failing under a region, against real `redis-server`s this harness starts on free
//! loopback ports: a server that stalls (SIGSTOP: the kernel still accepts its connections,
//! nothing answers them) or dies. What one call costs; the circuit breaker that keeps calls
//! from paying a timeout while the server is down, and closes by itself; invalidations made
//! during the outage, which reach another process once the server is back.
//!
//! Needs `redis-server` on the `PATH` (`.ci/run` installs it if missing).
#![cfg(all(feature = "redis", feature = "tokio"))]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile_runtime::backend::redis::{BreakerState, Redis, RedisMutex, RedisStore};
use dogpile_runtime::region::Served;
use dogpile_runtime::Region;

#[path = "support/children.rs"]
mod children;
use children::{fresh_dir, wait_for};

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::Server;

const TIMEOUT: Duration = Duration::from_millis(200);
const ROLE: &str = "DOGPILE_OUTAGE_ROLE";
const URL: &str = "DOGPILE_OUTAGE_URL";
const DIR: &str = "DOGPILE_OUTAGE_DIR";

type RedisRegion = Region<u64, u64, RedisStore<u64, u64>, RedisMutex>;

fn handle(url: &str, breaker_failures: u32) -> Redis {
    Redis::builder(url)
        .timeout(TIMEOUT)
        .breaker_failures(breaker_failures)
        .build()
        .unwrap()
}

fn region(redis: &Redis, namespace: &'static str) -> RedisRegion {
    Region::builder()
        .name(namespace)
        .expiry(Duration::from_secs(60))
        .store(redis.store(namespace))
        .mutexes(redis.mutexes(namespace))
        .build()
        .unwrap()
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// What a child process does, by its role; nothing when run as a normal test.
#[test]
fn child() {
    let (Ok(role), Ok(url), Ok(dir)) =
        (std::env::var(ROLE), std::env::var(URL), std::env::var(DIR))
    else {
        return;
    };
    match role.as_str() {
        "watch" => watch_for_invalidations(&url, &PathBuf::from(dir)),
        "herd" => herd_through_an_outage(&url, &PathBuf::from(dir)),
        other => panic!("unknown role {other}"),
    }
}

/// A server that accepts connections but never answers costs a call one timeout (it cost
/// two to four: each connect read every reply of redis-rs's handshake with the whole timeout,
/// and an invalidation of every key waited once per shard), blocking or async; once the
/// breaker is open, a call costs nothing.
#[test]
fn a_stalled_server_costs_a_call_one_timeout_and_nothing_once_the_breaker_is_open() {
    let server = Server::start();
    let unbroken = handle(&server.url(), u32::MAX); // a breaker that never opens
    let blocking = region(&unbroken, "cost");
    let rt = runtime(1);
    let asynchronous = region(&unbroken, "cost").to_async();
    assert_eq!(blocking.get_with(&1, || 1), 1);
    assert_eq!(rt.block_on(asynchronous.get_with(&1, || async { 1 })), 1);
    server.freeze();

    // On a connection opened before the stall: one script of 64 shards' epochs.
    let began = Instant::now();
    let err = blocking.invalidate_all().expect_err("the server stalls");
    let invalidate_all = began.elapsed();
    assert!(err.is_queued_for_replay(), "{err}");

    let timed = |call: &mut dyn FnMut()| {
        let began = Instant::now();
        call();
        began.elapsed()
    };
    let blocking_calls: Vec<Duration> = (2..7u64)
        .map(|key| timed(&mut || assert_eq!(blocking.get_with(&key, || key), key)))
        .collect();
    let async_calls: Vec<Duration> = (2..7u64)
        .map(|key| {
            timed(&mut || {
                assert_eq!(
                    rt.block_on(asynchronous.get_with(&key, || async move { key })),
                    key
                );
            })
        })
        .collect();
    eprintln!(
        "no breaker, timeout {TIMEOUT:?}: invalidate_all {invalidate_all:?}; blocking calls \
         {blocking_calls:?} (median {:?}); async calls {async_calls:?} (median {:?})",
        median(blocking_calls.clone()),
        median(async_calls.clone())
    );
    let most = TIMEOUT + TIMEOUT / 2;
    assert!(
        invalidate_all < most,
        "invalidate_all took {invalidate_all:?}"
    );
    for took in blocking_calls.iter().chain(&async_calls) {
        assert!(*took < most, "a call took {took:?}: more than one timeout");
    }

    // The default breaker: three calls pay, the next ones are refused at once.
    let broken = handle(&server.url(), 3);
    let guarded = region(&broken, "cost");
    let calls: Vec<Duration> = (0..20u64)
        .map(|key| timed(&mut || assert_eq!(guarded.get_with(&key, || key), key)))
        .collect();
    let paid = calls.iter().filter(|took| **took >= TIMEOUT / 2).count();
    let after = median(calls[3..].to_vec());
    eprintln!(
        "breaker after 3 failures: {paid} of 20 calls paid a timeout; the others took \
         {after:?} (median), at most {:?}",
        calls[3..].iter().max().unwrap()
    );
    assert_eq!(paid, 3, "{calls:?}");
    assert!(
        calls[3..].iter().all(|took| *took < TIMEOUT / 2),
        "{calls:?}"
    );
    let stats = guarded.statistics();
    assert_eq!(
        (stats.backend_failures, stats.breaker_opens),
        (3, 1),
        "{stats}"
    );
    assert_eq!(stats.breaker_rejections, 17, "{stats}");
    assert_eq!(stats.direct_calls, 20, "{stats}");
    server.thaw();
}

/// One call of a load: when it started, how long it took, what it got.
struct Call {
    start: Instant,
    took: Duration,
    served: Served,
}

/// 16 threads and 16 async tasks call a region whose server stalls (SIGSTOP) for a second:
/// the calls in flight when it stalls pay their timeout, and then the breaker opens: no call
/// made while it is open waits for a timeout. It closes by itself once the server is back,
/// and the calls hit again.
#[test]
fn sixteen_threads_pay_no_timeout_while_the_breaker_is_open() {
    let server = Server::start();
    let cool_down = Duration::from_millis(300);
    let redis = Redis::builder(&server.url())
        .timeout(TIMEOUT)
        .breaker_cool_down(cool_down)
        .build()
        .unwrap();
    let region = region(&redis, "load");
    for key in 0..32 {
        region.insert(&key, key).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let transitions = Arc::new(Mutex::new(vec![(Instant::now(), BreakerState::Closed)]));

    let monitor = thread::spawn({
        let (redis, stop, transitions) = (redis.clone(), stop.clone(), transitions.clone());
        move || {
            while !stop.load(Ordering::SeqCst) {
                let state = redis.breaker().state;
                let mut seen = transitions.lock().unwrap();
                if seen.last().unwrap().1 != state {
                    seen.push((Instant::now(), state));
                }
                drop(seen);
                thread::sleep(Duration::from_micros(500));
            }
        }
    });
    let record = |calls: &Mutex<Vec<Call>>, start: Instant, served: Served| {
        let took = start.elapsed();
        calls.lock().unwrap().push(Call {
            start,
            took,
            served,
        });
    };
    let threads: Vec<_> = (0..16u64)
        .map(|key| {
            let (region, stop, calls) = (region.clone(), stop.clone(), calls.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let (value, served) = region.get_with_served(&key, || key);
                    record(&calls, start, served);
                    assert_eq!(value, key);
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    let rt = runtime(2);
    let tasks: Vec<_> = (16..32u64)
        .map(|key| {
            let (region, stop, calls) = (region.to_async(), stop.clone(), calls.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let (value, served) = region.get_with_served(&key, || async move { key }).await;
                    record(&calls, start, served);
                    assert_eq!(value, key);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(300));
    server.freeze();
    let frozen = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    server.thaw();
    let thawed = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().expect("a caller failed");
    }
    for task in tasks {
        rt.block_on(task).expect("a task failed");
    }
    monitor.join().unwrap();

    let transitions = transitions.lock().unwrap().clone();
    let opened = transitions
        .iter()
        .find(|(_, state)| *state == BreakerState::Open)
        .map(|(at, _)| *at)
        .expect("the breaker opened");
    let closed = transitions
        .iter()
        .find(|(at, state)| *at > thawed && *state == BreakerState::Closed)
        .map(|(at, _)| *at)
        .expect("the breaker closed by itself");
    let calls = calls.lock().unwrap();
    // Seen open within half a millisecond of opening: a call that began after that was
    // admitted, or refused, by an open breaker.
    let while_open: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start > opened && c.start < closed)
        .collect();
    let slowest_while_open = while_open.iter().map(|c| c.took).max().unwrap();
    let paid: Vec<&Call> = calls.iter().filter(|c| c.took >= TIMEOUT / 2).collect();
    let after: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start > closed + Duration::from_millis(50))
        .collect();
    eprintln!(
        "32 callers, stall of 1 s, timeout {TIMEOUT:?}, cool-down {cool_down:?}: breaker open \
         {:?} after the stall began, closed {:?} after it ended; {} calls paid a timeout (all \
         begun before it opened); {} calls while open, the slowest {slowest_while_open:?}; \
         transitions {:?}",
        opened - frozen,
        closed - thawed,
        paid.len(),
        while_open.len(),
        transitions
            .iter()
            .map(|(at, state)| (at.saturating_duration_since(frozen), *state))
            .collect::<Vec<_>>(),
    );
    assert!(
        while_open.len() > 100,
        "calls went on: {}",
        while_open.len()
    );
    assert!(
        slowest_while_open < TIMEOUT / 2,
        "a call waited {slowest_while_open:?} while the breaker was open"
    );
    assert!(
        paid.iter().all(|c| c.start <= opened),
        "a call begun after the breaker opened paid a timeout"
    );
    assert!(
        paid.len() <= 32 + 3,
        "each caller paid at most the call it was in: {}",
        paid.len()
    );
    assert!(
        closed - thawed < cool_down + TIMEOUT + Duration::from_millis(300),
        "closed {:?} after the server came back",
        closed - thawed
    );
    assert!(after.len() > 100, "calls after it closed: {}", after.len());
    assert!(
        after.iter().all(|c| c.served == Served::Fresh),
        "hits again once it closed"
    );
    let stats = region.statistics();
    assert!(
        stats.breaker_opens >= 1 && stats.breaker_closes >= 1,
        "{stats}"
    );
    assert!(
        stats.breaker_rejections >= while_open.len() as u64 / 2,
        "{stats}"
    );
    assert_eq!(redis.breaker().state, BreakerState::Closed);
}

/// An address whose connections never complete: a listener that accepts nothing, its queue
/// filled, so the kernel drops further handshakes (a black-holed host, a server too loaded to
/// accept). Returns the listener (kept open) and the connections that fill its queue.
fn never_accepting() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..1024 {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(100)) {
            Ok(connection) => queued.push(connection),
            Err(_) => return (listener, queued),
        }
    }
    panic!("the listener's queue never filled");
}

/// A server that never accepts the connection, from the first call: each call, blocking or
/// async, made its value directly within about the timeout (the connect is bounded too, not
/// only the command); with the breaker, three calls paid and the rest none.
#[test]
fn a_server_that_never_accepts_costs_a_call_its_timeout_and_nothing_once_the_breaker_is_open() {
    let (listener, _queued) = never_accepting();
    let url = format!("redis://{}/", listener.local_addr().unwrap());
    let unbroken = handle(&url, u32::MAX);
    let blocking = region(&unbroken, "unaccepted");
    let rt = runtime(1);
    let asynchronous = region(&unbroken, "unaccepted").to_async();
    let timed = |call: &mut dyn FnMut()| {
        let began = Instant::now();
        call();
        began.elapsed()
    };
    let mut calls: Vec<Duration> = (1..4u64)
        .map(|key| {
            timed(&mut || {
                assert_eq!(
                    blocking.get_with_served(&key, || key),
                    (key, Served::Direct)
                );
            })
        })
        .collect();
    calls.extend((1..4u64).map(|key| {
        timed(&mut || {
            assert_eq!(
                rt.block_on(asynchronous.get_with(&key, || async move { key })),
                key
            );
        })
    }));
    eprintln!("never accepted, timeout {TIMEOUT:?}: calls {calls:?}");
    for took in &calls {
        assert!(
            *took < TIMEOUT * 3 / 2,
            "a call took {took:?}: more than one timeout"
        );
    }
    assert!(blocking.statistics().backend_failures >= 3);

    let broken = handle(&url, 3);
    let guarded = region(&broken, "unaccepted");
    let calls: Vec<Duration> = (0..10u64)
        .map(|key| timed(&mut || assert_eq!(guarded.get_with(&key, || key), key)))
        .collect();
    // A refused call takes microseconds; one that tries to connect, at least its share of the
    // timeout.
    let paid = calls.iter().filter(|took| **took >= TIMEOUT / 3).count();
    eprintln!("with the breaker: {paid} of 10 calls paid a timeout: {calls:?}");
    assert_eq!(paid, 3, "{calls:?}");
    assert_eq!(broken.breaker().state, BreakerState::Open);
}

/// How the server goes away for an invalidation test.
#[derive(Clone, Copy)]
enum Outage {
    /// SIGSTOP, then SIGCONT.
    Stall,
    /// SIGKILL, then a restart that reloads what it had (append-only file, fsync always).
    Restart,
}

/// A child process watches keys 1 (to be invalidated) and 2 (to be soft-invalidated), both
/// fresh for a minute. During an outage, this process invalidates them: each call says the
/// invalidation did not reach the store and is queued. Once the server is back, the child sees
/// both (key 1 missing, key 2 expired) within about the breaker's cool-down, and this process
/// never serves the old value of key 1 meanwhile. With `all`, key 2 is soft-invalidated by a
/// `soft_invalidate_all` (async) instead, made before the hard invalidation of key 1.
fn an_invalidation_during_an_outage_reaches_another_process(outage: Outage, all: bool) {
    let mut server = match outage {
        Outage::Stall => Server::start(),
        Outage::Restart => Server::start_persistent(),
    };
    let url = server.url();
    let dir = fresh_dir(match (outage, all) {
        (Outage::Stall, false) => "replay-stall",
        (Outage::Stall, true) => "replay-stall-all",
        (Outage::Restart, _) => "replay-restart",
    });
    let redis = handle(&url, 3);
    let here = region(&redis, "replay");
    here.insert(&1, 0).unwrap();
    here.insert(&2, 0).unwrap();
    let child = children::spawn_child(&[
        (ROLE, "watch"),
        (URL, &url),
        (DIR, &dir.display().to_string()),
    ]);
    wait_for(&dir.join("read"));

    match outage {
        Outage::Stall => server.freeze(),
        Outage::Restart => server.stop(),
    }
    let rt = runtime(1);
    let (hard, soft) = if all {
        // The soft one of every key first: key 2 changes only if it is replayed.
        let soft = rt.block_on(here.to_async().soft_invalidate_all());
        (here.invalidate(&1), soft)
    } else {
        (
            here.invalidate(&1),
            rt.block_on(here.to_async().soft_invalidate(&2)),
        )
    };
    for err in [hard, soft].map(|done| done.expect_err("the server is away")) {
        assert!(err.is_queued_for_replay(), "{err}");
    }
    assert_ne!(
        here.get_with(&1, || 7),
        0,
        "this process honours it at once"
    );
    let stats = here.statistics();
    assert_eq!(
        (stats.invalidations_queued, stats.invalidations_pending),
        (2, 2)
    );
    thread::sleep(Duration::from_millis(300));

    match outage {
        Outage::Stall => server.thaw(),
        Outage::Restart => server.resume(),
    }
    let back = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    // Written whole, then renamed: the child reads it as soon as the name exists.
    fs::write(dir.join("back.tmp"), back.as_nanos().to_string()).unwrap();
    fs::rename(dir.join("back.tmp"), dir.join("back")).unwrap();
    // Before or after the replay, this process does not serve the old value.
    assert_ne!(here.peek(&1), Some(0));

    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the child failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.find("converged").map(|at| &l[at..]))
        .expect("the child's report");
    eprintln!("after the server came back, the other process {line}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while here.statistics().invalidations_pending > 0 {
        assert!(Instant::now() < deadline, "{}", here.statistics());
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(here.statistics().invalidations_replayed, 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_invalidation_during_a_stall_reaches_another_process_after_it() {
    an_invalidation_during_an_outage_reaches_another_process(Outage::Stall, false);
}

#[test]
fn a_soft_invalidation_of_every_key_during_a_stall_reaches_another_process_after_it() {
    an_invalidation_during_an_outage_reaches_another_process(Outage::Stall, true);
}

#[test]
fn an_invalidation_while_the_server_is_down_reaches_another_process_after_its_restart() {
    an_invalidation_during_an_outage_reaches_another_process(Outage::Restart, false);
}

/// The child of the invalidation tests: reads both keys fresh, then, once the server is back,
/// calls until it sees each invalidation, and reports how long that took.
fn watch_for_invalidations(url: &str, dir: &Path) {
    let redis = handle(url, 3);
    let region = region(&redis, "replay");
    assert_eq!(region.get_with_served(&1, || 101), (0, Served::Fresh));
    assert_eq!(region.get_with_served(&2, || 102), (0, Served::Fresh));
    fs::write(dir.join("read"), "").unwrap();
    wait_for(&dir.join("back"));
    let back: u128 = fs::read_to_string(dir.join("back"))
        .unwrap()
        .parse()
        .unwrap();
    let since_back = || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Duration::from_nanos((now.as_nanos() - back).try_into().unwrap())
    };
    let (mut one, mut two) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while one.is_none() || two.is_none() {
        assert!(
            Instant::now() < deadline,
            "never saw them: key 1 {one:?}, key 2 {two:?}"
        );
        // A direct call (this process's own connection not yet back) proves nothing.
        let seen = |(value, served): (u64, Served)| {
            served != Served::Direct && (value, served) != (0, Served::Fresh)
        };
        if one.is_none() && seen(region.get_with_served(&1, || 101)) {
            one = Some(since_back());
        }
        if two.is_none() && seen(region.get_with_served(&2, || 102)) {
            two = Some(since_back());
        }
        thread::sleep(Duration::from_millis(5));
    }
    println!(
        "converged: saw the invalidation of key 1 after {:?}, the soft one of key 2 after {:?}",
        one.unwrap(),
        two.unwrap()
    );
}

#[test]
fn breaker_settings_that_cannot_work_are_refused() {
    let refused = |builder: dogpile_runtime::backend::redis::RedisBuilder| {
        builder.build().expect_err("refused").option()
    };
    let url = "redis://127.0.0.1:1/";
    assert_eq!(
        refused(Redis::builder(url).breaker_failures(0)),
        "breaker_failures"
    );
    assert_eq!(
        refused(Redis::builder(url).breaker_cool_down(Duration::ZERO)),
        "breaker_cool_down"
    );
    assert_eq!(
        refused(Redis::builder(url).breaker_cool_down(Duration::MAX)),
        "breaker_cool_down"
    );
    let redis = Redis::builder(url)
        .breaker_failures(1)
        .breaker_cool_down(Duration::from_millis(50))
        .build()
        .unwrap();
    assert_eq!(redis.breaker().state, BreakerState::Closed);
}

/// With the `tracing` feature, the breaker's transitions are events naming the backend and its
/// address, at most one of each kind per 10 s: a server that stalls twice, and is probed every
/// cool-down meanwhile, gives one event that it opened, one for the probes, one that it closed.
#[cfg(feature = "tracing")]
#[test]
fn breaker_transitions_are_rate_limited_events_naming_the_address() {
    let server = Server::start();
    let redis = Redis::builder(&server.url())
        .timeout(Duration::from_millis(100))
        .breaker_failures(1)
        .breaker_cool_down(Duration::from_millis(50))
        .build()
        .unwrap();
    let region = region(&redis, "events");
    let closed = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while redis.breaker().state != BreakerState::Closed {
            assert!(Instant::now() < deadline, "never closed");
            thread::sleep(Duration::from_millis(5));
        }
    };
    let events = events::collect();
    for _ in 0..2 {
        server.freeze();
        assert_eq!(region.get_with(&1, || 1), 1); // fails, and opens the breaker
        thread::sleep(Duration::from_millis(500)); // a probe every 150 ms or so
        server.thaw();
        closed();
    }
    let address = server.url();
    let address = address.trim_end_matches('/');
    let ours: Vec<(String, String)> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.address.as_deref() == Some(address))
        .map(|e| (e.level.clone(), e.message.clone()))
        .collect();
    let breaker = redis.breaker();
    eprintln!(
        "{} transitions ({} opened, {} half-opened, {} closed), events: {ours:?}",
        breaker.opened + breaker.half_opened + breaker.closed,
        breaker.opened,
        breaker.half_opened,
        breaker.closed
    );
    assert!(breaker.opened >= 4 && breaker.closed == 2, "{breaker:?}");
    let count = |word: &str| ours.iter().filter(|(_, m)| m.contains(word)).count();
    assert_eq!(count("circuit breaker open:"), 1, "{ours:?}");
    assert_eq!(count("closed"), 1, "{ours:?}");
    assert_eq!(count("half-open") + count("open again"), 1, "{ours:?}");
    assert!(ours.iter().any(|(level, _)| level == "WARN"), "{ours:?}");
}

/// A `tracing` subscriber that keeps every event's level, message and `address` field.
#[cfg(feature = "tracing")]
#[path = "support/events.rs"]
mod events;

/// Four processes of 16 threads, 4 keys, the server gone: each process runs at most one
/// creator per key (its direct calls queue on a mutex of the process and share the value),
/// not one per thread.
#[test]
fn a_server_gone_under_four_processes_costs_one_creator_per_key_and_process() {
    const PROCESSES: usize = 4;
    let mut server = Server::start();
    let dir = fresh_dir("outage-herd");
    let children: Vec<_> = (0..PROCESSES)
        .map(|n| {
            let dir = dir.join(format!("p{n}"));
            fs::create_dir_all(&dir).unwrap();
            children::spawn_child(&[
                (ROLE, "herd"),
                (URL, &server.url()),
                (DIR, &dir.display().to_string()),
            ])
        })
        .collect();
    for n in 0..PROCESSES {
        wait_for(&dir.join(format!("p{n}")).join("ready"));
    }
    server.stop();
    for n in 0..PROCESSES {
        fs::write(dir.join(format!("p{n}")).join("go"), "").unwrap();
    }
    for (n, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "process {n} failed");
        let runs = fs::read_to_string(dir.join(format!("p{n}")).join("runs")).unwrap();
        // Per key: how many creators ran in this process, and how many threads got a value.
        for line in runs.lines() {
            let fields: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
            let (key, creators, answered) = (fields[0], fields[1], fields[2]);
            assert_eq!(answered, 4, "process {n}, key {key}");
            assert_eq!(
                creators, 1,
                "process {n}, key {key}: {creators} creators ran"
            );
        }
    }
}

/// A child of the test above: connects, says it is ready, and once told, calls 4 keys from 16
/// threads at once with the server gone.
fn herd_through_an_outage(url: &str, dir: &Path) {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;
    let redis = handle(url, 3);
    let region = region(&redis, "herd");
    region.insert(&99, 99).unwrap();
    fs::write(dir.join("ready"), "").unwrap();
    wait_for(&dir.join("go"));
    let creators: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let answered: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16u64)
        .map(|n| {
            let (region, creators, answered, barrier) = (
                region.clone(),
                creators.clone(),
                answered.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                let key = n % 4;
                barrier.wait();
                let value = region.get_with(&key, || {
                    creators[key as usize].fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(100));
                    key * 10
                });
                assert_eq!(value, key * 10);
                answered[key as usize].fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let runs: String = (0..4)
        .map(|key| {
            format!(
                "{key} {} {}\n",
                creators[key].load(Ordering::SeqCst),
                answered[key].load(Ordering::SeqCst)
            )
        })
        .collect();
    fs::write(dir.join("runs"), runs).unwrap();
}

/// 50 threads, then 50 async tasks, ask for one key at once while the server is stalled
/// (SIGSTOP), the creator taking 50 ms: one upstream call per herd (the direct calls of a
/// process queue on its mutex of the key and share the value), and no caller waits more than
/// about one timeout plus the creator (each pays its own store call's timeout, at once with
/// the others, not one per command or one after another). The async herd has a handle of its
/// own, so that it meets the stall with its breaker closed too.
#[test]
fn fifty_callers_on_a_stalled_server_make_one_upstream_call() {
    const CALLERS: usize = 50;
    const CREATOR: Duration = Duration::from_millis(50);
    let server = Server::start();
    let (redis, second) = (handle(&server.url(), 3), handle(&server.url(), 3));
    let asynchronous = region(&second, "herd").to_async();
    let region = region(&redis, "herd");
    let rt = runtime(2);
    assert_eq!(region.get_with(&0, || 0), 0, "connected before the stall");
    assert_eq!(rt.block_on(asynchronous.get_with(&0, || async { 0 })), 0);
    server.freeze();
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = |calls: &AtomicUsize, key: u64| {
        calls.fetch_add(1, Ordering::SeqCst);
        key
    };

    let barrier = Arc::new(std::sync::Barrier::new(CALLERS));
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let began = Instant::now();
                let value = region.get_with(&1, || {
                    thread::sleep(CREATOR);
                    upstream(&calls, 1)
                });
                (value, began.elapsed())
            })
        })
        .collect();
    let blocking: Vec<(u64, Duration)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let blocking_calls = calls.swap(0, Ordering::SeqCst);

    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (region, calls) = (asynchronous.clone(), calls.clone());
            rt.spawn(async move {
                let began = Instant::now();
                let value = region
                    .get_with(&2, || async move {
                        tokio::time::sleep(CREATOR).await;
                        upstream(&calls, 2)
                    })
                    .await;
                (value, began.elapsed())
            })
        })
        .collect();
    let answered: Vec<(u64, Duration)> = rt.block_on(async { futures_join(tasks).await });
    let async_calls = calls.load(Ordering::SeqCst);
    server.thaw();

    let slowest = |herd: &[(u64, Duration)]| herd.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!(
        "{CALLERS} callers, server stalled, timeout {TIMEOUT:?}, creator {CREATOR:?}: blocking \
         {blocking_calls} upstream call(s), slowest {:?}; async {async_calls} call(s), slowest \
         {:?}",
        slowest(&blocking),
        slowest(&answered)
    );
    assert!(blocking.iter().all(|(value, _)| *value == 1));
    assert!(answered.iter().all(|(value, _)| *value == 2));
    assert_eq!((blocking_calls, async_calls), (1, 1));
    let bound = TIMEOUT * 2 + CREATOR;
    assert!(slowest(&blocking) < bound, "{blocking:?}");
    assert!(slowest(&answered) < bound, "{answered:?}");
}

/// Awaits every task, in order.
async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.unwrap());
    }
    done
}
