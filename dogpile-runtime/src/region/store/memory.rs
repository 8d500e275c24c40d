//! The in-memory store: a lock-free map for reads, a policy under a lock for writes.

use std::borrow::Borrow;
use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use papaya::{Guard, HashMap};

use super::config::{MemoryStoreBuilder, Settings};
use super::evict::{EvictionCause, Listener, Weigher};
use super::policy::{Policy, Residents, HITS_MAX};
use super::Store;
use crate::clock::{Clock, CoarseClock};
use crate::region::Stamp;
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Mutex, Ordering};
use crate::{BackendError, ConfigError};

/// A value with its stamp, as the map holds it.
struct Entry<V> {
    value: V,
    stamp: Stamp,
    /// The key's node in the policy; written under the policy's lock.
    node: AtomicU32,
    /// Hits, up to [`HITS_MAX`], halved each time the policy's hand passes. Readers write it only
    /// while it is below the cap; in an unbounded store it starts there, so they never do.
    hits: AtomicU8,
}

impl<V> Entry<V> {
    fn new(value: V, stamp: Stamp, node: u32, hits: u8) -> Self {
        Entry {
            value,
            stamp,
            node: AtomicU32::new(node),
            hits: AtomicU8::new(hits),
        }
    }
}

type Map<K, V> = HashMap<K, Entry<V>, RandomState>;

/// Set in an entry's hit counter when its key is in the policy's sample: its hits are logged for
/// the policy's miniature simulations. The hits themselves are the low bits, as in any entry.
const SAMPLED: u8 = 0x80;

/// Hits of sampled keys, by hash, until the policy's lock replays them in its simulations: at
/// the next write, or when a lap of the ring fills and the lock is free. Older hits are
/// overwritten if a lap passes before either; the simulations only need most of them.
struct SampledHits {
    slots: Box<[AtomicU64]>,
    /// How many hits were logged.
    next: AtomicUsize,
    /// How many were replayed (or overwritten); changed only under the policy's lock.
    replayed: AtomicUsize,
}

/// The ring's slots: a lap of hits between writes.
const SAMPLED_SLOTS: usize = 64;

impl SampledHits {
    fn new() -> Self {
        SampledHits {
            slots: (0..SAMPLED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            replayed: AtomicUsize::new(0),
        }
    }

    /// Logs a hit of the sampled key of `hash`; whether it ended a lap.
    fn log(&self, hash: u64) -> bool {
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        self.slots[at % SAMPLED_SLOTS].store(hash, Ordering::Release);
        at % SAMPLED_SLOTS == SAMPLED_SLOTS - 1
    }

    /// Replays the hits logged since the last time (at most a lap) in `policy`'s simulations.
    /// A slot whose hit is not written yet reads as empty: that hit is replayed at the next lap.
    fn replay(&self, policy: &mut Policy<impl Hash, RandomState>) {
        let end = self.next.load(Ordering::Acquire);
        let start = self.replayed.load(Ordering::Relaxed);
        if start == end {
            return;
        }
        for at in start.max(end.saturating_sub(SAMPLED_SLOTS))..end {
            let hash = self.slots[at % SAMPLED_SLOTS].swap(0, Ordering::Acquire);
            if hash != 0 {
                policy.replay(hash);
            }
        }
        self.replayed.store(end, Ordering::Relaxed);
    }
}

/// A value that left the store, for the listener: its key, the entry (alive while the map's
/// guard is held), and why.
type Departure<'g, K, V> = (K, &'g Entry<V>, EvictionCause);

/// The default store: a concurrent map in memory, optionally bounded.
///
/// **Reads** take no lock and write nothing shared in the common case: the map is
/// [`papaya`]'s lock-free hash map (hashed with `foldhash`, seeded per store), whose readers only
/// mark their own thread's epoch. In a bounded store a hit also raises its entry's hit counter,
/// but only while it is below its small cap, so a hot entry is read without a write. In a store
/// bounded at 65,536 keys or more, a hit on one of the keys its policy samples (one in 8 to one
/// in `capacity / 8,192`) also logs the key's hash in a small shared ring, for the miniature
/// simulations that choose the policy's admission margin.
///
/// **Writes** to a bounded store take one lock, where a W-TinyLFU policy decides what stays:
/// new keys enter a FIFO window; leaving it, a key that was hit moves to the main ring, and one
/// that was not is admitted only if a frequency sketch has seen it more often than the main
/// ring's victim (so a scan of one-time keys does not flush the keys asked for again and
/// again); the main ring evicts with a CLOCK hand over the hit counters. The window's size
/// adapts, as ARC's lists do, on misses of keys evicted lately: traffic whose keys return by
/// recency (sessions, records written then read back) grows it towards an LRU, skewed traffic
/// and scans keep it small. Each insert evicts in
/// O(1) amortized work, with at most a fixed number of steps of the hand, and the store holds
/// its bound whatever the sequence of keys, at every moment another thread can observe. Eviction removes keys one by one by key: the map is never swept.
///
/// **Removed values** (replaced, invalidated, evicted, purged) are freed as soon as no reader
/// holds them: each write that takes a value out of the map has it freed then, which costs a
/// process-wide memory barrier (about 0.2 µs on a 2-core machine). Evictions for capacity in
/// a store bounded by count do so at most once per tick of the coarse clock (a few ms), so
/// that misses do not pay it each; a burst of them may leave up to 31 evicted values per
/// writing thread until the next eviction after the tick. A reader preempted in the middle
/// of a read keeps what was removed meanwhile until it resumes, as with any lock-free map.
///
/// Values that leave the store can be observed with
/// [`on_evict`](MemoryStoreBuilder::on_evict); evictions for capacity are counted in
/// [`Store::evictions`] (and a region's [`Statistics::evictions`](crate::Statistics::evictions)).
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::{MemoryStore, Store};
///
/// let store = MemoryStore::new(Some(100))?;
/// for k in 0..1000u32 {
///     store.put(&k, &k, Timestamp::from_nanos(1).into()).unwrap();
/// }
/// assert_eq!(store.count(), Some(100));
/// assert_eq!(store.evictions(), 900);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MemoryStore<K, V> {
    map: Map<K, V>,
    /// `None`: no bound, and no lock.
    policy: Option<Mutex<Policy<K, RandomState>>>,
    /// Where readers log the hits of sampled keys, if the policy samples.
    sampled_hits: Option<SampledHits>,
    /// The map's and the policy's hasher, for the hash a sampled hit is logged by.
    hasher: RandomState,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
    evictions: AtomicU64,
    /// The weight of the values evicted.
    eviction_weight: AtomicU64,
    settings: Settings<K, V>,
    /// Why `settings` cannot work, for a store configured through a region builder.
    invalid: Option<ConfigError>,
    /// The coarse clock's reading at the last release of values evicted for capacity.
    released_at: AtomicU64,
}

impl<K, V> MemoryStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty store holding at most `capacity` values (`None`: unbounded);
    /// [`builder`](Self::builder) has the other options.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a capacity of 0: such a store would keep nothing, and every
    /// caller of a region on it would run the creator in turn.
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let store: MemoryStore<String, u64> = MemoryStore::new(Some(10_000))?;
    /// assert_eq!(MemoryStore::<u8, u8>::new(Some(0)).unwrap_err().option(), "capacity");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn new(capacity: Option<usize>) -> Result<Self, ConfigError> {
        let settings = Settings {
            capacity,
            ..Settings::default()
        };
        let bound = settings.bound()?;
        Ok(MemoryStore::with_settings(settings, bound))
    }

    /// An empty store without a bound: `new(None)`, which cannot fail.
    pub(crate) fn unbounded() -> Self {
        MemoryStore::with_settings(Settings::default(), None)
    }

    /// Configures a store: a capacity or a maximum weight with a weigher, and a listener.
    ///
    /// ```
    /// # use dogpile_runtime::region::MemoryStore;
    /// let store: MemoryStore<u64, String> = MemoryStore::builder().capacity(500).build().unwrap();
    /// ```
    pub fn builder() -> MemoryStoreBuilder<K, V> {
        MemoryStoreBuilder::new()
    }

    pub(super) fn with_settings(settings: Settings<K, V>, bound: Option<u64>) -> Self {
        let hasher = RandomState::default();
        let presize = bound.map_or(0, |b| usize::try_from(b).unwrap_or(usize::MAX).min(1 << 16));
        let policy = bound.map(|b| Policy::new(b, settings.weigher.is_some(), hasher.clone()));
        MemoryStore {
            sampled_hits: policy
                .as_ref()
                .filter(|policy| policy.simulates())
                .map(|_| SampledHits::new()),
            map: HashMap::builder()
                .hasher(hasher.clone())
                .capacity(presize)
                .resize_mode(papaya::ResizeMode::Incremental(64))
                .build(),
            policy: policy.map(Mutex::new),
            hasher,
            weigher: settings.weigher.clone(),
            listener: settings.listener.clone(),
            evictions: AtomicU64::new(0),
            eviction_weight: AtomicU64::new(0),
            settings,
            invalid: None,
            released_at: AtomicU64::new(0),
        }
    }

    /// The same store, empty, with `change` made to its settings: how a region builder
    /// configures its default store one option at a time. Settings that cannot work (yet) are
    /// kept in [`Store::check`]'s answer, and the store they give keeps nothing.
    pub(crate) fn reconfigured(self, change: impl FnOnce(&mut Settings<K, V>)) -> Self {
        let mut settings = self.settings;
        change(&mut settings);
        match settings.bound() {
            Ok(bound) => MemoryStore::with_settings(settings, bound),
            Err(err) => {
                let mut store = MemoryStore::with_settings(settings, Some(0));
                store.invalid = Some(err);
                store
            }
        }
    }

    /// Reads without cloning, by the key or a borrowed form of it: `f` sees the value and its
    /// stamp.
    #[inline]
    pub(crate) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V, Stamp) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // `pin` ties the guard to this map once, so the look-up need not check it.
        let map = self.map.pin();
        let entry = map.get(key)?;
        let hits = entry.hits.load(Ordering::Relaxed);
        if hits < HITS_MAX {
            entry.hits.store(hits + 1, Ordering::Relaxed);
        } else if hits != HITS_MAX {
            self.sampled_hit(key, entry);
        }
        Some(f(&entry.value, entry.stamp))
    }

    /// A hit of a sampled key: counted, and logged for the policy's simulations.
    #[cold]
    #[inline(never)]
    fn sampled_hit<Q: Hash + ?Sized>(&self, key: &Q, entry: &Entry<V>) {
        let hits = entry.hits.load(Ordering::Relaxed);
        if hits & !SAMPLED < HITS_MAX {
            entry.hits.store(hits + 1, Ordering::Relaxed);
        }
        let Some(log) = &self.sampled_hits else {
            return;
        };
        if log.log(self.hasher.hash_one(key)) {
            if let Some(mut policy) = self.policy.as_ref().and_then(Mutex::try_lock) {
                log.replay(&mut policy);
            }
        }
    }

    /// Whether `key` has a value, without counting a hit for the policy (a check of the
    /// store's own upkeep, not a use of the value).
    #[cfg(feature = "redis")]
    pub(crate) fn holds(&self, key: &K) -> bool {
        self.map.pin().contains_key(key)
    }

    /// The weight `value` takes: at least 1.
    fn weigh(&self, key: &K, value: &V) -> u32 {
        self.weigher
            .as_ref()
            .map_or(1, |weigh| weigh(key, value).max(1))
    }

    /// The first hit count of a new entry.
    fn fresh_hits(&self) -> u8 {
        if self.policy.is_some() {
            0
        } else {
            HITS_MAX
        }
    }

    /// Frees the entries this thread's writes took out of the map, as soon as no reader holds
    /// them. The map frees what it removes in batches per thread (papaya's `seize`, 32 to a
    /// batch): without this, a thread kept up to 31 removed values alive until it removed
    /// more, so a 50 MB value replaced once an hour stayed in memory 31 times over. A release
    /// costs a process-wide memory barrier (about 0.2 µs on a 2-core machine), so it follows
    /// the writes that replace or remove a value, which follow a creator's run or a user's
    /// call, and never a read.
    fn release(&self, guard: &impl Guard) {
        guard.flush();
    }

    /// [`release`](Self::release) after evictions for capacity: at once in a store bounded
    /// by weight (its values are the large ones, and its bound is in memory); at most once
    /// per tick of the coarse clock in a store bounded by count, whose misses would otherwise
    /// pay the barrier each. What a tick's evictions leave stays until the next eviction
    /// after it, and never more than the map's batch.
    fn release_evicted(&self, guard: &impl Guard) {
        if self.weigher.is_none() {
            let now = CoarseClock.now().as_nanos().unsigned_abs();
            if self.released_at.load(Ordering::Relaxed) == now
                || self.released_at.swap(now, Ordering::Relaxed) == now
            {
                return;
            }
        }
        self.release(guard);
    }

    /// Tells the listener, now that the lock is released.
    fn report<'g>(&self, departures: impl IntoIterator<Item = Departure<'g, K, V>>)
    where
        V: 'g,
    {
        if let Some(listener) = &self.listener {
            for (key, entry, cause) in departures {
                listener(&key, &entry.value, cause);
            }
        }
    }

    /// Removes `key` with `cause`.
    fn take(&self, key: &K, cause: EvictionCause) {
        let guard = self.map.guard();
        let Some(policy) = &self.policy else {
            if let Some(old) = self.map.remove(key, &guard) {
                self.report([(key.clone(), old, cause)]);
                self.release(&guard);
            }
            return;
        };
        let departed = {
            let mut policy = policy.lock();
            self.map.remove(key, &guard).map(|old| {
                let key = policy.remove(old.node.load(Ordering::Relaxed), &Held(&self.map, &guard));
                (key, old, cause)
            })
        };
        let removed = departed.is_some();
        self.report(departed);
        if removed {
            self.release(&guard);
        }
    }

    /// Removes `key` if `dead` judges its value so, at the moment of its removal; whether it
    /// did. The caller [releases](Self::release) what it removed.
    fn take_if_dead(&self, key: &K, dead: &dyn Fn(Stamp) -> bool) -> bool {
        let guard = self.map.guard();
        let departed = match &self.policy {
            None => self
                .map
                .remove_if(key, |_, entry| dead(entry.stamp), &guard)
                .ok()
                .flatten()
                .map(|(_, old)| old),
            Some(policy) => {
                let mut policy = policy.lock();
                match self.map.get(key, &guard) {
                    Some(entry) if dead(entry.stamp) => {
                        self.map.remove(key, &guard).inspect(|old| {
                            policy
                                .remove(old.node.load(Ordering::Relaxed), &Held(&self.map, &guard));
                        })
                    }
                    _ => None,
                }
            }
        };
        let Some(old) = departed else {
            return false;
        };
        self.report([(key.clone(), old, EvictionCause::Expired)]);
        true
    }

    /// Stores under the policy's lock; the values that left, for the listener, and what the
    /// map let go of.
    fn put_bounded<'g>(
        &self,
        policy: &Mutex<Policy<K, RandomState>>,
        key: &K,
        value: &V,
        stamp: Stamp,
        guard: &'g impl Guard,
    ) -> (Vec<Departure<'g, K, V>>, bool, Removed) {
        let weight = self.weigh(key, value);
        let reporting = self.listener.is_some();
        let mut departures = Vec::new();
        let mut policy = policy.lock();
        if let Some(log) = &self.sampled_hits {
            log.replay(&mut policy);
        }
        let held = Held(&self.map, guard);
        if u64::from(weight) > policy.max_weight() {
            // It could never fit: keep nothing under this key.
            let mut removed = Removed::Nothing;
            if let Some(old) = self.map.remove(key, guard) {
                let key = policy.remove(old.node.load(Ordering::Relaxed), &held);
                departures.push((key, old, EvictionCause::Replaced));
                removed = Removed::Replaced;
            }
            // The caller counts the eviction; its weight is counted here.
            self.count_evictions((0, u64::from(weight)));
            return (departures, true, removed);
        }
        if let Some(old) = self.map.get(key, guard) {
            let node = old.node.load(Ordering::Relaxed);
            let hits = old.hits.load(Ordering::Relaxed);
            let entry = Entry::new(value.clone(), stamp, node, hits);
            if let Some(old) = self.map.insert(key.clone(), entry, guard) {
                if reporting {
                    departures.push((key.clone(), old, EvictionCause::Replaced));
                }
            }
            policy.reweigh(node, weight);
            let evictions = self.evict(&mut policy, &held, &mut departures, guard);
            self.count_evictions(evictions);
            (departures, false, Removed::Replaced)
        } else {
            // The new key's entry goes into the map after the evictions, at the node the policy
            // leaves it: re-pointing an entry already in the map, when a removal moves its node,
            // would cost a look-up.
            let (node, sampled) = policy.insert(key.clone(), weight);
            let newcomer = Newcomer {
                held,
                key,
                node: Cell::new(Some(node)),
            };
            let evictions = self.evict(&mut policy, &newcomer, &mut departures, guard);
            let Some(node) = newcomer.node.get() else {
                // Evicted at once: never in the map; the caller counts and reports it (its
                // weight is in the evicted weight).
                self.count_evictions((evictions.0 - 1, evictions.1));
                return (departures, true, Removed::evicted(evictions.0 - 1));
            };
            let hits = if sampled { SAMPLED } else { 0 };
            self.map.insert(
                key.clone(),
                Entry::new(value.clone(), stamp, node, hits),
                guard,
            );
            self.count_evictions(evictions);
            (departures, false, Removed::evicted(evictions.0))
        }
    }

    /// Evicts until the store is within its bound; how many keys went, and their weight.
    /// `residents` is the map as the policy sees it.
    ///
    /// An evicted key's allocation is not lent to the new key's copy (as the mutex registry
    /// lends the identifiers it let go, each at most 64 times): a `String` buffer would then
    /// pass from key to key with the capacity of the longest it ever held, and a store would
    /// keep a 50 MB key's buffer for as long as it runs.
    fn evict<'g>(
        &self,
        policy: &mut Policy<K, RandomState>,
        residents: &impl Residents<K>,
        departures: &mut Vec<Departure<'g, K, V>>,
        guard: &'g impl Guard,
    ) -> (u64, u64) {
        let reporting = self.listener.is_some();
        let mut evictions = 0;
        let before = policy.weight();
        policy.evict(residents, |key| {
            evictions += 1;
            if let Some(old) = self.map.remove(&key, guard) {
                if reporting {
                    departures.push((key, old, EvictionCause::Capacity));
                }
            }
        });
        (evictions, before.saturating_sub(policy.weight()))
    }

    fn count_evictions(&self, (evictions, weight): (u64, u64)) {
        if evictions > 0 {
            self.evictions.fetch_add(evictions, Ordering::Relaxed);
        }
        if weight > 0 {
            self.eviction_weight.fetch_add(weight, Ordering::Relaxed);
        }
    }
}

/// What a bounded store's write took out of the map, to be [released](MemoryStore::release).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Removed {
    Nothing,
    /// The key's previous value (or, too heavy to keep, the new one's key's).
    Replaced,
    /// Values evicted for capacity.
    Evicted,
}

impl Removed {
    fn evicted(count: u64) -> Self {
        if count > 0 {
            Removed::Evicted
        } else {
            Removed::Nothing
        }
    }
}

/// The map as the policy sees it, under a guard.
struct Held<'a, K, V, G>(&'a Map<K, V>, &'a G);

/// The map as the policy sees it while a new key is not in it yet: the new key has no hits, and
/// its node, which removals may move, is noted here; `None` once the policy evicted it.
struct Newcomer<'a, K, V, G> {
    held: Held<'a, K, V, G>,
    key: &'a K,
    node: Cell<Option<u32>>,
}

impl<K, V, G> Residents<K> for Newcomer<'_, K, V, G>
where
    K: Hash + Eq,
    G: Guard,
{
    fn update_hits(&self, key: &K, f: impl FnOnce(u8) -> u8) -> u8 {
        if key == self.key {
            return 0;
        }
        self.held.update_hits(key, f)
    }

    fn moved(&self, key: &K, node: u32) {
        if key == self.key {
            self.node.set(Some(node));
        } else {
            self.held.moved(key, node);
        }
    }

    fn evicted(&self, key: &K) {
        if key == self.key {
            self.node.set(None);
        }
    }
}

impl<K, V, G> Residents<K> for Held<'_, K, V, G>
where
    K: Hash + Eq,
    G: Guard,
{
    fn update_hits(&self, key: &K, f: impl FnOnce(u8) -> u8) -> u8 {
        let Some(entry) = self.0.get(key, self.1) else {
            return 0;
        };
        let hits = entry.hits.load(Ordering::Relaxed);
        let (sampled, hits) = (hits & SAMPLED, hits & !SAMPLED);
        entry.hits.store(f(hits) | sampled, Ordering::Relaxed);
        hits
    }

    fn moved(&self, key: &K, node: u32) {
        if let Some(entry) = self.0.get(key, self.1) {
            entry.node.store(node, Ordering::Relaxed);
        }
    }
}

impl<K, V> Store<K, V> for MemoryStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    #[inline]
    fn get(&self, key: &K) -> Result<Option<(V, Stamp)>, BackendError> {
        Ok(self.read(key, |value, stamp| (value.clone(), stamp)))
    }

    #[inline]
    fn get_by<Q>(&self, key: &Q) -> Result<Option<(V, Stamp)>, BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        Ok(self.read(key, |value, stamp| (value.clone(), stamp)))
    }

    fn put(&self, key: &K, value: &V, stamp: Stamp) -> Result<(), BackendError> {
        let guard = self.map.guard();
        let Some(policy) = &self.policy else {
            let entry = Entry::new(value.clone(), stamp, 0, self.fresh_hits());
            if let Some(old) = self.map.insert(key.clone(), entry, &guard) {
                self.report([(key.clone(), old, EvictionCause::Replaced)]);
                self.release(&guard);
            }
            return Ok(());
        };
        let (departures, too_heavy, removed) = self.put_bounded(policy, key, value, stamp, &guard);
        self.report(departures);
        if too_heavy {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            if let Some(listener) = &self.listener {
                listener(key, value, EvictionCause::Capacity);
            }
        }
        match removed {
            Removed::Nothing => {}
            Removed::Replaced => self.release(&guard),
            Removed::Evicted => self.release_evicted(&guard),
        }
        Ok(())
    }

    fn restamp(&self, key: &K, from: Stamp, to: Stamp) -> Result<bool, BackendError> {
        let guard = self.map.guard();
        let restamped = |entry: &Entry<V>| {
            Entry::new(
                entry.value.clone(),
                to,
                entry.node.load(Ordering::Relaxed),
                entry.hits.load(Ordering::Relaxed),
            )
        };
        let Some(policy) = &self.policy else {
            let compute = |found: Option<(&K, &Entry<V>)>| match found {
                Some((_, entry)) if entry.stamp == from => {
                    papaya::Operation::Insert(restamped(entry))
                }
                _ => papaya::Operation::Abort(()),
            };
            let done = self.map.compute(key.clone(), compute, &guard);
            let restamped = matches!(done, papaya::Compute::Updated { .. });
            if restamped {
                self.release(&guard);
            }
            return Ok(restamped);
        };
        // A bounded store changes its map only under the policy's lock.
        let restamped = {
            let _policy = policy.lock();
            match self.map.get(key, &guard) {
                Some(entry) if entry.stamp == from => {
                    self.map.insert(key.clone(), restamped(entry), &guard);
                    true
                }
                _ => false,
            }
        };
        if restamped {
            self.release(&guard);
        }
        Ok(restamped)
    }

    fn remove(&self, key: &K) -> Result<(), BackendError> {
        self.take(key, EvictionCause::Removed);
        Ok(())
    }

    fn invalidate(&self, key: &K) -> Result<(), BackendError> {
        self.take(key, EvictionCause::Invalidated);
        Ok(())
    }

    fn clear(&self) -> Result<(), BackendError> {
        let guard = self.map.guard();
        let Some(policy) = &self.policy else {
            match &self.listener {
                // No lock is held while the listener runs.
                Some(listener) => self.map.retain(
                    |key, entry| {
                        listener(key, &entry.value, EvictionCause::Removed);
                        false
                    },
                    &guard,
                ),
                None => self.map.clear(&guard),
            }
            self.release(&guard);
            return Ok(());
        };
        let departures: Vec<_> = {
            let mut policy = policy.lock();
            let keys = policy.clear();
            if self.listener.is_none() {
                self.map.clear(&guard);
                Vec::new()
            } else {
                keys.into_iter()
                    .filter_map(|key| {
                        let old = self.map.remove(&key, &guard)?;
                        Some((key, old, EvictionCause::Removed))
                    })
                    .collect()
            }
        };
        self.report(departures);
        self.release(&guard);
        Ok(())
    }

    fn purge(&self, dead: &dyn Fn(Stamp) -> bool) -> Result<usize, BackendError> {
        // The keys first, the removals after, each by key: removing what an iterator of the
        // map yields, while it runs, is what made papaya allocate without bound under churn
        // (`examples/papaya_iterate_remove.rs`).
        let keys: Vec<K> = {
            let guard = self.map.guard();
            self.map
                .iter(&guard)
                .filter(|(_, entry)| dead(entry.stamp))
                .map(|(key, _)| key.clone())
                .collect()
        };
        let purged = keys
            .iter()
            .filter(|key| self.take_if_dead(key, dead))
            .count();
        if purged > 0 {
            self.release(&self.map.guard());
        }
        Ok(purged)
    }

    fn count(&self) -> Option<usize> {
        // A bounded store changes its map only under the policy's lock, so the policy's count
        // is exact; the map's own is a sum of per-thread shards read without a lock.
        Some(match &self.policy {
            Some(policy) => policy.lock().len(),
            None => self.map.len(),
        })
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn eviction_weight(&self) -> u64 {
        self.eviction_weight.load(Ordering::Relaxed)
    }

    fn weight(&self) -> Option<u64> {
        Some(match &self.policy {
            Some(policy) => policy.lock().weight(),
            None => self.map.len() as u64,
        })
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.invalid.clone().map_or(Ok(()), Err)
    }
}

impl<K: Hash + Eq, V> fmt::Debug for MemoryStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.map.len())
            .field("capacity", &self.settings.capacity)
            .field("max_weight", &self.settings.max_weight)
            .field("evictions", &self.evictions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    /// Sampled keys among `keys` of `store`, and the accesses its shadows replayed.
    fn sampled(store: &MemoryStore<u64, u64>, keys: impl Iterator<Item = u64>) -> (usize, u64) {
        let policy = store.policy.as_ref().expect("bounded").lock();
        let sampled = keys.filter(|k| policy.samples(policy.hash(k))).count();
        (sampled, policy.replayed())
    }

    #[test]
    fn hits_of_sampled_keys_reach_the_policys_simulations_without_a_write() {
        let store: MemoryStore<u64, u64> = MemoryStore::new(Some(1 << 16)).unwrap();
        let t = Stamp::new(Timestamp::from_nanos(1));
        for key in 0..1 << 16 {
            store.put(&key, &key, t).unwrap();
        }
        let (put, before) = sampled(&store, 0..1 << 16);
        assert!(put > 1_000, "{put} of 65,536 keys sampled");
        assert_eq!(before, put as u64, "each sampled miss replayed");
        // Hits only: each lap of the ring is replayed by the reader that ends it.
        let reads = || (0..200_000u64).map(|i| i * 7919 % (1 << 16));
        for key in reads() {
            assert_eq!(store.get(&key).unwrap().map(|(v, _)| v), Some(key));
        }
        let (hits, after) = sampled(&store, reads());
        let replayed = after - before;
        assert!(
            (hits as u64).abs_diff(replayed) < SAMPLED_SLOTS as u64,
            "{replayed} of {hits} sampled hits replayed"
        );
        // A write replays what is left.
        store.put(&u64::MAX, &0, t).unwrap();
        let (new, last) = sampled(&store, std::iter::once(u64::MAX));
        assert_eq!(last - before, (hits + new) as u64);
    }

    #[test]
    fn threads_reading_and_writing_a_sampling_store_keep_its_bound_and_its_values() {
        let store: MemoryStore<u64, u64> = MemoryStore::new(Some(1 << 16)).unwrap();
        let t = Stamp::new(Timestamp::from_nanos(1));
        std::thread::scope(|s| {
            for thread in 0..4u64 {
                let store = &store;
                s.spawn(move || {
                    let mut x = thread + 1;
                    for _ in 0..50_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = x % 160_000;
                        match store.get(&key).unwrap() {
                            Some((value, _)) => assert_eq!(value, key),
                            None => store.put(&key, &key, t).unwrap(),
                        }
                    }
                });
            }
        });
        assert!(store.count().unwrap() <= 1 << 16);
        let (_, replayed) = sampled(&store, std::iter::empty());
        assert!(replayed > 10_000, "{replayed} accesses replayed");
    }

    #[test]
    fn a_new_value_the_policy_rejects_at_once_is_reported_and_counted_once() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let store: MemoryStore<u32, u32> = MemoryStore::builder()
            .max_weight(100)
            .weigher(|_, weight: &u32| *weight)
            .on_evict(move |key, weight, cause| log.lock().push((*key, *weight, cause)))
            .build()
            .unwrap();
        let t = Stamp::new(Timestamp::from_nanos(1));
        for key in 0..99 {
            store.put(&key, &1, t).unwrap();
        }
        // Too heavy for the window and never seen before: rejected as it arrives.
        store.put(&1000, &50, t).unwrap();
        assert_eq!(store.get(&1000).unwrap(), None);
        assert_eq!(store.count(), Some(99));
        assert_eq!(store.evictions(), 1);
        assert_eq!(*seen.lock(), [(1000, 50, EvictionCause::Capacity)]);
    }

    #[test]
    fn a_region_builder_configures_one_option_at_a_time_and_keeps_what_cannot_work() {
        let store: MemoryStore<u8, String> = MemoryStore::unbounded().reconfigured(|s| {
            s.weigher = Some(std::sync::Arc::new(|_, v: &String| v.len() as u32))
        });
        assert_eq!(
            store.check().unwrap_err().option(),
            "weigher",
            "no max_weight yet"
        );
        let store = store.reconfigured(|s| s.max_weight = Some(10));
        assert!(store.check().is_ok());
        store
            .put(&1, &"12345".into(), Timestamp::from_nanos(1).into())
            .unwrap();
        store
            .put(&2, &"123456".into(), Timestamp::from_nanos(1).into())
            .unwrap();
        assert_eq!(store.count(), Some(1), "weights count against the maximum");

        let store: MemoryStore<u8, u8> =
            MemoryStore::unbounded().reconfigured(|s| s.capacity = Some(0));
        assert_eq!(store.check().unwrap_err().option(), "capacity");
        store.put(&1, &1, Timestamp::from_nanos(1).into()).unwrap();
        assert_eq!(store.count(), Some(0), "and keeps nothing meanwhile");
    }
}
