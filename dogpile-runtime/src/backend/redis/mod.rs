//! Redis (feature `redis`): a [`Store`](crate::region::Store) and a [`RawMutex`](crate::lock::RawMutex) for
//! regions shared by processes on many hosts, on one server, a Redis Cluster or the primary
//! that Sentinel names, over TLS with the feature `redis-tls`.
//!
//! ```no_run
//! use dogpile_runtime::Region;
//! use dogpile_runtime::backend::redis::{Redis, RedisRegion};
//! use std::time::Duration;
//!
//! let redis = Redis::open("redis://127.0.0.1:6379/")?;
//! let users: RedisRegion<u64, String> = Region::builder()
//!     .name("users")
//!     .expiry(Duration::from_secs(60))
//!     .store(redis.store("users"))
//!     .mutexes(redis.mutexes("users"))
//!     .build()?;
//! let name = users.get_with(&7, || "ann".to_string());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Blocking calls use a small pool of blocking connections; async calls (an
//! [`AsyncRegion`](crate::region::AsyncRegion), feature `tokio`) share one multiplexed
//! connection of redis-rs's async client, so a waiting task never blocks a worker thread.
//! Every call, connecting included, runs under the handle's timeout, so an unreachable server
//! is a [`BackendError`] after at most `timeout`, never a hang; the region then calls the
//! creator directly or returns the error ([`OnBackendError`](crate::region::OnBackendError)).
//! A connection that failed, or whose server answered `READONLY` (a primary demoted under it),
//! is dropped and a new one opened by the next command, so the region recovers when the server
//! is back and, through Sentinel, follows the primary it names.
//!
//! When the server stops answering:
//!
//! - **A circuit breaker.** After a few calls in a row go unanswered
//!   ([`RedisBuilder::breaker_failures`]), calls fail at once, unsent ([`BreakerOpen`]),
//!   instead of each paying the timeout; a thread of the handle probes the server after each
//!   cool-down ([`RedisBuilder::breaker_cool_down`]) and closes the breaker once it answers.
//!   [`Redis::breaker`] and the region's [`Statistics`](crate::Statistics) count failures,
//!   rejected calls and transitions; with `tracing`, each transition is an event naming the
//!   address, at most one of a kind every 10 s.
//! - **Invalidations kept for replay.** An invalidation that did not reach the server is
//!   reported to its caller ([`BackendError::is_queued_for_replay`]), honoured at once by this
//!   process, and replayed by a thread of the store as soon as the server answers (one entry
//!   per key, bounded), so the other processes converge.
//!
//! What the backend guarantees across processes:
//!
//! - **No lock in nobody's name.** A lock command that failed or timed out may still reach the
//!   server later; its token is remembered and released by a background thread once the server
//!   answers again. A holder that dies frees its lock when its lease (5 s by default) runs out.
//! - **Fenced writes.** A creator's value is written by one server-side script that first
//!   checks that the creator's token still holds the key's lock: a creator that outlived its
//!   lease cannot overwrite the value of the one that took over (the region counts it in
//!   [`Statistics::refused_writes`](crate::region::Statistics::refused_writes)).
//! - **Invalidation everywhere.** `invalidate_all` and `soft_invalidate_all` bump epochs that
//!   the server keeps; a read is one script that returns the value with what the epochs make of
//!   it, so a fresh hit stays one round trip. Per-key invalidation deletes or re-stamps the
//!   value itself.
//! - **Cluster-ready keys.** A key's value, lock and epoch share a hash tag (one slot).

mod breaker;
mod builder;
mod connection;
mod keys;
mod mutex;
mod near;
mod orphans;
mod replay;
mod store;

pub use breaker::{Breaker, BreakerOpen, BreakerState};
pub use builder::RedisBuilder;
pub use mutex::RedisMutex;
pub use near::NearStore;
pub use store::RedisStore;

/// A region on Redis: its values in a [`RedisStore`], a [`RedisMutex`] per key; the type of a
/// `static` region that `#[dogpile]` functions share with `region = ...`. Its keys and values
/// cross processes with serde: a type of your own derives `Serialize` and `Deserialize`.
///
/// ```no_run
/// use dogpile_runtime::backend::redis::{Redis, RedisRegion};
/// use dogpile_runtime::Region;
/// use std::sync::LazyLock;
/// use std::time::Duration;
///
/// static USERS: LazyLock<RedisRegion<u64, String>> = LazyLock::new(|| {
///     let redis = Redis::open("redis://127.0.0.1:6379/").expect("a valid address");
///     Region::builder()
///         .expiry(Duration::from_secs(60))
///         .store(redis.store("users"))
///         .mutexes(redis.mutexes("users"))
///         .build()
///         .expect("a valid region")
/// });
/// assert_eq!(USERS.get_with(&7, || "ann".to_string()), "ann");
/// ```
pub type RedisRegion<K, V> = crate::Region<K, V, RedisStore<K, V>, RedisMutex>;

/// A region on Redis with an in-memory tier in front: its values in a [`NearStore`], a
/// [`RedisMutex`] per key. A fresh hit on a warm key costs what a hit on an in-memory region
/// does; see [`NearStore`] for how the tiers stay coherent across processes.
///
/// ```no_run
/// use dogpile_runtime::backend::redis::{NearRegion, Redis};
/// use dogpile_runtime::Region;
/// use std::time::Duration;
///
/// let redis = Redis::open("redis://127.0.0.1:6379/")?;
/// let users: NearRegion<u64, String> = Region::builder()
///     .expiry(Duration::from_secs(60))
///     .store(redis.store("users").near(10_000, Duration::from_secs(10))?)
///     .mutexes(redis.mutexes("users"))
///     .build()?;
/// assert_eq!(users.get_with(&7, || "ann".to_string()), "ann");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type NearRegion<K, V> = crate::Region<K, V, NearStore<K, V>, RedisMutex>;

use std::fmt;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use breaker::Circuit;
use builder::Settings;
use connection::{Connection, Target};
use orphans::Orphans;

use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::{BackendError, ConfigError};

/// Connections to Redis (one server, a cluster, or a primary found through Sentinel), with
/// their timeouts and lease; cheap to clone (clones share the connections).
///
/// ```
/// use dogpile_runtime::backend::redis::Redis;
/// use std::time::Duration;
///
/// let redis = Redis::open("redis://127.0.0.1:6379/")?;
/// assert_eq!(redis.lease(), Duration::from_secs(5));
/// assert!(Redis::open("not a url").is_err());
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    target: Target,
    settings: Settings,
    /// The circuit breaker: calls fail at once while the server is not answering.
    circuit: Circuit,
    /// The async calls' connection: one multiplexed connection, shared; dropped after a
    /// failure so that the next call connects again (a cluster's is replaced in the
    /// background instead: see `Redis::reconnect_async`).
    #[cfg(feature = "tokio")]
    multiplexed: Mutex<Option<connection::AsyncConnection>>,
    /// Whether a cluster's async connection is being replaced.
    #[cfg(feature = "tokio")]
    reconnecting: std::sync::atomic::AtomicBool,
    /// Leases that ran out while their creator still ran (see [`Redis::leases_lost`]).
    leases_lost: AtomicU64,
    /// Connections not in use; a command takes one (or opens one) and returns it on success.
    idle: Mutex<Vec<Connection>>,
    /// Locks that a failed command may have left in this handle's name.
    orphans: Orphans,
}

/// How many idle connections are kept for reuse.
const IDLE_MAX: usize = 16;
/// Less than this left of the timeout after connecting, a command is not sent.
const LEAST_LEFT: Duration = Duration::from_millis(1);

impl Redis {
    /// A handle on `url` with the default timeout (1 s) and lease (5 s): [`builder`]'s
    /// shortcut. Connects lazily: a server that is down now is an error of the first command.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an address that does not parse; see [`RedisBuilder`] for the
    /// forms (one server, cluster, Sentinel, TLS).
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// let redis = Redis::open("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")?;
    /// assert!(Redis::open("http://example.com/").is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    ///
    /// [`builder`]: Self::builder
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        Self::builder(url).build()
    }

    /// A builder for a handle on `url`, to set its timeout, lease and TLS trust.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// let redis = Redis::builder("redis://127.0.0.1/").timeout(Duration::from_millis(300)).build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn builder(url: &str) -> RedisBuilder {
        RedisBuilder::new(url)
    }

    fn from_parts(target: Target, settings: Settings, address: String) -> Self {
        Redis {
            shared: Arc::new(Shared {
                target,
                settings,
                circuit: Circuit::new(settings.breaker, address),
                #[cfg(feature = "tokio")]
                multiplexed: Mutex::new(None),
                #[cfg(feature = "tokio")]
                reconnecting: std::sync::atomic::AtomicBool::new(false),
                leases_lost: AtomicU64::new(0),
                idle: Mutex::new(Vec::new()),
                orphans: Orphans::default(),
            }),
        }
    }

    /// The longest a connect or a command may take.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// assert_eq!(Redis::open("redis://127.0.0.1/")?.timeout(), Duration::from_secs(1));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn timeout(&self) -> Duration {
        self.shared.settings.timeout
    }

    /// The lease of this handle's mutexes.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// assert_eq!(Redis::open("redis://127.0.0.1/")?.lease(), Duration::from_secs(5));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn lease(&self) -> Duration {
        self.shared.settings.lease
    }

    /// How many mutex leases of this handle (and its clones) could not be renewed while their
    /// creator still ran: each is a time when another process may have taken the mutex and
    /// regenerated beside this one (the late creator's write is then refused, see
    /// [`RedisStore`]). Also reported by the mutex's `release`, and as a `tracing` warning with
    /// that feature.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// assert_eq!(Redis::open("redis://127.0.0.1/")?.leases_lost(), 0);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn leases_lost(&self) -> u64 {
        self.shared.leases_lost.load(Ordering::Relaxed)
    }

    /// The handle's circuit breaker: its state, and the failures, rejected calls and
    /// transitions since the handle was built (clones share it). A region on the handle
    /// reports the same counts in its [`Statistics`](crate::Statistics).
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::{BreakerState, Redis};
    /// let breaker = Redis::open("redis://127.0.0.1/")?.breaker();
    /// assert_eq!((breaker.state, breaker.opened), (BreakerState::Closed, 0));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn breaker(&self) -> Breaker {
        self.shared.circuit.snapshot()
    }

    /// A store of values under `namespace` (one per region; give the region's mutexes the same
    /// one, with [`mutexes`](Self::mutexes), so that writes can be fenced).
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{Redis, RedisStore};
    /// let store: RedisStore<u64, String> = Redis::open("redis://127.0.0.1/")?.store("users");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn store<K, V>(&self, namespace: &str) -> RedisStore<K, V> {
        RedisStore::new(self.clone(), namespace)
    }

    /// The dogpile mutex of `key` under `namespace`.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use dogpile_runtime::lock::RawMutex;
    /// let m = Redis::open("redis://127.0.0.1/")?.mutex("users", &7u64);
    /// if m.try_acquire()? {
    ///     m.release()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutex<K: serde::Serialize + ?Sized>(&self, namespace: &str, key: &K) -> RedisMutex {
        // Keys that postcard cannot encode (a sequence of unknown length) share one lock:
        // still exclusive, only less concurrent.
        let encoded = keys::encode_key(key).unwrap_or_else(|_| b"unencodable".to_vec());
        RedisMutex::new(self.clone(), keys::names(namespace, &encoded).lock)
    }

    /// A region's mutex factory for `namespace`: [`mutex`](Self::mutex) for each key, to pass
    /// to [`RegionBuilder::mutexes`](crate::region::RegionBuilder::mutexes).
    ///
    /// ```no_run
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
    /// let redis = Redis::open("redis://127.0.0.1/")?;
    /// let users: Region<u64, String, RedisStore<u64, String>, RedisMutex> = Region::builder()
    ///     .store(redis.store("users"))
    ///     .mutexes(redis.mutexes("users"))
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutexes<K: serde::Serialize + ?Sized>(
        &self,
        namespace: &str,
    ) -> impl Fn(&K) -> RedisMutex + Send + Sync + 'static {
        let (redis, namespace) = (self.clone(), namespace.to_string());
        move |key: &K| redis.mutex(&namespace, key)
    }

    fn settings(&self) -> Settings {
        self.shared.settings
    }

    fn is_cluster(&self) -> bool {
        self.shared.target.is_cluster()
    }

    /// Runs `command` on a connection, within the handle's timeout however long connecting
    /// took; a connection that fails is dropped, not reused. Refused at once while the circuit
    /// breaker is open.
    fn run<T>(
        &self,
        what: &str,
        command: impl FnOnce(&mut dyn ::redis::ConnectionLike) -> ::redis::RedisResult<T>,
    ) -> Result<T, BackendError> {
        let circuit = &self.shared.circuit;
        circuit.admit().map_err(|open| not_sent(what, open))?;
        let timeout = self.timeout();
        let began = Instant::now();
        let idle = self.shared.idle.lock().pop();
        let (mut connection, fresh) = match idle {
            Some(connection) => (connection, false),
            None => (self.connect(began)?, true),
        };
        match command(connection.get()) {
            Ok(value) => {
                circuit.answered();
                // A new connection had what its connect left of the timeout; it gets the
                // whole timeout back before it is kept for another command.
                if !fresh || connection.set_timeouts(timeout).is_ok() {
                    let mut idle = self.shared.idle.lock();
                    if idle.len() < IDLE_MAX {
                        idle.push(connection);
                    }
                }
                Ok(value)
            }
            Err(err) => {
                self.judge(&err, fresh);
                Err(self.failed_with(what, err))
            }
        }
    }

    /// A new blocking connection, whose command then gets what is left of the timeout that
    /// began at `began`: one call, one timeout, however the time is split.
    fn connect(&self, began: Instant) -> Result<Connection, BackendError> {
        let timeout = self.timeout();
        let unreached = |err: ::redis::RedisError| {
            self.unanswered();
            BackendError::with_source(
                format!("could not connect to Redis at {}", self.address()),
                err,
            )
        };
        let connection = self.shared.target.connect(timeout).map_err(unreached)?;
        let left = timeout.saturating_sub(began.elapsed());
        if left < LEAST_LEFT {
            self.unanswered();
            return Err(BackendError::new(format!(
                "connecting to Redis at {} took the whole timeout ({timeout:?})",
                self.address()
            )));
        }
        connection.set_timeouts(left).map_err(unreached)?;
        Ok(connection)
    }

    /// Counts a failed command for the circuit breaker: a command with no answer (timed out,
    /// or a connection refused or broken) is a failure of the server, unless it was a
    /// connection kept from before whose socket was closed meanwhile (a server restarted, an
    /// idle timeout): that says the kept connections are stale, and they are dropped. Anything
    /// else came from the server: it answers.
    fn judge(&self, err: &::redis::RedisError, fresh: bool) {
        if err.is_timeout() || (fresh && unanswered(err)) {
            self.unanswered();
        } else if unanswered(err) {
            self.shared.idle.lock().clear();
        } else {
            self.shared.circuit.answered();
        }
    }

    /// A call went unanswered; the breaker may open, and then its probe starts.
    #[cold]
    fn unanswered(&self) {
        if self.shared.circuit.failed() {
            self.start_probe();
        }
    }

    fn failed_with(&self, what: &str, err: ::redis::RedisError) -> BackendError {
        BackendError::with_source(format!("Redis {what} at {} failed", self.address()), err)
    }

    fn address(&self) -> &str {
        self.shared.circuit.address()
    }

    /// Starts the thread that probes the server until it answers, then closes the breaker. It
    /// holds the handle weakly: once every clone is dropped, it stops.
    fn start_probe(&self) {
        let shared = Arc::downgrade(&self.shared);
        let spawned = thread::Builder::new()
            .name("dogpile-redis-probe".into())
            .spawn(move || probe_until_answered(&shared));
        if spawned.is_err() {
            self.shared.circuit.no_probe();
        }
    }

    /// A `PING` on a new connection, within the timeout; the connection is kept if answered.
    fn ping(&self) -> bool {
        let Ok(mut connection) = self.connect(Instant::now()) else {
            return false;
        };
        match ::redis::cmd("PING").query::<()>(connection.get()) {
            Ok(()) => {
                if connection.set_timeouts(self.timeout()).is_ok() {
                    self.shared.idle.lock().push(connection);
                }
                true
            }
            Err(err) => {
                self.judge(&err, true);
                false
            }
        }
    }

    /// Runs `command` on the shared multiplexed connection: it awaits the server and never
    /// blocks the thread. Connecting and the command share one timeout. A connection that
    /// fails is dropped, and the next call connects again; so is one whose server answers
    /// `READONLY`: it was demoted to a replica under the connection, and a new connection
    /// finds the primary (through Sentinel) or at least starts over, as a blocking call does
    /// after any error. Refused at once while the circuit breaker is open.
    #[cfg(feature = "tokio")]
    async fn run_async<T, F, Fut>(&self, what: &str, command: F) -> Result<T, BackendError>
    where
        F: FnOnce(connection::AsyncConnection) -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        self.shared
            .circuit
            .admit()
            .map_err(|open| not_sent(what, open))?;
        let timeout = self.timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let shared = self.shared.multiplexed.lock().clone();
        let (connection, fresh) = match shared {
            Some(connection) => (connection, false),
            None => (self.connect_async(deadline).await?, true),
        };
        // The response timeout is the connection's; this one also bounds a command that the
        // client queued behind a stalled one.
        match tokio::time::timeout_at(deadline, command(connection)).await {
            Ok(Ok(value)) => {
                self.shared.circuit.answered();
                Ok(value)
            }
            Ok(Err(err)) => {
                if err.is_unrecoverable_error() || err.kind() == ::redis::ErrorKind::ReadOnly {
                    *self.shared.multiplexed.lock() = None;
                } else if err.is_timeout() || err.is_io_error() {
                    self.reconnect_async();
                }
                if err.is_timeout() || (fresh && unanswered(&err)) {
                    self.unanswered();
                } else if !unanswered(&err) {
                    self.shared.circuit.answered();
                }
                Err(self.failed_with(what, err))
            }
            Err(_) => {
                self.reconnect_async();
                self.unanswered();
                Err(BackendError::new(format!(
                    "Redis {what} at {} timed out after {timeout:?}",
                    self.address()
                )))
            }
        }
    }

    /// After a command of the shared async connection went unanswered: a server's is
    /// dropped, and the next call connects again. A cluster's stays, and one is built to
    /// replace it in the background: a new one waits for a stalled node while it connects, so
    /// the calls whose keys live on the other nodes, which the one kept still serves, would
    /// pay for it; but the one kept routes by the slots it read, and learns a failover only
    /// from a `MOVED` that a stalled primary never sends. One replacement at a time, and none
    /// within a timeout of the last (outside a tokio runtime, it is dropped as a server's).
    #[cfg(feature = "tokio")]
    fn reconnect_async(&self) {
        let runtime = tokio::runtime::Handle::try_current();
        let (true, Ok(runtime)) = (self.is_cluster(), runtime) else {
            *self.shared.multiplexed.lock() = None;
            return;
        };
        if self.shared.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (reconnecting, timeout) = (Reconnecting(Arc::clone(&self.shared)), self.timeout());
        runtime.spawn(async move {
            let shared = &reconnecting.0;
            let connect = shared.target.connect_async(timeout);
            if let Ok(Ok(connection)) = tokio::time::timeout(timeout, connect).await {
                *shared.multiplexed.lock() = Some(connection);
            }
            tokio::time::sleep(timeout).await;
            // Dropped here, or with the task if its runtime shuts down first.
            drop(reconnecting);
        });
    }

    #[cfg(feature = "tokio")]
    async fn connect_async(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<connection::AsyncConnection, BackendError> {
        let timeout = self.timeout();
        let connect = self.shared.target.connect_async(timeout);
        let connection = match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                self.unanswered();
                return Err(BackendError::with_source(
                    format!("could not connect to Redis at {}", self.address()),
                    err,
                ));
            }
            Err(_) => {
                self.unanswered();
                return Err(BackendError::new(format!(
                    "could not connect to Redis at {} within {timeout:?}",
                    self.address()
                )));
            }
        };
        *self.shared.multiplexed.lock() = Some(connection.clone());
        Ok(connection)
    }
}

/// A replacement of a cluster's async connection under way: when it ends, however (its task
/// dropped with a runtime that shut down too), the next may start.
#[cfg(feature = "tokio")]
struct Reconnecting(Arc<Shared>);

#[cfg(feature = "tokio")]
impl Drop for Reconnecting {
    fn drop(&mut self) {
        self.0.reconnecting.store(false, Ordering::Release);
    }
}

/// Whether `err` says that no answer came: a timeout, or a connection refused, dropped or
/// otherwise failed on the way.
fn unanswered(err: &::redis::RedisError) -> bool {
    err.is_timeout()
        || err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
}

/// The error of a call the open breaker did not send (its source says why).
fn not_sent(what: &str, open: BreakerOpen) -> BackendError {
    BackendError::with_source(format!("Redis {what} failed at once"), open)
}

/// Whether a backend error is of a call the breaker did not send (so nothing of it can reach
/// the server later).
fn was_not_sent(err: &BackendError) -> bool {
    std::error::Error::source(err).is_some_and(|source| source.is::<BreakerOpen>())
}

/// The prober's loop: sleeps out the cool-down, probes, and closes the breaker once the
/// server answers; stops early if the handle is dropped.
fn probe_until_answered(shared: &Weak<Shared>) {
    loop {
        let Some(wait) = shared.upgrade().map(|s| s.circuit.until_probe()) else {
            return;
        };
        thread::sleep(wait);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let redis = Redis { shared };
        redis.shared.circuit.half_open();
        if redis.ping() {
            redis.shared.circuit.close();
            return;
        }
        redis.shared.circuit.reopen();
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Settings {
            timeout,
            lease,
            renew_every,
            breaker,
        } = self.settings();
        f.debug_struct("Redis")
            .field("address", &self.address())
            .field("cluster", &self.is_cluster())
            .field("timeout", &timeout)
            .field("lease", &lease)
            .field("renew_every", &renew_every)
            .field("breaker_failures", &breaker.failures)
            .field("breaker_cool_down", &breaker.cool_down)
            .field("breaker", &self.breaker().state)
            .finish_non_exhaustive()
    }
}
