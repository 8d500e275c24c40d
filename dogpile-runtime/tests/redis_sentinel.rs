//! A Redis region found through Sentinel, on a primary, a replica and a Sentinel that this
//! harness starts on loopback; then the primary dies, and blocking and async calls follow the
//! replica Sentinel promotes, with the values written before; or the roles are swapped by hand,
//! the old primary still running as a replica, and the calls leave it for the new one.
//!
//! Needs `redis-server` on the `PATH` (`.ci/run` installs it if missing); it runs as Sentinel
//! with `--sentinel`.
#![cfg(all(feature = "redis", feature = "tokio"))]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
use dogpile_runtime::region::{AsyncRegion, OnBackendError};
use dogpile_runtime::Region;

const BOUND: Duration = Duration::from_secs(30);
const SERVICE: &str = "cache";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_millis(500))
}

/// Polls `check` on a connection to `port` until it holds, for at most [`BOUND`].
fn wait_for(port: u16, what: &str, check: impl Fn(&mut redis::Connection) -> bool) {
    let deadline = Instant::now() + BOUND;
    loop {
        if connection(port).is_ok_and(|mut c| check(&mut c)) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A primary, its replica and one Sentinel watching them, stopped when dropped.
struct Deployment {
    primary: u16,
    replica: u16,
    sentinel: u16,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Deployment {
    fn start() -> Deployment {
        let (primary, replica, sentinel) = (free_port(), free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "dogpile-sentinel-{}-{sentinel}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = |port: u16, extra: &[String]| {
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(extra)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (see the README)")
        };
        let mut children = vec![server(primary, &[])];
        let of_primary = [
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ];
        children.push(server(replica, &of_primary));
        // Sentinel rewrites its configuration file, so it gets one of its own.
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel}\nbind 127.0.0.1\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 2000\n\
                 sentinel failover-timeout {SERVICE} 10000\n"
            ),
        )
        .unwrap();
        children.push(
            Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (see the README)"),
        );
        let deployment = Deployment {
            primary,
            replica,
            sentinel,
            children,
            dir,
        };
        wait_for(replica, "the replica to sync", |c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(c)
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        // A failover needs Sentinel to know the replica (it learns it from the primary's INFO).
        wait_for(sentinel, "Sentinel to see the replica", |c| {
            redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(SERVICE)
                .query::<Vec<Vec<String>>>(c)
                .is_ok_and(|replicas| {
                    replicas.iter().any(|fields| {
                        fields
                            .windows(2)
                            .any(|kv| kv[0] == "port" && kv[1] == deployment.replica.to_string())
                    })
                })
        });
        deployment
    }

    fn kill_primary(&mut self) {
        let _ = self.children[0].kill();
        let _ = self.children[0].wait();
    }

    /// Waits until the replica has every write the primary has now. (`WAIT` would not do: it
    /// waits for the writes of its own connection, and a new one has made none.)
    fn wait_for_the_replica(&self) {
        let offset = |port: u16, field: &str| -> Option<u64> {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut connection(port).ok()?)
                .ok()?;
            info.lines()
                .find_map(|line| line.strip_prefix(field)?.trim().parse().ok())
        };
        let written = offset(self.primary, "master_repl_offset:").expect("the primary's offset");
        wait_for(self.replica, "the replica to catch up", |_| {
            offset(self.replica, "slave_repl_offset:").is_some_and(|read| read >= written)
        });
    }

    /// Swaps the roles by hand, as an operator would, without Sentinel's failover (which
    /// also disconnects the old primary's clients): the replica becomes the primary, the old
    /// primary its replica, and Sentinel is told to watch the new one. Connections to the old
    /// primary stay open, and writes on them are answered `READONLY`.
    fn switch_over(&self) {
        let run = |port: u16, args: &[&str]| {
            let mut command = redis::cmd(args[0]);
            for arg in &args[1..] {
                command.arg(*arg);
            }
            command
                .query::<redis::Value>(&mut connection(port).unwrap())
                .unwrap();
        };
        // As an operator would, once the replica has every write.
        self.wait_for_the_replica();
        let replica = self.replica.to_string();
        run(self.replica, &["REPLICAOF", "NO", "ONE"]);
        run(self.primary, &["REPLICAOF", "127.0.0.1", &replica]);
        run(self.sentinel, &["SENTINEL", "REMOVE", SERVICE]);
        run(
            self.sentinel,
            &["SENTINEL", "MONITOR", SERVICE, "127.0.0.1", &replica, "1"],
        );
        assert_eq!(self.named_primary(), self.replica);
        wait_for(self.primary, "the old primary to follow", |c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(c)
                .is_ok_and(|info| info.contains("role:slave"))
        });
    }

    fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{SERVICE}", self.sentinel)
    }

    /// Stops (`-STOP`) or resumes (`-CONT`) process `index`: 0 the primary, 1 the replica, 2
    /// Sentinel. A stopped one still takes connections (the kernel completes them) and answers
    /// nothing.
    fn signal(&self, index: usize, signal: &str) {
        let pid = self.children[index].id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill {signal} {pid}"
        );
    }

    /// The port of the primary Sentinel names now.
    fn named_primary(&self) -> u16 {
        let mut c = connection(self.sentinel).unwrap();
        let (_host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut c)
            .unwrap();
        port
    }

    fn values(&self, port: u16, namespace: &str) -> usize {
        redis::cmd("KEYS")
            .arg(format!("{{{namespace}#*}}:v:*"))
            .query::<Vec<Vec<u8>>>(&mut connection(port).unwrap())
            .unwrap()
            .len()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type SentinelRegion = Region<u64, u64, RedisStore<u64, u64>, RedisMutex>;
type AsyncSentinelRegion = AsyncRegion<u64, u64, RedisStore<u64, u64>, RedisMutex>;

fn region(redis: &Redis) -> SentinelRegion {
    Region::builder()
        .name("through-sentinel")
        .expiry(Duration::from_secs(60))
        .store(redis.store("sentinel"))
        .mutexes(redis.mutexes("sentinel"))
        .on_backend_error(OnBackendError::ReturnError)
        .build()
        .unwrap()
}

/// A blocking and an async handle on one region found through `deployment`'s Sentinel, and a
/// runtime for the async calls.
fn regions(
    deployment: &Deployment,
) -> (SentinelRegion, AsyncSentinelRegion, tokio::runtime::Runtime) {
    let redis = Redis::builder(&deployment.url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let blocking = region(&redis);
    let asynchronous = blocking.to_async();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (blocking, asynchronous, runtime)
}

/// Calls `call` until it succeeds, for at most [`BOUND`]; returns the value and the failures.
fn until_ok<T, E: std::fmt::Debug>(mut call: impl FnMut() -> Result<T, E>) -> (T, usize) {
    let deadline = Instant::now() + BOUND;
    let mut failures = 0;
    loop {
        let error = match call() {
            Ok(value) => return (value, failures),
            Err(error) => error,
        };
        failures += 1;
        assert!(
            Instant::now() < deadline,
            "no success after {failures} failures, the last: {error:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_region_found_through_sentinel_follows_a_failover() {
    let mut deployment = Deployment::start();
    assert_eq!(deployment.named_primary(), deployment.primary);
    let (blocking, asynchronous, runtime) = regions(&deployment);

    // Before: values go to the primary Sentinel names, blocking and async (which opens the
    // shared async connection that the failover must not strand).
    assert_eq!(blocking.try_get_with(&1, || Ok::<_, ()>(10)).unwrap(), 10);
    let two = runtime.block_on(asynchronous.try_get_with(&2, || async { Ok::<_, ()>(20) }));
    assert_eq!(two.unwrap(), 20);
    assert_eq!(deployment.values(deployment.primary, "sentinel"), 2);
    // The replica has them before the failover.
    deployment.wait_for_the_replica();
    assert_eq!(deployment.values(deployment.replica, "sentinel"), 2);

    // The primary dies. Sentinel sees it down after `down-after-milliseconds` and promotes
    // the replica.
    deployment.kill_primary();
    let deadline = Instant::now() + BOUND;
    while deployment.named_primary() != deployment.replica {
        assert!(Instant::now() < deadline, "no failover");
        thread::sleep(Duration::from_millis(50));
    }
    wait_for(deployment.replica, "the replica to be promoted", |c| {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(c)
            .is_ok_and(|info| info.contains("role:master"))
    });
    let failed_over = Instant::now();

    // After: both kinds of call write to the new primary. A connection to the old one fails
    // and is replaced by one to the primary Sentinel names.
    let (three, blocking_failures) = until_ok(|| blocking.try_get_with(&3, || Ok::<_, ()>(30)));
    assert_eq!(three, 30);
    let (four, async_failures) =
        until_ok(|| runtime.block_on(asynchronous.try_get_with(&4, || async { Ok::<_, ()>(40) })));
    assert_eq!(four, 40);
    // The failures are typed errors: the dead primary's connections, and Sentinel answering
    // "no such primary" while it finishes the failover.
    let recovery = failed_over.elapsed();
    eprintln!(
        "recovered {recovery:?} after the failover, after {blocking_failures} blocking and \
         {async_failures} async calls failed"
    );
    assert!(
        recovery < Duration::from_secs(10),
        "recovery took {recovery:?}"
    );
    // The values made before the failover are still fresh there: no regeneration.
    assert_eq!(blocking.try_get_with(&1, || Ok::<_, ()>(99)).unwrap(), 10);
    let two = runtime.block_on(asynchronous.try_get_with(&2, || async { Ok::<_, ()>(99) }));
    assert_eq!(two.unwrap(), 20);
    assert_eq!(deployment.values(deployment.replica, "sentinel"), 4);
    assert_eq!(blocking.statistics().refused_writes, 0);
}

/// A switchover that leaves the old primary running as a replica, its clients still connected:
/// every write on a connection to it is answered `READONLY`. Such a connection is replaced like
/// a broken one, so blocking and async calls reach the primary Sentinel names now. (The async
/// calls' shared connection used to be kept: they failed for as long as it lived.)
#[test]
fn calls_follow_a_switchover_that_leaves_the_old_primary_readonly() {
    let deployment = Deployment::start();
    let (blocking, asynchronous, runtime) = regions(&deployment);
    // A blocking connection and the shared async one are open, to the primary.
    assert_eq!(blocking.try_get_with(&0, || Ok::<_, ()>(0)).unwrap(), 0);
    let one = runtime.block_on(asynchronous.try_get_with(&1, || async { Ok::<_, ()>(10) }));
    assert_eq!(one.unwrap(), 10);

    deployment.switch_over();
    let switched = Instant::now();
    let (two, async_failures) =
        until_ok(|| runtime.block_on(asynchronous.try_get_with(&2, || async { Ok::<_, ()>(20) })));
    assert_eq!(two, 20);
    let recovery = switched.elapsed();
    eprintln!("async calls recovered {recovery:?} after the switchover, {async_failures} failed");
    assert!(
        async_failures <= 2,
        "{async_failures} async calls failed on the old primary's connection"
    );
    let (three, blocking_failures) = until_ok(|| blocking.try_get_with(&3, || Ok::<_, ()>(30)));
    assert_eq!(three, 30);
    assert!(
        blocking_failures <= 2,
        "{blocking_failures} blocking calls failed on the old primary's connection"
    );
    assert_eq!(deployment.values(deployment.replica, "sentinel"), 4);
}

/// A blocking call on a handle with no connection yet, run on a thread of its own: how long it
/// took, or `None` if it had not returned after 10 s (it may still be running).
fn first_call_within(url: &str, timeout: Duration, key: u64) -> Option<(u64, Duration)> {
    let (url, (sent, received)) = (url.to_string(), std::sync::mpsc::channel());
    thread::spawn(move || {
        let redis = Redis::builder(&url)
            .timeout(timeout)
            .breaker_failures(u32::MAX)
            .build()
            .unwrap();
        let region: SentinelRegion = Region::builder()
            .expiry(Duration::from_secs(60))
            .store(redis.store("stalled"))
            .mutexes(redis.mutexes("stalled"))
            .build()
            .unwrap();
        let began = Instant::now();
        let value = region.get_with(&key, || key);
        let _ = sent.send((value, began.elapsed()));
    });
    received.recv_timeout(Duration::from_secs(10)).ok()
}

/// Sentinel stalls, then the primary does (SIGSTOP, each shorter than Sentinel's
/// `down-after-milliseconds`, so no failover starts): a blocking call that has to connect,
/// and so to ask Sentinel for the primary, gets its value (made directly) within about the
/// handle's timeout. It hung until the stalled process ran again: the discovery read
/// Sentinel's answer, and the primary's `ROLE`, with no timeout. Async calls, bounded by their
/// own deadline, too.
#[test]
fn a_stalled_sentinel_or_primary_costs_a_new_connection_about_one_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let deployment = Deployment::start();
    let url = deployment.url();
    let healthy = first_call_within(&url, TIMEOUT, 1).expect("answered");
    assert_eq!(healthy.0, 1);
    for (index, what) in [(2, "Sentinel"), (0, "the primary")] {
        deployment.signal(index, "-STOP");
        let blocking = first_call_within(&url, TIMEOUT, 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let redis = Redis::builder(&url)
            .timeout(TIMEOUT)
            .breaker_failures(u32::MAX)
            .build()
            .unwrap();
        let asynchronous = Region::builder()
            .expiry(Duration::from_secs(60))
            .store(redis.store("stalled"))
            .mutexes(redis.mutexes("stalled"))
            .build()
            .unwrap()
            .to_async();
        let began = Instant::now();
        let value: u64 = runtime.block_on(asynchronous.get_with(&3, || async { 3 }));
        let async_took = began.elapsed();
        deployment.signal(index, "-CONT");
        eprintln!(
            "{what} stalled, timeout {TIMEOUT:?}: blocking {blocking:?}, async {async_took:?}"
        );
        let (value_blocking, took) =
            blocking.unwrap_or_else(|| panic!("{what} stalled: a blocking call hung"));
        assert_eq!((value_blocking, value), (2, 3));
        assert!(
            took < TIMEOUT * 2,
            "{what} stalled: a blocking call took {took:?}"
        );
        assert!(
            async_took < TIMEOUT * 2,
            "{what} stalled: an async call took {async_took:?}"
        );
    }
}

/// Two Sentinels named, the first silent (a listener that completes connections and never
/// answers: a Sentinel stalled or behind a dead route), the second answering: a new
/// connection, blocking or async, asks the second within its share of the timeout and
/// reaches the primary; the call is served from Redis, not made directly.
#[test]
fn a_silent_first_sentinel_is_passed_over_within_the_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let deployment = Deployment::start();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{SERVICE}",
        silent.local_addr().unwrap().port(),
        deployment.sentinel
    );
    let redis = Redis::builder(&url).timeout(TIMEOUT).build().unwrap();
    let blocking = region(&redis);
    let began = Instant::now();
    let value = blocking.try_get_with(&1, || Ok::<_, ()>(1));
    let blocking_took = began.elapsed();
    let asynchronous = region(&redis).to_async();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    let async_value = runtime.block_on(asynchronous.try_get_with(&2, || async { Ok::<_, ()>(2) }));
    let async_took = began.elapsed();
    eprintln!("first Sentinel silent, timeout {TIMEOUT:?}: blocking {blocking_took:?}, async {async_took:?}");
    assert_eq!(value.unwrap(), 1, "blocking");
    assert_eq!(async_value.unwrap(), 2, "async");
    assert!(blocking_took < TIMEOUT, "blocking {blocking_took:?}");
    assert!(async_took < TIMEOUT, "async {async_took:?}");
    assert_eq!(deployment.values(deployment.primary, "sentinel"), 2);
}
