//! A near cache: a [`RedisStore`] with a bounded in-memory tier in front of it, kept coherent
//! across processes by Redis pub/sub.
//!
//! - **Reads.** The region's hot path reads the memory tier; a copy there younger than `near`
//!   is answered without touching Redis, with the stamp Redis gave it, so the region judges its
//!   freshness exactly as it would have judged Redis's answer. Anything else (no copy, a copy
//!   older than `near`, a listener that is down) goes to Redis, and what Redis answers is kept.
//!   The protocol's own reads (after taking a key's lock, or waiting for it) always go to
//!   Redis, so one regeneration per key per expiry across processes holds as on a plain store.
//! - **Writes** go to Redis first (fenced as on a plain store), publishing a notification on
//!   the namespace's channel from the same script, then to the memory tier. Invalidations
//!   publish after their command.
//! - **Coherence.** A thread of the store subscribes to the channel; a notification from
//!   another process drops that key's copy (or every copy). While it is not subscribed (at
//!   start, after the connection broke or was killed), the memory tier is suspect: reads go to
//!   Redis; once subscribed again, the memory tier is emptied first (notifications were missed).
//! - **Races.** Each key belongs to one of [`STRIPES`] stripes, with a sequence number bumped by
//!   every change of one of its keys (a notification, a write of this process) and a count of
//!   this process's writes in flight. A copy read from Redis is kept only if its stripe did not
//!   change while it was read, so a notification that arrives before the read's answer cannot
//!   be undone by it; a write's copy only if no other write of the stripe overlapped it.
//!   Notifications name a key by its encoding (as in its Redis key): each stripe keeps the keys
//!   it has in memory by their encoding, so keys need not deserialize (the `(&'static str, K)`
//!   keys of a region shared by `#[dogpile]` functions do not).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::connection::Connection;
use super::keys;
use super::{Redis, RedisStore};
use crate::lock::Fence;
#[cfg(feature = "tokio")]
use crate::region::{AsyncStore, StoreFuture};
use crate::region::{BackendHealth, Invalidation, MemoryStore, Stamp, Store};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};
use crate::{BackendError, Clock, CoarseClock, ConfigError, Timestamp};

/// How many stripes the memory tier's keys are spread over, for the races above.
const STRIPES: usize = 64;
/// How long the listener waits for a notification before it checks the connection with a
/// `PING` (and whether its store is still there).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long the listener waits before subscribing again after it lost its connection.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(50);

/// A notification: one key's value changed (its encoded key follows).
const KEY: u8 = b'k';
/// A notification: every value of the namespace changed.
const ALL: u8 = b'a';
/// The origin of notifications sent by the replay of kept invalidations: every process,
/// this one included, drops its copy.
const NO_ORIGIN: u64 = 0;

/// A copy in the memory tier, kept until `until` (on the coarse clock, in nanoseconds).
#[derive(Clone)]
struct Kept<V> {
    value: V,
    until: i64,
}

impl<V> Kept<V> {
    /// Whether the copy may be served at `now`, for a tier that keeps copies `near_nanos`: before
    /// its end, and not further from it than it was made (the wall clock stepped back since: the
    /// copy would otherwise outlive its bound on staleness by the length of the step).
    fn serves(&self, now: i64, near_nanos: i64) -> bool {
        self.until > now && self.until.saturating_sub(now) <= near_nanos
    }
}

/// What races the stripe's keys (see the module's docs), and the keys it has in memory by
/// their encoding, so that a notification, which names a key by its encoding, finds its copy.
struct Stripe<K> {
    seq: u64,
    writing: u32,
    keys: HashMap<Vec<u8>, K>,
    /// Past this many keys, those the memory tier evicted are forgotten.
    most: usize,
}

/// The memory tier and what keeps it coherent, shared with the listener thread.
struct Near<K, V> {
    memory: MemoryStore<K, Kept<V>>,
    near_nanos: i64,
    stripes: Box<[Mutex<Stripe<K>>]>,
    /// Whether the listener is subscribed: the memory tier is served only then.
    up: AtomicBool,
    /// Whether, since the subscription was lost, the listener's attempt to subscribe again
    /// (made at once) found no server: the loss was the outage's own, and the copies are as
    /// good as when it began.
    unreached: AtomicBool,
    /// This store's id in its notifications, so that it skips its own.
    origin: u64,
    misses: AtomicU64,
    suspect: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
    regained: AtomicU64,
    outage: AtomicU64,
}

/// A [`RedisStore`] with a bounded in-memory tier in front of it, coherent across processes:
/// a fresh hit on a warm key is an in-memory hit, with no Redis round trip. Made by
/// [`RedisStore::near`].
///
/// - A copy in memory is served for at most `near` after it was read from (or written to)
///   Redis, with the stamp Redis keeps, so it is never fresher than Redis says; past `near`, or
///   when the key's copy is missing, the read goes to Redis, under the same protocol as a plain
///   Redis region (stale values served while one caller in the fleet regenerates, fenced
///   writes).
/// - Every write and invalidation of any process (`insert`, a regeneration, `invalidate`,
///   `soft_invalidate`, `invalidate_all`, `soft_invalidate_all`, `clear`) is published on the
///   namespace's channel (`dogpile:near:<namespace>`); each store's listener drops the copies
///   it names. A store that is not subscribed (its connection broke, or was killed) serves
///   nothing from memory as fresh until it has subscribed again, and then starts empty.
/// - When Redis fails (the breaker open, a timeout), a read answers the copy in memory
///   whatever its age, for the region to judge (its stale windows apply), and invalidations
///   made meanwhile drop the copies at once and are replayed as on a plain store. Only if the
///   store was subscribed when Redis began failing, or lost its subscription to the same
///   outage (its `PING` unanswered, or no server when it tried to subscribe again, at once): a
///   subscription lost while the server still answered (a connection killed) may have missed
///   changes, and its copies are not served until it has subscribed again (and emptied the
///   tier).
///
/// `near` runs on the system's coarse clock ([`CoarseClock`]), whatever clock the region is
/// given: it bounds real time.
///
/// Every process sharing the namespace must use a near store: a plain [`RedisStore`]
/// publishes nothing, and other processes then see its writes only after `near`. On a Redis
/// Cluster the listener does not subscribe, and the store reads through to Redis every time.
///
/// ```no_run
/// use dogpile_runtime::backend::redis::{NearRegion, Redis};
/// use dogpile_runtime::Region;
/// use std::time::Duration;
///
/// let redis = Redis::open("redis://127.0.0.1:6379/")?;
/// let users: NearRegion<u64, String> = Region::builder()
///     .expiry(Duration::from_secs(60))
///     .store(redis.store("users").near(10_000, Duration::from_secs(10))?)
///     .mutexes(redis.mutexes("users"))
///     .build()?;
/// assert_eq!(users.get_with(&7, || "ann".to_string()), "ann");
/// assert_eq!(users.get_with(&7, || unreachable!()), "ann"); // from memory
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NearStore<K, V> {
    far: RedisStore<K, V>,
    near: Arc<Near<K, V>>,
    channel: Vec<u8>,
}

/// The channel of `namespace`'s notifications.
fn channel(namespace: &str) -> Vec<u8> {
    let mut channel = b"dogpile:near:".to_vec();
    channel.extend(namespace.as_bytes());
    channel
}

impl<K, V> RedisStore<K, V>
where
    K: Serialize + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// This store with an in-memory tier of at most `capacity` values in front of it, each
    /// served for at most `near` after it came from Redis: a [`NearStore`]. Keep `near` at or
    /// below the region's expiry; it bounds how long a copy can be served after another
    /// process changed the value if a notification is lost without the listener noticing.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a capacity of 0, or a `near` under 1 ms or over 100 years.
    ///
    /// Runs without a server: Redis unreachable, the store never subscribes, and the region's
    /// calls go to their creators directly (one at a time per key in the process).
    ///
    /// ```
    /// use dogpile_runtime::backend::redis::{NearRegion, NearStore, Redis};
    /// use dogpile_runtime::region::Served;
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    ///
    /// // Nothing listens on port 1.
    /// let redis = Redis::builder("redis://127.0.0.1:1/")
    ///     .timeout(Duration::from_millis(100))
    ///     .build()?;
    /// let store: NearStore<u64, String> = redis.store("users").near(1_000, Duration::from_secs(5))?;
    /// assert!(!store.listening());
    /// let users: NearRegion<u64, String> = Region::builder()
    ///     .expiry(Duration::from_secs(60))
    ///     .store(store)
    ///     .mutexes(redis.mutexes("users"))
    ///     .build()?;
    /// assert_eq!(users.get_with_served(&7, || "ann".into()), ("ann".into(), Served::Direct));
    /// assert!(redis.store::<u64, String>("users").near(0, Duration::from_secs(5)).is_err());
    /// assert!(redis.store::<u64, String>("users").near(10, Duration::ZERO).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn near(self, capacity: usize, near: Duration) -> Result<NearStore<K, V>, ConfigError> {
        if near < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "near",
                "is under 1 ms: every copy would be gone before it is read again; use a plain \
                 RedisStore for no memory tier",
            ));
        }
        crate::error::check_duration("near", near, "use the region's expiry")?;
        let memory = MemoryStore::new(Some(capacity))?;
        let mut origin = [0; 8];
        // Without randomness, an id from the process and the time: unique enough.
        if getrandom::fill(&mut origin).is_err() {
            let now = CoarseClock.now().as_nanos().unsigned_abs();
            origin = (now ^ u64::from(std::process::id()) << 32).to_be_bytes();
        }
        let near = Arc::new(Near {
            memory,
            near_nanos: i64::try_from(near.as_nanos()).unwrap_or(i64::MAX),
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        seq: 0,
                        writing: 0,
                        keys: HashMap::new(),
                        most: (capacity / STRIPES).max(16) * 2,
                    })
                })
                .collect(),
            up: AtomicBool::new(false),
            unreached: AtomicBool::new(false),
            origin: u64::from_be_bytes(origin).max(1),
            misses: AtomicU64::new(0),
            suspect: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            regained: AtomicU64::new(0),
            outage: AtomicU64::new(0),
        });
        let channel = channel(&self.namespace);
        listen(Arc::downgrade(&near), self.redis.clone(), channel.clone());
        Ok(NearStore {
            far: self,
            near,
            channel,
        })
    }
}

impl<K, V> NearStore<K, V> {
    /// Whether the store is subscribed to its channel now: only then does it serve copies
    /// from memory as fresh.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{NearStore, Redis};
    /// # use std::time::Duration;
    /// let store: NearStore<u64, String> =
    ///     Redis::open("redis://127.0.0.1/")?.store("users").near(1_000, Duration::from_secs(5))?;
    /// while !store.listening() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn listening(&self) -> bool {
        self.near.up.load(Ordering::Acquire)
    }

    /// The store in Redis behind the memory tier.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{NearStore, Redis};
    /// # use std::time::Duration;
    /// let store: NearStore<u64, String> =
    ///     Redis::open("redis://127.0.0.1/")?.store("users").near(1_000, Duration::from_secs(5))?;
    /// assert_eq!(store.far().undecodable(), 0);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn far(&self) -> &RedisStore<K, V> {
        &self.far
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static, V: Clone + Send + Sync + 'static> Near<K, V> {
    /// The stripe of a key, by its encoding (what notifications name).
    fn stripe(&self, encoded: &[u8]) -> &Mutex<Stripe<K>> {
        &self.stripes[usize::from(keys::shard(encoded)) % STRIPES]
    }

    fn now() -> i64 {
        CoarseClock.now().as_nanos()
    }

    /// Keeps `value` as `key`'s copy, on its locked stripe.
    fn keep(&self, stripe: &mut Stripe<K>, key: &K, encoded: &[u8], value: &V, stamp: Stamp) {
        let copy = Kept {
            value: value.clone(),
            until: Self::now().saturating_add(self.near_nanos),
        };
        if self.memory.put(key, &copy, stamp).is_err() {
            return;
        }
        if !stripe.keys.contains_key(encoded) {
            stripe.keys.insert(encoded.to_vec(), key.clone());
            if stripe.keys.len() > stripe.most {
                // Keys the memory tier evicted since: forget them.
                stripe.keys.retain(|_, key| self.memory.holds(key));
                stripe.most = stripe.most.max(stripe.keys.len() * 2);
            }
        }
    }

    /// Drops `key`'s copy, on its locked stripe.
    fn forget(&self, stripe: &mut Stripe<K>, key: &K, encoded: &[u8]) {
        stripe.keys.remove(encoded);
        let _ = self.memory.remove(key);
    }

    /// Keeps what Redis answered for `key` if its stripe did not change since `seq`.
    fn fill(&self, key: &K, encoded: &[u8], seq: u64, found: &Option<(V, Stamp)>) {
        let mut stripe = self.stripe(encoded).lock();
        match found {
            Some((value, stamp))
                if stripe.seq == seq && stripe.writing == 0 && self.up.load(Ordering::Acquire) =>
            {
                self.keep(&mut stripe, key, encoded, value, *stamp);
            }
            // Redis has no value: neither should memory (always safe to drop).
            None => self.forget(&mut stripe, key, encoded),
            Some(_) => {}
        }
    }

    /// Marks a write of this process beginning on a key's stripe; its sequence number.
    fn begin(&self, encoded: &[u8]) -> u64 {
        let mut stripe = self.stripe(encoded).lock();
        stripe.seq += 1;
        stripe.writing += 1;
        stripe.seq
    }

    /// Ends a write begun at `seq`: keeps `kept` in memory if nothing else changed the
    /// stripe meanwhile, else drops the key's copy.
    fn end(&self, key: &K, encoded: &[u8], seq: u64, kept: Option<(&V, Stamp)>) {
        let mut stripe = self.stripe(encoded).lock();
        match kept {
            Some((value, stamp))
                if stripe.seq == seq && stripe.writing == 1 && self.up.load(Ordering::Acquire) =>
            {
                self.keep(&mut stripe, key, encoded, value, stamp);
            }
            _ => self.forget(&mut stripe, key, encoded),
        }
        stripe.seq += 1;
        stripe.writing -= 1;
    }

    /// Drops every copy, and makes every read in flight forget what it read; `writing` changes
    /// the count of writes in flight on every stripe (a write of every key beginning or
    /// ending).
    fn drop_all(&self, writing: i32) {
        let mut stripes: Vec<_> = self.stripes.iter().map(Mutex::lock).collect();
        for stripe in &mut stripes {
            stripe.seq += 1;
            stripe.writing = stripe.writing.saturating_add_signed(writing);
            stripe.keys.clear();
        }
        let _ = self.memory.clear();
    }

    /// The copy of `key` in memory, if the listener is up and the copy younger than `near`.
    #[inline]
    fn fresh<Q>(&self, key: &Q) -> Option<(V, Stamp)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        let now = Self::now();
        let copy = self.memory.read(key, |copy, stamp| {
            copy.serves(now, self.near_nanos)
                .then(|| (copy.value.clone(), stamp))
        });
        copy.flatten()
    }

    /// A read of a key from the backend begins: its stripe's sequence number.
    fn reading(&self, encoded: &[u8]) -> u64 {
        self.misses.fetch_add(1, Ordering::Relaxed);
        if !self.up.load(Ordering::Acquire) {
            self.suspect.fetch_add(1, Ordering::Relaxed);
        }
        self.stripe(encoded).lock().seq
    }

    /// What the backend answered to a read begun at `seq`: kept in memory, or, when the
    /// backend failed, the copy in memory instead if there is one.
    fn read(
        &self,
        key: &K,
        encoded: &[u8],
        seq: u64,
        read: Result<Option<(V, Stamp)>, BackendError>,
    ) -> Result<Option<(V, Stamp)>, BackendError> {
        match read {
            Ok(found) => {
                self.fill(key, encoded, seq, &found);
                Ok(found)
            }
            Err(err) if self.trusted_in_outage() => match self.memory.get(key) {
                Ok(Some((copy, stamp))) => {
                    self.outage.fetch_add(1, Ordering::Relaxed);
                    Ok(Some((copy.value, stamp)))
                }
                _ => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    /// Whether the memory tier may answer for Redis while Redis fails: while subscribed, or
    /// when the subscription was lost to the same outage (the attempt to subscribe again, made
    /// at once, found no server). A subscription lost while the server still answered (a
    /// connection killed, a blip on it alone) may have missed other processes' changes, and
    /// is made again at once, emptying the tier; until then its copies are not served.
    fn trusted_in_outage(&self) -> bool {
        self.up.load(Ordering::Acquire) || self.unreached.load(Ordering::Acquire)
    }

    /// Drops the copy of the key encoded as `encoded`, if this store has it.
    fn drop_key(&self, encoded: &[u8]) {
        let mut stripe = self.stripe(encoded).lock();
        stripe.seq += 1;
        if let Some(key) = stripe.keys.remove(encoded) {
            let _ = self.memory.remove(&key);
        }
    }
}

impl<K, V> NearStore<K, V>
where
    K: Serialize + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A read from Redis, kept in memory; when Redis fails, the copy in memory if any.
    #[cold]
    fn read_far(&self, key: &K) -> Result<Option<(V, Stamp)>, BackendError> {
        let Ok(encoded) = keys::encode_key(key) else {
            // Redis cannot have it either: its error.
            return self.far.get(key);
        };
        let seq = self.near.reading(&encoded);
        self.near.read(key, &encoded, seq, self.far.get(key))
    }

    /// The message telling other processes that the key encoded as `encoded` (or, for `None`,
    /// every key) changed.
    fn message(&self, encoded: Option<&[u8]>) -> Vec<u8> {
        let mut message = Vec::with_capacity(16);
        message.push(if encoded.is_some() { KEY } else { ALL });
        message.extend(self.near.origin.to_be_bytes());
        message.extend(encoded.unwrap_or_default());
        message
    }

    /// Tells the other processes that the key encoded as `encoded` (or, for `None`, every
    /// key) changed. Best effort: a notification that does not go out leaves their copies to
    /// `near`, and a server that fails breaks their subscriptions too (they then start
    /// empty).
    fn publish(&self, encoded: Option<&[u8]>) {
        publish(&self.far.redis, &self.channel, &self.message(encoded));
    }

    /// A write or invalidation of `key` through Redis: `op` (given the key's encoding), then
    /// the memory tier (`keep`: what to keep there if `op` succeeded), then the notification
    /// if `changed` says one is due (a write's is published by its own script).
    fn change<'v, T>(
        &self,
        key: &K,
        op: impl FnOnce(&RedisStore<K, V>, &[u8]) -> Result<T, BackendError>,
        keep: impl FnOnce(&T) -> Option<(&'v V, Stamp)>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T, BackendError> {
        let Ok(encoded) = keys::encode_key(key) else {
            // Never stored: Redis answers its error.
            return op(&self.far, &[]);
        };
        let seq = self.near.begin(&encoded);
        let done = op(&self.far, &encoded);
        let kept = done.as_ref().ok().and_then(keep);
        self.near.end(key, &encoded, seq, kept);
        if done.as_ref().is_ok_and(changed) {
            self.publish(Some(&encoded));
        }
        done
    }

    /// An invalidation of every key through Redis, as [`change`](Self::change) does one.
    fn change_all(
        &self,
        op: impl FnOnce(&RedisStore<K, V>) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        self.near.drop_all(1);
        let done = op(&self.far);
        self.near.drop_all(-1);
        if done.is_ok() {
            self.publish(None);
        }
        done
    }
}

/// Publishes `message` on `channel`, best effort.
fn publish(redis: &Redis, channel: &[u8], message: &[u8]) {
    let sent = redis.run("publish", |c| {
        ::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query::<i64>(c)
    });
    #[cfg(feature = "tracing")]
    if let Err(err) = &sent {
        tracing::debug!(error = %err, "dogpile: a near-cache notification was not published");
    }
    let _ = sent;
}

/// Tells every near store of `namespace` that the value named `name` (or, for `None`, every
/// value) changed: for the replay of kept invalidations, which has the value's Redis name.
pub(super) fn notify_replayed(redis: &Redis, namespace: &str, name: Option<&[u8]>) {
    let mut message = Vec::with_capacity(16);
    match name {
        Some(name) => {
            // `{<ns>#<shard>}:v:<encoded key>`: the tag's braces are never in the namespace.
            let Some(end) = name.iter().position(|&b| b == b'}') else {
                return;
            };
            let Some(encoded) = name[end + 1..].strip_prefix(b":v:") else {
                return;
            };
            message.push(KEY);
            message.extend(NO_ORIGIN.to_be_bytes());
            message.extend(encoded);
        }
        None => {
            message.push(ALL);
            message.extend(NO_ORIGIN.to_be_bytes());
        }
    }
    publish(redis, &channel(namespace), &message);
}

impl<K, V> Store<K, V> for NearStore<K, V>
where
    K: Serialize + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// The protocol's reads (after a lock, or a wait for one): from Redis.
    fn get(&self, key: &K) -> Result<Option<(V, Stamp)>, BackendError> {
        self.read_far(key)
    }

    /// The hot path's read: the copy in memory if the listener is up and the copy is younger
    /// than `near`; else from Redis.
    #[inline]
    fn get_by<Q>(&self, key: &Q) -> Result<Option<(V, Stamp)>, BackendError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(found) = self.near.fresh(key) {
            return Ok(Some(found));
        }
        self.read_far(&key.to_owned())
    }

    fn put(&self, key: &K, value: &V, stamp: Stamp) -> Result<(), BackendError> {
        self.change(
            key,
            |far, encoded| {
                let message = self.message(Some(encoded));
                far.write_notifying(key, value, stamp, None, (&self.channel, &message))
            },
            |written| written.then_some((value, stamp)),
            |_| false,
        )
        .map(drop)
    }

    fn put_fenced(
        &self,
        key: &K,
        value: &V,
        stamp: Stamp,
        fence: &Fence,
    ) -> Result<bool, BackendError> {
        self.change(
            key,
            |far, encoded| {
                let message = self.message(Some(encoded));
                far.write_notifying(key, value, stamp, Some(fence), (&self.channel, &message))
            },
            |written| written.then_some((value, stamp)),
            |_| false,
        )
    }

    fn restamp(&self, key: &K, from: Stamp, to: Stamp) -> Result<bool, BackendError> {
        self.change(
            key,
            |far, _| far.restamp(key, from, to),
            |_| None,
            |restamped| *restamped,
        )
    }

    fn remove(&self, key: &K) -> Result<(), BackendError> {
        self.change(key, |far, _| far.remove(key), |()| None, |()| true)
    }

    fn invalidate(&self, key: &K) -> Result<(), BackendError> {
        self.change(key, |far, _| far.invalidate(key), |()| None, |()| true)
    }

    fn clear(&self) -> Result<(), BackendError> {
        self.change_all(Store::clear)
    }

    fn count(&self) -> Option<usize> {
        None
    }

    fn evictions(&self) -> u64 {
        self.near.memory.evictions()
    }

    fn invalidate_before(&self, cutoff: Timestamp, soft: bool) -> Result<(), BackendError> {
        self.change_all(|far| far.invalidate_before(cutoff, soft))
    }

    fn replay_later(&self, invalidation: Invalidation<'_, K>) -> bool {
        // Honoured in this process at once: the copies go.
        match invalidation.key {
            Some(key) => {
                if let Ok(encoded) = keys::encode_key(key) {
                    self.near.drop_key(&encoded);
                }
            }
            None => self.near.drop_all(0),
        }
        self.far.replay_later(invalidation)
    }

    fn backend_health(&self) -> Option<BackendHealth> {
        let mut health = self.far.backend_health().unwrap_or_default();
        let near = &*self.near;
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        health.near_misses = count(&near.misses);
        health.near_suspect = count(&near.suspect);
        health.near_dropped = count(&near.dropped);
        health.near_listener_lost = count(&near.lost);
        health.near_listener_regained = count(&near.regained);
        health.near_outage_served = count(&near.outage);
        Some(health)
    }
}

/// A write of this process in flight on a key's stripe: ended when dropped, so that an async
/// write whose future is dropped midway leaves its stripe as it found it.
#[cfg(feature = "tokio")]
struct Writing<'a, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    near: &'a Near<K, V>,
    key: &'a K,
    encoded: Vec<u8>,
    seq: u64,
    kept: Option<(&'a V, Stamp)>,
}

#[cfg(feature = "tokio")]
impl<K, V> Drop for Writing<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.near
            .end(self.key, &self.encoded, self.seq, self.kept.take());
    }
}

/// With the `tokio` feature: the same through the async client; an async call's first read
/// answers a fresh copy from memory at once ([`AsyncStore::get_at_once`]).
#[cfg(feature = "tokio")]
impl<K, V> AsyncStore<K, V> for NearStore<K, V>
where
    K: Serialize + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn answers_at_once(&self) -> bool {
        false
    }

    #[inline]
    fn get_at_once<Q>(&self, key: &Q) -> Option<(V, Stamp)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.near.fresh(key)
    }

    fn get_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, Option<(V, Stamp)>> {
        Box::pin(async move {
            let Ok(encoded) = keys::encode_key(key) else {
                return self.far.get_async(key).await;
            };
            let seq = self.near.reading(&encoded);
            let read = self.far.get_async(key).await;
            self.near.read(key, &encoded, seq, read)
        })
    }

    fn put_async<'a>(&'a self, key: &'a K, value: &'a V, stamp: Stamp) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.write_async(key, value, stamp, None).await.map(drop) })
    }

    fn put_fenced_async<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        stamp: Stamp,
        fence: &'a Fence,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.write_async(key, value, stamp, Some(fence)))
    }

    fn restamp_async<'a>(&'a self, key: &'a K, from: Stamp, to: Stamp) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let writing = self.writing(key);
            let restamped = self.far.restamp_async(key, from, to).await?;
            drop(writing);
            if restamped {
                self.publish_async(Some(key)).await;
            }
            Ok(restamped)
        })
    }

    fn remove_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let writing = self.writing(key);
            self.far.remove_async(key).await?;
            drop(writing);
            self.publish_async(Some(key)).await;
            Ok(())
        })
    }

    fn clear_async(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let all = WritingAll::new(&self.near);
            self.far.clear_async().await?;
            drop(all);
            self.publish_async(None).await;
            Ok(())
        })
    }

    fn invalidate_before_async(&self, cutoff: Timestamp, soft: bool) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let all = WritingAll::new(&self.near);
            self.far.invalidate_before_async(cutoff, soft).await?;
            drop(all);
            self.publish_async(None).await;
            Ok(())
        })
    }
}

/// A write of every key in flight: ended when dropped, as [`Writing`].
#[cfg(feature = "tokio")]
struct WritingAll<'a, K, V>(&'a Near<K, V>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static;

#[cfg(feature = "tokio")]
impl<'a, K, V> WritingAll<'a, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(near: &'a Near<K, V>) -> Self {
        near.drop_all(1);
        WritingAll(near)
    }
}

#[cfg(feature = "tokio")]
impl<K, V> Drop for WritingAll<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.0.drop_all(-1);
    }
}

#[cfg(feature = "tokio")]
impl<K, V> NearStore<K, V>
where
    K: Serialize + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A write through the async client, its notification published by its script.
    async fn write_async(
        &self,
        key: &K,
        value: &V,
        stamp: Stamp,
        fence: Option<&Fence>,
    ) -> Result<bool, BackendError> {
        let Some(mut writing) = self.writing(key) else {
            // Never stored: Redis answers its error.
            return match fence {
                Some(fence) => self.far.put_fenced_async(key, value, stamp, fence).await,
                None => self.far.put_async(key, value, stamp).await.map(|()| true),
            };
        };
        let message = self.message(Some(&writing.encoded));
        let notify = (self.channel.as_slice(), message.as_slice());
        let written = (self.far)
            .write_notifying_async(key, value, stamp, fence, notify)
            .await?;
        if written {
            writing.kept = Some((value, stamp));
        }
        Ok(written)
    }

    /// A write of `key` beginning (`None` for a key that cannot be encoded: Redis refuses
    /// it, and memory never had it).
    fn writing<'a>(&'a self, key: &'a K) -> Option<Writing<'a, K, V>> {
        let encoded = keys::encode_key(key).ok()?;
        Some(Writing {
            near: &self.near,
            key,
            seq: self.near.begin(&encoded),
            encoded,
            kept: None,
        })
    }

    async fn publish_async(&self, key: Option<&K>) {
        let encoded = match key.map(keys::encode_key) {
            Some(Ok(encoded)) => Some(encoded),
            Some(Err(_)) => return,
            None => None,
        };
        let message = self.message(encoded.as_deref());
        let mut publish = ::redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(message);
        let redis = self.far.redis.clone();
        let sending = async move {
            redis
                .run_async("publish", |mut c| async move {
                    publish.query_async::<i64>(&mut c).await
                })
                .await
        };
        // In a task of its own, awaited: a caller whose future is dropped here (a timeout
        // around an invalidation, a cancelled request) has changed Redis already, and the
        // other processes must still hear of it. Outside a runtime, here.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(sending).await),
            Err(_) => drop(sending.await),
        }
    }
}

impl<K, V> fmt::Debug for NearStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NearStore")
            .field("far", &self.far)
            .field(
                "near",
                &Duration::from_nanos(self.near.near_nanos.unsigned_abs()),
            )
            .field("listening", &self.near.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// ---- the listener ---------------------------------------------------------------------------

/// Starts the thread that keeps `near` subscribed to `channel`; it stops once the store is
/// dropped (within a heartbeat).
fn listen<K, V>(near: Weak<Near<K, V>>, redis: Redis, channel: Vec<u8>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    if redis.is_cluster() {
        // No pub/sub connection to a cluster here: the store stays suspect and reads through.
        return;
    }
    let spawned = thread::Builder::new()
        .name("dogpile-redis-near".into())
        .spawn(move || {
            let _suspect_if_it_panics = Listening(near.clone());
            listen_until_dropped(&near, &redis, &channel);
        });
    // Without the thread the store stays suspect: every read goes to Redis.
    drop(spawned);
}

/// The listener thread's mark: a thread that ends by a panic (in a key's `Hash` or `Eq`, say)
/// leaves its store suspect, reading through to Redis, rather than serving a tier nothing
/// keeps coherent any more.
struct Listening<K, V>(Weak<Near<K, V>>);

impl<K, V> Drop for Listening<K, V> {
    fn drop(&mut self) {
        if thread::panicking() {
            if let Some(near) = self.0.upgrade() {
                near.unreached.store(false, Ordering::Release);
                if near.up.swap(false, Ordering::AcqRel) {
                    near.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Why a subscription ended.
enum Ended {
    /// The store was dropped.
    Dropped,
    /// The subscription's connection failed.
    Lost,
    /// No subscription could be made (no server, or one that does not answer).
    Unreached,
}

fn listen_until_dropped<K, V>(near: &Weak<Near<K, V>>, redis: &Redis, channel: &[u8])
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut subscribed_before = false;
    loop {
        let began = std::time::Instant::now();
        let ended = subscribe(near, redis, channel, &mut subscribed_before);
        let Some(shared) = near.upgrade() else {
            return;
        };
        match ended {
            Ended::Dropped => return,
            Ended::Lost => {
                // At once: a server still there empties the tier and serves it again; one
                // gone says the loss was the outage's. Not in a loop, though, if subscriptions
                // keep failing as soon as they are made.
                if began.elapsed() >= RESUBSCRIBE_EVERY {
                    continue;
                }
            }
            Ended::Unreached => {
                if !shared.up.load(Ordering::Acquire) {
                    shared.unreached.store(true, Ordering::Release);
                }
            }
        }
        drop(shared);
        thread::sleep(RESUBSCRIBE_EVERY);
    }
}

/// The subscription is lost: the memory tier is suspect from now on (said once per loss).
fn lost<K, V>(near: &Near<K, V>, redis: &Redis, channel: &[u8]) {
    near.unreached.store(false, Ordering::Release);
    if near.up.swap(false, Ordering::AcqRel) {
        near.lost.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        tracing::warn!(
            backend = "redis",
            address = redis.address(),
            channel = %String::from_utf8_lossy(channel),
            "dogpile: the near cache lost its notifications; reading through to Redis until \
             subscribed again"
        );
    }
    let _ = (redis, channel);
}

/// One subscription, from connecting until the connection fails or the store is dropped.
fn subscribe<K, V>(
    near: &Weak<Near<K, V>>,
    redis: &Redis,
    channel: &[u8],
    subscribed_before: &mut bool,
) -> Ended
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let Ok(Connection::Server(mut connection)) = redis.shared.target.connect(redis.timeout())
    else {
        // No server (a cluster never gets here).
        return if near.strong_count() == 0 {
            Ended::Dropped
        } else {
            Ended::Unreached
        };
    };
    let mut pubsub = connection.as_pubsub();
    if pubsub.subscribe(channel).is_err() || pubsub.set_read_timeout(Some(HEARTBEAT)).is_err() {
        return Ended::Unreached;
    }
    {
        let Some(shared) = near.upgrade() else {
            return Ended::Dropped;
        };
        // Notifications were missed while unsubscribed: start empty.
        shared.drop_all(0);
        shared.up.store(true, Ordering::Release);
        if *subscribed_before {
            shared.regained.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::info!(
                backend = "redis",
                address = redis.address(),
                channel = %String::from_utf8_lossy(channel),
                "dogpile: the near cache is subscribed again; serving from memory"
            );
        }
        *subscribed_before = true;
    }
    loop {
        let message = pubsub.get_message();
        let Some(shared) = near.upgrade() else {
            return Ended::Dropped;
        };
        // Whether the server is still there; `Some(false)` if it stopped answering.
        let answered = match message {
            Ok(message) => {
                told(&shared, message.get_payload_bytes());
                Some(true)
            }
            // Silence: is the server still there? Within the handle's timeout.
            Err(err) if err.is_timeout() => Some(
                pubsub.set_read_timeout(Some(redis.timeout())).is_ok()
                    && pubsub.ping::<::redis::Value>().is_ok()
                    && pubsub.set_read_timeout(Some(HEARTBEAT)).is_ok(),
            ),
            // Closed: by a server gone, or by one still there (a connection killed).
            Err(_) => None,
        };
        if answered != Some(true) {
            // Said before the connection is dropped: dropping it waits for an unsubscribe
            // that a stalled server does not answer.
            lost(&shared, redis, channel);
            if answered == Some(false) {
                // Unanswered: the server stalled, and this is its outage.
                shared.unreached.store(true, Ordering::Release);
            }
            return Ended::Lost;
        }
    }
}

/// Applies one notification.
fn told<K, V>(near: &Near<K, V>, message: &[u8])
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let Some((&kind, rest)) = message.split_first() else {
        return;
    };
    if rest.len() < 8 {
        return;
    }
    let (origin, encoded) = rest.split_at(8);
    let origin = u64::from_be_bytes(origin.try_into().unwrap_or_default());
    if origin == near.origin {
        return;
    }
    match kind {
        KEY => {
            near.drop_key(encoded);
            near.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ALL => {
            near.drop_all(0);
            near.dropped.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near() -> Near<u64, u64> {
        Near {
            memory: MemoryStore::new(Some(100)).unwrap(),
            near_nanos: i64::MAX,
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        seq: 0,
                        writing: 0,
                        keys: HashMap::new(),
                        most: 16,
                    })
                })
                .collect(),
            up: AtomicBool::new(false),
            unreached: AtomicBool::new(false),
            origin: 1,
            misses: AtomicU64::new(0),
            suspect: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            regained: AtomicU64::new(0),
            outage: AtomicU64::new(0),
        }
    }

    fn down() -> Result<Option<(u64, Stamp)>, BackendError> {
        Err(BackendError::new("down"))
    }

    /// A copy in memory and a Redis that fails: `read` answers the copy or the error.
    fn answered_in_outage(near: &Near<u64, u64>) -> bool {
        let stamp = Stamp::new(Timestamp::from_nanos(1));
        let kept = Kept {
            value: 7,
            until: i64::MAX,
        };
        near.memory.put(&1, &kept, stamp).unwrap();
        near.read(&1, b"\x01", 0, down()).is_ok()
    }

    #[test]
    fn a_copy_lasts_its_lifetime_and_no_longer_when_the_clock_steps_back() {
        const SECOND: i64 = 1_000_000_000;
        let now = 1_700_000_000 * SECOND;
        let kept = Kept {
            value: 7,
            until: now + 5 * SECOND,
        };
        assert!(kept.serves(now, 5 * SECOND));
        assert!(kept.serves(now + 4 * SECOND, 5 * SECOND));
        assert!(
            !kept.serves(now + 5 * SECOND, 5 * SECOND),
            "its lifetime ended"
        );
        assert!(
            !kept.serves(now - 3600 * SECOND, 5 * SECOND),
            "the clock stepped back an hour: not an hour more"
        );
        let forever = Kept {
            value: 7,
            until: i64::MAX,
        };
        assert!(forever.serves(now - 3600 * SECOND, i64::MAX));
    }

    #[test]
    fn a_subscribed_tier_answers_for_a_failing_redis() {
        let near = near();
        near.up.store(true, Ordering::Release);
        assert!(answered_in_outage(&near));
        assert_eq!(near.outage.load(Ordering::Relaxed), 1);
    }

    /// A subscription lost to the outage itself (no server when the listener tried to
    /// subscribe again): the copies made before it are as good as when it began.
    #[test]
    fn a_subscription_lost_to_the_outage_still_answers() {
        let near = near();
        near.unreached.store(true, Ordering::Release);
        assert!(answered_in_outage(&near));
    }

    /// A subscription lost while the server still answered may have missed other processes'
    /// changes: until the listener has subscribed again, the copies are not served, even
    /// when this process's reads then fail.
    #[test]
    fn a_subscription_lost_while_the_server_answered_serves_nothing() {
        let near = near();
        assert!(!answered_in_outage(&near));
        assert_eq!(near.outage.load(Ordering::Relaxed), 0);
    }

    /// A listener thread that panics leaves its store suspect, not serving a tier that nothing
    /// keeps coherent.
    #[test]
    fn a_listener_that_panics_leaves_its_store_suspect() {
        let near = Arc::new(near());
        near.up.store(true, Ordering::Release);
        let weak = Arc::downgrade(&near);
        let ended = thread::spawn(move || {
            let _mark = Listening(weak);
            panic!("a key's Hash panicked");
        })
        .join();
        assert!(ended.is_err());
        assert!(!near.up.load(Ordering::Acquire));
        assert_eq!(near.lost.load(Ordering::Relaxed), 1);
    }
}
