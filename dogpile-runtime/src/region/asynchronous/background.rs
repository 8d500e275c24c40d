//! [`AsyncBackground`]: an async region's calls with expired values regenerated in spawned
//! tasks.

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use super::{AsyncGuard, AsyncRegion};
use crate::region::creation::Creation;
use crate::region::{
    optional, value_of, AsyncStore, CacheKey, CacheValue, Made, NotCached, OnBackendError,
    RegionError, Served,
};
use crate::{AsyncRawMutex, RawMutex};

/// An async region's calls, with expired values regenerated in spawned tasks: from
/// [`AsyncRegion::background`].
///
/// The task that wins an expired key's mutex spawns the creator with the mutex and returns the
/// stale value at once; the mutex is released when the spawned creator finishes. A missing
/// value is still created in the caller. Outside a tokio runtime the creator runs in place.
///
/// ```
/// use dogpile_runtime::Region;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
/// let region = Region::<u32, u32>::builder().build()?.to_async();
/// let background = region.background();
/// assert_eq!(background.try_get_with(&1, || async { Ok::<_, ()>(1) }).await.unwrap(), 1);
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncBackground<'a, K, V, S, M: RawMutex> {
    pub(super) region: &'a AsyncRegion<K, V, S, M>,
}

impl<K, V, S, M> AsyncBackground<'_, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// [`AsyncRegion::get_with`], regenerating expired values in a spawned task.
    ///
    /// # Panics
    ///
    /// As [`AsyncRegion::get_with`], for a creator run in this task.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// assert_eq!(region.background().get_with(&1, || async { 1 }).await, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_with<Q, F, Fut>(&self, key: &Q, init: F) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let first = match self.region.at_once(key) {
            Ok(value) => return value,
            Err(first) => first,
        };
        let init = move || async move { Ok(init().await) };
        let spawn = Some(self.spawner());
        let result = self
            .region
            .call(key, first, init, OnBackendError::CallDirectly, spawn)
            .await;
        value_of(result).0
    }

    /// [`AsyncRegion::try_get_with`], regenerating expired values in a spawned task. A spawned
    /// creator's error is counted in the statistics and leaves the stale value in place.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`](crate::Region::try_get_with), for a creator run in this task.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// let v = region.background().try_get_with(&1, || async { Ok::<_, ()>(1) }).await;
    /// assert_eq!(v.unwrap(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_get_with<Q, E: Send + Sync + 'static, F, Fut>(
        &self,
        key: &Q,
        init: F,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let first = match self.region.at_once(key) {
            Ok(value) => return Ok(value),
            Err(first) => first,
        };
        let policy = self.region.region.on_backend_error;
        self.region
            .call(key, first, init, policy, Some(self.spawner()))
            .await
            .map(|(value, _)| value)
    }

    /// [`AsyncRegion::try_get_with_served`], regenerating expired values in a spawned task.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`](crate::Region::try_get_with), for a creator run in this task.
    ///
    /// ```
    /// use dogpile_runtime::region::Served;
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// let got = region.background().try_get_with_served(&1, || async { Ok::<_, ()>(1) }).await;
    /// assert_eq!(got.unwrap(), (1, Served::Created));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_get_with_served<Q, E: Send + Sync + 'static, F, Fut>(
        &self,
        key: &Q,
        init: F,
    ) -> Result<(V, Served), RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let first = match self.region.at_once(key) {
            Ok(value) => return Ok((value, Served::Fresh)),
            Err(first) => first,
        };
        let policy = self.region.region.on_backend_error;
        self.region
            .call(key, first, init, policy, Some(self.spawner()))
            .await
    }

    /// [`AsyncRegion::try_get_with_expiry`], regenerating expired values in a spawned task.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`](crate::Region::try_get_with), for a creator run in this task.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder()
    ///     .expiry(Duration::from_secs(60))
    ///     .build()?
    ///     .to_async();
    /// let v = region
    ///     .background()
    ///     .try_get_with_expiry(&1, || async { Ok::<_, ()>((1, Duration::from_secs(5))) })
    ///     .await;
    /// assert_eq!(v.unwrap(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_get_with_expiry<Q, E: Send + Sync + 'static, F, Fut>(
        &self,
        key: &Q,
        init: F,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(V, Duration), E>> + Send + 'static,
    {
        let first = match self.region.at_once(key) {
            Ok(value) => return Ok(value),
            Err(first) => first,
        };
        let policy = self.region.region.on_backend_error;
        self.region
            .call(key, first, init, policy, Some(self.spawner()))
            .await
            .map(|(value, _)| value)
    }

    /// [`AsyncRegion::optionally_get_with`], regenerating expired values in a spawned task.
    ///
    /// # Panics
    ///
    /// As [`AsyncRegion::get_with`], for a creator run in this task.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// assert_eq!(region.background().optionally_get_with(&1, || async { Some(1) }).await, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn optionally_get_with<Q, F, Fut>(&self, key: &Q, init: F) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Option<V>> + Send + 'static,
    {
        let first = match self.region.at_once(key) {
            Ok(value) => return Some(value),
            Err(first) => first,
        };
        let init = move || async move { init().await.ok_or(NotCached) };
        let spawn = Some(self.spawner());
        let result = self
            .region
            .call(key, first, init, OnBackendError::CallDirectly, spawn)
            .await;
        optional(result)
    }
}

impl<K, V, S, M> AsyncBackground<'_, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// Spawns a held key's regeneration onto the current runtime; hands the guard and the
    /// creator back outside one.
    #[allow(clippy::type_complexity)]
    fn spawner<E: Send + Sync + 'static, F, Fut, O>(
        &self,
    ) -> impl FnOnce(&K, AsyncGuard<M>, F) -> Result<(), (AsyncGuard<M>, F)> + '_
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Made<V> + Send + 'static,
    {
        // The region and the key are cloned for the task only when one is spawned.
        move |key: &K, guard: AsyncGuard<M>, init: F| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return Err((guard, init));
            };
            let (region, key) = (self.region.clone(), key.clone());
            // The spawned creator's error is counted and dropped at once, so that it need not
            // be `Send` to cross the task's awaits.
            let init = move || async move { init().await.map_err(drop) };
            runtime.spawn(async move {
                let creation =
                    Creation::new(&region.region, &key, Some(guard), None).in_background();
                let _ = creation.create_async(init).await;
            });
            Ok(())
        }
    }
}

impl<K, V, S, M: RawMutex> fmt::Debug for AsyncBackground<'_, K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncBackground")
            .field("region", &self.region.region.inner.name)
            .finish()
    }
}
