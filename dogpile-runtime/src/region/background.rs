//! [`Background`]: a region's calls with expired values regenerated on a pool.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::call::Handoff;
use super::creation::Creation;
use super::verbs::First;
use super::{
    infallible, optional, some, value_of, CacheKey, CacheValue, OnBackendError, Pool, Region,
    RegionError, Served, Store,
};
use crate::lock::drive::Held;
use crate::sync::Mutex;
use crate::{OwnedMutexGuard, RawMutex};

/// A region's calls, with expired values regenerated off the caller's path: from
/// [`Region::background`].
///
/// The caller that wins an expired key's mutex hands the creator and the mutex to the region's
/// [`Pool`] (or [`Pool::shared`]) and returns the stale value at once, as every other caller
/// does; the mutex is released when the background creator finishes. A missing value is still
/// created in the caller, and the others wait for it. When the pool's threads and queue are
/// full, the winner regenerates in its own thread (and gets the new value) rather than grow
/// the pool. The creator must
/// be `Send + 'static` to move to the pool; a background creator's error or panic is counted
/// in the statistics and leaves the stale value in place.
///
/// ```
/// use dogpile_runtime::region::Pool;
/// use dogpile_runtime::Region;
///
/// let region: Region<u8, String> = Region::builder().background(Pool::new(2, 64)?).build()?;
/// let background = region.background();
/// assert_eq!(background.get_with(&1, || "one".into()), "one");
/// assert_eq!(background.try_get_with(&2, || Ok::<_, ()>("two".into())).unwrap(), "two");
/// assert_eq!(background.optionally_get_with(&3, || None), None);
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
pub struct Background<'a, K, V, S, M: RawMutex> {
    region: &'a Region<K, V, S, M>,
}

impl<'a, K, V, S, M> Background<'a, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    pub(super) fn new(region: &'a Region<K, V, S, M>) -> Self {
        Background { region }
    }

    /// [`Region::get_with`], regenerating expired values on the pool.
    ///
    /// # Panics
    ///
    /// As [`Region::get_with`].
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.background().get_with(&1, || 1), 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn get_with<Q>(&self, key: &Q, init: impl FnOnce() -> V + Send + 'static) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        value_of(self.call(key, infallible(init), OnBackendError::CallDirectly)).0
    }

    /// [`Region::try_get_with`], regenerating expired values on the pool.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`], for a creator run in this caller.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.background().try_get_with(&1, || Ok::<_, ()>(1)).unwrap(), 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn try_get_with<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E> + Send + 'static,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.call(key, init, self.region.on_backend_error)
            .map(|(value, _)| value)
    }

    /// [`Region::try_get_with_served`], regenerating expired values on the pool.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`], for a creator run in this caller.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// use dogpile_runtime::region::Served;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// let got = region.background().try_get_with_served(&1, || Ok::<_, ()>(1));
    /// assert_eq!(got.unwrap(), (1, Served::Created));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_get_with_served<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E> + Send + 'static,
    ) -> Result<(V, Served), RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.call(key, init, self.region.on_backend_error)
    }

    /// [`Region::try_get_with_expiry`], regenerating expired values on the pool.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`], for a creator run in this caller.
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// let region: Region<u8, u8> = Region::builder().expiry(Duration::from_secs(60)).build()?;
    /// let v = region
    ///     .background()
    ///     .try_get_with_expiry(&1, || Ok::<_, ()>((1, Duration::from_secs(5))));
    /// assert_eq!(v.unwrap(), 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_get_with_expiry<Q, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<(V, std::time::Duration), E> + Send + 'static,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.call(key, init, self.region.on_backend_error)
            .map(|(value, _)| value)
    }

    /// [`Region::optionally_get_with`], regenerating expired values on the pool.
    ///
    /// # Panics
    ///
    /// As [`Region::get_with`].
    ///
    /// ```
    /// # use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// assert_eq!(region.background().optionally_get_with(&1, || Some(1)), Some(1));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn optionally_get_with<Q>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Option<V> + Send + 'static,
    ) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        optional(self.call(key, some(init), OnBackendError::CallDirectly))
    }

    /// The hot path, and past it one call whose expired value's regeneration is handed to the
    /// pool.
    #[inline]
    fn call<Q, E: Send + Sync + 'static, C, O>(
        &self,
        key: &Q,
        init: C,
        policy: OnBackendError,
    ) -> Result<(V, Served), RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        C: FnOnce() -> Result<O, E> + Send + 'static,
        O: super::Made<V>,
    {
        let region = self.region;
        region.fresh_or(
            key,
            |value| Ok((value, Served::Fresh)),
            |key, first| self.regenerate(key, first, init, policy),
        )
    }

    /// Past the hot path: one call whose expired value's regeneration is handed to the pool.
    #[cold]
    #[inline(never)]
    fn regenerate<E: Send + Sync + 'static, C, O>(
        &self,
        key: &K,
        first: First<V>,
        init: C,
        policy: OnBackendError,
    ) -> Result<(V, Served), RegionError<E>>
    where
        C: FnOnce() -> Result<O, E> + Send + 'static,
        O: super::Made<V>,
    {
        let region = self.region;
        let hand = |guard: OwnedMutexGuard<M>, init: C| {
            // The job takes its work from a shared slot, so that a refused job's guard and
            // creator come back to this caller, which then creates here and gets the new value.
            let work = Arc::new(Mutex::new(Some((guard, init))));
            let job = {
                let (work, region, key) = (Arc::clone(&work), region.clone(), key.clone());
                move || {
                    if let Some((guard, init)) = work.lock().take() {
                        // The creator runs marked as holding the key, as in a caller: asking
                        // for its own key fails instead of waiting for itself. Its failure is
                        // counted and leaves the stale value in place.
                        let held = Some(Held::new(guard));
                        let _ = Creation::new(&region, &key, held, None)
                            .in_background()
                            .create(init);
                    }
                }
            };
            let pool = region.inner.pool.clone().unwrap_or_else(Pool::shared);
            let refused = pool.try_spawn(job).is_err();
            match if refused { work.lock().take() } else { None } {
                Some((guard, init)) => Handoff::Refused(guard, init),
                None => Handoff::Taken,
            }
        };
        region.call_with(key, first, init, policy, Some(hand))
    }
}

impl<K, V, S, M: RawMutex> fmt::Debug for Background<'_, K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Background")
            .field("region", &self.region.inner.name)
            .finish()
    }
}
