//! [`RegionBuilder`]: how a region is configured.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use super::stats::Counters;
use super::{Inner, MemoryStore, MutexFactory, Pool, Region, ShouldCache, Store};
use crate::{Clock, LocalMutex, NameRegistry, RawMutex};

/// What a region does when its store or mutex fails (a server is down, a file is gone).
///
/// ```
/// use dogpile_runtime::Region;
/// use dogpile_runtime::region::OnBackendError;
/// let region: Region<u8, u8> = Region::builder()
///     .on_backend_error(OnBackendError::ReturnError)
///     .build();
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
///     .background(Pool::new(2, 128))
///     .should_cache(|bytes: &Vec<u8>| !bytes.is_empty())
///     .clock(clock)
///     .build();
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RegionBuilder<K, V, S = MemoryStore<K, V>, M = LocalMutex> {
    pub(super) store: S,
    pub(super) mutexes: MutexFactory<K, M>,
    pub(super) expiry: Option<Duration>,
    /// `None`: the coarse clock, called directly on the hot path.
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) lock_timeout: Option<Duration>,
    pub(super) pool: Option<Pool>,
    pub(super) should_cache: Option<ShouldCache<V>>,
    pub(super) on_backend_error: super::OnBackendError,
    pub(super) name: Option<String>,
}

impl<K, V> Region<K, V>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Configures a region. Defaults: values never expire, an unbounded [`MemoryStore`], a
    /// [`LocalMutex`] per key, no lock timeout, no background pool, the [`CoarseClock`](crate::CoarseClock) (expiry
    /// exact to one kernel tick).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<String, u32> = Region::builder().build();
    /// ```
    pub fn builder() -> RegionBuilder<K, V> {
        RegionBuilder {
            store: MemoryStore::new(None),
            mutexes: Box::new(|_: &K| LocalMutex::new()),
            expiry: None,
            clock: None,
            lock_timeout: None,
            pool: None,
            should_cache: None,
            on_backend_error: super::OnBackendError::default(),
            name: None,
        }
    }
}

impl<K, V, S, M> RegionBuilder<K, V, S, M>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    M: RawMutex + 'static,
{
    /// A name for messages, statistics and tracing spans (default: `"region"`).
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, u8> = Region::builder().name("users").build();
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
    /// let r: Region<u8, u8> = Region::builder().expiry(Duration::from_secs(60)).build();
    /// ```
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// A caller that finds no value waits at most `timeout` for the creator in another caller;
    /// then it runs the creator itself, and the statistics count a lock timeout.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use std::time::Duration;
    /// let r: Region<u8, u8> = Region::builder().lock_timeout(Duration::from_secs(2)).build();
    /// ```
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// The pool that the `*_background` calls regenerate expired values on.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::region::Pool;
    /// let r: Region<u8, u8> = Region::builder().background(Pool::shared()).build();
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
    /// let r: Region<u8, String> = Region::builder().should_cache(|s: &String| !s.is_empty()).build();
    /// r.get_or_create(&1, String::new);
    /// assert!(r.is_empty());
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
    /// let r: Region<u8, u8> = Region::builder().clock(Arc::new(ManualClock::starting_now())).build();
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// What to do when the store or mutex fails; see [`OnBackendError`].
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::region::OnBackendError;
    /// let r: Region<u8, u8> = Region::builder().on_backend_error(OnBackendError::CallDirectly).build();
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
    /// let r: Region<u8, u8, _> = Region::builder().store(MemoryStore::new(Some(10))).build();
    /// ```
    pub fn store<S2: Store<K, V>>(self, store: S2) -> RegionBuilder<K, V, S2, M> {
        RegionBuilder {
            store,
            mutexes: self.mutexes,
            expiry: self.expiry,
            clock: self.clock,
            lock_timeout: self.lock_timeout,
            pool: self.pool,
            should_cache: self.should_cache,
            on_backend_error: self.on_backend_error,
            name: self.name,
        }
    }

    /// Makes each key's dogpile mutex with `mutexes` instead of a [`LocalMutex`]: a file lock
    /// or a server lock, for regions shared by processes or hosts.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// # use dogpile_runtime::lock::LocalMutex;
    /// let r: Region<u8, u8> = Region::builder().mutexes(|_key: &u8| LocalMutex::new()).build();
    /// ```
    pub fn mutexes<M2: RawMutex + 'static>(
        self,
        mutexes: impl Fn(&K) -> M2 + Send + Sync + 'static,
    ) -> RegionBuilder<K, V, S, M2> {
        RegionBuilder {
            store: self.store,
            mutexes: Box::new(mutexes),
            expiry: self.expiry,
            clock: self.clock,
            lock_timeout: self.lock_timeout,
            pool: self.pool,
            should_cache: self.should_cache,
            on_backend_error: self.on_backend_error,
            name: self.name,
        }
    }
}

impl<K, V, M> RegionBuilder<K, V, MemoryStore<K, V>, M>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    M: RawMutex + 'static,
{
    /// Bounds the default [`MemoryStore`] to about `capacity` values (at least 1). Which values
    /// stay is decided by its W-TinyLFU policy: the ones asked for most often lately, while a
    /// scan of one-time keys passes through without flushing them.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, u8> = Region::builder().capacity(1000).build();
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
    ///     .build();
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
    ///     .build();
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
    ///     .build();
    /// for k in 0..3 {
    ///     r.insert(&k, k.to_string()).unwrap();
    /// }
    /// assert_eq!(r.statistics().evictions, 1);
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
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// Builds the region.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let r: Region<u8, u8> = Region::builder().build();
    /// assert!(r.is_empty());
    /// ```
    pub fn build(self) -> Region<K, V, S, M> {
        Region {
            inner: Arc::new(Inner {
                store: self.store,
                mutexes: NameRegistry::new(self.mutexes),
                clock: self.clock,
                missing_until: AtomicI64::new(0),
                expired_until: AtomicI64::new(super::SOFT_INVALIDATED.as_nanos()),
                any_until: AtomicI64::new(super::SOFT_INVALIDATED.as_nanos()),
                lock_timeout: self.lock_timeout,
                pool: self.pool,
                should_cache: self.should_cache,
                name: self.name.unwrap_or_else(|| "region".to_string()),
                stats: Counters::new(),
            }),
            expiry: self.expiry,
            expiry_nanos: super::expiry_nanos(self.expiry),
            on_backend_error: self.on_backend_error,
        }
    }
}
