//! The async driver of the protocol: a short loop that reads, locks and waits as
//! [`Protocol`] says and stops where the caller must act, as the blocking driver
//! (`lock/drive.rs`) does, awaiting where that one blocks. It reads through [`AsyncStore`],
//! takes mutexes through [`AsyncRawMutex`], and waits for a held mutex by being woken at its
//! release (or, for a mutex that cannot wake it, by sleeping between tries), so no call
//! blocks a worker thread.

use std::borrow::Borrow;
use std::future::{poll_fn, Future};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::AsyncRegion;
use crate::lock::drive::{address, first_timeout, held_by_this_thread, Marks, Stop};
use crate::lock::protocol::{Found, Next, Protocol, Refused, Waited};
use crate::region::creation::Guard;
use crate::region::expiry::Age;
use crate::region::verbs::Stored;
use crate::region::{AsyncStore, CacheKey, CacheValue, KeyMutex, Stamp};
use crate::{AsyncRawMutex, BackendError, RawMutex, WakeOnRelease};

/// How long an async waiter sleeps between tries of a mutex that cannot wake it: doubled from
/// the first value up to the last.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);

impl<K, V, S, M> AsyncRegion<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// `key`'s value and stamp, from a store that answers at once without a future.
    pub(in crate::region) async fn stored(
        &self,
        key: &K,
    ) -> Result<Option<(V, Stamp)>, BackendError> {
        let store = &self.region.inner.store;
        if store.answers_at_once() {
            store.get(key)
        } else {
            store.get_async(key).await
        }
    }

    /// The hot path of every async call where the store answers at once, run before the
    /// call's future is made: a fresh value, counted as a hit, so that a hit builds, moves and
    /// drops no future but its verb's; or what the read found, the call's first read.
    /// `Err(None)` for a store read asynchronously: the call reads it.
    #[inline]
    pub(in crate::region) fn at_once<Q>(&self, key: &Q) -> Result<V, Option<Stored<V>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let store = &self.region.inner.store;
        if !store.answers_at_once() {
            // A store on a server may still hold some keys at hand (a near cache's memory).
            return match store.get_at_once(key) {
                Some((value, stamp)) if self.region.age(stamp) == Age::Fresh => {
                    self.region.stats().add(crate::stats::Counter::Hit);
                    Ok(value)
                }
                Some(found) => Err(Some(Ok(Some(found)))),
                None => Err(None),
            };
        }
        let mut read = None;
        match self.region.fresh(key, &mut read) {
            Some(value) => Ok(value),
            None => Err(read),
        }
    }

    /// `key`'s value and stamp, by the key or a borrowed form of it: without a future nor the
    /// owned key where the store answers at once.
    pub(in crate::region) async fn stored_by<Q>(
        &self,
        key: &Q,
    ) -> Result<Option<(V, Stamp)>, BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let store = &self.region.inner.store;
        if store.answers_at_once() {
            store.get_by(key)
        } else if let Some(found) = store.get_at_once(key) {
            Ok(Some(found))
        } else {
            store.get_async(&key.to_owned()).await
        }
    }

    /// A read of `key`, judged.
    pub(in crate::region) async fn read(&self, key: &K) -> Result<Found<V>, BackendError> {
        Ok(self.region.judge(self.stored(key).await?))
    }

    /// Reads and locks as the protocol says, from `next` on, until the call needs its creator
    /// or ends: the one loop of every async call, a single key's and each key of a batch. A
    /// mutex held when the call ends without creating is released here.
    pub(in crate::region) async fn advance(
        &self,
        key: &mut KeyMutex<'_, K, M>,
        protocol: &mut Protocol<'_, V>,
        mut next: Next<V>,
    ) -> Stop<V, AsyncGuard<M>> {
        let inner = &self.region.inner;
        // The wait's limit, and whether the waiter then creates or gives up: from the first
        // wait, however many holders come and go.
        let mut deadline = None;
        let mut pause = POLL_FIRST;
        let mut guard = None;
        let stop = loop {
            next = match next {
                Next::Read => protocol.read(self.read(key.key).await),
                Next::TryLock => {
                    let taken = AsyncGuard::try_acquire(key.get()).await;
                    protocol.try_lock(taken.map(|taken| {
                        guard = taken;
                        guard.is_some()
                    }))
                }
                Next::Lock => {
                    let deadline = *deadline.get_or_insert_with(|| {
                        let (timeout, ended) =
                            first_timeout(inner.lock_timeout, inner.hard_timeout);
                        timeout
                            .and_then(|t| Instant::now().checked_add(t))
                            .map(|at| (at, ended))
                    });
                    let waited = wait(key.get(), &mut pause, deadline, || protocol.blocks()).await;
                    protocol.lock(waited.map(|(waited, taken)| {
                        guard = taken;
                        waited
                    }))
                }
                Next::Create { rescue } => return Stop::Create { guard, rescue },
                Next::Hand(hand) => match guard.take() {
                    Some(held) => return Stop::Hand(held, hand),
                    // Handing off is only asked for while holding; without the mutex, create.
                    None => match protocol.refused(hand) {
                        Refused::Done(served, value) => break Stop::Served(served, value),
                        Refused::Create { rescue } => {
                            return Stop::Create {
                                guard: None,
                                rescue,
                            }
                        }
                    },
                },
                Next::Done(served, value) => break Stop::Served(served, value),
                Next::Direct(err) => break Stop::Direct(err),
                Next::Fail(failure) => break Stop::Failed(failure),
            };
        };
        if let Some(guard) = guard {
            guard.release().await;
        }
        stop
    }
}

/// Waits for `mutex`: taken, released by its holder (read before taking it: a thousand woken
/// waiters then find the value instead of taking the mutex in turn), or timed out.
async fn wait<M: AsyncRawMutex + 'static>(
    mutex: &Arc<M>,
    pause: &mut Duration,
    deadline: Option<(Instant, Waited)>,
    blocks: impl FnOnce(),
) -> Result<(Waited, Option<AsyncGuard<M>>), BackendError> {
    if let Some(guard) = AsyncGuard::try_acquire(mutex).await? {
        return Ok((Waited::Acquired, Some(guard)));
    }
    if held_by_this_thread(mutex) {
        return Ok((Waited::WouldDeadlock, None));
    }
    blocks();
    let (at, ended) = match deadline {
        Some((at, ended)) => (Some(at), ended),
        None => (None, Waited::TimedOut),
    };
    Ok(if released(mutex, pause, at).await {
        (Waited::Released, None)
    } else {
        (ended, None)
    })
}

/// Waits for `mutex` as long as it takes, for a call that must hold it (a refresh).
pub(in crate::region) async fn acquire<M: AsyncRawMutex + 'static>(
    mutex: &Arc<M>,
) -> Result<AsyncGuard<M>, BackendError> {
    let mut pause = POLL_FIRST;
    loop {
        if let Some(guard) = AsyncGuard::try_acquire(mutex).await? {
            return Ok(guard);
        }
        released(mutex, &mut pause, None).await;
    }
}

/// A held mutex in async code: released by awaiting [`release`](Self::release), or, when
/// dropped (a cancelled call), in place for a mutex that releases at once and in a spawned
/// task otherwise, so that a drop never blocks a worker thread.
pub(crate) struct AsyncGuard<M: AsyncRawMutex + 'static> {
    mutex: Arc<M>,
    held: bool,
}

impl<M: AsyncRawMutex + 'static> AsyncGuard<M> {
    async fn try_acquire(mutex: &Arc<M>) -> Result<Option<Self>, BackendError> {
        Ok(mutex.try_acquire_async().await?.then(|| AsyncGuard {
            mutex: Arc::clone(mutex),
            held: true,
        }))
    }

    pub(in crate::region) async fn release(mut self) {
        self.held = false;
        // A failed release (a lost lease) has nowhere to go: the mutex's own expiry frees it.
        // One that returns at once (a `LocalMutex`) is released without a future.
        if self.mutex.releases_at_once() {
            let _ = self.mutex.release();
        } else {
            let _ = self.mutex.release_async().await;
        }
    }
}

impl<M: AsyncRawMutex + 'static> Guard<M> for AsyncGuard<M> {
    fn mutex(&self) -> &Arc<M> {
        &self.mutex
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

/// `future` marked as holding every mutex of `held` (in this task, with the marks it had), so
/// that a creator asking for one of their keys gets an error instead of waiting for itself.
/// The future is borrowed pinned where its caller made it: a creation's future, the largest
/// part of an async call's state, is not moved again (a task-local's scope took it by value,
/// two copies of it per miss).
pub(in crate::region) fn while_holding<'m, 'f, M: 'm, F: Future>(
    held: impl IntoIterator<Item = &'m Arc<M>>,
    future: Pin<&'f mut F>,
) -> Marked<'f, F> {
    let mut marks = Marks::of_this_thread();
    for mutex in held {
        marks.push(address(mutex));
    }
    Marked { marks, future }
}

/// A future polled with its task's marks as this thread's (see [`while_holding`]).
pub(in crate::region) struct Marked<'f, F> {
    marks: Marks,
    future: Pin<&'f mut F>,
}

impl<F: Future> Future for Marked<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Marked { marks, future } = &mut *self;
        // Swapped in for the poll, and back when it returns or unwinds: a task polled next on
        // this thread sees its own marks, and a creator nested in this one sees these.
        let _marked = Swapped::new(marks);
        future.as_mut().poll(cx)
    }
}

/// Marks swapped with the thread's while it lives.
struct Swapped<'a>(&'a mut Marks);

impl<'a> Swapped<'a> {
    fn new(marks: &'a mut Marks) -> Self {
        marks.swap_with_this_thread();
        Swapped(marks)
    }
}

impl Drop for Swapped<'_> {
    fn drop(&mut self) {
        self.0.swap_with_this_thread();
    }
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

/// A future whose panic is caught, so that a creator's panic is counted and, when the stale
/// value covers it, answered with that value.
pub(in crate::region) struct CatchUnwind<F>(pub(in crate::region) F);

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
