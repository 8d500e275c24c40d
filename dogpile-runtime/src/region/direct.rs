//! Direct calls in single flight: when the store or the mutex fails (a Redis outage, a breaker
//! open), a call runs its creator without the cache; inside one process, at most one such
//! creator runs per key at a time, and the calls that waited for it get its value instead of
//! calling the upstream too. An outage then costs one upstream call per key and process per
//! attempt, not one per caller.
//!
//! A key's direct creators queue on a mutex of the process (not the region's, which may be the
//! one failing); a value made is kept for the calls that waited for it and, for the failure
//! throttle, for the next ones, then forgotten. The kept values are bounded by [`MOST`] keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use super::creation::Creation;
use super::expiry;
use super::{CacheKey, CacheValue, Made, Region, RegionError, Served, Store};
use crate::lock::drive::{held_by_this_thread, Held};
use crate::lock::{LocalMutex, NameRegistry};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::{BackendError, OwnedMutexGuard, RawMutex};

/// The most keys with a direct value kept.
const MOST: usize = 65_536;

type NewMutex<K> = fn(&K) -> LocalMutex;

/// A value made by a direct call.
struct Kept<V> {
    value: V,
    /// When, on the region's clock.
    at: i64,
    /// Its place among the region's direct values, as `Failures::seq` does for failures.
    seq: u64,
}

pub(super) struct Directs<K, V> {
    mutexes: NameRegistry<K, LocalMutex, NewMutex<K>>,
    made: Mutex<HashMap<K, Kept<V>>>,
    len: AtomicUsize,
    seq: AtomicU64,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static, V: Clone> Directs<K, V> {
    pub(super) fn new() -> Self {
        Directs {
            mutexes: NameRegistry::new(|_: &K| LocalMutex::new()),
            made: Mutex::new(HashMap::new()),
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
        let mut made = self.made.lock();
        let kept = made.get(key)?;
        if kept.seq > began || expiry::within(now, kept.at, window, tolerance) {
            return Some(kept.value.clone());
        }
        made.remove(key);
        self.len.store(made.len(), Ordering::Release);
        None
    }

    /// Keeps `value`, made for `key` at `now` by a direct creator.
    pub(super) fn keep(&self, key: &K, value: V, now: i64, (window, tolerance): (i64, i64)) {
        let mut made = self.made.lock();
        if made.len() >= MOST && !made.contains_key(key) {
            made.retain(|_, kept| expiry::within(now, kept.at, window, tolerance));
            if made.len() >= MOST {
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
