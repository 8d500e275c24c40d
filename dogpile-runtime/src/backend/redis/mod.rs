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
//! Every command runs under the handle's timeout, so an unreachable server is a
//! [`BackendError`] after at most `timeout`, never a hang; the region then calls the creator
//! directly or returns the error ([`OnBackendError`](crate::region::OnBackendError)). A connection that
//! failed, or whose server answered `READONLY` (a primary demoted under it), is dropped and a
//! new one opened by the next command, so the region recovers when the server is back and,
//! through Sentinel, follows the primary it names.
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

mod builder;
mod connection;
mod keys;
mod mutex;
mod orphans;
mod store;

pub use builder::RedisBuilder;
pub use mutex::RedisMutex;
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// The async calls' connection: one multiplexed connection, shared; dropped after a
    /// failure so that the next call connects again.
    #[cfg(feature = "tokio")]
    multiplexed: Mutex<Option<connection::AsyncConnection>>,
    /// Leases that ran out while their creator still ran (see [`Redis::leases_lost`]).
    leases_lost: AtomicU64,
    /// Connections not in use; a command takes one (or opens one) and returns it on success.
    idle: Mutex<Vec<Connection>>,
    /// Locks that a failed command may have left in this handle's name.
    orphans: Orphans,
}

/// How many idle connections are kept for reuse.
const IDLE_MAX: usize = 16;

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

    fn from_parts(target: Target, settings: Settings) -> Self {
        Redis {
            shared: Arc::new(Shared {
                target,
                settings,
                #[cfg(feature = "tokio")]
                multiplexed: Mutex::new(None),
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

    /// Runs `command` on a connection; a connection that fails is dropped, not reused.
    fn run<T>(
        &self,
        what: &str,
        command: impl FnOnce(&mut dyn ::redis::ConnectionLike) -> ::redis::RedisResult<T>,
    ) -> Result<T, BackendError> {
        let idle = self.shared.idle.lock().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.connect()?,
        };
        match command(connection.get()) {
            Ok(value) => {
                let mut idle = self.shared.idle.lock();
                if idle.len() < IDLE_MAX {
                    idle.push(connection);
                }
                Ok(value)
            }
            Err(err) => Err(BackendError::with_source(
                format!("Redis {what} failed"),
                err,
            )),
        }
    }

    fn connect(&self) -> Result<Connection, BackendError> {
        self.shared
            .target
            .connect(self.timeout())
            .map_err(|e| BackendError::with_source("could not connect to Redis", e))
    }

    /// Runs `command` on the shared multiplexed connection: it awaits the server and never
    /// blocks the thread. A connection that fails is dropped, and the next call connects again;
    /// so is one whose server answers `READONLY`: it was demoted to a replica under the
    /// connection, and a new connection finds the primary (through Sentinel) or at least
    /// starts over, as a blocking call does after any error.
    #[cfg(feature = "tokio")]
    async fn run_async<T, F, Fut>(&self, what: &str, command: F) -> Result<T, BackendError>
    where
        F: FnOnce(connection::AsyncConnection) -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        let shared = self.shared.multiplexed.lock().clone();
        let connection = match shared {
            Some(connection) => connection,
            None => self.connect_async().await?,
        };
        let timeout = self.timeout();
        // The response timeout is the connection's; this one also bounds a command that the
        // client queued behind a stalled one.
        match tokio::time::timeout(timeout, command(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if err.is_unrecoverable_error()
                    || err.is_timeout()
                    || err.is_io_error()
                    || err.kind() == ::redis::ErrorKind::ReadOnly
                {
                    *self.shared.multiplexed.lock() = None;
                }
                Err(BackendError::with_source(
                    format!("Redis {what} failed"),
                    err,
                ))
            }
            Err(_) => {
                *self.shared.multiplexed.lock() = None;
                Err(BackendError::new(format!(
                    "Redis {what} timed out after {timeout:?}"
                )))
            }
        }
    }

    #[cfg(feature = "tokio")]
    async fn connect_async(&self) -> Result<connection::AsyncConnection, BackendError> {
        let timeout = self.timeout();
        let connect = self.shared.target.connect_async(timeout);
        let connection = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                return Err(BackendError::with_source("could not connect to Redis", err))
            }
            Err(_) => {
                return Err(BackendError::new(format!(
                    "could not connect to Redis within {timeout:?}"
                )))
            }
        };
        *self.shared.multiplexed.lock() = Some(connection.clone());
        Ok(connection)
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Settings {
            timeout,
            lease,
            renew_every,
        } = self.settings();
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("timeout", &timeout)
            .field("lease", &lease)
            .field("renew_every", &renew_every)
            .finish_non_exhaustive()
    }
}
