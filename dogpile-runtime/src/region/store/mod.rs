//! Where a region keeps its values: the [`Store`] trait and the in-memory [`MemoryStore`].
//!
//! - `mod.rs`: the trait.
//! - `memory.rs`: the in-memory store, a lock-free map with a policy for its bound.
//! - `config.rs`: its builder and the checks of its options.
//! - `policy.rs`: which keys a bounded store keeps (W-TinyLFU with an adaptive window);
//!   `nodes.rs`, its lists; `sketch.rs`, its frequency sketch; `ghosts.rs`, the keys it evicted
//!   lately, which size its window.
//! - `evict.rs`: why values leave a store, for listeners.
//! - `outage.rs`: what a store on a server says of its failures.

mod config;
mod evict;
mod ghosts;
mod memory;
mod nodes;
mod outage;
mod policy;
mod shadow;
mod sketch;

pub use config::MemoryStoreBuilder;
pub use evict::EvictionCause;
pub use memory::MemoryStore;
pub use outage::{BackendHealth, Invalidation};

use std::borrow::Borrow;
use std::hash::Hash;

use super::Stamp;
use crate::lock::Fence;
use crate::{BackendError, ConfigError, Timestamp};

/// A map from keys to values with their [`Stamp`]s: where a region keeps its values.
///
/// The region decides freshness; a store only keeps what it is given, and gives it back as it
/// was given. [`MemoryStore`] is the
/// default; stores in a file or on a server return [`BackendError`] when they fail, and the
/// region then applies its failure policy.
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::{MemoryStore, Stamp, Store};
///
/// let store = MemoryStore::new(None)?;
/// let stamp = Stamp::new(Timestamp::from_nanos(1));
/// store.put(&"k", &7, stamp).unwrap();
/// assert_eq!(store.get(&"k").unwrap(), Some((7, stamp)));
/// store.remove(&"k").unwrap();
/// assert_eq!(store.get(&"k").unwrap(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Store<K, V>: Send + Sync + 'static {
    /// The value stored under `key` and its stamp.
    fn get(&self, key: &K) -> Result<Option<(V, Stamp)>, BackendError>;

    /// [`get`](Self::get) by a borrowed form of the key (a `&str` for a `String` key): what a
    /// region's hot path reads with. The default makes the owned key; a store that can look
    /// up by the borrowed form (as [`MemoryStore`] does) saves that allocation.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::new(None)?;
    /// store.put(&"k".to_string(), &7, Timestamp::from_nanos(1).into()).unwrap();
    /// assert_eq!(store.get_by("k").unwrap().map(|(v, _)| v), Some(7));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    fn get_by<Q>(&self, key: &Q) -> Result<Option<(V, Stamp)>, BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.get(&key.to_owned())
    }

    /// Stores `value`, stamped `stamp`, under `key`, replacing any previous value.
    fn put(&self, key: &K, value: &V, stamp: Stamp) -> Result<(), BackendError>;

    /// Changes the stamp of the value under `key` from `from` to `to`, keeping the value, if it
    /// is still stamped `from`; whether it did. One step, so that a value removed meanwhile
    /// (invalidated, evicted) stays removed and one stored meanwhile keeps its own stamp: a
    /// region's [`soft_invalidate`](crate::Region::soft_invalidate) never brings back a value
    /// nor makes a newer one older.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Stamp, Store};
    ///
    /// let store = MemoryStore::new(None)?;
    /// let (one, two) = (Stamp::new(Timestamp::from_nanos(1)), Stamp::new(Timestamp::from_nanos(2)));
    /// store.put(&"k", &7, one).unwrap();
    /// assert!(store.restamp(&"k", one, two).unwrap());
    /// assert!(!store.restamp(&"k", one, two).unwrap()); // no longer stamped `one`
    /// store.remove(&"k").unwrap();
    /// assert!(!store.restamp(&"k", two, one).unwrap()); // nothing comes back
    /// assert_eq!(store.get(&"k").unwrap(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn restamp(&self, key: &K, from: Stamp, to: Stamp) -> Result<bool, BackendError>;

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
    /// let store = MemoryStore::new(None)?;
    /// store.put(&"k", &7, Timestamp::from_nanos(1).into()).unwrap();
    /// store.invalidate(&"k").unwrap();
    /// assert_eq!(store.get(&"k").unwrap(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn invalidate(&self, key: &K) -> Result<(), BackendError> {
        self.remove(key)
    }

    /// Removes every value whose stamp `dead` accepts, and says how many went. A
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
    /// let store = MemoryStore::new(None)?;
    /// store.put(&"old", &1, Timestamp::from_nanos(10).into()).unwrap();
    /// store.put(&"new", &2, Timestamp::from_nanos(20).into()).unwrap();
    /// let purged = store.purge(&|stamp| stamp.created() < Timestamp::from_nanos(15)).unwrap();
    /// assert_eq!(purged, 1);
    /// assert_eq!(store.count(), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn purge(&self, dead: &dyn Fn(Stamp) -> bool) -> Result<usize, BackendError> {
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
    /// let store = MemoryStore::new(Some(10))?;
    /// for k in 0..15 {
    ///     store.put(&k, &k, Timestamp::from_nanos(1).into()).unwrap();
    /// }
    /// assert_eq!(store.evictions(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn evictions(&self) -> u64 {
        0
    }

    /// The weight of the values counted in [`evictions`](Self::evictions), by the store's
    /// weigher (each value weighs 1 without one).
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::builder()
    ///     .max_weight(10)
    ///     .weigher(|_: &u32, value: &String| value.len() as u32)
    ///     .build()?;
    /// for k in 0..4 {
    ///     store.put(&k, &"abcd".to_string(), Timestamp::from_nanos(1).into()).unwrap();
    /// }
    /// assert_eq!((store.evictions(), store.eviction_weight()), (2, 8));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn eviction_weight(&self) -> u64 {
        0
    }

    /// The weight of the values the store holds, by its weigher (each value weighs 1 without
    /// one), if it can tell it cheaply; `None` otherwise.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::builder()
    ///     .max_weight(100)
    ///     .weigher(|_: &u32, value: &String| value.len() as u32)
    ///     .build()?;
    /// store.put(&1, &"abc".to_string(), Timestamp::from_nanos(1).into()).unwrap();
    /// assert_eq!(store.weight(), Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn weight(&self) -> Option<u64> {
        None
    }

    /// Whether the store's configuration can work, for the builder of a region to report. A
    /// [`MemoryStore`] configured through a region builder with a capacity of 0, say, answers the
    /// [`ConfigError`] its own [`builder`](MemoryStore::builder) would have returned.
    ///
    /// ```
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(Some(100))?;
    /// assert!(store.check().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
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
    /// let store = MemoryStore::new(None)?;
    /// let fence = Fence::new("lock", "token");
    /// assert!(store.put_fenced(&"k", &7, Timestamp::from_nanos(1).into(), &fence).unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn put_fenced(
        &self,
        key: &K,
        value: &V,
        stamp: Stamp,
        fence: &Fence,
    ) -> Result<bool, BackendError> {
        let _ = fence;
        self.put(key, value, stamp).map(|()| true)
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
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(None)?;
    /// store.invalidate_before(Timestamp::from_nanos(1), false).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn invalidate_before(&self, cutoff: Timestamp, soft: bool) -> Result<(), BackendError> {
        let _ = (cutoff, soft);
        Ok(())
    }

    /// Keeps `invalidation`, which failed to reach the store, to apply once the store
    /// answers again, and says whether it did; the region then tells its caller that the
    /// invalidation is queued for replay. A store that keeps it also makes its own reads
    /// honour it meanwhile. The default, for a store that never fails, keeps nothing.
    ///
    /// ```
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::region::{Invalidation, MemoryStore, Store};
    ///
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(None)?;
    /// assert!(!store.replay_later(Invalidation::all(false, Timestamp::from_nanos(1))));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    fn replay_later(&self, invalidation: Invalidation<'_, K>) -> bool {
        let _ = invalidation;
        false
    }

    /// What the store's backend went through (failures, its circuit breaker, invalidations
    /// kept for replay), for the region's [`Statistics`](crate::Statistics); `None`, the
    /// default, for a store that cannot fail.
    ///
    /// ```
    /// use dogpile_runtime::region::{MemoryStore, Store};
    ///
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(None)?;
    /// assert_eq!(store.backend_health(), None);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    fn backend_health(&self) -> Option<BackendHealth> {
        None
    }
}
