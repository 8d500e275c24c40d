//! A region's blocking calls: the verbs users call, each a hot path (one store read, judged)
//! and, past it, one call through the protocol (`call.rs`).

use std::borrow::Borrow;
use std::hash::Hash;
use std::time::Duration;

use super::creation::Creation;
use super::expiry::{soft_stamp, Age};
use super::{
    infallible, optional, some, value_of, Background, CacheKey, CacheValue, Invalidation,
    OnBackendError, Region, RegionError, Served, Stamp, Statistics, Store,
};
use crate::lock::drive::{self, Held};
use crate::lock::protocol::Found;
use crate::stats::Counter;
use crate::{BackendError, OwnedMutexGuard, RawMutex};

/// What the hot path's read found when it was not a fresh value: the protocol's first read
/// (judged again past the hot path, so that the hot path builds nothing it does not return).
pub(super) struct First<V>(Stored<V>);

/// A store's answer to a read.
pub(super) type Stored<V> = Result<Option<(V, Stamp)>, BackendError>;

impl<V> First<V> {
    /// The read, judged through `region`'s handle.
    pub(super) fn judged<K, S, M: RawMutex>(
        self,
        region: &Region<K, V, S, M>,
    ) -> Result<Found<V>, BackendError> {
        self.0.map(|stored| region.judge(stored))
    }
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// The value for `key`: fresh from the store, stale while another caller regenerates it, or
    /// made by `init` in this caller.
    ///
    /// If the store or mutex fails, the value comes from `init`, uncached, and counts as a
    /// direct call: this call has no error to return.
    ///
    /// # Panics
    ///
    /// If `init` panics (the panic reaches this caller only), or if `init` asks for the same
    /// key again (it would wait for itself), with a message naming the key.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<&'static str, usize> = Region::builder().build()?;
    /// assert_eq!(region.get_with(&"abc", || "abc".len()), 3);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn get_with<Q>(&self, key: &Q, init: impl FnOnce() -> V) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.fresh_or(
            key,
            |value| value,
            |key, first| {
                let called = self.call(key, first, infallible(init), OnBackendError::CallDirectly);
                value_of(called).0
            },
        )
    }

    /// Like [`get_with`](Self::get_with) for a creator that can fail: only `Ok` is stored; an
    /// error reaches this caller, and waiters then retry one at a time.
    ///
    /// # Errors
    ///
    /// [`RegionError::Creator`] with the creator's error; [`RegionError::Recursion`] if the
    /// creator asks for its own key; [`RegionError::Backend`] if the store or mutex fails and
    /// the region is set to [`OnBackendError::ReturnError`].
    ///
    /// ```
    /// use dogpile_runtime::{Region, RegionError};
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// let err = region.try_get_with(&1, || Err::<u8, _>("down")).unwrap_err();
    /// assert!(matches!(err, RegionError::Creator(e) if *e == "down"));
    /// assert_eq!(region.try_get_with(&1, || Ok::<_, ()>(5)).unwrap(), 5);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn try_get_with<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.fresh_or(key, Ok, |key, first| {
            let called = self.call(key, first, init, self.on_backend_error);
            called.map(|(value, _)| value)
        })
    }

    /// Like [`get_with`](Self::get_with) for a creator that may have no value: only `Some` is
    /// stored.
    ///
    /// # Panics
    ///
    /// As [`get_with`](Self::get_with).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.optionally_get_with(&1, || None), None);
    /// assert_eq!(region.optionally_get_with(&1, || Some(2)), Some(2));
    /// assert_eq!(region.optionally_get_with(&1, || None), Some(2));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn optionally_get_with<Q>(&self, key: &Q, init: impl FnOnce() -> Option<V>) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.fresh_or(key, Some, |key, first| {
            optional(self.call(key, first, some(init), OnBackendError::CallDirectly))
        })
    }

    /// [`try_get_with`](Self::try_get_with) for a creator that says how long its value lives
    /// (a token's `expires_in`, a response's `max-age`), at most the region's expiry, which
    /// stays the longest a value lives.
    ///
    /// # Errors
    ///
    /// As [`try_get_with`](Self::try_get_with).
    ///
    /// ```
    /// use dogpile_runtime::clock::ManualClock;
    /// use dogpile_runtime::Region;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = Arc::new(ManualClock::starting_now());
    /// let tokens: Region<u8, String> = Region::builder()
    ///     .expiry(Duration::from_secs(3600))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// let fetch = |name: &str| Ok::<_, ()>((name.to_string(), Duration::from_secs(60)));
    /// assert_eq!(tokens.try_get_with_expiry(&1, || fetch("first")).unwrap(), "first");
    /// clock.advance(Duration::from_secs(61)); // past the token's minute, not the hour
    /// assert_eq!(tokens.try_get_with_expiry(&1, || fetch("second")).unwrap(), "second");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn try_get_with_expiry<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<(V, Duration), E>,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.fresh_or(key, Ok, |key, first| {
            let called = self.call(key, first, init, self.on_backend_error);
            called.map(|(value, _)| value)
        })
    }

    /// [`get_with`](Self::get_with), and how the call was served: for an `X-Cache` header or a
    /// metric per route.
    ///
    /// ```
    /// use dogpile_runtime::region::Served;
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.get_with_served(&1, || 1), (1, Served::Created));
    /// assert_eq!(region.get_with_served(&1, || 2), (1, Served::Fresh));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn get_with_served<Q>(&self, key: &Q, init: impl FnOnce() -> V) -> (V, Served)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        value_of(self.get(key, infallible(init), OnBackendError::CallDirectly))
    }

    /// [`try_get_with`](Self::try_get_with), and how the call was served.
    ///
    /// # Errors
    ///
    /// As [`try_get_with`](Self::try_get_with).
    ///
    /// ```
    /// use dogpile_runtime::region::Served;
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// let (value, served) = region.try_get_with_served(&1, || Ok::<_, ()>(1)).unwrap();
    /// assert_eq!((value, served), (1, Served::Created));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_get_with_served<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<(V, Served), RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.get(key, init, self.on_backend_error)
    }

    /// The same calls, with expired values regenerated off the caller's path, on the region's
    /// [`Pool`](super::Pool) (or [`Pool::shared`](super::Pool::shared) if none was configured).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, String> = Region::builder().build()?;
    /// assert_eq!(region.background().get_with(&1, || "one".into()), "one");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn background(&self) -> Background<'_, K, V, S, M> {
        Background::new(self)
    }

    /// The stored value for `key`, fresh or stale, without creating one or counting a call.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.peek(&1), None);
    /// region.insert(&1, 9).unwrap();
    /// assert_eq!(region.peek(&1), Some(9));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self
            .inner
            .store
            .get_by(key)
            .map(|stored| self.judge(stored))
        {
            Ok(Found::Fresh(value) | Found::Due(value) | Found::Expired(value, _)) => Some(value),
            Ok(Found::Missing) | Err(_) => None,
        }
    }

    /// Stores `value` for `key` as created now (whether or not the region's cache rule accepts
    /// it), with the lifetime the handle gives a created value: its expiry, shortened by
    /// `expire_with` and jitter.
    ///
    /// # Errors
    ///
    /// The store's, if it fails.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 9).unwrap();
    /// assert_eq!(region.get_with(&1, || unreachable!()), 9);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn insert<Q>(&self, key: &Q, value: V) -> Result<(), BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = key.to_owned();
        self.write(&key, &value, None, None).blocking().map(drop)
    }

    /// Regenerates `key` now, whether or not its value is fresh: waits for the key's mutex (so
    /// it never runs beside another creator of the key), runs `init`, stores an `Ok`.
    ///
    /// # Errors
    ///
    /// As [`try_get_with`](Self::try_get_with).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// assert_eq!(region.refresh(&1, || Ok::<_, ()>(2)).unwrap(), 2);
    /// assert_eq!(region.peek(&1), Some(2));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn refresh<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = &key.to_owned();
        let mutex = self.inner.mutexes.get::<K>(key);
        if drive::held_by_this_thread(&mutex) {
            return Err(self.recursion(key));
        }
        let guard = OwnedMutexGuard::acquire(mutex).map_err(RegionError::Backend)?;
        Creation::new(self, key, Some(Held::new(guard)), None)
            .create(init)
            .map(|(value, _)| value)
    }

    /// Removes `key`'s value (hard invalidation): the next caller creates it and the others
    /// wait.
    ///
    /// # Errors
    ///
    /// The store's, if the invalidation did not reach it (a Redis region during an outage).
    /// A store that can replay it keeps it and honours it in this process meanwhile: the
    /// error then says so ([`BackendError::is_queued_for_replay`]), and other processes see
    /// the invalidation once the store answers again. See the README's "When things fail".
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// region.invalidate(&1)?;
    /// assert_eq!(region.peek(&1), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn invalidate<Q>(&self, key: &Q) -> Result<(), BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = &key.to_owned();
        let at = self.inner.now();
        self.inner.directs.forget(key);
        self.inner
            .store
            .invalidate(key)
            .map_err(|err| self.unreached(Invalidation::key(key, false, at), err))
    }

    /// Makes every value created until now count as missing (hard invalidation of all keys).
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate): the store's, if the invalidation did not reach it
    /// (this process honours it at once whatever the store says; other processes sharing the
    /// store learn it from the store).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// region.invalidate_all()?;
    /// assert_eq!(region.peek(&1), None);
    /// assert_eq!(region.get_with(&1, || 2), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn invalidate_all(&self) -> Result<(), BackendError> {
        let cutoff = self.inner.invalidate_all(false);
        // Other processes sharing the store learn it from the store, if it can tell them.
        self.inner
            .store
            .invalidate_before(cutoff, false)
            .map_err(|err| self.unreached(Invalidation::all(false, cutoff), err))
    }

    /// Makes `key`'s value count as expired (soft invalidation): the next caller regenerates it
    /// while the others get the stale value.
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// region.soft_invalidate(&1)?;
    /// assert_eq!(region.peek(&1), Some(1)); // still there, as a stale value
    /// assert_eq!(region.get_with(&1, || 2), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn soft_invalidate<Q>(&self, key: &Q) -> Result<(), BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = &key.to_owned();
        // Stamped before the read: an invalidation of every key that comes after the read
        // still covers it.
        let at = self.stamp();
        self.inner.directs.forget(key);
        let unreached = |err| self.unreached(Invalidation::key(key, true, at.created()), err);
        if let Some((_, stamp)) = self.inner.store.get(key).map_err(unreached)? {
            if self.age(stamp) != Age::Gone {
                self.inner
                    .store
                    .restamp(key, stamp, soft_stamp(at))
                    .map_err(unreached)?;
            }
        }
        Ok(())
    }

    /// Makes every value created until now count as expired (soft invalidation of all keys).
    ///
    /// # Errors
    ///
    /// As [`invalidate_all`](Self::invalidate_all).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// region.soft_invalidate_all()?;
    /// assert_eq!(region.get_with(&1, || 2), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn soft_invalidate_all(&self) -> Result<(), BackendError> {
        let cutoff = self.inner.invalidate_all(true);
        self.inner
            .store
            .invalidate_before(cutoff, true)
            .map_err(|err| self.unreached(Invalidation::all(true, cutoff), err))
    }

    /// Removes every value from the store.
    ///
    /// # Errors
    ///
    /// The store's, if it failed. Then every value created until now counts as missing in
    /// this process, and a store that can replay keeps it as a hard invalidation of every
    /// key, as [`invalidate_all`](Self::invalidate_all) does.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// region.clear()?;
    /// assert!(region.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<(), BackendError> {
        self.inner.directs.forget_all();
        self.inner.store.clear().map_err(|err| {
            let cutoff = self.inner.invalidate_all(false);
            self.unreached(Invalidation::all(false, cutoff), err)
        })
    }

    /// How many values the store holds (including expired ones not yet replaced), if it can tell.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.insert(&1, 1).unwrap();
    /// assert_eq!(region.len(), 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.inner.store.count().unwrap_or(0)
    }

    /// Whether the store holds no value.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert!(region.is_empty());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The region's counters since it was built.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.get_with(&1, || 1);
    /// assert_eq!(region.statistics().misses, 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn statistics(&self) -> Statistics {
        let inner = &*self.inner;
        let mut statistics = self.stats.snapshot();
        if self.stats.namespace.is_none() {
            // The region's: its handles' own statistics too.
            for scope in inner.scopes.lock().iter() {
                statistics += scope.snapshot();
            }
        }
        let store = &inner.store;
        statistics.entries = self.len();
        statistics.evictions = store.evictions();
        statistics.eviction_weight = store.eviction_weight();
        let health = store.backend_health();
        #[cfg(feature = "metrics")]
        let backend = health.is_some();
        let statistics = statistics.with_backend(health);
        #[cfg(feature = "metrics")]
        self.publish(&statistics, backend);
        statistics
    }

    /// Publishes the hits of the region and of its handles' own series, and what the store
    /// knows.
    #[cfg(feature = "metrics")]
    fn publish(&self, statistics: &Statistics, backend: bool) {
        let inner = &*self.inner;
        inner.stats.publish_hits();
        for scope in inner.scopes.lock().iter() {
            scope.publish_hits();
        }
        (inner.exported).publish(statistics, inner.store.weight(), backend);
    }

    /// Publishes what the store knows to the `metrics` recorder, if due (once a second).
    #[cfg(feature = "metrics")]
    pub(super) fn publish_due(&self) {
        if self.inner.exported.due(self.inner.now().as_nanos()) {
            let _ = self.statistics();
        }
    }

    /// How many keys have a dogpile mutex now: those being regenerated or waited for.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// region.get_with(&1, || 1);
    /// assert_eq!(region.mutexes_in_use(), 0);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn mutexes_in_use(&self) -> usize {
        self.inner.mutexes.len()
    }

    /// One call through the hot path and, past it, the protocol.
    #[inline]
    pub(super) fn get<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E>,
        policy: OnBackendError,
    ) -> Result<(V, Served), RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.fresh_or(
            key,
            |value| Ok((value, Served::Fresh)),
            |key, first| self.call(key, first, init, policy),
        )
    }

    /// The hot path: one store read, one clock check, by the key as given (a `&str` for a
    /// `String` key: no allocation). A fresh value is counted as a hit and given to `hit`;
    /// anything else is what the read found, given to `miss` with the owned key for the
    /// protocol to go on from (`call.rs`), so that a miss reads the store once too.
    #[inline]
    pub(super) fn fresh_or<Q, R>(
        &self,
        key: &Q,
        hit: impl FnOnce(V) -> R,
        miss: impl FnOnce(&K, First<V>) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut read = None;
        if let Some(value) = self.fresh(key, &mut read) {
            return hit(value);
        }
        miss(&key.to_owned(), First(read.unwrap_or(Ok(None))))
    }

    /// A fresh value, counted as a hit; `None` with what the read found in `read` otherwise.
    #[inline]
    pub(super) fn fresh<Q>(&self, key: &Q, read: &mut Option<Stored<V>>) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // Taken apart at once and put together again off the hot path: a fresh hit then
        // moves nothing through memory.
        let (value, stamp) = match self.inner.store.get_by(key) {
            Ok(Some(stored)) => stored,
            other => {
                *read = Some(other);
                return None;
            }
        };
        if self.age(stamp) == Age::Fresh {
            self.stats().add(Counter::Hit);
            return Some(value);
        }
        *read = Some(Ok(Some((value, stamp))));
        None
    }
}
