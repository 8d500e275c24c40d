//! [`NameRegistry`]: one shared object per identifier, for as long as it is in use.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use foldhash::fast::RandomState;

use crate::sync::Mutex;

/// The map is swept of dead entries when it reaches this many, or twice the live count at the
/// last sweep, whichever is larger; and at least once every this many `get`s, or a quarter of
/// the live count at the last sweep, whichever is larger.
const MIN_SWEEP: usize = 64;

/// An identifier's allocation is handed on to new identifiers at most this many times, then
/// freed: a `String` buffer keeps the capacity of the longest identifier copied into it, so a
/// long one's must not serve the short ones after it for good.
const KEY_REUSES: u8 = 64;

/// Hands out one shared object per identifier while anyone holds it, creating it on demand.
///
/// Every caller of [`get`](Self::get) with the same identifier receives the same `Arc<V>` for as
/// long as one of them keeps it; once all are dropped the next `get` creates a new one. This is
/// how a cache keeps one dogpile mutex per key without keeping a mutex for every key it ever saw.
///
/// The registry holds only `Weak` references, and an object's entry stays until a sweep finds it
/// dead (dropping an `Arc` cannot tell the registry). Sweeps run inside [`get`](Self::get):
///
/// - when the map has doubled since the last sweep, so while identifiers are added it holds at
///   most twice the live ones plus 64 entries;
/// - and after `max(64, n / 4)` calls to `get` since the last sweep, `n` being the live count
///   that sweep found, so the dead entries of a burst that has ended are gone within that many
///   further calls even if no new identifier comes (a burst of a million identifiers held at
///   once, then dropped: gone after 250,000 more `get`s).
///
/// Each sweep costs one check per entry, a handful per `get` on average. [`len`](Self::len)
/// sweeps at once; [`entries`](Self::entries) counts without sweeping. The creator runs under
/// the registry's lock, so it should be cheap (a mutex, not a value).
///
/// ```
/// use dogpile_runtime::lock::NameRegistry;
/// use std::sync::Arc;
///
/// let registry = NameRegistry::new(|name: &String| format!("object for {name}"));
/// let a = registry.get("foo1");
/// let b = registry.get("foo1");
/// assert!(Arc::ptr_eq(&a, &b));
/// assert_eq!(registry.len(), 1);
/// drop((a, b));
/// assert_eq!(registry.len(), 0);
/// ```
pub struct NameRegistry<K, V, F = fn(&K) -> V> {
    creator: F,
    entries: Mutex<Entries<K, V>>,
    /// How many objects given back may be kept for reuse (see [`reusing`](Self::reusing)).
    spares: usize,
}

struct Entries<K, V> {
    /// Objects given back that no one held, handed out again instead of new ones.
    spare: Vec<Arc<V>>,
    /// The owned identifiers of entries that [`release`](NameRegistry::release) removed, whose
    /// allocations (a `String`'s buffer) the next new identifiers are copied into, each with
    /// the times its allocation was handed on (at most [`KEY_REUSES`]).
    spare_keys: Vec<(K, u8)>,
    /// Hashed with foldhash, seeded per registry: a miss hashes its key here once more, and
    /// SipHash cost it about a hundred instructions. Beside each object, the times its key's
    /// allocation was handed on.
    map: HashMap<K, (Weak<V>, u8), RandomState>,
    /// Sweep when the map reaches this many entries.
    sweep_at: usize,
    /// Sweep when this many more `get`s have run.
    gets_left: usize,
}

impl<K: Hash + Eq, V> Entries<K, V> {
    fn new() -> Self {
        Entries {
            spare: Vec::new(),
            spare_keys: Vec::new(),
            map: HashMap::default(),
            sweep_at: MIN_SWEEP,
            gets_left: MIN_SWEEP,
        }
    }

    /// Counts one `get` and sweeps if it is due; the map costs a sweep only as often as its
    /// size in `get`s allows, which keeps the average work per `get` constant.
    fn tick(&mut self) {
        self.gets_left = self.gets_left.saturating_sub(1);
        if self.gets_left == 0 || self.map.len() >= self.sweep_at {
            self.sweep();
        }
    }

    fn sweep(&mut self) {
        self.map.retain(|_, (weak, _)| weak.strong_count() > 0);
        let live = self.map.len();
        self.sweep_at = (live * 2).max(MIN_SWEEP);
        self.gets_left = (live / 4).max(MIN_SWEEP);
        if self.map.capacity() > 4 * self.sweep_at {
            self.map.shrink_to(self.sweep_at);
        }
    }
}

impl<K, V, F> NameRegistry<K, V, F>
where
    K: Hash + Eq,
    F: Fn(&K) -> V,
{
    /// A registry whose objects are made by `creator` from their identifier.
    ///
    /// ```
    /// # use dogpile_runtime::lock::NameRegistry;
    /// let registry = NameRegistry::new(|id: &u32| id * 2);
    /// assert_eq!(*registry.get(&21), 42);
    /// ```
    pub fn new(creator: F) -> Self {
        Self::reusing(creator, 0)
    }

    /// A registry that keeps up to `spares` of the objects given back with
    /// [`release`](Self::release) that no one else held, and hands them out again, for any
    /// identifier, instead of calling `creator`: a miss of a new key then costs no allocation.
    /// It keeps as many of the owned identifiers those releases removed and copies new
    /// identifiers into them ([`ToOwned::clone_into`]), so a `String` identifier's buffer is
    /// reused too, up to 64 times (it keeps the capacity of the longest copied into it).
    ///
    /// Only for objects that do not depend on their identifier and are as good as new once no
    /// one holds them, such as a [`LocalMutex`](crate::LocalMutex) (a holder keeps its `Arc`
    /// while it holds the mutex, so one given back with no other holder is free).
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, NameRegistry};
    /// # use std::sync::Arc;
    /// let registry = NameRegistry::reusing(|_: &u32| LocalMutex::new(), 4);
    /// let first = registry.get(&1);
    /// let address = Arc::as_ptr(&first);
    /// registry.release(&1, first);
    /// // Key 2's mutex is the one key 1 gave back: no new allocation.
    /// assert_eq!(Arc::as_ptr(&registry.get(&2)), address);
    /// ```
    pub fn reusing(creator: F, spares: usize) -> Self {
        NameRegistry {
            creator,
            entries: Mutex::new(Entries::new()),
            spares,
        }
    }

    /// The object for `identifier`: the live one if any, otherwise a new one from the creator.
    ///
    /// ```
    /// # use dogpile_runtime::lock::NameRegistry;
    /// # use std::sync::Arc;
    /// let registry = NameRegistry::new(|id: &String| id.len());
    /// let held = registry.get("four");
    /// assert!(Arc::ptr_eq(&held, &registry.get("four")));
    /// ```
    pub fn get<Q>(&self, identifier: &Q) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut entries = self.entries.lock();
        let value = match entries
            .map
            .get(identifier)
            .and_then(|(weak, _)| weak.upgrade())
        {
            Some(live) => live,
            None => {
                let (key, reused) = match entries.spare_keys.pop() {
                    Some((mut key, reused)) => {
                        identifier.clone_into(&mut key);
                        (key, reused + 1)
                    }
                    None => (identifier.to_owned(), 0),
                };
                let value = match entries.spare.pop() {
                    Some(spare) => spare,
                    None => Arc::new((self.creator)(&key)),
                };
                entries.map.insert(key, (Arc::downgrade(&value), reused));
                value
            }
        };
        entries.tick();
        value
    }

    /// Gives back `object`, had from [`get`](Self::get) for `identifier`: if no one else holds
    /// it, its entry goes now instead of at a later sweep. A registry whose objects are each used
    /// by one caller at a time (a cache's mutexes on misses of distinct keys) then stays at the
    /// few entries in use, and its sweeps find nothing to free.
    ///
    /// Dropping the object instead is always correct: its entry then waits for a sweep.
    ///
    /// ```
    /// # use dogpile_runtime::lock::NameRegistry;
    /// let registry = NameRegistry::new(|id: &u32| *id);
    /// let (a, b) = (registry.get(&1), registry.get(&1));
    /// registry.release(&1, a); // `b` still holds it: the entry stays
    /// assert_eq!(registry.entries(), 1);
    /// registry.release(&1, b);
    /// assert_eq!(registry.entries(), 0); // gone without a sweep
    /// ```
    pub fn release<Q>(&self, identifier: &Q, object: Arc<V>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock();
        // Under the lock no one can take a new reference: the count is final if it is one.
        if Arc::strong_count(&object) == 1 {
            if let Some((key, (weak, reused))) = entries.map.remove_entry(identifier) {
                if !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&object)) {
                    // Another identifier's object: its entry is not this one to remove.
                    entries.map.insert(key, (weak, reused));
                } else if reused < KEY_REUSES && entries.spare_keys.len() < self.spares {
                    entries.spare_keys.push((key, reused));
                }
            }
            // Kept only once no entry can reach it: for another identifier it is a new object.
            if entries.spare.len() < self.spares && Arc::weak_count(&object) == 0 {
                entries.spare.push(object);
                return;
            }
        }
        drop(entries);
        drop(object);
    }

    /// How many identifiers have a live object (dead entries are swept while counting).
    ///
    /// ```
    /// # use dogpile_runtime::lock::NameRegistry;
    /// let registry = NameRegistry::new(|id: &u8| *id);
    /// let kept = registry.get(&1);
    /// drop(registry.get(&2));
    /// assert_eq!(registry.len(), 1);
    /// # drop(kept);
    /// ```
    pub fn len(&self) -> usize {
        let mut entries = self.entries.lock();
        entries.sweep();
        entries.map.len()
    }

    /// How many entries the registry holds now, live or dead, without sweeping: what its memory
    /// follows. See the type's documentation for when dead entries are swept.
    ///
    /// ```
    /// # use dogpile_runtime::lock::NameRegistry;
    /// let registry = NameRegistry::new(|id: &u32| *id);
    /// drop(registry.get(&1));
    /// assert_eq!(registry.entries(), 1); // dead, not yet swept
    /// assert_eq!(registry.len(), 0);
    /// assert_eq!(registry.entries(), 0);
    /// ```
    pub fn entries(&self) -> usize {
        self.entries.lock().map.len()
    }

    /// Whether no identifier has a live object.
    ///
    /// ```
    /// # use dogpile_runtime::lock::NameRegistry;
    /// let registry = NameRegistry::new(|id: &u8| *id);
    /// assert!(registry.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V, F> fmt::Debug for NameRegistry<K, V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameRegistry")
            .field("entries", &self.entries.lock().map.len())
            .finish_non_exhaustive()
    }
}
