//! A region's blocking call past the hot path: the protocol's blocking driver from the hot
//! path's read on, then the [`Creation`] it stops at. The async calls are in `asynchronous/`.

use std::sync::Arc;

use super::creation::Creation;
use super::verbs::First;
use super::{
    CacheKey, CacheValue, KeyMutex, Made, OnBackendError, Region, RegionError, Served, Store,
};
use crate::lock::drive::{self, Held, Stop};
use crate::lock::protocol::{Failure, Found, Hand, Protocol, Refused, Rules};
use crate::{BackendError, OwnedMutexGuard, RawMutex};

/// A region call's view of its key, for the blocking driver.
pub(super) struct KeyOf<'a, K: CacheKey, V, S, M: RawMutex> {
    region: &'a Region<K, V, S, M>,
    mutex: KeyMutex<'a, K, M>,
}

impl<'a, K: CacheKey, V, S, M: RawMutex> KeyOf<'a, K, V, S, M> {
    pub(super) fn new(region: &'a Region<K, V, S, M>, key: &'a K) -> Self {
        KeyOf {
            region,
            mutex: KeyMutex::new(region, key),
        }
    }
}

impl<K, V, S, M> drive::Key<V> for KeyOf<'_, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    type Mutex = M;

    fn mutex(&mut self) -> &Arc<M> {
        self.mutex.get()
    }

    #[inline]
    fn read(&mut self) -> Result<Found<V>, BackendError> {
        Ok(self
            .region
            .judge(self.region.inner.store.get(self.mutex.key)?))
    }
}

/// What a hand-off to the background became: taken (it runs the creator and releases the
/// mutex), or refused (no room), with the guard and the creator back.
pub(super) enum Handoff<G, C> {
    Taken,
    Refused(G, C),
}

/// The type of "no background" for [`Region::call_with`].
type NoHand<M, C> = fn(OwnedMutexGuard<M>, C) -> Handoff<OwnedMutexGuard<M>, C>;

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
            hard_timeout: inner.hard_timeout,
            background,
            direct_on_backend_error: policy == OnBackendError::CallDirectly,
            refresh_ahead: background && inner.refresh_ahead.is_some(),
            stale_if_error: inner.stale_if_error_nanos.is_some(),
        }
    }

    /// One blocking call past the hot path, from what its read found.
    #[cold]
    #[inline(never)]
    pub(super) fn call<E: Send + Sync + 'static, O: Made<V>>(
        &self,
        key: &K,
        first: First<V>,
        init: impl FnOnce() -> Result<O, E>,
        policy: OnBackendError,
    ) -> Result<(V, Served), RegionError<E>> {
        self.call_with(key, first, init, policy, None::<NoHand<M, _>>)
    }

    /// One blocking call, with `hand` taking expired values' regenerations elsewhere.
    pub(super) fn call_with<E: Send + Sync + 'static, O, C, H>(
        &self,
        key: &K,
        first: First<V>,
        init: C,
        policy: OnBackendError,
        hand: Option<H>,
    ) -> Result<(V, Served), RegionError<E>>
    where
        C: FnOnce() -> Result<O, E>,
        O: Made<V>,
        H: FnOnce(OwnedMutexGuard<M>, C) -> Handoff<OwnedMutexGuard<M>, C>,
    {
        let began = self.inner.failures.seq();
        let mut view = KeyOf::new(self, key);
        let mut protocol = Protocol::new(self.rules(policy, hand.is_some()), Some(self.stats()));
        let next = protocol.read(first.judged(self));
        let (guard, rescue) = match drive::advance(&mut view, &mut protocol, next) {
            Stop::Served(served, value) => return Ok((value, served)),
            Stop::Create { guard, rescue } => (guard, rescue),
            Stop::Hand(guard, handing) => {
                if self.backing_off(key) {
                    // The last regenerations failed: serve the value, try again later.
                    drop(guard);
                    let (served, value) = protocol.taken(handing);
                    return Ok((value, served));
                }
                let (guard, init) = match hand {
                    Some(hand) => match hand(guard, init) {
                        Handoff::Taken => {
                            let (served, value) = protocol.taken(handing);
                            return Ok((value, served));
                        }
                        Handoff::Refused(guard, init) => (guard, init),
                    },
                    None => (guard, init),
                };
                return match self.refused(&mut protocol, handing, guard) {
                    Ok(served) => Ok(served),
                    Err((guard, rescue)) => Creation::new(self, key, Some(guard), rescue)
                        .began(began)
                        .create(init),
                };
            }
            Stop::Direct(err) => return self.direct(key, began, &err, init),
            Stop::Failed(failure) => return Err(self.failure(key, failure)),
        };
        Creation::new(self, key, guard.map(Held::new), rescue)
            .began(began)
            .create(init)
    }

    /// A hand-off the background refused: a refresh is skipped (the mutex released), an
    /// expired value is regenerated here, holding the mutex.
    fn refused(
        &self,
        protocol: &mut Protocol<'_, V>,
        hand: Hand<V>,
        guard: OwnedMutexGuard<M>,
    ) -> Result<(V, Served), (Held<M>, Option<V>)> {
        match protocol.refused(hand) {
            Refused::Done(served, value) => Ok((value, served)),
            Refused::Create { rescue } => Err((Held::new(guard), rescue)),
        }
    }

    #[cold]
    pub(super) fn failure<E: Send + Sync + 'static>(
        &self,
        key: &K,
        failure: Failure,
    ) -> RegionError<E> {
        match failure {
            Failure::WouldDeadlock => self.recursion(key),
            Failure::TimedOut(timeout) => RegionError::Timeout(timeout),
            Failure::Backend(err) => {
                super::trace::backend_failed(&self.inner.name, key, &err);
                RegionError::Backend(err)
            }
        }
    }

    #[cold]
    pub(super) fn recursion<E: Send + Sync + 'static>(&self, key: &K) -> RegionError<E> {
        RegionError::Recursion {
            region: self.inner.name.clone(),
            key: format!("{key:?}"),
        }
    }
}
