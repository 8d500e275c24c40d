//! [`RegionBuilder`]: how a region is configured.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, MemoryStore, MutexFactory, Pool, Region, ShouldCache, Store};
use crate::error::{check_duration, LONGEST};
use crate::stats::Counters;
use crate::{Clock, ConfigError, LocalMutex, NameRegistry, RawMutex};

/// Mutexes given back by calls that no other call held, kept for the next keys' misses: as
/// many as calls can run at once on a busy machine, so that misses of new keys allocate none.
const SPARE_MUTEXES: usize = 16;

/// What a region does when its store or mutex fails (a server is down, a file is gone).
///
/// ```
/// use dogpile_runtime::Region;
/// use dogpile_runtime::region::OnBackendError;
/// let region: Region<u8, u8> = Region::builder()
///     .on_backend_error(OnBackendError::ReturnError)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnBackendError {
    /// Run the creator in the caller, uncached, and count a direct call (the default): the
    /// caller gets a value, the backend gets no traffic until it is back.
    #[default]
    CallDirectly,
    /// Return [`RegionError::Backend`](crate::RegionError::Backend) to the caller.
    ReturnError,
}

/// Configures a [`Region`]; from [`Region::builder`].
///
/// ```
/// use dogpile_runtime::Region;
/// use dogpile_runtime::clock::ManualClock;
/// use dogpile_runtime::region::Pool;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::starting_now());
/// let region: Region<String, Vec<u8>> = Region::builder()
///     .name("thumbnails")
///     .expiry(Duration::from_secs(300))
///     .capacity(50_000)
///     .lock_timeout(Duration::from_secs(2))
///     .background(Pool::new(2, 128).expect("at least one thread"))
///     .should_cache(|bytes: &Vec<u8>| !bytes.is_empty())
///     .clock(clock)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RegionBuilder<K, V, S = MemoryStore<K, V>, M = LocalMutex> {
    pub(super) store: S,
    pub(super) mutexes: MutexFactory<K, M>,
    /// How many mutexes given back the registry keeps for new keys: only the default
    /// [`LocalMutex`]es, which do not depend on their key.
    pub(super) spare_mutexes: usize,
    pub(super) expiry: Option<Duration>,
    /// `None`: the coarse clock, called directly on the hot path.
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) lock_timeout: Option<Duration>,
    pub(super) clock_tolerance: Duration,
    pub(super) max_stale: Option<Duration>,
    pub(super) stale_if_error: Option<Duration>,
    pub(super) refresh_ahead: Option<f64>,
    pub(super) jitter: Option<f64>,
    pub(super) expire_with: Option<super::ExpireWith<V>>,
    pub(super) pool: Option<Pool>,
    pub(super) should_cache: Option<ShouldCache<V>>,
    pub(super) on_backend_error: super::OnBackendError,
    pub(super) name: Option<String>,
    pub(super) fail_safe: FailSafe,
    pub(super) hard_timeout: Option<Duration>,
    /// The settings that cannot work, reported by `build`.
    pub(super) invalid: Option<ConfigError>,
}

impl<K, V> Region<K, V>
where
    K: super::CacheKey,
    V: super::CacheValue,
{
    /// Configures a region. Defaults: values never expire, an unbounded [`MemoryStore`], a
    /// [`LocalMutex`] per key, no lock timeout, no background pool, the [`CoarseClock`](crate::CoarseClock) (expiry
    /// exact to one kernel tick).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<String, u32> = Region::builder().build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> RegionBuilder<K, V> {
        RegionBuilder {
            store: MemoryStore::unbounded(),
            mutexes: Box::new(|_: &K| LocalMutex::new()),
            spare_mutexes: SPARE_MUTEXES,
            expiry: None,
            clock: None,
            lock_timeout: None,
            clock_tolerance: DEFAULT_CLOCK_TOLERANCE,
            max_stale: None,
            stale_if_error: None,
            refresh_ahead: None,
            jitter: None,
            expire_with: None,
            pool: None,
            should_cache: None,
            on_backend_error: super::OnBackendError::default(),
            name: None,
            fail_safe: FailSafe::default(),
            hard_timeout: None,
            invalid: None,
        }
    }
}

impl<K, V, S, M> RegionBuilder<K, V, S, M>
where
    K: super::CacheKey,
    V: super::CacheValue,
    M: RawMutex + 'static,
{
    /// A name for messages, statistics and tracing spans (default: `"region"`).
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, u8> = Region::builder().name("users").build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Values older than `expiry` are regenerated (strictly older: an age equal to it is
    /// fresh). Without it, values live until invalidated or evicted.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use std::time::Duration;
    /// let r: Region<u8, u8> = Region::builder().expiry(Duration::from_secs(60)).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.check(check_duration(
            "expiry",
            expiry,
            "leave it unset for values that never expire",
        ));
        self.expiry = Some(expiry);
        self
    }

    /// A caller that finds no value waits at most `timeout` for the creator in another caller;
    /// then it runs the creator itself, and the statistics count a lock timeout.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use std::time::Duration;
    /// let r: Region<u8, u8> = Region::builder().lock_timeout(Duration::from_secs(2)).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.check(check_duration(
            "lock_timeout",
            timeout,
            "a waiter that never waits would run every creator beside the first; leave it unset \
             to wait for as long as the creator runs",
        ));
        self.lock_timeout = Some(timeout);
        self
    }

    /// The pool that the `*_background` calls regenerate expired values on.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::region::Pool;
    /// let r: Region<u8, u8> = Region::builder().background(Pool::shared()).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn background(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Stores a created value only if `should_cache` accepts it; the others are returned to
    /// their caller and counted as errors.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, String> = Region::builder().should_cache(|s: &String| !s.is_empty()).build()?;
    /// r.get_with(&1, String::new);
    /// assert!(r.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn should_cache(
        mut self,
        should_cache: impl Fn(&V) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.should_cache = Some(Box::new(should_cache));
        self
    }

    /// Reads time from `clock`: a [`ManualClock`](crate::clock::ManualClock) lets tests of expiry run
    /// without sleeping.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::clock::ManualClock;
    /// # use std::sync::Arc;
    /// let r: Region<u8, u8> = Region::builder().clock(Arc::new(ManualClock::starting_now())).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A value expired for longer than `max_stale` is not served: callers wait for its
    /// regeneration as on a first miss (Caffeine's expire-after-write beside its
    /// refresh-after-write). Without it, an expired value is served however old it is, for as
    /// long as its regeneration keeps failing or nobody asks for the key. Zero serves no stale
    /// value at all.
    ///
    /// Values past it are also dropped from the store ([`Store::purge`](super::Store::purge),
    /// with [`EvictionCause::Expired`](super::EvictionCause::Expired)), so that a region
    /// without a capacity does not keep every key it was ever asked for once: after as many
    /// stored values as the last purge left (at least 1,024), a thread of its own passes over
    /// the store. A value goes only when it is too stale for every handle on the region (the
    /// one with the longest [`expiry`](super::Region::with_expiry) decides).
    ///
    /// ```
    /// use dogpile_runtime::clock::ManualClock;
    /// use dogpile_runtime::Region;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = Arc::new(ManualClock::starting_now());
    /// let region: Region<u8, u8> = Region::builder()
    ///     .expiry(Duration::from_secs(60))
    ///     .max_stale(Duration::from_secs(30))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// region.insert(&1, 1).unwrap();
    /// clock.advance(Duration::from_secs(120)); // a minute past its expiry
    /// assert_eq!(region.peek(&1), None); // too stale to serve
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        if max_stale > LONGEST {
            self.check(Err(ConfigError::new(
                "max_stale",
                format!(
                    "{max_stale:?} is longer than 100 years; leave it unset to serve stale \
                     values however old"
                ),
            )));
        }
        self.max_stale = Some(max_stale);
        self
    }

    /// When a regeneration fails (the creator returns an error or panics), a caller whose key
    /// has a value expired by no more than `window` gets that stale value instead of the
    /// failure; the failure is counted (`Statistics::stale_on_error`) and the next caller
    /// tries again.
    ///
    /// ```
    /// use dogpile_runtime::clock::ManualClock;
    /// use dogpile_runtime::Region;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = Arc::new(ManualClock::starting_now());
    /// let region: Region<u8, u8> = Region::builder()
    ///     .expiry(Duration::from_secs(60))
    ///     .stale_if_error(Duration::from_secs(600))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// region.insert(&1, 1).unwrap();
    /// clock.advance(Duration::from_secs(120));
    /// assert_eq!(region.try_get_with(&1, || Err::<u8, _>("upstream down")).unwrap(), 1);
    /// assert_eq!(region.statistics().stale_on_error, 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.check(check_duration(
            "stale_if_error",
            window,
            "leave it unset for failures to reach their caller",
        ));
        self.stale_if_error = Some(window);
        self
    }

    /// A hit on a value older than `share` of its lifetime (`0.8`: in its last fifth) starts
    /// one regeneration in the background and returns the value, so a key in steady use never
    /// expires in front of a caller. It applies to the calls that can hand their creator off:
    /// [`Region::background`] and [`AsyncRegion::background`](super::AsyncRegion::background)
    /// (a `#[dogpile]` function with `refresh_ahead`).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// let region: Region<u8, u8> = Region::builder()
    ///     .expiry(Duration::from_secs(60))
    ///     .refresh_ahead(0.8)
    ///     .build()?;
    /// assert!(Region::<u8, u8>::builder().refresh_ahead(1.5).build().is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn refresh_ahead(mut self, share: f64) -> Self {
        if !(share > 0.0 && share < 1.0) {
            self.check(Err(ConfigError::new(
                "refresh_ahead",
                format!(
                    "{share} is not a share of a lifetime: use a number between 0 and 1, such \
                     as 0.8 to refresh in the last fifth"
                ),
            )));
        }
        self.refresh_ahead = Some(share);
        self
    }

    /// Spreads lifetimes so that keys created together do not expire together: each stored
    /// value's lifetime is shortened by a random share of it, up to `share` (`0.1`: up to a
    /// tenth). The expiry stays the longest a value lives.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// let region: Region<u8, u8> = Region::builder()
    ///     .expiry(Duration::from_secs(600))
    ///     .jitter(0.1) // each value lives between 9 and 10 minutes
    ///     .build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn jitter(mut self, share: f64) -> Self {
        if !(share > 0.0 && share < 1.0) {
            self.check(Err(ConfigError::new(
                "jitter",
                format!(
                    "{share} is not a share of a lifetime: use a number between 0 and 1, such \
                     as 0.1 for up to a tenth"
                ),
            )));
        }
        self.jitter = Some(share);
        self
    }

    /// Each stored value lives as long as `expire_with` says of it (a token's `expires_in`, a
    /// response's `max-age`), at most the expiry, which stays the longest a value lives; see
    /// also [`Region::try_get_with_expiry`] for a lifetime decided per call.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// let region: Region<String, (Vec<u8>, u32)> = Region::builder()
    ///     .expiry(Duration::from_secs(3600))
    ///     .expire_with(|(_, max_age): &(Vec<u8>, u32)| Duration::from_secs(u64::from(*max_age)))
    ///     .build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn expire_with(
        mut self,
        expire_with: impl Fn(&V) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.expire_with = Some(std::sync::Arc::new(expire_with));
        self
    }

    /// How far ahead of the clock a creation time or an invalidation may be and still be
    /// trusted (default 1 s): the wall clock can step back, and another host's can run ahead.
    /// A value created further ahead than this counts as expired, and an invalidation made
    /// further ahead is brought back to now, so no clock jump keeps a value fresh for longer
    /// than its lifetime plus this tolerance. Keep it above the clock skew between the hosts
    /// that share a store.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use std::time::Duration;
    /// let r: Region<u8, u8> =
    ///     Region::builder().clock_tolerance(Duration::from_millis(200)).build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn clock_tolerance(mut self, tolerance: Duration) -> Self {
        if tolerance > LONGEST {
            self.check(Err(ConfigError::new(
                "clock_tolerance",
                format!("{tolerance:?} is longer than 100 years; a tolerance of zero trusts no time ahead of the clock"),
            )));
        }
        self.clock_tolerance = tolerance;
        self
    }

    /// How long after a key's creator failed (an error or a panic) the next call runs it
    /// again (default 1 s). Meanwhile the calls for that key, like those that waited for the
    /// creator that failed, get its failure (or, within
    /// [`stale_if_error`](Self::stale_if_error), the stale value) without calling the upstream:
    /// one upstream call per key and attempt, whatever the number of callers. A regeneration in
    /// the background backs off from it, doubling it with each failure in a row. Zero shares a
    /// failure with the calls that waited for it only.
    ///
    /// ```
    /// use dogpile_runtime::clock::ManualClock;
    /// use dogpile_runtime::{Region, RegionError};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = Arc::new(ManualClock::starting_now());
    /// let region: Region<u8, u8> = Region::builder()
    ///     .fail_safe_throttle(Duration::from_secs(5))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// assert!(region.try_get_with(&1, || Err::<u8, _>("down")).is_err());
    /// // Within the throttle: the same failure, and the upstream is not called.
    /// let again = region.try_get_with(&1, || -> Result<u8, &str> { unreachable!() });
    /// assert!(matches!(again, Err(RegionError::Creator(e)) if *e == "down"));
    /// clock.advance(Duration::from_secs(6));
    /// assert_eq!(region.try_get_with(&1, || Ok::<_, &str>(7)).unwrap(), 7);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        if throttle > LONGEST {
            self.check(Err(ConfigError::new(
                "fail_safe_throttle",
                format!(
                    "{throttle:?} is longer than 100 years; zero shares a failure with the \
                     calls that waited for it only"
                ),
            )));
        }
        self.fail_safe.throttle = throttle;
        self
    }

    /// The longest a creator may make its callers wait. An async creator still running after
    /// it is cancelled (its future dropped: nothing is stored, the key's mutex is released) and
    /// its call, with every call that waited for it, gets
    /// [`RegionError::Timeout`](crate::RegionError::Timeout) (or the stale
    /// value, within [`stale_if_error`](Self::stale_if_error)); the failure is shared within
    /// the [`fail_safe_throttle`](Self::fail_safe_throttle). A blocking creator cannot be
    /// stopped on its thread: it runs to its end and its caller gets its value (stored as
    /// usual), but the calls waiting for it give up after `timeout` with the same error.
    /// `get_with` and `optionally_get_with`, which have no error to return, panic with it.
    ///
    /// There is no soft timeout: when a key has a stale value, dogpile makes no caller wait
    /// for its regeneration but the one that runs it, and [`background`](Self::background)
    /// (or `refresh_ahead`) moves that one off the caller's path too.
    ///
    /// ```
    /// use dogpile_runtime::{Region, RegionError};
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder()
    ///     .hard_timeout(Duration::from_millis(50))
    ///     .build()?
    ///     .to_async();
    /// let slow = region.try_get_with(&1, || async {
    ///     tokio::time::sleep(Duration::from_secs(60)).await;
    ///     Ok::<_, ()>(1)
    /// });
    /// assert!(matches!(slow.await, Err(RegionError::Timeout(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.check(check_duration(
            "hard_timeout",
            timeout,
            "leave it unset to let creators run as long as they take",
        ));
        self.hard_timeout = Some(timeout);
        self
    }

    /// What to do when the store or mutex fails; see [`OnBackendError`].
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::region::OnBackendError;
    /// let r: Region<u8, u8> = Region::builder().on_backend_error(OnBackendError::CallDirectly).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_backend_error(mut self, policy: super::OnBackendError) -> Self {
        self.on_backend_error = policy;
        self
    }

    /// Keeps values in `store` instead of an unbounded [`MemoryStore`].
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::region::MemoryStore;
    /// let r: Region<u8, u8, _> = Region::builder().store(MemoryStore::new(Some(10))?).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn store<S2: Store<K, V>>(self, store: S2) -> RegionBuilder<K, V, S2, M> {
        RegionBuilder {
            store,
            mutexes: self.mutexes,
            spare_mutexes: self.spare_mutexes,
            expiry: self.expiry,
            clock: self.clock,
            lock_timeout: self.lock_timeout,
            clock_tolerance: self.clock_tolerance,
            max_stale: self.max_stale,
            stale_if_error: self.stale_if_error,
            refresh_ahead: self.refresh_ahead,
            jitter: self.jitter,
            expire_with: self.expire_with,
            pool: self.pool,
            should_cache: self.should_cache,
            on_backend_error: self.on_backend_error,
            name: self.name,
            fail_safe: self.fail_safe,
            hard_timeout: self.hard_timeout,
            invalid: self.invalid,
        }
    }

    /// Makes each key's dogpile mutex with `mutexes` instead of a [`LocalMutex`]: a file lock
    /// or a server lock, for regions shared by processes or hosts.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::lock::LocalMutex;
    /// let r: Region<u8, u8> = Region::builder().mutexes(|_key: &u8| LocalMutex::new()).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutexes<M2: RawMutex + 'static>(
        self,
        mutexes: impl Fn(&K) -> M2 + Send + Sync + 'static,
    ) -> RegionBuilder<K, V, S, M2> {
        RegionBuilder {
            store: self.store,
            mutexes: Box::new(mutexes),
            // A factory's mutex may be its key's (a file lock's path): never handed to another.
            spare_mutexes: 0,
            expiry: self.expiry,
            clock: self.clock,
            lock_timeout: self.lock_timeout,
            clock_tolerance: self.clock_tolerance,
            max_stale: self.max_stale,
            stale_if_error: self.stale_if_error,
            refresh_ahead: self.refresh_ahead,
            jitter: self.jitter,
            expire_with: self.expire_with,
            pool: self.pool,
            should_cache: self.should_cache,
            on_backend_error: self.on_backend_error,
            name: self.name,
            fail_safe: self.fail_safe,
            hard_timeout: self.hard_timeout,
            invalid: self.invalid,
        }
    }
}

impl<K, V, M> RegionBuilder<K, V, MemoryStore<K, V>, M>
where
    K: super::CacheKey,
    V: super::CacheValue,
    M: RawMutex + 'static,
{
    /// Bounds the default [`MemoryStore`] to about `capacity` values (at least 1). Which values
    /// stay is decided by its W-TinyLFU policy: the ones asked for most often lately, or, when
    /// keys return by how recently they were used, the most recent (its window adapts), while a
    /// scan of one-time keys passes through without flushing them.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, u8> = Region::builder().capacity(1000).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.store = self.store.reconfigured(|s| s.capacity = Some(capacity));
        self
    }

    /// Bounds the default [`MemoryStore`] by the total weight of its values (at least 1), each
    /// weighed by the [`weigher`](Self::weigher); without one, each value weighs 1. Use it
    /// instead of [`capacity`](Self::capacity) when values differ in size.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// // About 256 MiB of thumbnails.
    /// let r: Region<String, Vec<u8>> = Region::builder()
    ///     .max_weight(256 << 20)
    ///     .weigher(|_, bytes: &Vec<u8>| bytes.len().try_into().unwrap_or(u32::MAX))
    ///     .build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn max_weight(mut self, max_weight: u64) -> Self {
        self.store = self.store.reconfigured(|s| s.max_weight = Some(max_weight));
        self
    }

    /// How much of the [`max_weight`](Self::max_weight) a value takes; see
    /// [`MemoryStoreBuilder::weigher`](crate::region::MemoryStoreBuilder::weigher).
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u64, String> = Region::builder()
    ///     .max_weight(1 << 20)
    ///     .weigher(|_id, name: &String| name.len() as u32)
    ///     .build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.store = self
            .store
            .reconfigured(|s| s.weigher = Some(std::sync::Arc::new(weigher)));
        self
    }

    /// Calls `listener` with each value that leaves the default [`MemoryStore`] and the
    /// [`EvictionCause`](crate::region::EvictionCause), after the store has released its lock;
    /// see [`MemoryStoreBuilder::on_evict`](crate::region::MemoryStoreBuilder::on_evict).
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// use dogpile_runtime::region::EvictionCause;
    ///
    /// let r: Region<u64, String> = Region::builder()
    ///     .capacity(2)
    ///     .on_evict(|key, _value, cause| {
    ///         if cause == EvictionCause::Capacity {
    ///             println!("dropped {key}");
    ///         }
    ///     })
    ///     .build()?;
    /// for k in 0..3 {
    ///     r.insert(&k, k.to_string()).unwrap();
    /// }
    /// assert_eq!(r.statistics().evictions, 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn on_evict(
        mut self,
        listener: impl Fn(&K, &V, crate::region::EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.store = self
            .store
            .reconfigured(|s| s.listener = Some(std::sync::Arc::new(listener)));
        self
    }
}

impl<K, V, S, M> RegionBuilder<K, V, S, M>
where
    K: super::CacheKey,
    V: super::CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// Builds the region.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] with every setting that cannot work: a capacity of 0, a zero expiry or
    /// lock timeout, a duration beyond 100 years.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, u8> = Region::builder().build()?;
    /// assert!(r.is_empty());
    /// let zero: Result<Region<u8, u8>, _> = Region::builder().capacity(0).build();
    /// assert_eq!(zero.unwrap_err().option(), "capacity");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<Region<K, V, S, M>, ConfigError> {
        // Each of these works on a value's lifetime, which a region without an expiry does not
        // give it.
        let needs_expiry = [
            ("jitter", self.jitter.is_some()),
            ("expire_with", self.expire_with.is_some()),
            ("refresh_ahead", self.refresh_ahead.is_some()),
            ("max_stale", self.max_stale.is_some()),
            ("stale_if_error", self.stale_if_error.is_some()),
        ];
        let without_expiry = needs_expiry
            .iter()
            .filter(|(_, set)| *set && self.expiry.is_none())
            .map(|&(option, _)| {
                ConfigError::new(
                    option,
                    "works on a value's lifetime, and a region without an expiry gives it none: \
                     set an expiry, the longest a value lives",
                )
            });
        // Every setting refused by a setter, by the store (a capacity of 0, a weigher without
        // a maximum weight, ...) and by the combination, at once.
        let cut_short = match (self.stale_if_error, self.max_stale) {
            (Some(window), Some(most)) if window > most => Some(ConfigError::new(
                "stale_if_error",
                format!(
                    "{window:?} is longer than max_stale ({most:?}): a value too stale to serve \
                     cannot stand in for a failure; make max_stale at least as long"
                ),
            )),
            _ => None,
        };
        let refused = (self.invalid.into_iter())
            .chain(self.store.check().err())
            .chain(without_expiry)
            .chain(cut_short);
        if let Some(invalid) = ConfigError::all(refused) {
            return Err(invalid);
        }
        let name = self.name.unwrap_or_else(|| "region".to_string());
        let stats = Arc::new(Counters::new(&name, None));
        Ok(Region {
            inner: Arc::new(Inner {
                store: self.store,
                mutexes: NameRegistry::reusing(self.mutexes, self.spare_mutexes),
                clock: self.clock,
                missing_until: crate::sync::AtomicI64::new(0),
                expired_until: crate::sync::AtomicI64::new(
                    super::expiry::SOFT_INVALIDATED.as_nanos(),
                ),
                any_until: crate::sync::AtomicI64::new(super::expiry::SOFT_INVALIDATED.as_nanos()),
                lock_timeout: self.lock_timeout,
                hard_timeout: self.hard_timeout,
                tolerance_nanos: crate::clock::saturating_nanos(self.clock_tolerance),
                max_stale_nanos: self.max_stale.map(crate::clock::saturating_nanos),
                purge: super::purge::Purge::new(super::expiry::expiry_nanos(self.expiry)),
                stale_if_error_nanos: self.stale_if_error.map(crate::clock::saturating_nanos),
                refresh_ahead: self.refresh_ahead,
                jitter: self.jitter,
                pool: self.pool,
                should_cache: self.should_cache,
                #[cfg(feature = "metrics")]
                stats: Arc::clone(&stats),
                #[cfg(feature = "metrics")]
                exported: crate::export::StoreExported::new(&name),
                name,
                scopes: parking_lot::Mutex::new(Vec::new()),
                failures: super::failures::Failures::new(),
                directs: super::direct::Directs::new(),
                fail_safe_throttle_nanos: crate::clock::saturating_nanos(self.fail_safe.throttle),
            }),
            expiry: self.expiry,
            expiry_nanos: super::expiry::expiry_nanos(self.expiry),
            expiry_limit: super::expiry::expiry_limit(
                super::expiry::expiry_nanos(self.expiry),
                crate::clock::saturating_nanos(self.clock_tolerance),
            ),
            refresh_limit: super::expiry::refresh_limit(
                super::expiry::expiry_nanos(self.expiry),
                crate::clock::saturating_nanos(self.clock_tolerance),
                self.refresh_ahead,
            ),
            on_backend_error: self.on_backend_error,
            expire_with: self.expire_with,
            share_failures: true,
            stats,
        })
    }
}

impl<K, V, S, M> RegionBuilder<K, V, S, M> {
    /// Keeps an invalid setting for `build` to report with the others.
    fn check(&mut self, checked: Result<(), ConfigError>) {
        if let Err(err) = checked {
            self.invalid = Some(match self.invalid.take() {
                Some(invalid) => invalid.and(err),
                None => err,
            });
        }
    }
}

/// How a region shares the failures of its creators.
#[derive(Clone, Copy, Debug)]
pub(super) struct FailSafe {
    pub(super) throttle: Duration,
}

impl Default for FailSafe {
    fn default() -> Self {
        FailSafe {
            throttle: Duration::from_secs(1),
        }
    }
}

/// The default [`RegionBuilder::clock_tolerance`].
pub(crate) const DEFAULT_CLOCK_TOLERANCE: Duration = crate::clock::TOLERANCE;
