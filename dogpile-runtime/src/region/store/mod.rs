//! Where a region keeps its values: the [`Store`] trait and the in-memory [`MemoryStore`].
//!
//! - `mod.rs`: the trait.
//! - `memory.rs`: the in-memory store, a lock-free map with a policy for its bound.
//! - `config.rs`: its builder and the checks of its options.
//! - `policy.rs`: which keys a bounded store keeps (W-TinyLFU with an adaptive window);
//!   `nodes.rs`, its lists; `sketch.rs`, its frequency sketch; `ghosts.rs`, the keys it evicted
//!   lately, which size its window.
//! - `evict.rs`: why values leave a store, for listeners.

mod config;
mod evict;
mod ghosts;
mod memory;
mod nodes;
mod policy;
mod sketch;

pub use config::MemoryStoreBuilder;
pub use evict::EvictionCause;
pub use memory::MemoryStore;

use crate::lock::Fence;
use crate::{BackendError, ConfigError, Timestamp};

/// A map from keys to values with their creation times: where a region keeps its values.
///
/// The region decides freshness; a store only keeps what it is given. [`MemoryStore`] is the
/// default; stores in a file or on a server return [`BackendError`] when they fail, and the
/// region then applies its failure policy.
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::{MemoryStore, Store};
///
/// let store = MemoryStore::new(None);
/// store.put(&"k", &7, Timestamp::from_nanos(1)).unwrap();
/// assert_eq!(store.get(&"k").unwrap(), Some((7, Timestamp::from_nanos(1))));
/// store.remove(&"k").unwrap();
/// assert_eq!(store.get(&"k").unwrap(), None);
/// ```
pub trait Store<K, V>: Send + Sync + 'static {
    /// The value stored under `key` and its creation time.
    fn get(&self, key: &K) -> Result<Option<(V, Timestamp)>, BackendError>;

    /// Stores `value`, created at `created`, under `key`, replacing any previous value.
    fn put(&self, key: &K, value: &V, created: Timestamp) -> Result<(), BackendError>;

    /// Removes the value under `key`, if any.
    fn remove(&self, key: &K) -> Result<(), BackendError>;

    /// Removes every value.
    fn clear(&self) -> Result<(), BackendError>;

    /// How many values are stored, if the store can tell cheaply.
    fn count(&self) -> Option<usize>;

    /// Removes the value under `key` because it was invalidated (the region's hard
    /// invalidation). The same as [`remove`](Self::remove) unless the store tells the two apart,
    /// as [`MemoryStore`] does for its eviction listener.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::new(None);
    /// store.put(&"k", &7, Timestamp::from_nanos(1)).unwrap();
    /// store.invalidate(&"k").unwrap();
    /// assert_eq!(store.get(&"k").unwrap(), None);
    /// ```
    fn invalidate(&self, key: &K) -> Result<(), BackendError> {
        self.remove(key)
    }

    /// Removes every value whose creation time `dead` accepts, and says how many went. A
    /// region with [`max_stale`](crate::region::RegionBuilder::max_stale) calls it now and
    /// then, with the values it would never serve again, so that a region without a capacity
    /// does not keep keys nobody asks for again. A value stored again meanwhile stays: `dead`
    /// judges what is removed, at its removal. The default removes nothing, for stores that
    /// expire values on their own terms (a Redis store's `retain`).
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::new(None);
    /// store.put(&"old", &1, Timestamp::from_nanos(10)).unwrap();
    /// store.put(&"new", &2, Timestamp::from_nanos(20)).unwrap();
    /// let purged = store.purge(&|created| created < Timestamp::from_nanos(15)).unwrap();
    /// assert_eq!(purged, 1);
    /// assert_eq!(store.count(), Some(1));
    /// ```
    fn purge(&self, dead: &dyn Fn(Timestamp) -> bool) -> Result<usize, BackendError> {
        let _ = dead;
        Ok(0)
    }

    /// How many values the store has evicted to stay within its bound (0 for a store without
    /// one).
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::new(Some(10));
    /// for k in 0..15 {
    ///     store.put(&k, &k, Timestamp::from_nanos(1)).unwrap();
    /// }
    /// assert_eq!(store.evictions(), 5);
    /// ```
    fn evictions(&self) -> u64 {
        0
    }

    /// Whether the store's configuration can work, for the builder of a region to report. A
    /// [`MemoryStore`] configured through a region builder with a capacity of 0, say, answers the
    /// [`ConfigError`] its own [`builder`](MemoryStore::builder) would have returned.
    ///
    /// ```
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(Some(100));
    /// assert!(store.check().is_ok());
    /// ```
    fn check(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Stores `value` as [`put`](Self::put) does, but only while `fence` (the hold of the
    /// creator's mutex) still holds: `Ok(false)` if the hold ran out and the write was refused.
    /// A store that shares a server with a mutex whose hold can run out checks it in one step
    /// with the write; the default, for stores without such a mutex, writes.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::lock::Fence;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::new(None);
    /// let fence = Fence::new("lock", "token");
    /// assert!(store.put_fenced(&"k", &7, Timestamp::from_nanos(1), &fence).unwrap());
    /// ```
    fn put_fenced(
        &self,
        key: &K,
        value: &V,
        created: Timestamp,
        fence: &Fence,
    ) -> Result<bool, BackendError> {
        let _ = fence;
        self.put(key, value, created).map(|()| true)
    }

    /// Makes every value created at or before `cutoff` count as missing (`soft`: as expired)
    /// for every process that shares this store. The region keeps the cutoff for its own
    /// process whatever the store does; the default, for a store no other process reads, does
    /// nothing.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(None);
    /// store.invalidate_before(Timestamp::from_nanos(1), false).unwrap();
    /// ```
    fn invalidate_before(&self, cutoff: Timestamp, soft: bool) -> Result<(), BackendError> {
        let _ = (cutoff, soft);
        Ok(())
    }
}
