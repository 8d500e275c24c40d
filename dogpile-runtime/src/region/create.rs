//! A region's blocking calls past the hot path: one call through the protocol's blocking
//! driver, and the creator run that stores and counts. The async calls are in
//! `asynchronous.rs`.

use std::marker::PhantomData;
use std::sync::Arc;

use super::stats::Counter;
use super::{
    trace, CacheKey, CacheValue, Made, OnBackendError, Region, RegionError, Served, Store,
};
use crate::lock::drive::{self, Exit, Handoff, Holding};
use crate::lock::protocol::{Failure, Found, Protocol, Rules};
use crate::lock::Fence;
use crate::{BackendError, OwnedMutexGuard, RawMutex};

/// A region call's view of its key, for the blocking driver.
pub(super) struct KeyOf<'a, K, V, S, M: RawMutex> {
    pub(super) region: &'a Region<K, V, S, M>,
    pub(super) key: &'a K,
    pub(super) mutex: Arc<M>,
}

impl<K, V, S, M> drive::Key<V> for KeyOf<'_, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    type Mutex = M;

    fn mutex(&self) -> &Arc<M> {
        &self.mutex
    }

    fn read(&mut self) -> Result<Found<V>, BackendError> {
        self.region.read(self.key)
    }
}

/// A creator that, run by the driver, stores what it made; run directly (the backend failed),
/// it is the bare `init`.
pub(super) struct Storing<'a, K, V, S, M: RawMutex, C, O> {
    pub(super) region: &'a Region<K, V, S, M>,
    pub(super) key: &'a K,
    pub(super) init: C,
    pub(super) made: PhantomData<fn() -> O>,
}

impl<K, V, S, M, C, E, O> drive::Create<V, E> for Storing<'_, K, V, S, M, C, O>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
    C: FnOnce() -> Result<O, E>,
    O: Made<V>,
{
    fn create(self, fence: Option<Fence>) -> Result<V, E> {
        self.region.run_creator(self.key, self.init, fence.as_ref())
    }
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// The protocol's rules for this handle's calls.
    pub(super) fn rules(&self, policy: OnBackendError, background: bool) -> Rules {
        let inner = &*self.inner;
        Rules {
            lock_timeout: inner.lock_timeout,
            create_on_timeout: true,
            background,
            direct_on_backend_error: policy == OnBackendError::CallDirectly,
            refresh_ahead: background && inner.refresh_ahead.is_some(),
            stale_if_error: inner.stale_if_error_nanos.is_some(),
        }
    }

    /// One blocking call through the protocol, past the hot path.
    #[cold]
    #[inline(never)]
    pub(super) fn call<E>(
        &self,
        key: &K,
        init: impl FnOnce() -> Result<V, E>,
        policy: OnBackendError,
    ) -> Result<(V, Served), RegionError<E>> {
        self.call_with(key, init, policy, None::<fn(_, _) -> _>)
    }

    /// One blocking call, with `hand` taking expired values' regenerations elsewhere. The
    /// creator makes a value, or a value with its own lifetime.
    pub(super) fn call_with<'a, E, C, O, H>(
        &'a self,
        key: &'a K,
        init: C,
        policy: OnBackendError,
        hand: Option<H>,
    ) -> Result<(V, Served), RegionError<E>>
    where
        C: FnOnce() -> Result<O, E>,
        O: Made<V>,
        H: FnOnce(
            OwnedMutexGuard<M>,
            Storing<'a, K, V, S, M, C, O>,
        ) -> Handoff<OwnedMutexGuard<M>, Storing<'a, K, V, S, M, C, O>, E>,
    {
        let inner = &*self.inner;
        let mut view = KeyOf {
            region: self,
            key,
            mutex: inner.mutexes.get(key),
        };
        let protocol = Protocol::new(self.rules(policy, hand.is_some()), Some(&inner.stats));
        let creator = Storing {
            region: self,
            key,
            init,
            made: PhantomData,
        };
        match drive::drive(&mut view, protocol, creator, hand) {
            Exit::Served(served, value) => Ok((value, served)),
            Exit::Created(created) => created
                .map(|value| (value, Served::Created))
                .map_err(RegionError::Creator),
            Exit::Direct(creator, err) => self
                .direct(key, &err, creator.init)
                .map(|made| (made.into_parts().0, Served::Direct))
                .map_err(RegionError::Creator),
            Exit::Failed(failure) => Err(self.failure(key, failure)),
        }
    }

    /// Waits for `key`'s mutex (never beside another creator of the key), runs `init`, stores
    /// an `Ok`.
    pub(super) fn refresh_blocking<E>(
        &self,
        key: &K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, RegionError<E>> {
        let mutex = self.inner.mutexes.get(key);
        if drive::held_by_this_thread(&mutex) {
            return Err(self.recursion(key));
        }
        let guard = OwnedMutexGuard::acquire(Arc::clone(&mutex)).map_err(RegionError::Backend)?;
        let holding = Holding::enter(&mutex);
        let created = self.run_creator(key, init, mutex.fence().as_ref());
        drop(guard);
        drop(holding);
        created.map_err(RegionError::Creator)
    }

    /// Runs the creator, stores an `Ok` the region caches (only while `fence`, if any, still
    /// holds), counts the outcome (panics included).
    pub(super) fn run_creator<E, O: Made<V>>(
        &self,
        key: &K,
        init: impl FnOnce() -> Result<O, E>,
        fence: Option<&Fence>,
    ) -> Result<V, E> {
        let span = trace::Regeneration::start(&self.inner.name, key);
        let panicking = CountOnUnwind(&self.inner.stats);
        let made = init();
        std::mem::forget(panicking);
        let (created, lifetime) = match made.map(Made::into_parts) {
            Ok((value, lifetime)) => (Ok(value), lifetime),
            Err(err) => (Err(err), None),
        };
        let stored = match &created {
            Ok(value) if self.caches(value) => {
                let store = &self.inner.store;
                let stamp = self.stamp_value(value, lifetime);
                Some(match fence {
                    None => store.put(key, value, stamp).map(|()| true),
                    Some(fence) => store.put_fenced(key, value, stamp, fence),
                })
            }
            _ => None,
        };
        span.finish(self.count_creation(created.is_ok(), stored));
        created
    }

    /// Whether the region's cache rule accepts `value`.
    pub(super) fn caches(&self, value: &V) -> bool {
        self.inner
            .should_cache
            .as_ref()
            .is_none_or(|accepts| accepts(value))
    }

    /// Counts how a creator run ended (`stored`: what the store said of its value, if it was
    /// offered: written, refused by the fence, or failed) and names it for the span.
    pub(super) fn count_creation(
        &self,
        ok: bool,
        stored: Option<Result<bool, BackendError>>,
    ) -> &'static str {
        let stats = &self.inner.stats;
        let (counter, outcome) = match (ok, stored) {
            (true, Some(Ok(true))) => {
                self.stored();
                (Counter::Regeneration, "stored")
            }
            (true, Some(Ok(false))) => (Counter::RefusedWrite, "refused: the lease ran out"),
            (true, Some(Err(_))) => (Counter::Error, "store failed"),
            (true, None) => (Counter::Error, "not cached"),
            (false, _) => (Counter::Error, "error"),
        };
        stats.add(counter);
        outcome
    }

    /// Runs `init` without the cache, because the store or mutex failed.
    #[cold]
    pub(super) fn direct<E, O>(
        &self,
        key: &K,
        err: &BackendError,
        init: impl FnOnce() -> Result<O, E>,
    ) -> Result<O, E> {
        self.note_direct(key, err);
        init()
    }

    pub(super) fn note_direct(&self, key: &K, err: &BackendError) {
        self.inner.stats.add(Counter::DirectCall);
        trace::direct_call(&self.inner.name, key, err);
    }

    #[cold]
    pub(super) fn failure<E>(&self, key: &K, failure: Failure) -> RegionError<E> {
        match failure {
            Failure::WouldDeadlock => self.recursion(key),
            Failure::Backend(err) => RegionError::Backend(err),
            // A region's waiter that times out creates the value itself.
            Failure::Timeout(_) => unreachable!("a region never fails on its lock timeout"),
        }
    }

    #[cold]
    pub(super) fn recursion<E>(&self, key: &K) -> RegionError<E> {
        RegionError::Recursion {
            region: self.inner.name.clone(),
            key: format!("{key:?}"),
        }
    }
}

/// Counts a panic of the creator as the stack unwinds through it; forgotten on a normal return.
struct CountOnUnwind<'a>(&'a super::Counters);

impl Drop for CountOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.add(Counter::Panic);
    }
}
