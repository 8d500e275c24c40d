//! [`AsyncStore`]: the async form of a store's protocol, for a region's async calls.

use std::future::{ready, Future};
use std::pin::Pin;

use super::Stamp;
use super::{MemoryStore, Store};
use crate::lock::Fence;
use crate::{BackendError, Timestamp};

/// What an [`AsyncStore`] call returns: a boxed future, so that an async region's futures are
/// `Send` whatever the key's and value's lifetimes (a store's own future types would have to be
/// proven `Send` for every lifetime, which the compiler cannot always do).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// The async form of [`Store`], which an [`AsyncRegion`](super::AsyncRegion) awaits so that
/// no call blocks a worker thread on the store.
///
/// A store that answers at once (in memory) says so with
/// [`answers_at_once`](Self::answers_at_once): an async region then calls its blocking methods
/// directly, with no future at all. A store on a server awaits its async client. The two forms
/// must read and write the same data: sync and async callers of one region share values.
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::{AsyncStore, MemoryStore};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new(None).unwrap();
/// assert!(store.answers_at_once());
/// let stamp = Timestamp::from_nanos(1).into();
/// store.put_async(&"k", &7, stamp).await.unwrap();
/// assert_eq!(store.get_async(&"k").await.unwrap(), Some((7, stamp)));
/// store.remove_async(&"k").await.unwrap();
/// assert_eq!(store.get_async(&"k").await.unwrap(), None);
/// # });
/// ```
pub trait AsyncStore<K, V>: Store<K, V> {
    /// Whether the blocking methods return at once (no I/O that can stall): then an async
    /// region calls them directly.
    fn answers_at_once(&self) -> bool;

    /// [`Store::get`], awaited.
    fn get_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, Option<(V, Stamp)>>;

    /// [`Store::put`], awaited.
    fn put_async<'a>(&'a self, key: &'a K, value: &'a V, stamp: Stamp) -> StoreFuture<'a, ()>;

    /// [`Store::remove`], awaited.
    fn remove_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, ()>;

    /// [`Store::clear`], awaited.
    fn clear_async(&self) -> StoreFuture<'_, ()>;

    /// [`Store::put_fenced`], awaited. The default, for stores that answer at once, is the
    /// blocking form.
    fn put_fenced_async<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        stamp: Stamp,
        fence: &'a Fence,
    ) -> StoreFuture<'a, bool> {
        Box::pin(ready(self.put_fenced(key, value, stamp, fence)))
    }

    /// [`Store::restamp`], awaited. The default, for stores that answer at once, is the
    /// blocking form.
    fn restamp_async<'a>(&'a self, key: &'a K, from: Stamp, to: Stamp) -> StoreFuture<'a, bool> {
        Box::pin(ready(self.restamp(key, from, to)))
    }

    /// [`Store::invalidate_before`], awaited. The default, for stores that answer at once, is
    /// the blocking form.
    fn invalidate_before_async(&self, cutoff: Timestamp, soft: bool) -> StoreFuture<'_, ()> {
        Box::pin(ready(self.invalidate_before(cutoff, soft)))
    }

    /// For a store that does not answer at once: what it can answer at once for an async
    /// call's first read, by the key as given (a near cache's copy in memory), or `None` to
    /// read with [`get_async`](Self::get_async). The default has nothing.
    ///
    /// ```
    /// use dogpile_runtime::region::{AsyncStore, MemoryStore};
    /// let store: MemoryStore<u8, u8> = MemoryStore::new(None)?;
    /// assert!(store.get_at_once(&1).is_none());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    fn get_at_once<Q>(&self, key: &Q) -> Option<(V, Stamp)>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let _ = key;
        None
    }
}

/// In memory, every call answers at once.
impl<K, V> AsyncStore<K, V> for MemoryStore<K, V>
where
    MemoryStore<K, V>: Store<K, V>,
    V: Send,
{
    fn answers_at_once(&self) -> bool {
        true
    }

    fn get_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, Option<(V, Stamp)>> {
        Box::pin(ready(self.get(key)))
    }

    fn put_async<'a>(&'a self, key: &'a K, value: &'a V, stamp: Stamp) -> StoreFuture<'a, ()> {
        Box::pin(ready(self.put(key, value, stamp)))
    }

    fn remove_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, ()> {
        Box::pin(ready(self.remove(key)))
    }

    fn clear_async(&self) -> StoreFuture<'_, ()> {
        Box::pin(ready(self.clear()))
    }
}
