//! [`AsyncRegion`] (feature `tokio`): a region's calls from async code, driven by the same
//! protocol as the blocking ones, on the same per-key mutexes, so sync and async callers of one
//! region share values and creators. The async driver only awaits: it reads through
//! [`AsyncStore`], takes mutexes through [`AsyncRawMutex`], and waits for a held mutex by
//! being woken at its release (or, for a mutex that cannot wake it, by sleeping between
//! tries), so no call blocks a worker thread.
//!
//! Cancellation: the creator runs inside the caller's future while it holds the key's mutex;
//! dropping that future drops the guard, which releases the mutex and wakes the waiters, and
//! stores nothing. A waiter then becomes the creator.

use std::fmt;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::{Counter, Counters};
use super::{
    CacheKey, CacheValue, Made, NotCached, OnBackendError, Region, RegionError, Served, Statistics,
};
use crate::lock::drive::Stop;
use crate::lock::protocol::{Failure, Found, Next, Protocol, Waited};
use crate::lock::Fence;
use crate::region::AsyncStore;
use crate::{AsyncRawMutex, BackendError, RawMutex, Timestamp, WakeOnRelease};

tokio::task_local! {
    /// The mutexes whose creator runs in this task, to turn a wait for one's own key into an
    /// error instead of a deadlock.
    static HOLDING: Vec<usize>;
}

/// How long an async waiter sleeps between tries of a mutex that cannot wake it: doubled from
/// the first value up to the last.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);

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
    pub async fn get_with<F, Fut>(&self, key: &K, init: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let init = move || async move { Ok(init().await) };
        let result = self
            .call(
                key,
                init,
                OnBackendError::CallDirectly,
                None::<NoSpawn<M, _>>,
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
    pub async fn try_get_with<E, F, Fut>(&self, key: &K, init: F) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.call(
            key,
            init,
            self.region.on_backend_error,
            None::<NoSpawn<M, _>>,
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
    pub async fn optionally_get_with<F, Fut>(&self, key: &K, init: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<V>>,
    {
        let init = move || async move { init().await.ok_or(NotCached) };
        let result = self
            .call(
                key,
                init,
                OnBackendError::CallDirectly,
                None::<NoSpawn<M, _>>,
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
    pub async fn get_with_served<F, Fut>(&self, key: &K, init: F) -> (V, Served)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let init = move || async move { Ok(init().await) };
        let result = self
            .call(
                key,
                init,
                OnBackendError::CallDirectly,
                None::<NoSpawn<M, _>>,
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
    pub async fn try_get_with_served<E, F, Fut>(
        &self,
        key: &K,
        init: F,
    ) -> Result<(V, Served), RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.call(
            key,
            init,
            self.region.on_backend_error,
            None::<NoSpawn<M, _>>,
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
    pub async fn try_get_with_expiry<E, F, Fut>(
        &self,
        key: &K,
        init: F,
    ) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Duration), E>>,
    {
        self.call(
            key,
            init,
            self.region.on_backend_error,
            None::<NoSpawn<M, _>>,
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
    pub async fn refresh<E, F, Fut>(&self, key: &K, init: F) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let mutex = self.region.inner.mutexes.get(key);
        if holding(&mutex) {
            return Err(self.region.recursion(key));
        }
        let mut pause = POLL_FIRST;
        let guard = loop {
            match AsyncGuard::try_acquire(&mutex).await {
                Ok(Some(guard)) => break guard,
                Ok(None) => {
                    released(&mutex, &mut pause, None).await;
                }
                Err(err) => return Err(RegionError::Backend(err)),
            }
        };
        let fence = mutex.fence();
        let created = self.create(key, &mutex, init, fence.as_ref()).await;
        guard.release().await;
        created.map_err(RegionError::Creator)
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
    pub async fn peek(&self, key: &K) -> Option<V> {
        match self.read(key).await {
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
    pub async fn insert(&self, key: &K, value: V) -> Result<(), BackendError> {
        self.put(key, &value, self.region.stamp()).await
    }

    /// [`Region::invalidate`] for async code.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.invalidate(&1).await;
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate(&self, key: &K) {
        let store = &self.region.inner.store;
        let _ = if store.answers_at_once() {
            store.invalidate(key)
        } else {
            store.remove_async(key).await
        };
    }

    /// [`Region::soft_invalidate`] for async code.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.soft_invalidate(&1).await;
    /// assert_eq!(region.get_with(&1, || async { 2 }).await, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn soft_invalidate(&self, key: &K) {
        if let Ok(Found::Fresh(value) | Found::Due(value) | Found::Expired(value, _)) =
            self.read(key).await
        {
            let _ = self
                .put(key, &value, super::soft_stamp(self.region.stamp()))
                .await;
        }
    }

    /// [`Region::invalidate_all`] for async code.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.invalidate_all().await;
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate_all(&self) {
        self.invalidate_before(false).await;
    }

    /// [`Region::soft_invalidate_all`] for async code.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.soft_invalidate_all().await;
    /// assert_eq!(region.get_with(&1, || async { 2 }).await, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn soft_invalidate_all(&self) {
        self.invalidate_before(true).await;
    }

    async fn invalidate_before(&self, soft: bool) {
        let cutoff = self.region.inner.invalidate_all(soft);
        let store = &self.region.inner.store;
        let _ = if store.answers_at_once() {
            store.invalidate_before(cutoff, soft)
        } else {
            store.invalidate_before_async(cutoff, soft).await
        };
    }

    /// [`Region::clear`] for async code.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u8, u8>::builder().build()?.to_async();
    /// region.insert(&1, 1).await.unwrap();
    /// region.clear().await;
    /// assert_eq!(region.peek(&1).await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn clear(&self) {
        let store = &self.region.inner.store;
        let _ = if store.answers_at_once() {
            store.clear()
        } else {
            store.clear_async().await
        };
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

    // ---- the async driver -----------------------------------------------------------------

    async fn read(&self, key: &K) -> Result<Found<V>, BackendError> {
        let store = &self.region.inner.store;
        let stored = if store.answers_at_once() {
            store.get(key)?
        } else {
            store.get_async(key).await?
        };
        Ok(self.region.judge(stored))
    }

    pub(super) async fn put_fenced(
        &self,
        key: &K,
        value: &V,
        created: Timestamp,
        fence: &Fence,
    ) -> Result<bool, BackendError> {
        let store = &self.region.inner.store;
        if store.answers_at_once() {
            store.put_fenced(key, value, created, fence)
        } else {
            store.put_fenced_async(key, value, created, fence).await
        }
    }

    pub(super) async fn put(
        &self,
        key: &K,
        value: &V,
        created: Timestamp,
    ) -> Result<(), BackendError> {
        let store = &self.region.inner.store;
        if store.answers_at_once() {
            store.put(key, value, created)
        } else {
            store.put_async(key, value, created).await
        }
    }

    /// One async call through the protocol. `spawn`, if given, takes the guard and the creator
    /// of an expired value to run elsewhere, or hands both back when it cannot.
    async fn call<E, F, Fut, O, B>(
        &self,
        key: &K,
        init: F,
        policy: OnBackendError,
        spawn: Option<B>,
    ) -> Result<(V, Served), RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, E>>,
        O: Made<V>,
        B: FnOnce(AsyncGuard<M>, F) -> Result<(), (AsyncGuard<M>, F)>,
    {
        let region = &self.region;
        let inner = &*region.inner;
        let mutex = inner.mutexes.get(key);
        let mut protocol = Protocol::new(region.rules(policy, spawn.is_some()), Some(&inner.stats));
        match self.advance(key, &mutex, &mut protocol).await {
            Stop::Served(served, value) => Ok((value, served)),
            Stop::Create(guard) => self.created(&mut protocol, key, &mutex, guard, init).await,
            Stop::Hand(held) => {
                let (init, held) = match spawn {
                    Some(spawn) => match spawn(held, init) {
                        Ok(()) => match protocol.handed(true) {
                            Next::Done(served, value) => return Ok((value, served)),
                            _ => unreachable!("a taken hand-off ends the call"),
                        },
                        Err((held, init)) => (init, held),
                    },
                    None => (init, held),
                };
                // No runtime to spawn on: regenerate here, unless it was a refresh.
                if let Next::Done(served, value) = protocol.handed(false) {
                    held.release().await;
                    return Ok((value, served));
                }
                self.created(&mut protocol, key, &mutex, Some(held), init)
                    .await
            }
            Stop::Direct(err) => {
                region.note_direct(key, &err);
                init()
                    .await
                    .map(|made| (made.into_parts().0, Served::Direct))
                    .map_err(RegionError::Creator)
            }
            Stop::Failed(failure) => Err(match failure {
                Failure::WouldDeadlock => region.recursion(key),
                other => region.failure(key, other),
            }),
        }
    }

    /// Reads and locks as the protocol says, until the call needs its creator or ends: the one
    /// loop of every async call, a single key's and each key of a batch. A mutex held when the
    /// call ends without creating is released here.
    pub(super) async fn advance(
        &self,
        key: &K,
        mutex: &Arc<M>,
        protocol: &mut Protocol<'_, V>,
    ) -> Stop<V, AsyncGuard<M>> {
        let deadline = self
            .region
            .inner
            .lock_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let mut pause = POLL_FIRST;
        let mut guard = None;
        let mut next = protocol.start();
        loop {
            next = match next {
                Next::Read => protocol.read(self.read(key).await),
                Next::TryLock => {
                    let taken = AsyncGuard::try_acquire(mutex).await;
                    protocol.try_lock(taken.map(|taken| {
                        guard = taken;
                        guard.is_some()
                    }))
                }
                Next::Lock => {
                    let waited = self.wait(mutex, &mut pause, deadline).await;
                    protocol.lock(waited.map(|(waited, taken)| {
                        guard = taken;
                        waited
                    }))
                }
                Next::Create => return Stop::Create(guard),
                Next::Hand => match guard.take() {
                    Some(held) => return Stop::Hand(held),
                    None => return Stop::Create(None),
                },
                Next::Done(served, value) => {
                    if let Some(guard) = guard {
                        guard.release().await;
                    }
                    return Stop::Served(served, value);
                }
                Next::Direct(err) => {
                    if let Some(guard) = guard {
                        guard.release().await;
                    }
                    return Stop::Direct(err);
                }
                Next::Fail(failure) => {
                    if let Some(guard) = guard {
                        guard.release().await;
                    }
                    return Stop::Failed(failure);
                }
            };
        }
    }

    /// Runs the creator and ends the call: with its value, or, when it fails (an error or a
    /// panic) and the stale-if-error window covers the stale value, with that.
    async fn created<E, F, Fut, O>(
        &self,
        protocol: &mut Protocol<'_, V>,
        key: &K,
        mutex: &Arc<M>,
        guard: Option<AsyncGuard<M>>,
        init: F,
    ) -> Result<(V, Served), RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, E>>,
        O: Made<V>,
    {
        let fence = guard.as_ref().and_then(|_| mutex.fence());
        let creating = self.create(key, mutex, init, fence.as_ref());
        let created = if protocol.may_rescue() {
            CatchUnwind(std::pin::pin!(creating)).await
        } else {
            Ok(creating.await)
        };
        if let Some(guard) = guard {
            guard.release().await;
        }
        match created {
            Ok(Ok(value)) => Ok((value, Served::Created)),
            Ok(Err(err)) => match protocol.failed() {
                Some(stale) => Ok((stale, Served::Stale)),
                None => Err(RegionError::Creator(err)),
            },
            Err(panic) => match protocol.failed() {
                Some(stale) => Ok((stale, Served::Stale)),
                None => std::panic::resume_unwind(panic),
            },
        }
    }

    /// Waits for `mutex`: taken, released by its holder (read before taking it: a thousand
    /// woken waiters then find the value instead of taking the mutex in turn), or timed out.
    async fn wait(
        &self,
        mutex: &Arc<M>,
        pause: &mut Duration,
        deadline: Option<Instant>,
    ) -> Result<(Waited, Option<AsyncGuard<M>>), BackendError> {
        if let Some(guard) = AsyncGuard::try_acquire(mutex).await? {
            return Ok((Waited::Acquired, Some(guard)));
        }
        if holding(mutex) {
            return Ok((Waited::WouldDeadlock, None));
        }
        Ok(if released(mutex, pause, deadline).await {
            (Waited::Released, None)
        } else {
            (Waited::TimedOut, None)
        })
    }

    /// Runs the creator marked as holding `mutex` (in this task), then stores (only while
    /// `fence`, if any, holds) and counts.
    async fn create<E, F, Fut, O>(
        &self,
        key: &K,
        mutex: &Arc<M>,
        init: F,
        fence: Option<&Fence>,
    ) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, E>>,
        O: Made<V>,
    {
        let region = &self.region;
        let span = super::trace::AsyncRegeneration::start(&region.inner.name, key);
        let unwinding = CountPanic(&region.inner.stats);
        let mut held = HOLDING.try_with(Clone::clone).unwrap_or_default();
        held.push(address(mutex));
        let made = HOLDING.scope(held, span.instrument(init())).await;
        std::mem::forget(unwinding);
        let (created, lifetime) = match made.map(Made::into_parts) {
            Ok((value, lifetime)) => (Ok(value), lifetime),
            Err(err) => (Err(err), None),
        };
        let stored = match &created {
            Ok(value) if region.caches(value) => {
                let stamp = region.stamp_value(value, lifetime);
                Some(match fence {
                    None => self.put(key, value, stamp).await.map(|()| true),
                    Some(fence) => self.put_fenced(key, value, stamp, fence).await,
                })
            }
            _ => None,
        };
        span.finish(region.count_creation(created.is_ok(), stored));
        created
    }
}

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
    region: &'a AsyncRegion<K, V, S, M>,
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
    pub async fn get_with<F, Fut>(&self, key: &K, init: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let init = move || async move { Ok(init().await) };
        let result = self
            .region
            .call(
                key,
                init,
                OnBackendError::CallDirectly,
                Some(self.spawner(key)),
            )
            .await;
        super::value_of(result).0
    }

    /// [`AsyncRegion::try_get_with`], regenerating expired values in a spawned task. A spawned
    /// creator's error is counted in the statistics and leaves the stale value in place.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`], for a creator run in this task.
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
    pub async fn try_get_with<E, F, Fut>(&self, key: &K, init: F) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let policy = self.region.region.on_backend_error;
        self.region
            .call(key, init, policy, Some(self.spawner(key)))
            .await
            .map(|(value, _)| value)
    }

    /// [`AsyncRegion::try_get_with_served`], regenerating expired values in a spawned task.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`], for a creator run in this task.
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
    pub async fn try_get_with_served<E, F, Fut>(
        &self,
        key: &K,
        init: F,
    ) -> Result<(V, Served), RegionError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let policy = self.region.region.on_backend_error;
        self.region
            .call(key, init, policy, Some(self.spawner(key)))
            .await
    }

    /// [`AsyncRegion::try_get_with_expiry`], regenerating expired values in a spawned task.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with`], for a creator run in this task.
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
    pub async fn try_get_with_expiry<E, F, Fut>(
        &self,
        key: &K,
        init: F,
    ) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(V, Duration), E>> + Send + 'static,
    {
        let policy = self.region.region.on_backend_error;
        self.region
            .call(key, init, policy, Some(self.spawner(key)))
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
    pub async fn optionally_get_with<F, Fut>(&self, key: &K, init: F) -> Option<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Option<V>> + Send + 'static,
    {
        let init = move || async move { init().await.ok_or(NotCached) };
        let result = self
            .region
            .call(
                key,
                init,
                OnBackendError::CallDirectly,
                Some(self.spawner(key)),
            )
            .await;
        super::optional(result)
    }
}

/// The type of "no background" for [`AsyncRegion::call`].
type NoSpawn<M, F> = fn(AsyncGuard<M>, F) -> Result<(), (AsyncGuard<M>, F)>;

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
    fn spawner<E, F, Fut, O>(
        &self,
        key: &K,
    ) -> impl FnOnce(AsyncGuard<M>, F) -> Result<(), (AsyncGuard<M>, F)>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Made<V> + Send + 'static,
    {
        let (region, key) = (self.region.clone(), key.clone());
        move |guard: AsyncGuard<M>, init: F| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return Err((guard, init));
            };
            // The spawned creator's error is counted and dropped at once, so that it need not
            // be `Send` to cross the task's awaits.
            let init = move || async move { init().await.map_err(drop) };
            runtime.spawn(async move {
                let mutex = Arc::clone(&guard.mutex);
                let fence = mutex.fence();
                let _ = region.create(&key, &mutex, init, fence.as_ref()).await;
                guard.release().await;
            });
            Ok(())
        }
    }
}

/// A held mutex in async code: released by awaiting [`release`](Self::release), or, when
/// dropped (a cancelled call), in place for a mutex that releases at once and in a spawned
/// task otherwise, so that a drop never blocks a worker thread.
pub(crate) struct AsyncGuard<M: AsyncRawMutex + 'static> {
    pub(super) mutex: Arc<M>,
    held: bool,
}

impl<M: AsyncRawMutex + 'static> AsyncGuard<M> {
    async fn try_acquire(mutex: &Arc<M>) -> Result<Option<Self>, BackendError> {
        Ok(mutex.try_acquire_async().await?.then(|| AsyncGuard {
            mutex: Arc::clone(mutex),
            held: true,
        }))
    }

    pub(super) async fn release(mut self) {
        self.held = false;
        // A failed release (a lost lease) has nowhere to go: the mutex's own expiry frees it.
        let _ = self.mutex.release_async().await;
    }
}

impl<M: AsyncRawMutex + 'static> Drop for AsyncGuard<M> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        if !self.mutex.releases_at_once() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let mutex = Arc::clone(&self.mutex);
                runtime.spawn(async move {
                    let _ = mutex.release_async().await;
                });
                return;
            }
        }
        let _ = self.mutex.release();
    }
}

/// Runs `future` marked as holding every mutex of `held` (in this task), so that a creator
/// asking for one of their keys gets an error instead of waiting for itself.
pub(super) async fn while_holding<M, F: Future>(held: &[&Arc<M>], future: F) -> F::Output {
    let mut marks = HOLDING.try_with(Clone::clone).unwrap_or_default();
    marks.extend(held.iter().map(|mutex| address(mutex)));
    HOLDING.scope(marks, future).await
}

fn address<M>(mutex: &Arc<M>) -> usize {
    Arc::as_ptr(mutex) as *const () as usize
}

/// Whether this task runs the creator of `mutex`'s key.
fn holding<M>(mutex: &Arc<M>) -> bool {
    let address = address(mutex);
    HOLDING
        .try_with(|held| held.contains(&address))
        .unwrap_or(false)
}

/// Waits until `mutex` may have been released: woken by it, or, for a mutex that cannot wake
/// waiters, after `pause` (doubled for the next time). `false` if `deadline` passed first.
async fn released<M: RawMutex>(
    mutex: &Arc<M>,
    pause: &mut Duration,
    deadline: Option<Instant>,
) -> bool {
    let wait = async {
        let mut registered = false;
        let woken = poll_fn(|cx| {
            if registered {
                // Woken (or polled spuriously): the caller reads and tries again.
                return Poll::Ready(true);
            }
            match mutex.wake_on_release(cx.waker()) {
                WakeOnRelease::Free => Poll::Ready(true),
                WakeOnRelease::Registered => {
                    registered = true;
                    Poll::Pending
                }
                WakeOnRelease::Unsupported => Poll::Ready(false),
            }
        })
        .await;
        if !woken {
            tokio::time::sleep(*pause).await;
            *pause = (*pause * 2).min(POLL_MAX);
        }
    };
    match deadline {
        None => {
            wait.await;
            true
        }
        Some(deadline) => tokio::time::timeout_at(deadline, wait).await.is_ok(),
    }
}

/// A future whose panic is caught, for a creator whose failure the stale value covers.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(inner).poll(cx)
        })) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Counts a panic of an async creator as the stack unwinds through it. A future dropped while
/// it runs (cancelled) is not a panic and is not counted as one.
struct CountPanic<'a>(&'a Counters);

impl Drop for CountPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.add(Counter::Panic);
        }
    }
}

impl<K, V, S, M: RawMutex> fmt::Debug for AsyncRegion<K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncRegion").field(&self.region).finish()
    }
}

impl<K, V, S, M: RawMutex> fmt::Debug for AsyncBackground<'_, K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncBackground")
            .field("region", &self.region.region.inner.name)
            .finish()
    }
}
