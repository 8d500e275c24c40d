//! Redis (feature `redis`): a [`Store`](crate::region::Store) and a [`RawMutex`](crate::lock::RawMutex) for
//! regions shared by processes on many hosts.
//!
//! ```no_run
//! use dogpile_runtime::Region;
//! use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
//! use std::time::Duration;
//!
//! let redis = Redis::open("redis://127.0.0.1:6379/")?;
//! let users: Region<u64, String, RedisStore<u64, String>, RedisMutex> = Region::builder()
//!     .name("users")
//!     .expiry(Duration::from_secs(60))
//!     .store(redis.store("users"))
//!     .mutexes({
//!         let redis = redis.clone();
//!         move |id: &u64| redis.mutex("users", id)
//!     })
//!     .build()?;
//! let name = users.get_with(&7, || "ann".to_string());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Blocking calls use a small pool of blocking connections; async calls (an
//! [`AsyncRegion`](crate::region::AsyncRegion), feature `tokio`) share one multiplexed
//! connection of redis-rs's async client, so a waiting task never blocks a worker thread.
//! Every command runs under the connection's timeouts, so an unreachable server is a
//! [`BackendError`] after at most `timeout`, never a hang; the region then calls the creator
//! directly or returns the error ([`OnBackendError`](crate::region::OnBackendError)). A connection that
//! failed is dropped and a new one opened by the next command, so the region recovers when the
//! server is back.

mod mutex;
mod store;

pub use mutex::RedisMutex;
pub use store::RedisStore;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::Mutex;
use crate::BackendError;

/// Connections to one Redis server, with timeouts; cheap to clone (clones share the idle
/// connections).
///
/// ```
/// use dogpile_runtime::backend::redis::Redis;
/// use std::time::Duration;
///
/// let redis = Redis::open("redis://127.0.0.1:6379/")
///     .unwrap()
///     .with_timeout(Duration::from_millis(250))
///     .with_lease(Duration::from_secs(10));
/// assert_eq!(redis.lease(), Duration::from_secs(10));
/// assert!(Redis::open("not a url").is_err());
/// ```
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
    timeout: Duration,
    lease: Duration,
}

struct Shared {
    client: ::redis::Client,
    /// The async calls' connection: one multiplexed connection, shared; dropped after a
    /// failure so that the next call connects again.
    #[cfg(feature = "tokio")]
    multiplexed: Mutex<Option<::redis::aio::MultiplexedConnection>>,
    /// Leases that ran out while their creator still ran (see [`Redis::leases_lost`]).
    leases_lost: crate::sync::AtomicU64,
    /// Connections not in use; a command takes one (or opens one) and returns it on success.
    idle: Mutex<Vec<::redis::Connection>>,
}

/// How many idle connections are kept for reuse.
const IDLE_MAX: usize = 16;

impl Redis {
    /// A handle on the server at `url` (`redis://host:port/db`). Connects lazily: a server that
    /// is down now is an error of the first command, not of `open`.
    pub fn open(url: &str) -> Result<Self, BackendError> {
        let client = ::redis::Client::open(url)
            .map_err(|e| BackendError::with_source(format!("bad Redis address {url:?}"), e))?;
        Ok(Redis {
            shared: Arc::new(Shared {
                client,
                #[cfg(feature = "tokio")]
                multiplexed: Mutex::new(None),
                leases_lost: crate::sync::AtomicU64::new(0),
                idle: Mutex::new(Vec::new()),
            }),
            timeout: Duration::from_secs(1),
            lease: Duration::from_secs(30),
        })
    }

    /// The longest a connect or a command may take before it fails (default 1 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a mutex stays held if its holder dies without releasing it (default 30 s). A
    /// live holder renews it every third of this, for as long as its creator runs.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The lease of this handle's mutexes.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How many mutex leases of this handle (and its clones) could not be renewed while their
    /// creator still ran: each is a time when another process may have taken the mutex and
    /// regenerated beside this one. Also reported by the mutex's `release`, and as a `tracing`
    /// warning with that feature.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// assert_eq!(Redis::open("redis://127.0.0.1/").unwrap().leases_lost(), 0);
    /// ```
    pub fn leases_lost(&self) -> u64 {
        self.shared.leases_lost.load(crate::sync::Ordering::Relaxed)
    }

    /// A store of values under `namespace` (a key prefix: one per region).
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{Redis, RedisStore};
    /// let store: RedisStore<u64, String> = Redis::open("redis://127.0.0.1/")?.store("users");
    /// # Ok::<(), dogpile_runtime::BackendError>(())
    /// ```
    pub fn store<K, V>(&self, namespace: &str) -> RedisStore<K, V> {
        RedisStore::new(self.clone(), namespace)
    }

    /// The dogpile mutex of `key` under `namespace`, for a region's mutex factory.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use dogpile_runtime::lock::RawMutex;
    /// let m = Redis::open("redis://127.0.0.1/")?.mutex("users", &7u64);
    /// if m.try_acquire()? {
    ///     m.release()?;
    /// }
    /// # Ok::<(), dogpile_runtime::BackendError>(())
    /// ```
    pub fn mutex<K: serde::Serialize + ?Sized>(&self, namespace: &str, key: &K) -> RedisMutex {
        let mut name = format!("{namespace}:lock:").into_bytes();
        match postcard::to_stdvec(key) {
            Ok(bytes) => name.extend(bytes),
            // Keys that postcard cannot encode (a sequence of unknown length) share one lock:
            // still exclusive, only less concurrent.
            Err(_) => name.extend(b"unencodable"),
        }
        RedisMutex::new(self.clone(), name)
    }

    /// Runs `command` on a connection; a connection that fails is dropped, not reused.
    fn run<T>(
        &self,
        what: &str,
        command: impl FnOnce(&mut ::redis::Connection) -> ::redis::RedisResult<T>,
    ) -> Result<T, BackendError> {
        let idle = self.shared.idle.lock().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.connect()?,
        };
        match command(&mut connection) {
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

    /// Runs `command` on the shared multiplexed connection: it awaits the server and never
    /// blocks the thread. A connection that fails is dropped, and the next call connects again.
    #[cfg(feature = "tokio")]
    async fn run_async<T, F, Fut>(&self, what: &str, command: F) -> Result<T, BackendError>
    where
        F: FnOnce(::redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        let shared = self.shared.multiplexed.lock().clone();
        let connection = match shared {
            Some(connection) => connection,
            None => self.connect_async().await?,
        };
        // The response timeout is the connection's; this one also bounds a command that the
        // client queued behind a stalled one.
        match tokio::time::timeout(self.timeout, command(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if err.is_unrecoverable_error() || err.is_timeout() || err.is_io_error() {
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
                    "Redis {what} timed out after {:?}",
                    self.timeout
                )))
            }
        }
    }

    #[cfg(feature = "tokio")]
    async fn connect_async(&self) -> Result<::redis::aio::MultiplexedConnection, BackendError> {
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let connect = self
            .shared
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let connection = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                return Err(BackendError::with_source("could not connect to Redis", err))
            }
            Err(_) => {
                return Err(BackendError::new(format!(
                    "could not connect to Redis within {:?}",
                    self.timeout
                )))
            }
        };
        *self.shared.multiplexed.lock() = Some(connection.clone());
        Ok(connection)
    }

    fn connect(&self) -> Result<::redis::Connection, BackendError> {
        let failed = |e| BackendError::with_source("could not connect to Redis", e);
        let connection = self
            .shared
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(failed)?;
        connection
            .set_read_timeout(Some(self.timeout))
            .map_err(failed)?;
        connection
            .set_write_timeout(Some(self.timeout))
            .map_err(failed)?;
        Ok(connection)
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}
