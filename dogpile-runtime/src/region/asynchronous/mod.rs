//! [`AsyncRegion`] (feature `tokio`): a region's calls from async code, driven by the same
//! protocol as the blocking ones, on the same per-key mutexes, so sync and async callers of one
//! region share values and creators.
//!
//! - `mod.rs`: the verbs, and one call through the async driver.
//! - `driver.rs`: the async driver, its guard and its waits; it only awaits, never blocks.
//! - `creation.rs`: the async form of a creation.
//! - `background.rs`: [`AsyncBackground`]; `batch.rs`: many keys in one call.
//!
//! Cancellation: the creator runs inside the caller's future while it holds the key's mutex;
//! dropping that future drops the guard, which releases the mutex and wakes the waiters, and
//! stores nothing. A waiter then becomes the creator.

mod background;
mod batch;
mod creation;
mod driver;

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

pub use background::AsyncBackground;
pub(crate) use driver::AsyncGuard;

use super::creation::Creation;
use super::expiry::{soft_stamp, Age};
use super::verbs::Stored;
use super::{
    CacheKey, CacheValue, Invalidation, Made, NotCached, OnBackendError, Region, RegionError,
    Served, Statistics,
};
use crate::lock::drive::{held_by_this_thread, Stop};
use crate::lock::protocol::{Found, Protocol};
use crate::region::{AsyncStore, KeyMutex};
use crate::{AsyncRawMutex, BackendError, RawMutex};
use driver::{acquire, while_holding};

/// A region from async code: the same cache as the [`Region`] it came from
/// ([`Region::to_async`]), with calls that await.
///
/// The verbs are the region's: [`get_with`](Self::get_with), [`try_get_with`](Self::try_get_with)
/// and [`optionally_get_with`](Self::optionally_get_with), with creators that return futures;
/// [`background`](Self::background) regenerates expired values in spawned tasks. Waiting
/// tasks never block a worker thread, and a store or mutex on a server is reached through its
/// async client.
///
/// ```
/// use dogpile_runtime::Region;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
/// let region: Region<u32, String> = Region::builder().build()?;
/// let users = region.to_async();
/// let name = users.get_with(&7, || async { "seven".to_string() }).await;
/// assert_eq!(name, "seven");
/// assert_eq!(region.peek(&7).as_deref(), Some("seven")); // one cache, two faces
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncRegion<K, V, S, M: RawMutex> {
    pub(super) region: Region<K, V, S, M>,
}

impl<K, V, S, M: RawMutex> Clone for AsyncRegion<K, V, S, M> {
    fn clone(&self) -> Self {
        AsyncRegion {
            region: self.region.clone(),
        }
    }
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// This region from async code: a handle on the same cache whose calls await.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// let from_async = region.to_async();
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn to_async(&self) -> AsyncRegion<K, V, S, M> {
        AsyncRegion {
            region: self.clone(),
        }
    }
}

impl<K, V, S, M> AsyncRegion<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// The value for `key`: fresh from the store, stale while another caller regenerates it, or
    /// made by `init` in this task. Waiting tasks never block a worker thread.
    ///
    /// # Panics
    ///
    /// As [`Region::get_with`]: if `init` panics (that caller only), or if it asks for its own
    /// key again.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, String>::builder().build()?.to_async();
    /// assert_eq!(region.get_with(&7, || async { "seven".to_string() }).await, "seven");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_with<Q, F, Fut>(&self, key: &Q, init: F) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let first = match self.at_once(key) {
            Ok(value) => return value,
            Err(first) => first,
        };
        let init = move || async move { Ok(init().await) };
        let result = self
            .call(
                key,
                first,
                init,
                OnBackendError::CallDirectly,
                None::<NoSpawn<K, M, _>>,
            )
            .await;
        super::value_of(result).0
    }

    /// [`Region::try_get_with`] for async code: only `Ok` is stored; an error reaches this
    /// caller, and waiters then retry one at a time.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// let failed = region.try_get_with(&1, || async { Err::<u32, _>("down") }).await;
    /// assert!(failed.is_err());
    /// let ok = region.try_get_with(&1, || async { Ok::<_, ()>(5) }).await;
    /// assert_eq!(ok.unwrap(), 5);
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
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let first = match self.at_once(key) {
            Ok(value) => return Ok(value),
            Err(first) => first,
        };
        self.call(
            key,
            first,
            init,
            self.region.on_backend_error,
            None::<NoSpawn<K, M, _>>,
        )
        .await
        .map(|(value, _)| value)
    }

    /// [`Region::optionally_get_with`] for async code: only `Some` is stored.
    ///
    /// # Panics
    ///
    /// As [`get_with`](Self::get_with).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// assert_eq!(region.optionally_get_with(&1, || async { None }).await, None);
    /// assert_eq!(region.optionally_get_with(&1, || async { Some(2) }).await, Some(2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn optionally_get_with<Q, F, Fut>(&self, key: &Q, init: F) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<V>>,
    {
        let first = match self.at_once(key) {
            Ok(value) => return Some(value),
            Err(first) => first,
        };
        let init = move || async move { init().await.ok_or(NotCached) };
        let result = self
            .call(
                key,
                first,
                init,
                OnBackendError::CallDirectly,
                None::<NoSpawn<K, M, _>>,
            )
            .await;
        super::optional(result)
    }

    /// [`get_with`](Self::get_with), and how the call was served.
    ///
    /// ```
    /// use dogpile_runtime::region::Served;
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// assert_eq!(region.get_with_served(&1, || async { 1 }).await, (1, Served::Created));
    /// assert_eq!(region.get_with_served(&1, || async { 2 }).await, (1, Served::Fresh));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_with_served<Q, F, Fut>(&self, key: &Q, init: F) -> (V, Served)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let first = match self.at_once(key) {
            Ok(value) => return (value, Served::Fresh),
            Err(first) => first,
        };
        let init = move || async move { Ok(init().await) };
        let result = self
            .call(
                key,
                first,
                init,
                OnBackendError::CallDirectly,
                None::<NoSpawn<K, M, _>>,
            )
            .await;
        super::value_of(result)
    }

    /// [`try_get_with`](Self::try_get_with), and how the call was served.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`].
    ///
    /// ```
    /// use dogpile_runtime::region::Served;
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// let served = region.try_get_with_served(&1, || async { Ok::<_, ()>(1) }).await;
    /// assert_eq!(served.unwrap(), (1, Served::Created));
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
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let first = match self.at_once(key) {
            Ok(value) => return Ok((value, Served::Fresh)),
            Err(first) => first,
        };
        self.call(
            key,
            first,
            init,
            self.region.on_backend_error,
            None::<NoSpawn<K, M, _>>,
        )
        .await
    }

    /// [`Region::try_get_with_expiry`] for async code: the creator says how long its value
    /// lives, at most the expiry.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, String>::builder()
    ///     .expiry(Duration::from_secs(3600))
    ///     .build()?
    ///     .to_async();
    /// let token = region
    ///     .try_get_with_expiry(&1, || async {
    ///         Ok::<_, ()>(("token".to_string(), Duration::from_secs(300)))
    ///     })
    ///     .await;
    /// assert_eq!(token.unwrap(), "token");
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
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Duration), E>>,
    {
        let first = match self.at_once(key) {
            Ok(value) => return Ok(value),
            Err(first) => first,
        };
        self.call(
            key,
            first,
            init,
            self.region.on_backend_error,
            None::<NoSpawn<K, M, _>>,
        )
        .await
        .map(|(value, _)| value)
    }

    /// The same calls, with expired values regenerated in spawned tasks.
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
    pub fn background(&self) -> AsyncBackground<'_, K, V, S, M> {
        AsyncBackground { region: self }
    }

    /// [`Region::refresh`] for async code: awaits the key's mutex, runs the creator, stores an
    /// `Ok`.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// assert_eq!(region.refresh(&1, || async { Ok::<_, ()>(2) }).await.unwrap(), 2);
    /// assert_eq!(region.peek(&1).await, Some(2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh<Q, E: Send + Sync + 'static, F, Fut>(
        &self,
        key: &Q,
        init: F,
    ) -> Result<V, RegionError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let region = &self.region;
        let key = &key.to_owned();
        let mutex = region.inner.mutexes.get::<K>(key);
        if held_by_this_thread(&mutex) {
            return Err(region.recursion(key));
        }
        let guard = acquire(&mutex).await.map_err(RegionError::Backend)?;
        Creation::new(region, key, Some(guard), None)
            .create_async(init)
            .await
            .map(|(value, _)| value)
    }

    /// The stored value for `key`, fresh or stale, without creating one or counting a call.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self
            .stored_by(key)
            .await
            .map(|stored| self.region.judge(stored))
        {
            Ok(Found::Fresh(value) | Found::Due(value) | Found::Expired(value, _)) => Some(value),
            Ok(Found::Missing) | Err(_) => None,
        }
    }

    /// Stores `value` for `key` as created now.
    ///
    /// # Errors
    ///
    /// The store's, if it fails.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 9).await.unwrap();
    /// assert_eq!(region.peek(&1).await, Some(9));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn insert<Q>(&self, key: &Q, value: V) -> Result<(), BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = key.to_owned();
        self.region
            .write(&key, &value, None, None)
            .awaiting()
            .await
            .map(drop)
    }

    /// [`Region::invalidate`] for async code.
    ///
    /// # Errors
    ///
    /// As [`Region::invalidate`]: the store's, saying whether the invalidation is queued for
    /// replay.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.invalidate(&1).await?;
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate<Q>(&self, key: &Q) -> Result<(), BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = &key.to_owned();
        let region = &self.region;
        let (store, at) = (&region.inner.store, region.inner.now());
        region.inner.directs.forget(key);
        let removed = if store.answers_at_once() {
            store.invalidate(key)
        } else {
            store.remove_async(key).await
        };
        removed.map_err(|err| region.unreached(Invalidation::key(key, false, at), err))
    }

    /// [`Region::soft_invalidate`] for async code.
    ///
    /// # Errors
    ///
    /// As [`Region::soft_invalidate`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.soft_invalidate(&1).await?;
    /// assert_eq!(region.get_with(&1, || async { 2 }).await, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn soft_invalidate<Q>(&self, key: &Q) -> Result<(), BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let key = &key.to_owned();
        // Stamped before the read, as `Region::soft_invalidate` does.
        let region = &self.region;
        let at = region.stamp();
        region.inner.directs.forget(key);
        let unreached = |err| region.unreached(Invalidation::key(key, true, at.created()), err);
        if let Some((_, stamp)) = self.stored(key).await.map_err(unreached)? {
            if region.age(stamp) != Age::Gone {
                let store = &region.inner.store;
                let restamped = if store.answers_at_once() {
                    store.restamp(key, stamp, soft_stamp(at))
                } else {
                    store.restamp_async(key, stamp, soft_stamp(at)).await
                };
                restamped.map_err(unreached)?;
            }
        }
        Ok(())
    }

    /// [`Region::invalidate_all`] for async code.
    ///
    /// # Errors
    ///
    /// As [`Region::invalidate_all`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.invalidate_all().await?;
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate_all(&self) -> Result<(), BackendError> {
        self.invalidate_before(false).await
    }

    /// [`Region::soft_invalidate_all`] for async code.
    ///
    /// # Errors
    ///
    /// As [`Region::soft_invalidate_all`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.soft_invalidate_all().await?;
    /// assert_eq!(region.get_with(&1, || async { 2 }).await, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn soft_invalidate_all(&self) -> Result<(), BackendError> {
        self.invalidate_before(true).await
    }

    async fn invalidate_before(&self, soft: bool) -> Result<(), BackendError> {
        let region = &self.region;
        let cutoff = region.inner.invalidate_all(soft);
        let store = &region.inner.store;
        let bumped = if store.answers_at_once() {
            store.invalidate_before(cutoff, soft)
        } else {
            store.invalidate_before_async(cutoff, soft).await
        };
        bumped.map_err(|err| region.unreached(Invalidation::all(soft, cutoff), err))
    }

    /// [`Region::clear`] for async code.
    ///
    /// # Errors
    ///
    /// As [`Region::clear`].
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.clear().await?;
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn clear(&self) -> Result<(), BackendError> {
        let region = &self.region;
        region.inner.directs.forget_all();
        let store = &region.inner.store;
        let cleared = if store.answers_at_once() {
            store.clear()
        } else {
            store.clear_async().await
        };
        cleared.map_err(|err| {
            let cutoff = region.inner.invalidate_all(false);
            region.unreached(Invalidation::all(false, cutoff), err)
        })
    }

    /// The region's counters since it was built (kept in this process: no I/O).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.get_with(&1, || async { 1 }).await;
    /// assert_eq!(region.statistics().misses, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn statistics(&self) -> Statistics {
        self.region.statistics()
    }

    /// The blocking face of the same cache, for code that is not async.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// assert_eq!(region.as_sync().get_with(&1, || 1), 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn as_sync(&self) -> &Region<K, V, S, M> {
        &self.region
    }

    /// One async call: the hot path (one store read, judged), then, from what it found, the
    /// async driver and the [`Creation`] it stops at. `spawn`, if given, takes the guard and the
    /// creator of an expired value to run elsewhere, or hands both back when it cannot.
    async fn call<Q, E: Send + Sync + 'static, F, Fut, O, B>(
        &self,
        key: &Q,
        first: Option<Stored<V>>,
        init: F,
        policy: OnBackendError,
        spawn: Option<B>,
    ) -> Result<(V, Served), RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, E>>,
        O: Made<V>,
        B: FnOnce(&K, AsyncGuard<M>, F) -> Result<(), (AsyncGuard<M>, F)>,
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let region = &self.region;
        // The hot path's read: made by the verb, before this future, as `first`, from what the
        // store answers at once; `None` when it had nothing at hand, and the store is read
        // here (not asked again for what it had at hand).
        let first = match first {
            Some(read) => read,
            None => match region.inner.store.get_async(&key.to_owned()).await {
                Ok(Some((value, stamp))) if region.age(stamp) == Age::Fresh => {
                    region.stats().add(crate::stats::Counter::Hit);
                    return Ok((value, Served::Fresh));
                }
                read => read,
            },
        }
        .map(|stored| region.judge(stored));
        let key = &key.to_owned();
        let began = region.inner.failures.seq();
        let mut view = KeyMutex::new(region, key);
        let mut protocol =
            Protocol::new(region.rules(policy, spawn.is_some()), Some(region.stats()));
        let next = protocol.read(first);
        let (guard, rescue) = match self.advance(&mut view, &mut protocol, next).await {
            Stop::Served(served, value) => return Ok((value, served)),
            Stop::Create { guard, rescue } => (guard, rescue),
            Stop::Hand(held, hand) => {
                if region.backing_off(key) {
                    // The last regenerations failed: serve the value, try again later.
                    held.release().await;
                    let (served, value) = protocol.taken(hand);
                    return Ok((value, served));
                }
                let (held, init) = match spawn {
                    Some(spawn) => match spawn(key, held, init) {
                        Ok(()) => {
                            let (served, value) = protocol.taken(hand);
                            return Ok((value, served));
                        }
                        Err((held, init)) => (held, init),
                    },
                    None => (held, init),
                };
                // No runtime to spawn on: regenerate here, unless it was a refresh.
                return match protocol.refused(hand) {
                    crate::lock::protocol::Refused::Done(served, value) => {
                        held.release().await;
                        Ok((value, served))
                    }
                    crate::lock::protocol::Refused::Create { rescue } => {
                        Creation::new(region, key, Some(held), rescue)
                            .began(began)
                            .create_async(init)
                            .await
                    }
                };
            }
            Stop::Direct(err) => return self.direct(key, began, &err, init).await,
            Stop::Failed(failure) => return Err(region.failure(key, failure)),
        };
        Creation::new(region, key, guard, rescue)
            .began(began)
            .create_async(init)
            .await
    }
}

impl<K, V, S, M> AsyncRegion<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// [`Region::direct`] for async code: a direct call's creator, one at a time per key in
    /// the process, its value shared with the calls that waited for it.
    async fn direct<E, F, Fut, O>(
        &self,
        key: &K,
        began: u64,
        err: &BackendError,
        init: F,
    ) -> Result<(V, Served), RegionError<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, E>>,
        O: Made<V>,
    {
        let region = &self.region;
        let directs = &region.inner.directs;
        let mutex = directs.mutex(key);
        if held_by_this_thread(&mutex) {
            return Err(region.recursion(key));
        }
        let waited_from = directs.seq();
        let Ok(guard) = acquire(&mutex).await else {
            // A mutex of the process does not fail.
            let direct = Creation::direct(region, key, err).began(began);
            return direct.create_async(init).await;
        };
        if let Some(value) = region.direct_shared(key, waited_from) {
            guard.release().await;
            return Ok((value, Served::Waited));
        }
        let direct = Creation::direct(region, key, err).began(began);
        let made = while_holding([&mutex], std::pin::pin!(direct.create_async(init))).await;
        region.direct_made(key, &made);
        guard.release().await;
        made
    }
}

/// The type of "no background" for [`AsyncRegion::call`].
type NoSpawn<K, M, F> = fn(&K, AsyncGuard<M>, F) -> Result<(), (AsyncGuard<M>, F)>;

impl<K, V, S, M: RawMutex> fmt::Debug for AsyncRegion<K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncRegion").field(&self.region).finish()
    }
}
