//! Why a value left a store, for the listener of [`on_evict`](super::MemoryStoreBuilder::on_evict).

use std::fmt;
use std::sync::Arc;

/// Why a value left a [`MemoryStore`](super::MemoryStore): what the listener set with
/// [`on_evict`](super::MemoryStoreBuilder::on_evict) (or the region builder's
/// [`on_evict`](crate::region::RegionBuilder::on_evict)) is told.
///
/// ```
/// use dogpile_runtime::region::{EvictionCause, MemoryStore, Store};
/// use dogpile_runtime::clock::Timestamp;
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let store = MemoryStore::builder()
///     .capacity(100)
///     .on_evict(move |key: &u32, value: &String, cause| {
///         log.lock().unwrap().push((*key, value.clone(), cause));
///     })
///     .build()
///     .unwrap();
/// let t = Timestamp::from_nanos(1).into();
/// store.put(&1, &"one".to_string(), t).unwrap();
/// store.put(&1, &"uno".to_string(), t).unwrap();
/// store.remove(&1).unwrap();
/// assert_eq!(
///     *seen.lock().unwrap(),
///     [
///         (1, "one".to_string(), EvictionCause::Replaced),
///         (1, "uno".to_string(), EvictionCause::Removed),
///     ]
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionCause {
    /// The store evicted it to stay within its capacity or maximum weight (or it weighed more
    /// than the whole maximum, and was never kept). Counted in
    /// [`Statistics::evictions`](crate::Statistics::evictions).
    Capacity,
    /// Its key was invalidated ([`Region::invalidate`](crate::Region::invalidate), or
    /// [`Store::invalidate`](super::Store::invalidate)).
    Invalidated,
    /// A new value was stored under its key: a regeneration, an insert, or a soft invalidation
    /// (which stores the value again, stamped as expired).
    Replaced,
    /// It was removed on request ([`Store::remove`](super::Store::remove),
    /// [`Store::clear`](super::Store::clear), [`Region::clear`](crate::Region::clear)).
    Removed,
    /// It was too stale to be served again ([`RegionBuilder::max_stale`](crate::region::RegionBuilder::max_stale),
    /// or hard-invalidated), and a purge dropped it ([`Store::purge`](super::Store::purge)).
    Expired,
}

impl fmt::Display for EvictionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvictionCause::Capacity => "evicted for capacity",
            EvictionCause::Invalidated => "invalidated",
            EvictionCause::Replaced => "replaced",
            EvictionCause::Removed => "removed",
            EvictionCause::Expired => "expired",
        })
    }
}

/// The listener told of each value that leaves a store.
pub(crate) type Listener<K, V> = Arc<dyn Fn(&K, &V, EvictionCause) + Send + Sync>;

/// How much of a store's maximum weight a value takes.
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;
