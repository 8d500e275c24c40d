//! The region: a stale-while-revalidate cache on the dogpile lock, what a `#[dogpile]`
//! function runs on.
//!
//! - [`Region`]: the cache, built by [`Region::builder`]; blocking calls.
//! - [`AsyncRegion`] (feature `tokio`): the same cache from async code, by
//!   [`Region::to_async`]; its calls await and never block a worker thread.
//! - [`Background`]: regenerates expired values off the caller's path.
//! - [`Store`], [`AsyncStore`], [`MemoryStore`]: where values live.
//! - [`Statistics`], [`Served`]: what the calls did.

//!
//! Where things are: `verbs.rs`, the blocking calls; `call.rs`, a call past the hot path
//! through the protocol's blocking driver; `creation.rs`, what every creator run does
//! (stamp, store, count, rescue); `expiry.rs`, stamps and ages; `asynchronous/`, the async
//! calls and driver; `invalidation.rs`, an invalidation the store failed; `background.rs`,
//! `batch.rs`, `purge.rs`, `builder.rs` as named.

#[cfg(feature = "tokio")]
mod asynchronous;
mod background;
mod batch;
mod builder;
mod call;
mod creation;
mod direct;
mod error;
mod expiry;
mod failures;
mod invalidation;
mod pool;
mod purge;
mod store;
mod store_async;
mod trace;
mod verbs;

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

pub use crate::stats::Statistics;
#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncBackground, AsyncRegion};
pub use background::Background;
pub use builder::{OnBackendError, RegionBuilder};
pub use error::RegionError;
pub use expiry::Stamp;
pub use pool::{Pool, PoolFull};
pub use store::{
    BackendHealth, EvictionCause, Invalidation, MemoryStore, MemoryStoreBuilder, Store,
};
pub use store_async::{AsyncStore, StoreFuture};

pub use crate::served::Served;
use crate::stats::Counters;
use crate::sync::AtomicI64;
use crate::{Clock, LocalMutex, NameRegistry, RawMutex};

/// What a key of a region must be: owned, hashable, printable (for messages and spans) and
/// shareable between threads. Every type with those traits is one.
///
/// ```
/// fn is_key<K: dogpile_runtime::region::CacheKey>() {}
/// is_key::<(u64, String)>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a cache",
    label = "a key must be an owned `Hash + Eq + Clone + Debug + Send + Sync + 'static` value",
    note = "for a borrowed argument, use an owned form in the key, such as `key = name.to_owned()`"
)]
pub trait CacheKey: Hash + Eq + Clone + Debug + Send + Sync + 'static {}

impl<T: Hash + Eq + Clone + Debug + Send + Sync + 'static> CacheKey for T {}

/// What a value of a region must be: every caller gets a clone, from any thread. Wrap a value
/// that is large or cannot be cloned in an `Arc`. Every type with those traits is one.
///
/// ```
/// fn is_value<V: dogpile_runtime::region::CacheValue>() {}
/// is_value::<std::sync::Arc<Vec<u8>>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it is not `Clone + Send + Sync + 'static`",
    label = "every caller gets a clone of the cached value, from any thread",
    note = "wrap a value that cannot be cloned or shared in an `Arc`"
)]
pub trait CacheValue: Clone + Send + Sync + 'static {}

impl<T: Clone + Send + Sync + 'static> CacheValue for T {}

type MutexFactory<K, M> = Box<dyn Fn(&K) -> M + Send + Sync>;

type ShouldCache<V> = Box<dyn Fn(&V) -> bool + Send + Sync>;
type ExpireWith<V> = Arc<dyn Fn(&V) -> Duration + Send + Sync>;

/// A call's key's dogpile mutex (blocking or async): taken from the region's registry only when
/// the protocol first asks for it, so a call served from its first read never touches the
/// registry, and given back when the call ends, so the registry forgets a mutex no one else
/// holds at once instead of at a sweep.
struct KeyMutex<'a, K: CacheKey, M: RawMutex> {
    mutexes: &'a NameRegistry<K, M, MutexFactory<K, M>>,
    /// The call's key.
    key: &'a K,
    mutex: Option<Arc<M>>,
}

impl<'a, K: CacheKey, M: RawMutex> KeyMutex<'a, K, M> {
    fn new<V, S>(region: &'a Region<K, V, S, M>, key: &'a K) -> Self {
        KeyMutex {
            mutexes: &region.inner.mutexes,
            key,
            mutex: None,
        }
    }

    fn get(&mut self) -> &Arc<M> {
        let (mutexes, key) = (self.mutexes, self.key);
        self.mutex.get_or_insert_with(|| mutexes.get(key))
    }
}

impl<K: CacheKey, M: RawMutex> Drop for KeyMutex<'_, K, M> {
    fn drop(&mut self) {
        if let Some(mutex) = self.mutex.take() {
            self.mutexes.release(self.key, mutex);
        }
    }
}

/// What a creator makes: a value, or a value with its own lifetime (`(V, Duration)`, from the
/// `*_with_expiry` calls).
pub(crate) trait Made<V> {
    /// The value, and its lifetime if it has one of its own.
    fn into_parts(self) -> (V, Option<Duration>);
}

impl<V> Made<V> for V {
    #[inline]
    fn into_parts(self) -> (V, Option<Duration>) {
        (self, None)
    }
}

impl<V> Made<V> for (V, Duration) {
    #[inline]
    fn into_parts(self) -> (V, Option<Duration>) {
        (self.0, Some(self.1))
    }
}

/// A cache whose expired values are regenerated by one caller while the others get the stale
/// value: what a `#[dogpile]` function runs on, usable directly.
///
/// Each key has a value with its creation time in a [`Store`] and, while anyone regenerates
/// it, a dogpile mutex from a [`NameRegistry`]. A call goes through the rules of
/// [`Lock`](crate::Lock):
///
/// | the key has              | the call                                                        |
/// |--------------------------|-----------------------------------------------------------------|
/// | a fresh value            | returns a clone of it: one store read, one clock read, no lock  |
/// | an expired value         | one caller regenerates (or hands it to the background); the others return the stale value at once |
/// | no value                 | one caller creates; the others wait for it, then return its value |
///
/// Three verbs, by what the creator returns, the same on [`AsyncRegion`]:
/// [`get_with`](Self::get_with) (a value), [`try_get_with`](Self::try_get_with) (a `Result`:
/// only `Ok` is stored) and [`optionally_get_with`](Self::optionally_get_with) (an `Option`:
/// only `Some` is stored); [`background`](Self::background) gives the same verbs with
/// regeneration off the caller's path.
///
/// A creator that fails or panics stores nothing and reaches only its caller; a waiter then
/// becomes the creator. A creator that asks for its own key again fails with
/// [`RegionError::Recursion`] instead of waiting for itself.
///
/// `Region` is a cheap handle: clones share the same cache.
///
/// ```
/// use dogpile_runtime::Region;
/// use std::time::Duration;
///
/// let region: Region<u64, String> = Region::builder()
///     .expiry(Duration::from_secs(60))
///     .capacity(10_000)
///     .build()?;
/// let name = region.get_with(&7, || "seven".to_string());
/// assert_eq!(name, "seven");
/// assert_eq!(region.get_with(&7, || unreachable!()), "seven");
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
pub struct Region<K, V, S = MemoryStore<K, V>, M = LocalMutex>
where
    M: RawMutex,
{
    inner: Arc<Inner<K, V, S, M>>,
    /// Per handle, so that functions sharing a region can each keep their own expiry.
    expiry: Option<Duration>,
    /// `expiry` in nanoseconds for the hot path; `i64::MAX` for never.
    expiry_nanos: i64,
    /// `expiry_nanos` plus the clock tolerance, as the hot path compares ages shifted by it.
    expiry_limit: u64,
    /// The same for the age past which a value is due for refresh (refresh-ahead); equal to
    /// `expiry_limit` without it.
    refresh_limit: u64,
    /// Per handle too: a function given a shared region may call directly where the region's
    /// other users want the error.
    on_backend_error: OnBackendError,
    /// Per handle: how long each value lives, as its creator's function sees it.
    expire_with: Option<ExpireWith<V>>,
    /// Per handle: whether its calls share a failure of a key's creator (and keep theirs for
    /// the calls that share it).
    share_failures: bool,
    /// Per handle: where its calls count, the region's counters or, for a handle that keeps
    /// statistics of its own ([`with_own_statistics`](Self::with_own_statistics)), those.
    stats: Arc<Counters>,
}

struct Inner<K, V, S, M: RawMutex> {
    store: S,
    mutexes: NameRegistry<K, M, MutexFactory<K, M>>,
    /// `None`: [`CoarseClock`], called directly (inlined) rather than through a vtable.
    clock: Option<Arc<dyn Clock>>,
    /// Values created at or before this time count as missing (hard invalidation).
    missing_until: AtomicI64,
    /// Values created at or before this time count as expired (soft invalidation).
    expired_until: AtomicI64,
    /// The later of the two cutoffs: the hot path compares against this one only.
    any_until: AtomicI64,
    lock_timeout: Option<Duration>,
    /// The longest a creator may run (async) and a waiter wait for one.
    hard_timeout: Option<Duration>,
    /// How far ahead of the clock a creation time or cutoff may be and still be trusted.
    tolerance_nanos: i64,
    /// Past its expiry by more than this, a value is not served (`None`: served however old).
    max_stale_nanos: Option<i64>,
    /// With `max_stale`: when the store is next purged of values too stale to serve.
    purge: purge::Purge,
    /// Past its expiry by no more than this, a value stands in for a failed regeneration.
    stale_if_error_nanos: Option<i64>,
    /// The share of a value's lifetime after which a hit refreshes it in the background.
    refresh_ahead: Option<f64>,
    /// Each value's lifetime is shortened by up to this share, at random.
    jitter: Option<f64>,
    pool: Option<Pool>,
    should_cache: Option<ShouldCache<V>>,
    name: String,
    /// The counts of the calls through the handles that keep no statistics of their own, for
    /// the `metrics` feature to publish whichever handle reads the statistics.
    #[cfg(feature = "metrics")]
    stats: Arc<Counters>,
    /// The statistics that handles keep of their own calls, by name
    /// ([`Region::with_own_statistics`]): one set per name, shared by its handles.
    scopes: parking_lot::Mutex<Vec<Arc<Counters>>>,
    /// What the store knows, as the `metrics` feature publishes it.
    #[cfg(feature = "metrics")]
    exported: crate::export::StoreExported,
    /// The last failure of each key's creator, while it is shared.
    failures: failures::Failures<K>,
    /// Direct calls' creators, one at a time per key, and their values for those that waited.
    directs: direct::Directs<K, V>,
    /// How long after a failure of a key's creator the next call runs it again; meanwhile
    /// calls get the stale value (within stale-if-error) or the failure.
    fail_safe_throttle_nanos: i64,
}

impl<K, V, S, M> Clone for Region<K, V, S, M>
where
    M: RawMutex,
{
    fn clone(&self) -> Self {
        Region {
            inner: Arc::clone(&self.inner),
            expiry: self.expiry,
            expiry_nanos: self.expiry_nanos,
            expiry_limit: self.expiry_limit,
            refresh_limit: self.refresh_limit,
            on_backend_error: self.on_backend_error,
            expire_with: self.expire_with.clone(),
            share_failures: self.share_failures,
            stats: Arc::clone(&self.stats),
        }
    }
}

impl<K, V, S, M: RawMutex> Region<K, V, S, M> {
    /// Where this handle's calls count: the region's counters, or its own if it keeps them.
    #[inline]
    pub(crate) fn stats(&self) -> &Counters {
        &self.stats
    }
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// The region's name, as in messages, statistics and spans.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().name("prices").build()?;
    /// assert_eq!(region.name(), "prices");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A handle on the same cache that keeps statistics of its own calls besides the region's:
    /// its [`statistics`](Self::statistics) count only the calls made through the handles
    /// given this `name` on this region (and the handles cloned or derived from them). For one
    /// user of a shared region (a function, a route) to see its own hit ratio and creator
    /// time; the region's handles keep counting every call. What the store says (`entries`,
    /// `evictions`, the backend's failures) stays the region's. `#[dogpile(region = ...)]`
    /// gives each function such a handle, named by its namespace.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<(&str, u8), u8> = Region::builder().build()?;
    /// let prices = region.with_own_statistics("prices");
    /// let stock = region.with_own_statistics("stock");
    /// prices.get_with(&("prices", 1), || 10);
    /// prices.get_with(&("prices", 1), || unreachable!());
    /// stock.get_with(&("stock", 1), || 3);
    /// assert_eq!((prices.statistics().hits, prices.statistics().misses), (1, 1));
    /// assert_eq!((stock.statistics().hits, stock.statistics().misses), (0, 1));
    /// assert_eq!((region.statistics().hits, region.statistics().misses), (1, 2));
    /// assert_eq!(prices.statistics_name(), Some("prices"));
    /// // Handles given the same name share their statistics.
    /// assert_eq!(region.with_own_statistics("prices").statistics().hits, 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_own_statistics(&self, name: impl Into<String>) -> Self {
        let name = name.into();
        let mut scopes = self.inner.scopes.lock();
        let found = scopes
            .iter()
            .find(|scope| scope.namespace.as_deref() == Some(name.as_str()));
        let stats = match found {
            Some(scope) => Arc::clone(scope),
            None => {
                let scope = Arc::new(Counters::new(&self.inner.name, Some(&name)));
                scopes.push(Arc::clone(&scope));
                scope
            }
        };
        drop(scopes);
        Region {
            stats,
            ..self.clone()
        }
    }

    /// The name this handle's own statistics are kept under
    /// ([`with_own_statistics`](Self::with_own_statistics)); `None` for a handle that reports
    /// the region's.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.statistics_name(), None);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn statistics_name(&self) -> Option<&str> {
        self.stats.namespace.as_deref()
    }

    /// How long a value stays fresh through this handle (`None`: until invalidated).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// let region: Region<u8, u8> = Region::builder().expiry(Duration::from_secs(60)).build()?;
    /// assert_eq!(region.expiry(), Some(Duration::from_secs(60)));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn expiry(&self) -> Option<Duration> {
        self.expiry
    }

    /// A handle on the same cache that judges freshness by `expiry` instead: for several
    /// functions (or callers) sharing one region, each with its own expiry. Values, mutexes,
    /// invalidation and statistics stay shared.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](crate::ConfigError) for an expiry that the builder refuses too: zero
    /// (every value would be expired as soon as stored) or more than 100 years.
    ///
    /// ```
    /// use dogpile_runtime::clock::{ManualClock, Timestamp};
    /// use dogpile_runtime::Region;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000)));
    /// let hourly: Region<u8, u8> = Region::builder()
    ///     .expiry(Duration::from_secs(3600))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// let every_minute = hourly.with_expiry(Some(Duration::from_secs(60)))?;
    /// hourly.insert(&1, 1).unwrap();
    /// clock.advance(Duration::from_secs(120));
    /// assert_eq!(hourly.get_with(&1, || 2), 1); // fresh for an hour
    /// assert_eq!(every_minute.get_with(&1, || 2), 2); // expired after a minute
    /// assert!(hourly.with_expiry(Some(Duration::ZERO)).is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_expiry(&self, expiry: Option<Duration>) -> Result<Self, crate::ConfigError> {
        if let Some(expiry) = expiry {
            let instead = "use `None` for values that never expire";
            crate::error::check_duration("expiry", expiry, instead)?;
        }
        self.inner.purge.handle(expiry::expiry_nanos(expiry));
        Ok(self.with_expiry_nanos(expiry::expiry_nanos(expiry)))
    }

    /// [`with_expiry`](Self::with_expiry) in nanoseconds (`i64::MAX`: never).
    fn with_expiry_nanos(&self, nanos: i64) -> Self {
        let expiry = (nanos != i64::MAX).then(|| Duration::from_nanos(nanos.unsigned_abs()));
        Region {
            expiry,
            expiry_nanos: nanos,
            expiry_limit: expiry::expiry_limit(nanos, self.inner.tolerance_nanos),
            refresh_limit: expiry::refresh_limit(
                nanos,
                self.inner.tolerance_nanos,
                self.inner.refresh_ahead,
            ),
            ..self.clone()
        }
    }

    /// A handle on the same cache with its own answer to a failing store or mutex, for the
    /// calls that can return an error (`try_get_with` and its kin). The calls that cannot
    /// (`get_with`, `optionally_get_with`) always call the creator directly.
    ///
    /// ```
    /// use dogpile_runtime::region::OnBackendError;
    /// use dogpile_runtime::Region;
    /// let strict: Region<u8, u8> =
    ///     Region::builder().on_backend_error(OnBackendError::ReturnError).build()?;
    /// let lenient = strict.with_on_backend_error(OnBackendError::CallDirectly);
    /// assert_eq!(lenient.try_get_with(&1, || Ok::<_, ()>(1)).unwrap(), 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_on_backend_error(&self, policy: OnBackendError) -> Self {
        Region {
            on_backend_error: policy,
            ..self.clone()
        }
    }

    /// A handle on the same cache whose calls do not share failures: a call that waited for a
    /// creator that failed, or that comes within the failure throttle after it, runs its own
    /// creator (one at a time) instead of getting that failure; this handle's failures are not
    /// kept for others either. For errors that belong to one caller (a request's own
    /// credentials), and for callers that need their error by value (then each failure is its
    /// caller's alone: `Arc::try_unwrap` gives it back).
    ///
    /// ```
    /// use dogpile_runtime::{Region, RegionError};
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// let own = region.with_shared_failures(false);
    /// let Err(RegionError::Creator(err)) = own.try_get_with(&1, || Err::<u8, _>("down")) else {
    ///     panic!("expected the creator's error");
    /// };
    /// assert_eq!(std::sync::Arc::try_unwrap(err).unwrap(), "down");
    /// assert_eq!(own.try_get_with(&1, || Ok::<_, &str>(2)).unwrap(), 2); // no throttle
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_shared_failures(&self, share: bool) -> Self {
        Region {
            share_failures: share,
            ..self.clone()
        }
    }

    /// A handle on the same cache whose stored values each live as long as `expire_with`
    /// says of them (a token's `expires_in`, a response's `max-age`), at most the handle's
    /// expiry, which stays the longest a value lives.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](crate::ConfigError) on a handle without an expiry, whose values
    /// never expire: `expire_with` would have no lifetime to shorten (the builder refuses it
    /// there too).
    ///
    /// ```
    /// use dogpile_runtime::clock::ManualClock;
    /// use dogpile_runtime::Region;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = Arc::new(ManualClock::starting_now());
    /// let tokens: Region<u8, (String, u64)> = Region::builder()
    ///     .expiry(Duration::from_secs(3600))
    ///     .clock(clock.clone())
    ///     .build()?
    ///     .with_expire_with(|(_, expires_in): &(String, u64)| Duration::from_secs(*expires_in))?;
    /// tokens.get_with(&1, || ("short-lived".to_string(), 60));
    /// clock.advance(Duration::from_secs(61));
    /// assert_eq!(tokens.get_with(&1, || ("renewed".to_string(), 60)).0, "renewed");
    /// assert!(tokens.with_expiry(None)?.with_expire_with(|_| Duration::ZERO).is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_expire_with(
        &self,
        expire_with: impl Fn(&V) -> Duration + Send + Sync + 'static,
    ) -> Result<Self, crate::ConfigError> {
        if self.expiry.is_none() {
            return Err(crate::ConfigError::new(
                "expire_with",
                "works on a value's lifetime, and this handle has no expiry: its values never \
                 expire; give it one with `with_expiry` first",
            ));
        }
        Ok(Region {
            expire_with: Some(Arc::new(expire_with)),
            ..self.clone()
        })
    }
}

impl<K, V, S, M: RawMutex> fmt::Debug for Region<K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Region")
            .field("name", &inner.name)
            .field("expiry", &self.expiry)
            .field("lock_timeout", &inner.lock_timeout)
            .field("background", &inner.pool.is_some())
            .finish_non_exhaustive()
    }
}

// ---- the three verbs on one path -----------------------------------------------------------
//
// Every call goes through the `Result` path; a value creator never fails, and an `Option`
// creator's `None` travels as an error that is not stored.

/// The error that stands for "not cached" when an `Option` creator goes through the `Result`
/// path.
pub(crate) struct NotCached;

pub(crate) fn infallible<V>(
    init: impl FnOnce() -> V,
) -> impl FnOnce() -> Result<V, std::convert::Infallible> {
    move || Ok(init())
}

pub(crate) fn some<V>(init: impl FnOnce() -> Option<V>) -> impl FnOnce() -> Result<V, NotCached> {
    move || init().ok_or(NotCached)
}

/// The value of a call whose creator cannot fail.
pub(crate) fn value_of<V>(
    result: Result<(V, Served), RegionError<std::convert::Infallible>>,
) -> (V, Served) {
    match result {
        Ok(served) => served,
        Err(err) => err.fail(),
    }
}

/// The value of a call whose creator may have none.
pub(crate) fn optional<V>(result: Result<(V, Served), RegionError<NotCached>>) -> Option<V> {
    match result {
        Ok((value, _)) => Some(value),
        Err(RegionError::Creator(_)) => None,
        Err(other) => other.fail(),
    }
}
