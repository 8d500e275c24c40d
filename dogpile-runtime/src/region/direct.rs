//! Direct calls in single flight: when the store or the mutex fails (a Redis outage, a breaker
//! open), a call runs its creator without the cache; inside one process, at most one such
//! creator runs per key at a time, and the calls that waited for it get its value instead of
//! calling the upstream too. An outage then costs one upstream call per key and process per
//! attempt, not one per caller.
//!
//! A key's direct creators queue on a mutex of the process (not the region's, which may be the
//! one failing); a value made is kept for the calls that waited for it and, for the failure
//! throttle, for the next ones, then forgotten. The kept values are bounded by [`MOST`] keys,
//! as the failures are.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use super::creation::Creation;
use super::expiry;
use super::failures::{Searched, MOST};
use super::{CacheKey, CacheValue, Made, Region, RegionError, Served, Store};
use crate::lock::drive::{held_by_this_thread, Held};
use crate::lock::{LocalMutex, NameRegistry};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::{BackendError, OwnedMutexGuard, RawMutex};

type NewMutex<K> = fn(&K) -> LocalMutex;

/// A value made by a direct call.
struct Kept<V> {
    value: V,
    /// When, on the region's clock.
    at: i64,
    /// Its place among the region's direct values, as `Failures::seq` does for failures.
    seq: u64,
}

/// The kept values, and when a search of a full map for room last found none: it is not
/// searched again for each new key, only once a sixteenth of the window has passed (or the
/// clock went back), so a key beyond the bound costs a look, not a search under the lock.
struct Values<K, V> {
    map: HashMap<K, Kept<V>>,
    searched: Searched,
    /// When the values past the window were last let go, on a value made through the store.
    swept: i64,
}

pub(super) struct Directs<K, V> {
    mutexes: NameRegistry<K, LocalMutex, NewMutex<K>>,
    made: Mutex<Values<K, V>>,
    len: AtomicUsize,
    seq: AtomicU64,
}

impl<K, V> Directs<K, V> {
    /// Forgets every value: every key was invalidated.
    pub(super) fn forget_all(&self) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut made = self.made.lock();
        let gone = std::mem::take(&mut made.map);
        made.searched = Searched::default();
        self.len.store(0, Ordering::Release);
        // Freed once the lock is given back: the calls of other keys do not wait for it.
        drop(made);
        drop(gone);
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static, V: Clone> Directs<K, V> {
    pub(super) fn new() -> Self {
        Directs {
            mutexes: NameRegistry::new(|_: &K| LocalMutex::new()),
            made: Mutex::new(Values {
                map: HashMap::new(),
                searched: Searched::default(),
                swept: i64::MIN,
            }),
            len: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        }
    }

    /// The process's mutex of `key`'s direct creators.
    pub(super) fn mutex(&self, key: &K) -> Arc<LocalMutex> {
        self.mutexes.get(key)
    }

    /// How many direct values were kept so far, taken when a call begins.
    #[inline]
    pub(super) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// A value a direct creator made for `key` that a call which began at `began` shares: one
    /// made since, or within `window` of `now` ([`expiry::within`], with the clock's
    /// `tolerance`).
    pub(super) fn shared(
        &self,
        key: &K,
        began: u64,
        now: i64,
        (window, tolerance): (i64, i64),
    ) -> Option<V> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let made = &mut self.made.lock().map;
        let kept = made.get(key)?;
        if kept.seq > began || expiry::within(now, kept.at, window, tolerance) {
            return Some(kept.value.clone());
        }
        made.remove(key);
        self.len.store(made.len(), Ordering::Release);
        None
    }

    /// Forgets `key`'s value, a value for it having been made through the store at `now`;
    /// and, at most once per `window`, every value past it: the store is answering again, and
    /// the values made while it failed would otherwise stay until their own keys were asked
    /// for again (or the map filled), however large. With nothing kept (the usual case) it
    /// costs one load: the clock is read only when there is something to forget.
    #[inline]
    pub(super) fn forget_made(
        &self,
        key: &K,
        now: impl FnOnce() -> i64,
        (window, tolerance): (i64, i64),
    ) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = now();
        let mut made = self.made.lock();
        let mut gone: Vec<Kept<V>> = made.map.remove(key).into_iter().collect();
        if !expiry::within(now, made.swept, window, tolerance) {
            let past = |_: &K, kept: &mut Kept<V>| !expiry::within(now, kept.at, window, tolerance);
            gone.extend(made.map.extract_if(past).map(|(_, kept)| kept));
            made.swept = now;
        }
        self.len.store(made.map.len(), Ordering::Release);
        // Freed once the lock is given back, as in `forget_all`.
        drop(made);
        drop(gone);
    }

    /// Forgets `key`'s value: it was invalidated, or a newer one inserted.
    #[inline]
    pub(super) fn forget(&self, key: &K) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let made = &mut self.made.lock().map;
        if made.remove(key).is_some() {
            self.len.store(made.len(), Ordering::Release);
        }
    }

    /// Keeps `value`, made for `key` at `now` by a direct creator.
    pub(super) fn keep(&self, key: &K, value: V, now: i64, (window, tolerance): (i64, i64)) {
        let mut made = self.made.lock();
        let Values {
            map: made,
            searched,
            ..
        } = &mut *made;
        if made.len() >= MOST && !made.contains_key(key) {
            let within =
                |_: &K, kept: &mut Kept<V>| expiry::within(now, kept.at, window, tolerance);
            if !searched.make_room(made, (now, window), within) {
                return;
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        made.insert(
            key.clone(),
            Kept {
                value,
                at: now,
                seq,
            },
        );
        self.len.store(made.len(), Ordering::Release);
    }
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// A direct call (the store or mutex failed with `err`): the value another direct
    /// creator of `key` made for the calls that waited for it, or the creator's, run one at a
    /// time in the process.
    pub(super) fn direct<E: Send + Sync + 'static, O: Made<V>>(
        &self,
        key: &K,
        began: u64,
        err: &BackendError,
        init: impl FnOnce() -> Result<O, E>,
    ) -> Result<(V, Served), RegionError<E>> {
        let directs = &self.inner.directs;
        let mutex = directs.mutex(key);
        if held_by_this_thread(&mutex) {
            return Err(self.recursion(key));
        }
        let waited_from = directs.seq();
        let held = match OwnedMutexGuard::acquire(Arc::clone(&mutex)) {
            Ok(guard) => Held::new(guard),
            // A mutex of the process does not fail.
            Err(_) => return Creation::direct(self, key, err).began(began).create(init),
        };
        if let Some(value) = self.direct_shared(key, waited_from) {
            return Ok((value, Served::Waited));
        }
        let made = Creation::direct(self, key, err).began(began).create(init);
        self.direct_made(key, &made);
        drop(held);
        made
    }

    /// A value a direct creator made that this call shares (counted as a wait).
    pub(super) fn direct_shared(&self, key: &K, waited_from: u64) -> Option<V> {
        let inner = &*self.inner;
        let now = inner.now().as_nanos();
        let window = (inner.fail_safe_throttle_nanos, inner.tolerance_nanos);
        let value = (inner.directs).shared(key, waited_from, now, window)?;
        self.stats().served(Served::Waited);
        Some(value)
    }

    /// Keeps a direct creator's value for the calls that wait for it.
    pub(super) fn direct_made<E>(&self, key: &K, made: &Result<(V, Served), RegionError<E>>) {
        if let Ok((value, Served::Direct)) = made {
            let inner = &*self.inner;
            let now = inner.now().as_nanos();
            let window = (inner.fail_safe_throttle_nanos, inner.tolerance_nanos);
            (inner.directs).keep(key, value.clone(), now, window);
        }
    }
}
