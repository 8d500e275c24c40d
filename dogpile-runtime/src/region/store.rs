//! Where a region keeps its values: the [`Store`] trait and the in-memory [`MemoryStore`].

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::lock::Fence;
use crate::sync::Mutex;
use crate::{BackendError, Timestamp};

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

    /// Stores `value` as [`put`](Self::put) does, but only while `fence` (the hold of the
    /// creator's mutex) still holds: `Ok(false)` if the hold ran out and the write was refused.
    /// A store that shares a server with a mutex whose hold can run out checks it in one step
    /// with the write; the default, for stores without such a mutex, writes.
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
    fn invalidate_before(&self, cutoff: Timestamp, soft: bool) -> Result<(), BackendError> {
        let _ = (cutoff, soft);
        Ok(())
    }
}

struct Entry<V> {
    value: V,
    created: Timestamp,
    /// Set on a hit when the store is bounded; cleared by the eviction sweep (second chance).
    referenced: AtomicBool,
}

/// The default store: a concurrent in-memory map, optionally bounded.
///
/// Reads take no lock and write nothing shared: the map is [`papaya`]'s lock-free hash map, whose
/// readers only mark their own thread's epoch, hashed with `foldhash` (seeded per store). With a capacity, a read also sets the entry's
/// "referenced" bit the first time after each sweep, and an insert past the capacity sweeps
/// the map CLOCK-style: referenced entries get a second chance, the others are evicted, until
/// the store is 1/16 below capacity. Without a capacity it grows until values are removed.
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::{MemoryStore, Store};
///
/// let store = MemoryStore::new(Some(100));
/// for k in 0..1000u32 {
///     store.put(&k, &k, Timestamp::from_nanos(1)).unwrap();
/// }
/// assert!(store.count().unwrap() <= 100);
/// ```
pub struct MemoryStore<K, V> {
    map: papaya::HashMap<K, Entry<V>, foldhash::fast::RandomState>,
    capacity: Option<usize>,
    sweeping: Mutex<()>,
}

impl<K, V> MemoryStore<K, V>
where
    K: Hash + Eq,
{
    /// An empty store holding at most `capacity` values (`None`: unbounded).
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let store: MemoryStore<String, u64> = MemoryStore::new(Some(10_000));
    /// ```
    pub fn new(capacity: Option<usize>) -> Self {
        MemoryStore {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .capacity(capacity.unwrap_or(0).min(1 << 16))
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            capacity,
            sweeping: Mutex::new(()),
        }
    }

    /// Reads without cloning: `f` sees the value and its creation time.
    #[inline]
    pub(crate) fn read<R>(&self, key: &K, f: impl FnOnce(&V, Timestamp) -> R) -> Option<R> {
        let guard = self.map.guard();
        let entry = self.map.get(key, &guard)?;
        if self.capacity.is_some() && !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        Some(f(&entry.value, entry.created))
    }

    #[cold]
    fn evict(&self, capacity: usize) {
        // One sweeper at a time; others insert on and let it catch up.
        let Some(_sweeping) = self.sweeping.try_lock() else {
            return;
        };
        let guard = self.map.guard();
        let target = capacity - capacity / 16;
        let mut excess = self.map.len().saturating_sub(target);
        // Two passes at most: the first may only clear referenced bits.
        for _ in 0..2 {
            for (key, entry) in self.map.iter(&guard) {
                if excess == 0 {
                    return;
                }
                if entry.referenced.swap(false, Ordering::Relaxed) {
                    continue;
                }
                if self.map.remove(key, &guard).is_some() {
                    excess -= 1;
                }
            }
        }
    }
}

impl<K, V> Store<K, V> for MemoryStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    #[inline]
    fn get(&self, key: &K) -> Result<Option<(V, Timestamp)>, BackendError> {
        Ok(self.read(key, |value, created| (value.clone(), created)))
    }

    fn put(&self, key: &K, value: &V, created: Timestamp) -> Result<(), BackendError> {
        let entry = Entry {
            value: value.clone(),
            created,
            referenced: AtomicBool::new(false),
        };
        let guard = self.map.guard();
        self.map.insert(key.clone(), entry, &guard);
        if let Some(capacity) = self.capacity {
            if self.map.len() > capacity {
                self.evict(capacity);
            }
        }
        Ok(())
    }

    fn remove(&self, key: &K) -> Result<(), BackendError> {
        self.map.remove(key, &self.map.guard());
        Ok(())
    }

    fn clear(&self) -> Result<(), BackendError> {
        self.map.clear(&self.map.guard());
        Ok(())
    }

    fn count(&self) -> Option<usize> {
        Some(self.map.len())
    }
}

impl<K: Hash + Eq, V> fmt::Debug for MemoryStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}
