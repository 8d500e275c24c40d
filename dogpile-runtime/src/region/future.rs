//! The region from async code (feature `tokio`): the same rules as the blocking calls, on the
//! same per-key mutexes, so sync and async callers of one region share values and creators.
//!
//! | the key has   | the call                                                               |
//! |---------------|------------------------------------------------------------------------|
//! | a fresh value | returns it; never awaits                                               |
//! | an expired one| one task regenerates (in place or spawned); the others return the stale value at once |
//! | no value      | one task creates; the others await its mutex's release (no thread blocked), then read |
//!
//! Cancellation: the creator runs inside the caller's future while it holds the key's
//! [`OwnedMutexGuard`]; dropping that future drops the guard, which releases the mutex and
//! wakes the waiters, and stores nothing. A waiter then becomes the creator.

use std::fmt::Debug;
use std::future::{poll_fn, Future};
use std::hash::Hash;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::{Counter, Counters};
use super::{Found, OnBackendError, Region, RegionError, Store};
use crate::{BackendError, OwnedMutexGuard, RawMutex, WakeOnRelease};

tokio::task_local! {
    /// The mutexes whose creator runs in this task, to turn a wait for one's own key into an
    /// error instead of a deadlock.
    static HOLDING: Vec<usize>;
}

/// How long an async waiter sleeps between tries of a mutex that cannot wake it: doubled from
/// the first value up to the last.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);

impl<K, V, S, M> Region<K, V, S, M>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// [`get_or_create`](Self::get_or_create) for async code: the creator returns a future.
    /// Waiting tasks never block a worker thread.
    ///
    /// # Panics
    ///
    /// As `get_or_create`: if the creator panics (that caller only), or if it asks for its own
    /// key again.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let region: Region<u32, String> = Region::builder().build();
    /// let name = region.get_or_create_async(&7, || async { "seven".to_string() }).await;
    /// assert_eq!(name, "seven");
    /// # }
    /// ```
    pub async fn get_or_create_async<F, Fut>(&self, key: &K, creator: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let creator = move || async move { Ok::<_, std::convert::Infallible>(creator().await) };
        // No error to return: a failing backend means a direct call.
        match self
            .enter_async(key, creator, in_place(), OnBackendError::CallDirectly)
            .await
        {
            Ok(value) => value,
            Err(err) => err.fail(),
        }
    }

    /// [`get_or_try_create`](Self::get_or_try_create) for async code: only `Ok` is stored; an
    /// error reaches this caller, and waiters then retry one at a time.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let region: Region<u32, u32> = Region::builder().build();
    /// let failed = region.get_or_try_create_async(&1, || async { Err::<u32, _>("down") }).await;
    /// assert!(failed.is_err());
    /// let ok = region.get_or_try_create_async(&1, || async { Ok::<_, ()>(5) }).await;
    /// assert_eq!(ok.unwrap(), 5);
    /// # }
    /// ```
    pub async fn get_or_try_create_async<E, F, Fut>(
        &self,
        key: &K,
        creator: F,
    ) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.enter_async(key, creator, in_place(), self.on_backend_error)
            .await
    }

    /// [`get_or_try_create_async`](Self::get_or_try_create_async), but an expired value is
    /// regenerated in a spawned task: the task that wins the key's mutex returns the stale
    /// value at once, and the mutex is released when the spawned creator finishes. Outside a
    /// tokio runtime, the creator runs in place.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let region: Region<u32, u32> = Region::builder().build();
    /// let v = region.get_or_try_create_background_async(&1, || async { Ok::<_, ()>(1) }).await;
    /// assert_eq!(v.unwrap(), 1);
    /// # }
    /// ```
    pub async fn get_or_try_create_background_async<E, F, Fut>(
        &self,
        key: &K,
        creator: F,
    ) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
        S: 'static,
    {
        let spawn = |guard: OwnedMutexGuard<M>, creator: F| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return Err((guard, creator));
            };
            let (region, key) = (self.clone(), key.clone());
            runtime.spawn(async move {
                let mutex = Arc::clone(guard.mutex());
                let _ = region.create_async(&key, &mutex, creator).await;
                drop(guard);
            });
            Ok(())
        };
        self.enter_async(key, creator, Some(spawn), self.on_backend_error)
            .await
    }

    /// [`refresh`](Self::refresh) for async code: awaits the key's mutex, runs the creator,
    /// stores an `Ok`.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let region: Region<u8, u8> = Region::builder().build();
    /// region.insert(&1, 1).unwrap();
    /// assert_eq!(region.refresh_async(&1, || async { Ok::<_, ()>(2) }).await.unwrap(), 2);
    /// assert_eq!(region.peek(&1), Some(2));
    /// # }
    /// ```
    pub async fn refresh_async<E, F, Fut>(&self, key: &K, creator: F) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let mutex = self.inner.mutexes.get(key);
        if holding(&mutex) {
            return Err(self.recursion(key));
        }
        let mut pause = POLL_FIRST;
        let _guard = loop {
            match OwnedMutexGuard::try_acquire(Arc::clone(&mutex)) {
                Ok(Some(guard)) => break guard,
                Ok(None) => {
                    released(&mutex, &mut pause, None).await;
                }
                Err(err) => return Err(RegionError::Backend(err)),
            }
        };
        self.create_async(key, &mutex, creator)
            .await
            .map_err(RegionError::Creator)
    }

    /// One async call through the dogpile rules of `key`.
    /// `background`, if given, takes the guard and the creator to run elsewhere, or hands both
    /// back when it cannot.
    async fn enter_async<E, F, Fut, B>(
        &self,
        key: &K,
        creator: F,
        background: Option<B>,
        policy: OnBackendError,
    ) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        B: FnOnce(OwnedMutexGuard<M>, F) -> Result<(), (OwnedMutexGuard<M>, F)>,
    {
        let stats = &self.inner.stats;
        let stale = match self.read(key) {
            Ok(Found::Fresh(value)) => {
                stats.add(Counter::Hit);
                return Ok(value);
            }
            Ok(Found::Expired(value)) => Some(value),
            Ok(Found::Missing) => None,
            Err(err) => return self.backend_failed_async(key, creator, err, policy).await,
        };
        let mutex = self.inner.mutexes.get(key);
        if let Some(stale) = stale {
            let guard = match OwnedMutexGuard::try_acquire(Arc::clone(&mutex)) {
                Ok(Some(guard)) => guard,
                Ok(None) => {
                    // Another caller regenerates: the stale value, at once.
                    stats.add(Counter::StaleHit);
                    return Ok(stale);
                }
                Err(err) => return self.backend_failed_async(key, creator, err, policy).await,
            };
            // Read again under the mutex: the previous holder may have just stored a value.
            if let Ok(Found::Fresh(value)) = self.read(key) {
                stats.add(Counter::Hit);
                return Ok(value);
            }
            let (guard, creator) = match background {
                Some(spawn) => match spawn(guard, creator) {
                    Ok(()) => {
                        // As the blocking path counts it: this caller got the stale value.
                        stats.add(Counter::StaleHit);
                        return Ok(stale);
                    }
                    Err(back) => back,
                },
                None => (guard, creator),
            };
            let created = self.create_async(key, &mutex, creator).await;
            drop(guard);
            return created.map_err(RegionError::Creator);
        }

        stats.add(Counter::Miss);
        let deadline = self.inner.lock_timeout.map(|t| Instant::now() + t);
        let mut pause = POLL_FIRST;
        loop {
            match OwnedMutexGuard::try_acquire(Arc::clone(&mutex)) {
                Ok(Some(guard)) => {
                    if let Ok(Found::Fresh(value) | Found::Expired(value)) = self.read(key) {
                        drop(guard);
                        stats.add(Counter::Wait);
                        return Ok(value);
                    }
                    let created = self.create_async(key, &mutex, creator).await;
                    drop(guard);
                    return created.map_err(RegionError::Creator);
                }
                Ok(None) => {}
                Err(err) => return self.backend_failed_async(key, creator, err, policy).await,
            }
            if holding(&mutex) {
                return Err(self.recursion(key));
            }
            if !released(&mutex, &mut pause, deadline).await {
                // Waited long enough: create here, beside the holder.
                stats.add(Counter::LockTimeout);
                return self
                    .create_async(key, &mutex, creator)
                    .await
                    .map_err(RegionError::Creator);
            }
            if let Ok(Found::Fresh(value) | Found::Expired(value)) = self.read(key) {
                stats.add(Counter::Wait);
                return Ok(value);
            }
        }
    }

    /// Runs the creator marked as holding `mutex` (in this task), then stores and counts.
    async fn create_async<E, F, Fut>(&self, key: &K, mutex: &Arc<M>, creator: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let span = super::trace::AsyncRegeneration::start(&self.inner.name, key);
        let unwinding = CountPanic(&self.inner.stats);
        let mut held = HOLDING.try_with(Clone::clone).unwrap_or_default();
        held.push(address(mutex));
        let created = HOLDING.scope(held, span.instrument(creator())).await;
        std::mem::forget(unwinding);
        span.finish(self.record_creation(key, &created));
        created
    }

    async fn backend_failed_async<E, F, Fut>(
        &self,
        key: &K,
        creator: F,
        err: BackendError,
        policy: OnBackendError,
    ) -> Result<V, RegionError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        match policy {
            OnBackendError::CallDirectly => {
                self.inner.stats.add(Counter::DirectCall);
                super::trace::direct_call(&self.inner.name, key, &err);
                creator().await.map_err(RegionError::Creator)
            }
            OnBackendError::ReturnError => Err(RegionError::Backend(err)),
        }
    }
}

/// No background: the creator runs in the caller.
#[allow(clippy::type_complexity)]
fn in_place<M: RawMutex, F>(
) -> Option<fn(OwnedMutexGuard<M>, F) -> Result<(), (OwnedMutexGuard<M>, F)>> {
    None
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
                // Woken (or polled spuriously): the caller tries the mutex again.
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
