//! How a [`MemoryStore`] is configured: its bound, its weigher and its listener.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use super::evict::{EvictionCause, Listener, Weigher};
use super::MemoryStore;
use crate::ConfigError;

/// What a memory store was asked to be; checked when it is built.
pub(crate) struct Settings<K, V> {
    pub(crate) capacity: Option<usize>,
    pub(crate) max_weight: Option<u64>,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) listener: Option<Listener<K, V>>,
}

impl<K, V> Default for Settings<K, V> {
    fn default() -> Self {
        Settings {
            capacity: None,
            max_weight: None,
            weigher: None,
            listener: None,
        }
    }
}

impl<K, V> Clone for Settings<K, V> {
    fn clone(&self) -> Self {
        Settings {
            capacity: self.capacity,
            max_weight: self.max_weight,
            weigher: self.weigher.clone(),
            listener: self.listener.clone(),
        }
    }
}

impl<K, V> Settings<K, V> {
    /// The bound, in weight (each value weighs 1 with a capacity), if the settings can work.
    pub(crate) fn bound(&self) -> Result<Option<u64>, ConfigError> {
        match (self.capacity, self.max_weight) {
            (Some(0), _) => Err(ConfigError::new(
                "capacity",
                "must be at least 1 (leave it unset for a store without a bound)",
            )),
            (_, Some(0)) => Err(ConfigError::new(
                "max_weight",
                "must be at least 1 (leave it unset for a store without a bound)",
            )),
            (Some(_), Some(_)) => Err(ConfigError::new(
                "max_weight",
                "a store is bounded by `capacity` (a number of values) or by `max_weight` \
                 (their total weight), not both: set one",
            )),
            (Some(_), None) if self.weigher.is_some() => Err(ConfigError::new(
                "weigher",
                "weighs values against `max_weight`, but the store is bounded by `capacity`: \
                 set `max_weight` instead",
            )),
            (None, None) if self.weigher.is_some() => Err(ConfigError::new(
                "weigher",
                "weighs values against `max_weight`, which is not set",
            )),
            (Some(capacity), None) => Ok(Some(u64::try_from(capacity).unwrap_or(u64::MAX))),
            (None, max_weight) => Ok(max_weight),
        }
    }
}

/// Configures a [`MemoryStore`]; from [`MemoryStore::builder`].
///
/// Without a bound the store grows until values are removed. With
/// [`capacity`](Self::capacity) it holds about that many values; with
/// [`max_weight`](Self::max_weight) and a [`weigher`](Self::weigher), values whose weights add up
/// to about that much. Which values stay is decided by a W-TinyLFU policy; see [`MemoryStore`].
///
/// ```
/// use dogpile_runtime::region::{MemoryStore, Store};
/// use dogpile_runtime::clock::Timestamp;
///
/// // At most 64 MiB of pages, by their length.
/// let pages: MemoryStore<String, Vec<u8>> = MemoryStore::builder()
///     .max_weight(64 << 20)
///     .weigher(|_url: &String, page: &Vec<u8>| page.len().try_into().unwrap_or(u32::MAX))
///     .build()
///     .unwrap();
/// pages.put(&"/".to_string(), &vec![0; 1024], Timestamp::from_nanos(1).into()).unwrap();
/// assert_eq!(pages.count(), Some(1));
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct MemoryStoreBuilder<K, V> {
    settings: Settings<K, V>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> MemoryStoreBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        MemoryStoreBuilder {
            settings: Settings::default(),
            _types: PhantomData,
        }
    }

    /// Holds about `capacity` values (at least 1).
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let store: MemoryStore<u64, String> = MemoryStore::builder().capacity(10_000).build().unwrap();
    /// assert!(MemoryStore::<u64, String>::builder().capacity(0).build().is_err());
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.settings.capacity = Some(capacity);
        self
    }

    /// Holds values whose [`weigher`](Self::weigher) weights add up to about `max_weight` (at
    /// least 1). Without a weigher each value weighs 1, as with a capacity.
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let store: MemoryStore<u64, String> = MemoryStore::builder()
    ///     .max_weight(1 << 20)
    ///     .weigher(|_, s: &String| s.len() as u32)
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn max_weight(mut self, max_weight: u64) -> Self {
        self.settings.max_weight = Some(max_weight);
        self
    }

    /// How much of the [`max_weight`](Self::max_weight) a value takes: called once as the value
    /// is stored, outside the store's lock. A weight of 0 counts as 1; a value heavier than the
    /// whole maximum is not kept (the listener hears of it as
    /// [`EvictionCause::Capacity`]).
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let store: MemoryStore<String, Vec<u8>> = MemoryStore::builder()
    ///     .max_weight(1_000_000)
    ///     .weigher(|key: &String, value: &Vec<u8>| (key.len() + value.len()) as u32)
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.settings.weigher = Some(Arc::new(weigher));
        self
    }

    /// Calls `listener` with each value that leaves the store and why: evicted for capacity,
    /// invalidated, replaced or removed. It runs in the thread that caused it, after the store
    /// has released its lock, so it may use the store; it should be quick, as that caller waits
    /// for it.
    ///
    /// ```
    /// # use dogpile_runtime::region::{EvictionCause, MemoryStore};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// let evicted = Arc::new(AtomicU64::new(0));
    /// let count = evicted.clone();
    /// let store: MemoryStore<u64, String> = MemoryStore::builder()
    ///     .capacity(1000)
    ///     .on_evict(move |_key, _value, cause| {
    ///         if cause == EvictionCause::Capacity {
    ///             count.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn on_evict(
        mut self,
        listener: impl Fn(&K, &V, EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.settings.listener = Some(Arc::new(listener));
        self
    }

    /// The store, or the option that cannot work: a capacity or maximum weight of 0, both a
    /// capacity and a maximum weight, or a weigher without a maximum weight.
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let err = MemoryStore::<u8, u8>::builder().max_weight(0).build().unwrap_err();
    /// assert_eq!(err.option(), "max_weight");
    /// ```
    pub fn build(self) -> Result<MemoryStore<K, V>, ConfigError> {
        let bound = self.settings.bound()?;
        Ok(MemoryStore::with_settings(self.settings, bound))
    }
}

impl<K, V> fmt::Debug for MemoryStoreBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("capacity", &self.settings.capacity)
            .field("max_weight", &self.settings.max_weight)
            .field("weigher", &self.settings.weigher.is_some())
            .field("on_evict", &self.settings.listener.is_some())
            .finish()
    }
}
