//! Failures shared, not retried by the herd: the last error of each key's creator, kept for the
//! failure throttle so that the callers that waited for that creator, and those that come while
//! the throttle lasts, get that error (or the stale value) instead of calling the upstream
//! again; background regenerations back off from it exponentially. A panic is not shared (as in
//! moka): it reaches its own caller, and the next caller runs the creator.
//!
//! A key has a record only after its creator failed, until the throttle (or, for the
//! background, its back-off) has passed or a value was made: the map is empty while the
//! upstream answers, and every miss checks it with one atomic load. It holds at most
//! [`MOST`] keys; a failure beyond them is not kept (its waiters then retry, one at a time).

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};

/// The most keys with a failure on record.
pub(super) const MOST: usize = 65_536;

/// A key's last failure.
#[derive(Clone)]
pub(super) struct Failure {
    /// When, on the region's clock.
    pub(super) at: i64,
    /// Failures in a row, for the background's back-off.
    pub(super) attempts: u32,
    /// Its place among the region's failures: a call that began when fewer were recorded
    /// waited for this one.
    pub(super) seq: u64,
    /// The creator's error (an `Arc<E>`), for the callers that share it.
    pub(super) error: Arc<dyn Any + Send + Sync>,
}

/// The records, and when a search of a full map for room last found none.
struct Records<K> {
    map: HashMap<K, Failure>,
    searched: Searched,
}

/// When a search of a full map for room last found none: the map is not searched again for
/// each new key, only once a sixteenth of the shortest time a record is kept has passed (or
/// the clock went back). A key beyond the bound then costs a look, not a search of 65,536
/// entries under the lock (about 0.4 ms).
#[derive(Clone, Copy)]
pub(super) struct Searched {
    at: i64,
    until: i64,
}

impl Default for Searched {
    fn default() -> Self {
        Searched {
            at: i64::MAX,
            until: i64::MIN,
        }
    }
}

impl Searched {
    /// Whether `map`, full at [`MOST`] keys, has room for one more at `now`: its entries that
    /// `keep` refuses are let go, unless a search found none within a sixteenth of `kept` (the
    /// shortest time an entry is kept) or the clock went back since.
    pub(super) fn make_room<Q, T>(
        &mut self,
        map: &mut HashMap<Q, T>,
        (now, kept): (i64, i64),
        keep: impl FnMut(&Q, &mut T) -> bool,
    ) -> bool {
        if self.at <= now && now < self.until {
            return false;
        }
        map.retain(keep);
        if map.len() >= MOST {
            *self = Searched {
                at: now,
                until: now.saturating_add(kept / 16),
            };
            return false;
        }
        true
    }
}

pub(super) struct Failures<K> {
    map: Mutex<Records<K>>,
    len: AtomicUsize,
    /// How many failures were recorded so far.
    seq: AtomicU64,
}

impl<K: Hash + Eq + Clone> Failures<K> {
    pub(super) fn new() -> Self {
        Failures {
            map: Mutex::new(Records {
                map: HashMap::new(),
                searched: Searched::default(),
            }),
            len: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        }
    }

    /// How many failures were recorded so far: taken when a call begins, it tells the failures
    /// the call waited for (those recorded after) from older ones.
    #[inline]
    pub(super) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// `key`'s last failure, if there is one.
    #[inline]
    pub(super) fn last(&self, key: &K) -> Option<Failure> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.map.lock().map.get(key).cloned()
    }

    /// Records a failure of `key`'s creator at `at`; `stale` judges whether a record is old
    /// enough to drop, to make room, and none is dropped sooner than `kept` after it was made.
    pub(super) fn record(
        &self,
        key: &K,
        at: i64,
        error: Arc<dyn Any + Send + Sync>,
        (stale, kept): (impl Fn(&Failure) -> bool, i64),
    ) {
        let mut records = self.map.lock();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(last) = records.map.get_mut(key) {
            last.at = at;
            last.attempts = last.attempts.saturating_add(1);
            last.error = error;
            last.seq = seq;
            return;
        }
        let Records { map, searched } = &mut *records;
        if map.len() >= MOST && !searched.make_room(map, (at, kept), |_, failure| !stale(failure)) {
            return;
        }
        map.insert(
            key.clone(),
            Failure {
                at,
                attempts: 1,
                error,
                seq,
            },
        );
        self.len.store(map.len(), Ordering::Release);
    }

    /// Forgets `key`'s failures: a value was made, or the record is too old to matter.
    #[inline]
    pub(super) fn clear(&self, key: &K) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let map = &mut self.map.lock().map;
        if map.remove(key).is_some() {
            self.len.store(map.len(), Ordering::Release);
        }
    }
}
