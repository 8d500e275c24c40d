//! The slow paths of a region: reading for the lock, storing, running the creator, and one
//! call through the dogpile lock (blocking); the async form is in `future.rs`.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::Ordering;

use super::stats::Counter;
use super::{take, trace, CountOnUnwind, Found, OnBackendError, Region, RegionError, Store};
use crate::{
    BackendError, Lock, LockError, NeedRegeneration, OwnedMutexGuard, RawMutex, Timestamp,
};

impl<K, V, S, M> Region<K, V, S, M>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    pub(super) fn read(&self, key: &K) -> Result<Found<V>, BackendError> {
        Ok(match self.inner.store.get(key)? {
            None => Found::Missing,
            Some((value, created)) => match self.judge(created) {
                None => Found::Missing,
                Some(true) => Found::Expired(value),
                Some(false) => Found::Fresh(value),
            },
        })
    }

    /// The getter a `Lock` sees: hard-invalidated values are missing; expiry is judged by the
    /// `is_expired` rule given to the lock.
    pub(super) fn getter(&self, key: &K) -> Result<(V, Timestamp), NeedRegeneration> {
        match self.inner.store.get(key) {
            Ok(Some((value, created))) if self.judge(created).is_some() => Ok((value, created)),
            _ => Err(NeedRegeneration),
        }
    }

    pub(super) fn store(&self, key: &K, value: &V) -> Result<(), BackendError> {
        let inner = &*self.inner;
        // Never stamp a value at or before an invalidation, even with a coarse clock.
        let floor = inner
            .missing_until
            .load(Ordering::Acquire)
            .max(inner.expired_until.load(Ordering::Acquire))
            .saturating_add(1);
        let created = Timestamp::from_nanos(inner.now().as_nanos().max(floor));
        inner.store.put(key, value, created)
    }

    /// Runs the creator, stores an `Ok` the region caches, counts the outcome (panics included).
    pub(super) fn run_creator<E>(
        &self,
        key: &K,
        creator: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let span = trace::Regeneration::start(&self.inner.name, key);
        let panicking = CountOnUnwind(&self.inner.stats);
        let created = creator();
        std::mem::forget(panicking);
        span.finish(self.record_creation(key, &created));
        created
    }

    /// Stores what a creator made, if the region caches it, and counts the outcome.
    pub(super) fn record_creation<E>(&self, key: &K, created: &Result<V, E>) -> &'static str {
        let stats = &self.inner.stats;
        match created {
            Ok(value)
                if self
                    .inner
                    .should_cache
                    .as_ref()
                    .map_or(true, |accepts| accepts(value)) =>
            {
                match self.store(key, value) {
                    Ok(()) => {
                        stats.add(Counter::Regeneration);
                        "stored"
                    }
                    Err(_) => {
                        stats.add(Counter::Error);
                        "store failed"
                    }
                }
            }
            Ok(_) => {
                stats.add(Counter::Error);
                "not cached"
            }
            Err(_) => {
                stats.add(Counter::Error);
                "error"
            }
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn create_or_wait(&self, key: &K, creator: impl FnOnce() -> V) -> V {
        let slot = Cell::new(Some(move || Ok::<_, Infallible>(creator())));
        match self.enter(
            key,
            &slot,
            None::<fn(OwnedMutexGuard<M>) -> Result<(), Infallible>>,
            OnBackendError::CallDirectly,
        ) {
            Ok(value) => value,
            Err(err) => err.fail(),
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn try_create_or_wait<E>(
        &self,
        key: &K,
        creator: impl FnOnce() -> Result<V, E>,
        policy: OnBackendError,
    ) -> Result<V, RegionError<E>> {
        self.enter(
            key,
            &Cell::new(Some(creator)),
            None::<fn(OwnedMutexGuard<M>) -> Result<(), E>>,
            policy,
        )
    }

    #[cold]
    #[inline(never)]
    pub(super) fn try_create_or_wait_background<E, C>(
        &self,
        key: &K,
        creator: C,
        policy: OnBackendError,
    ) -> Result<V, RegionError<E>>
    where
        C: FnOnce() -> Result<V, E> + Send + 'static,
    {
        let Some(pool) = &self.inner.pool else {
            return self.try_create_or_wait(key, creator, policy);
        };
        let slot = Cell::new(Some(creator));
        let to_pool = |guard: OwnedMutexGuard<M>| {
            let creator = slot.take();
            let (region, key) = (self.clone(), key.clone());
            let job = move || {
                if let Some(creator) = creator {
                    let _ = region.run_creator(&key, creator);
                }
                drop(guard);
            };
            if let Err(full) = pool.try_spawn(job) {
                // Threads and queue are busy: regenerate here rather than grow the pool.
                full.into_job()();
            }
            Ok(())
        };
        self.enter(key, &slot, Some(to_pool), policy)
    }

    /// One call through the dogpile lock of `key`. The creator sits in `slot` so that whichever
    /// path needs it (this caller, the background, or a waiter that gave up) can take it.
    pub(super) fn enter<E, C, B>(
        &self,
        key: &K,
        slot: &Cell<Option<C>>,
        background: Option<B>,
        policy: OnBackendError,
    ) -> Result<V, RegionError<E>>
    where
        C: FnOnce() -> Result<V, E>,
        B: FnOnce(OwnedMutexGuard<M>) -> Result<(), E>,
    {
        let inner = &*self.inner;
        let was_missing = match self.read(key) {
            Ok(Found::Fresh(value)) => {
                inner.stats.add(Counter::Hit);
                return Ok(value);
            }
            Ok(Found::Expired(_)) => false,
            Ok(Found::Missing) => true,
            Err(err) => return self.backend_failed(key, slot, err, policy),
        };
        if was_missing {
            inner.stats.add(Counter::Miss);
        }
        let created_here = Cell::new(false);
        let create = || {
            created_here.set(true);
            self.run_creator(key, take(slot))
        };
        let is_expired = |created| self.judge(created) != Some(false);
        let mutex = inner.mutexes.get(key);
        let mut lock = Lock::new(&mutex, create, || self.getter(key), self.expiry)
            .with_is_expired(&is_expired);
        if let Some(timeout) = inner.lock_timeout {
            lock = lock.with_lock_timeout(timeout);
        }
        if let Some(background) = background {
            lock = lock.with_async_creator(background);
        }
        match lock.enter() {
            Ok(value) => {
                if !created_here.get() {
                    inner.stats.add(if was_missing {
                        Counter::Wait
                    } else {
                        Counter::StaleHit
                    });
                }
                Ok(value)
            }
            Err(LockError::Creator(err)) => Err(RegionError::Creator(err)),
            Err(LockError::Timeout(_)) => {
                inner.stats.add(Counter::LockTimeout);
                self.run_creator(key, take(slot))
                    .map_err(RegionError::Creator)
            }
            Err(LockError::WouldDeadlock) => Err(self.recursion(key)),
            Err(LockError::Mutex(err)) => self.backend_failed(key, slot, err, policy),
        }
    }

    #[cold]
    pub(super) fn recursion<E>(&self, key: &K) -> RegionError<E> {
        RegionError::Recursion {
            region: self.inner.name.clone(),
            key: format!("{key:?}"),
        }
    }

    #[cold]
    pub(super) fn backend_failed<E, C>(
        &self,
        key: &K,
        slot: &Cell<Option<C>>,
        err: BackendError,
        policy: OnBackendError,
    ) -> Result<V, RegionError<E>>
    where
        C: FnOnce() -> Result<V, E>,
    {
        match policy {
            OnBackendError::CallDirectly => {
                self.inner.stats.add(Counter::DirectCall);
                trace::direct_call(&self.inner.name, key, &err);
                take(slot)().map_err(RegionError::Creator)
            }
            OnBackendError::ReturnError => Err(RegionError::Backend(err)),
        }
    }
}
