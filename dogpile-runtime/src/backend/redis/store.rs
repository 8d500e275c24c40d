//! Values in Redis: one hash per key holding the value's bytes (its creation time first) and
//! the epochs of its shard when it was written; read by one script that also reads the epochs,
//! so that a read sees every invalidation made by any process in one round trip.

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::{self, KeyNames};
use super::mutex::millis;
use super::replay::{self, Replay, Step};
use super::Redis;
use crate::lock::Fence;
#[cfg(feature = "tokio")]
use crate::region::StoreFuture;
use crate::region::{BackendHealth, Invalidation, Stamp};
use crate::{BackendError, ConfigError, Store, Timestamp};

/// The format's first byte, so that a later format can tell old values apart: 2, the value's
/// [`Stamp`] (16 bytes) then the value; 1 (still read), its creation time (8 bytes) then the
/// value.
const FORMAT: u8 = 2;
const FORMAT_1: u8 = 1;

/// The stamp that tells the region a value was soft-invalidated: positive (a value exists) and
/// older than any expiry, as the region's own soft invalidation stamps it.
pub(super) const SOFT_INVALIDATED: Stamp = Stamp::new(Timestamp::from_nanos(1));

/// Reads a value and judges it against its shard's epochs. KEYS: value, epoch. Answers nil (no
/// value, or hard-invalidated: then also deleted), `{bytes, 1}` soft-invalidated, `{bytes, 0}`
/// valid, or `{"", 2}` when the key holds something else than our hash.
const READ: &str = r#"
local v = redis.pcall("HMGET", KEYS[1], "d", "h", "s")
if v.err then return {"", 2} end
if not v[1] then return false end
local e = redis.call("HMGET", KEYS[2], "h", "s")
if (tonumber(v[2]) or 0) < (tonumber(e[1]) or 0) then
    redis.call("DEL", KEYS[1])
    return false
end
if (tonumber(v[3]) or 0) < (tonumber(e[2]) or 0) then return {v[1], 1} end
return {v[1], 0}
"#;

/// Writes a value stamped with its shard's epochs. KEYS: value, epoch, and for a fenced write
/// the lock; ARGV: bytes, retain in ms (0: none), the holder's token (empty if unfenced), and
/// for a near store's write a channel and a message to publish once written. Answers 1 if
/// written, 0 if the lock no longer holds the token (nothing written, nothing published).
const WRITE: &str = r#"
if KEYS[3] and redis.call("GET", KEYS[3]) ~= ARGV[3] then return 0 end
local e = redis.call("HMGET", KEYS[2], "h", "s")
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], "d", ARGV[1], "h", e[1] or 0, "s", e[2] or 0)
if ARGV[2] ~= "0" then redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
if ARGV[4] then redis.call("PUBLISH", ARGV[4], ARGV[5]) end
return 1
"#;

fn script(source: &'static LazyLock<::redis::Script>) -> ::redis::ScriptInvocation<'static> {
    source.prepare_invoke()
}

/// Changes a value's stamp if it is still the one given, keeping the value, its epochs and its
/// time to live. KEYS: value, epoch; ARGV: the format byte and old stamp (17 bytes), the new
/// stamp (16 bytes), and, when the old stamp can be one of the first format, that form (the
/// format byte and the creation time, 9 bytes). Answers 1 if changed, 0 if the value is gone,
/// hard-invalidated or stamped otherwise.
const RESTAMP: &str = r#"
local v = redis.pcall("HMGET", KEYS[1], "d", "h")
if v.err or not v[1] then return 0 end
local e = redis.call("HMGET", KEYS[2], "h")
if (tonumber(v[2]) or 0) < (tonumber(e[1]) or 0) then return 0 end
local rest
if string.sub(v[1], 1, 17) == ARGV[1] then
    rest = string.sub(v[1], 18)
elseif ARGV[3] and string.sub(v[1], 1, 9) == ARGV[3] then
    rest = string.sub(v[1], 10)
else
    return 0
end
redis.call("HSET", KEYS[1], "d", string.sub(ARGV[1], 1, 1) .. ARGV[2] .. rest)
return 1
"#;

/// Bumps the epoch of every shard: KEYS, the shards' epochs; ARGV, `h` or `s`. One command, so
/// that a server that stops answering costs one timeout, not one per shard.
const BUMP: &str = r#"
for _, epoch in ipairs(KEYS) do redis.call("HINCRBY", epoch, ARGV[1], 1) end
return #KEYS
"#;

/// Marks a value soft-invalidated, if it is there: its soft epoch below any the shard has, so
/// the read script answers it as expired until it is written again. KEYS: the value.
const MARK_SOFT: &str = r#"
if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
local marked = redis.pcall("HSET", KEYS[1], "s", -1)
if type(marked) == "table" and marked.err then return 0 end
return 1
"#;

static READ_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(READ));
static BUMP_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(BUMP));
static MARK_SOFT_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(MARK_SOFT));
static WRITE_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(WRITE));
static RESTAMP_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(RESTAMP));

/// A [`Store`] in Redis: keys and values encoded with `postcard` (compact, serde), each value
/// beside its creation time and its shard's invalidation epochs (see the
/// [module](super) docs for the layout).
///
/// - A read is one script (`EVALSHA`): the value, judged against the epochs, so a fresh hit is
///   one round trip and still sees every process's `invalidate_all` and `soft_invalidate_all`.
/// - A creator's write is fenced: one script checks that the creator's lock token still holds
///   the key's lock, then writes ([`Store::put_fenced`]); a refused write is counted by the
///   region (`refused_writes`) and the creator's caller still gets its value.
/// - Invalidation of all keys ([`Store::invalidate_before`]) bumps an epoch that the server
///   counts, so no host's clock decides which values it covers: every value written before it
///   reached the server is covered, every value written after is not.
///
/// A value that does not decode (another program's data, a changed type, corrupt bytes) is a
/// miss: the region regenerates it and [`undecodable`](Self::undecodable) counts it. Values
/// stay in Redis past their expiry (so that callers can be given the stale one) unless
/// [`retain`](Self::retain) bounds them.
///
/// ```no_run
/// use dogpile_runtime::backend::redis::{Redis, RedisStore};
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::Store;
/// let store: RedisStore<u64, String> = Redis::open("redis://127.0.0.1/")?.store("names");
/// let stamp = Timestamp::from_nanos(7).into();
/// store.put(&1, &"ann".to_string(), stamp)?;
/// assert_eq!(store.get(&1)?, Some(("ann".to_string(), stamp)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisStore<K, V> {
    pub(super) redis: Redis,
    pub(super) namespace: String,
    retain: Option<Duration>,
    undecodable: AtomicU64,
    /// Invalidations that did not reach the server, to replay when it answers.
    replay: Arc<Replay>,
    types: PhantomData<fn(&K) -> V>,
}

impl<K, V> RedisStore<K, V> {
    pub(super) fn new(redis: Redis, namespace: &str) -> Self {
        RedisStore {
            redis,
            namespace: namespace.to_string(),
            retain: None,
            undecodable: AtomicU64::new(0),
            replay: Arc::default(),
            types: PhantomData,
        }
    }

    /// Lets Redis delete a value `retain` after it was stored (its `PEXPIRE`), however stale
    /// values are served until then. Keep it well above the region's expiry.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a `retain` under 1 ms or over 100 years.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{Redis, RedisStore};
    /// # use std::time::Duration;
    /// let store: RedisStore<u64, String> =
    ///     Redis::open("redis://127.0.0.1/")?.store("names").retain(Duration::from_secs(3600))?;
    /// assert!(Redis::open("redis://127.0.0.1/")?
    ///     .store::<u64, String>("names")
    ///     .retain(Duration::ZERO)
    ///     .is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn retain(mut self, retain: Duration) -> Result<Self, ConfigError> {
        super::builder::check_retain(retain)?;
        self.retain = Some(retain);
        Ok(self)
    }

    /// How many values read so far did not decode (and counted as misses).
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{Redis, RedisStore};
    /// let store: RedisStore<u64, String> = Redis::open("redis://127.0.0.1/")?.store("names");
    /// assert_eq!(store.undecodable(), 0);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// The Redis keys of `key`'s value, lock and epoch.
    fn names(&self, key: &K) -> Result<KeyNames, BackendError>
    where
        K: Serialize,
    {
        Ok(keys::names(&self.namespace, &keys::encode_key(key)?))
    }

    fn retain_ms(&self) -> u64 {
        self.retain.map_or(0, millis)
    }

    /// The read script on `names`.
    fn read(names: &KeyNames) -> ::redis::ScriptInvocation<'static> {
        let mut read = script(&READ_SCRIPT);
        read.key(names.value.clone()).key(names.epoch.clone());
        read
    }

    /// The restamp script on `names`.
    fn restamp_script(
        names: &KeyNames,
        from: Stamp,
        to: Stamp,
    ) -> ::redis::ScriptInvocation<'static> {
        let mut old = vec![FORMAT];
        old.extend(from.to_bytes());
        let mut restamp = script(&RESTAMP_SCRIPT);
        restamp
            .key(names.value.clone())
            .key(names.epoch.clone())
            .arg(old)
            .arg(to.to_bytes().to_vec());
        if from == Stamp::new(from.created()) {
            let mut first = vec![FORMAT_1];
            first.extend(from.created().as_nanos().to_be_bytes());
            restamp.arg(first);
        }
        restamp
    }

    /// The write script on `names`, fenced by `fence` if given, publishing `notify` (a
    /// channel and a message) once written if given.
    fn write(
        &self,
        names: &KeyNames,
        bytes: Vec<u8>,
        fence: Option<&Fence>,
        notify: Option<(&[u8], &[u8])>,
    ) -> Result<::redis::ScriptInvocation<'static>, BackendError> {
        let mut write = script(&WRITE_SCRIPT);
        write
            .key(names.value.clone())
            .key(names.epoch.clone())
            .arg(bytes)
            .arg(self.retain_ms());
        if let Some(fence) = fence {
            if fence.lock() != names.lock.as_slice() {
                return Err(BackendError::new(format!(
                    "the region's mutex is not this store's lock of the key: give the store and \
                     the mutexes the same namespace ({:?}, with Redis::mutexes) so that writes \
                     can be fenced",
                    self.namespace
                )));
            }
            write.key(names.lock.clone()).arg(fence.token());
        }
        if let Some((channel, message)) = notify {
            if fence.is_none() {
                write.arg("");
            }
            write.arg(channel).arg(message);
        }
        Ok(write)
    }

    /// Writes `value` as [`put`](Store::put) or, with `fence`, [`put_fenced`](Store::put_fenced)
    /// does, and publishes `message` on `channel` in the same script once written: a near
    /// store's write, whose notification cannot be lost between the two.
    pub(super) fn write_notifying(
        &self,
        key: &K,
        value: &V,
        stamp: Stamp,
        fence: Option<&Fence>,
        (channel, message): (&[u8], &[u8]),
    ) -> Result<bool, BackendError>
    where
        K: Serialize,
        V: Serialize,
    {
        let names = self.names(key)?;
        let write = self.write(
            &names,
            encode(value, stamp)?,
            fence,
            Some((channel, message)),
        )?;
        let written: i64 = self.redis.run("write", |c| write.invoke(c))?;
        if written == 1 {
            self.replay.written(&names.value);
        }
        Ok(written == 1)
    }

    /// [`write_notifying`](Self::write_notifying) through the async client.
    #[cfg(feature = "tokio")]
    pub(super) async fn write_notifying_async(
        &self,
        key: &K,
        value: &V,
        stamp: Stamp,
        fence: Option<&Fence>,
        (channel, message): (&[u8], &[u8]),
    ) -> Result<bool, BackendError>
    where
        K: Serialize,
        V: Serialize,
    {
        let names = self.names(key)?;
        let write = self.write(
            &names,
            encode(value, stamp)?,
            fence,
            Some((channel, message)),
        )?;
        let written: i64 = self
            .redis
            .run_async(
                "write",
                |mut c| async move { write.invoke_async(&mut c).await },
            )
            .await?;
        if written == 1 {
            self.replay.written(&names.value);
        }
        Ok(written == 1)
    }

    /// `SCAN cursor MATCH {<namespace>#*}:v:* COUNT 500`.
    fn scan(&self, cursor: u64) -> ::redis::Cmd {
        let mut prefix = keys::tag(&self.namespace, 0);
        // `{<ns>#` : the tag up to its shard number.
        prefix.truncate(prefix.len() - "0}".len());
        let mut pattern = keys::glob_escape(&prefix);
        pattern.extend(b"*}:v:*");
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500);
        scan
    }
}

fn encode<V: Serialize>(value: &V, stamp: Stamp) -> Result<Vec<u8>, BackendError> {
    let mut bytes = vec![FORMAT];
    bytes.extend(stamp.to_bytes());
    postcard::to_io(value, &mut bytes)
        .map_err(|e| BackendError::with_source("could not encode a value for Redis", e))?;
    Ok(bytes)
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<(V, Stamp)> {
    let (&format, rest) = bytes.split_first()?;
    let (stamp, value) = match format {
        FORMAT if rest.len() >= 16 => {
            let (stamp, value) = rest.split_at(16);
            (Stamp::from_bytes(stamp.try_into().ok()?), value)
        }
        FORMAT_1 if rest.len() >= 8 => {
            let (created, value) = rest.split_at(8);
            let created = i64::from_be_bytes(created.try_into().ok()?);
            (Stamp::new(Timestamp::from_nanos(created)), value)
        }
        _ => return None,
    };
    let (value, left) = postcard::take_from_bytes(value).ok()?;
    left.is_empty().then_some((value, stamp))
}

/// Bumps every shard's hard or soft epoch of `namespace`: one script on one server; on a
/// cluster, whose shards live on several nodes, one command per shard.
fn bump_epochs(redis: &Redis, namespace: &str, soft: bool) -> Result<(), BackendError> {
    let field = if soft { "s" } else { "h" };
    if !redis.is_cluster() {
        let mut bump = BUMP_SCRIPT.prepare_invoke();
        for epoch in keys::epochs(namespace) {
            bump.key(epoch);
        }
        bump.arg(field);
        return redis
            .run("invalidation", |c| bump.invoke::<i64>(c))
            .map(drop);
    }
    for epoch in keys::epochs(namespace) {
        let mut bump = ::redis::cmd("HINCRBY");
        bump.arg(epoch).arg(field).arg(1);
        redis.run("invalidation", |c| bump.query::<i64>(c))?;
    }
    Ok(())
}

#[cfg(feature = "tokio")]
async fn bump_epochs_async(redis: &Redis, namespace: &str, soft: bool) -> Result<(), BackendError> {
    let field = if soft { "s" } else { "h" };
    if !redis.is_cluster() {
        let mut bump = BUMP_SCRIPT.prepare_invoke();
        for epoch in keys::epochs(namespace) {
            bump.key(epoch);
        }
        bump.arg(field);
        return redis
            .run_async("invalidation", |mut c| async move {
                bump.invoke_async::<i64>(&mut c).await
            })
            .await
            .map(drop);
    }
    for epoch in keys::epochs(namespace) {
        let mut bump = ::redis::cmd("HINCRBY");
        bump.arg(epoch).arg(field).arg(1);
        redis
            .run_async("invalidation", |mut c| async move {
                bump.query_async::<i64>(&mut c).await
            })
            .await?;
    }
    Ok(())
}

/// Applies one kept invalidation, for the replaying thread.
pub(super) fn apply(redis: &Redis, namespace: &str, step: &Step) -> Result<(), BackendError> {
    apply_step(redis, namespace, step)?;
    // Near stores of the namespace drop their copies too.
    let name = match step {
        Step::All { .. } => None,
        Step::Key { name, .. } => Some(name.as_slice()),
    };
    super::near::notify_replayed(redis, namespace, name);
    Ok(())
}

fn apply_step(redis: &Redis, namespace: &str, step: &Step) -> Result<(), BackendError> {
    match step {
        Step::All { soft } => bump_epochs(redis, namespace, *soft),
        Step::Key { name, soft: false } => redis.run("DEL", |c| {
            ::redis::cmd("DEL").arg(name.as_slice()).query::<()>(c)
        }),
        Step::Key { name, soft: true } => {
            let mut mark = MARK_SOFT_SCRIPT.prepare_invoke();
            mark.key(name.as_slice());
            redis
                .run("soft invalidation", |c| mark.invoke::<i64>(c))
                .map(drop)
        }
    }
}

/// What the read script answered.
type Read = Option<(Vec<u8>, i64)>;

impl<K, V> RedisStore<K, V>
where
    V: DeserializeOwned,
{
    /// What the read script answered, decoded; bytes that do not decode are counted and are a
    /// miss.
    fn decoded(&self, read: Read) -> Option<(V, Stamp)> {
        let (bytes, state) = read?;
        let found = if state == 2 { None } else { decode(&bytes) };
        let Some((value, created)) = found else {
            self.undecodable.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::warn!(
                namespace = %self.namespace,
                bytes = bytes.len(),
                "dogpile: a Redis value did not decode; regenerating it"
            );
            return None;
        };
        if state == 1 {
            Some((value, SOFT_INVALIDATED))
        } else {
            Some((value, created))
        }
    }
}

impl<K, V> Store<K, V> for RedisStore<K, V>
where
    K: Serialize + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get(&self, key: &K) -> Result<Option<(V, Stamp)>, BackendError> {
        let names = self.names(key)?;
        let read = Self::read(&names);
        let found: Read = self.redis.run("read", |c| read.invoke(c))?;
        Ok(self.replay.honour(&names.value, self.decoded(found)))
    }

    fn put(&self, key: &K, value: &V, stamp: Stamp) -> Result<(), BackendError> {
        let names = self.names(key)?;
        let write = self.write(&names, encode(value, stamp)?, None, None)?;
        self.redis.run("write", |c| write.invoke::<i64>(c))?;
        self.replay.written(&names.value);
        Ok(())
    }

    fn put_fenced(
        &self,
        key: &K,
        value: &V,
        stamp: Stamp,
        fence: &Fence,
    ) -> Result<bool, BackendError> {
        let names = self.names(key)?;
        let write = self.write(&names, encode(value, stamp)?, Some(fence), None)?;
        let written: i64 = self.redis.run("fenced write", |c| write.invoke(c))?;
        if written == 1 {
            self.replay.written(&names.value);
        }
        Ok(written == 1)
    }

    fn restamp(&self, key: &K, from: Stamp, to: Stamp) -> Result<bool, BackendError> {
        let restamp = Self::restamp_script(&self.names(key)?, from, to);
        let done: i64 = self.redis.run("restamp", |c| restamp.invoke(c))?;
        Ok(done == 1)
    }

    fn remove(&self, key: &K) -> Result<(), BackendError> {
        let name = self.names(key)?.value;
        self.redis
            .run("DEL", |c| ::redis::cmd("DEL").arg(&name).query::<()>(c))?;
        self.replay.written(&name);
        Ok(())
    }

    fn invalidate_before(&self, cutoff: Timestamp, soft: bool) -> Result<(), BackendError> {
        // The server counts invalidations; `cutoff`, a time of this host's clock, would let
        // clock skew between hosts decide which values an invalidation covers.
        let _ = cutoff;
        bump_epochs(&self.redis, &self.namespace, soft)?;
        self.replay.all_invalidated(soft);
        Ok(())
    }

    fn replay_later(&self, invalidation: Invalidation<'_, K>) -> bool {
        let name = match invalidation.key {
            Some(key) => match self.names(key) {
                Ok(names) => Some(names.value),
                // A key that cannot be encoded was never stored.
                Err(_) => return false,
            },
            None => None,
        };
        if self.replay.keep(&invalidation, name) {
            replay::start(
                Arc::clone(&self.replay),
                self.redis.clone(),
                self.namespace.clone(),
            );
        }
        true
    }

    fn backend_health(&self) -> Option<BackendHealth> {
        let breaker = self.redis.breaker();
        let (queued, replayed) = self.replay.counts();
        Some(BackendHealth {
            failures: breaker.failures,
            rejected: breaker.rejected,
            breaker_opened: breaker.opened,
            breaker_closed: breaker.closed,
            invalidations_queued: queued,
            invalidations_replayed: replayed,
            invalidations_pending: self.replay.len() as u64,
            undecodable: self.undecodable(),
            ..BackendHealth::default()
        })
    }

    fn clear(&self) -> Result<(), BackendError> {
        // Every process stops seeing the values at once; deleting them follows.
        self.invalidate_before(Timestamp::from_nanos(0), false)?;
        if self.redis.is_cluster() {
            // SCAN walks one node: on a cluster the values go when overwritten, when read
            // (the read script deletes what an epoch invalidated) or with `retain`.
            return Ok(());
        }
        let mut cursor: u64 = 0;
        loop {
            let scan = self.scan(cursor);
            let (next, names): (u64, Vec<Vec<u8>>) = self.redis.run("SCAN", |c| scan.query(c))?;
            if !names.is_empty() {
                self.redis
                    .run("DEL", |c| ::redis::cmd("DEL").arg(&names).query::<()>(c))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn count(&self) -> Option<usize> {
        None
    }
}

/// With the `tokio` feature: the same commands through the async client, so an async region
/// never blocks a worker thread on Redis.
#[cfg(feature = "tokio")]
impl<K, V> crate::region::AsyncStore<K, V> for RedisStore<K, V>
where
    K: Serialize + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn answers_at_once(&self) -> bool {
        false
    }

    fn get_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, Option<(V, Stamp)>> {
        Box::pin(async move {
            let names = self.names(key)?;
            let read = Self::read(&names);
            let found: Read = self
                .redis
                .run_async(
                    "read",
                    |mut c| async move { read.invoke_async(&mut c).await },
                )
                .await?;
            Ok(self.replay.honour(&names.value, self.decoded(found)))
        })
    }

    fn put_async<'a>(&'a self, key: &'a K, value: &'a V, stamp: Stamp) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let names = self.names(key)?;
            let write = self.write(&names, encode(value, stamp)?, None, None)?;
            self.redis
                .run_async("write", |mut c| async move {
                    write.invoke_async::<i64>(&mut c).await
                })
                .await?;
            self.replay.written(&names.value);
            Ok(())
        })
    }

    fn put_fenced_async<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        stamp: Stamp,
        fence: &'a Fence,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let names = self.names(key)?;
            let write = self.write(&names, encode(value, stamp)?, Some(fence), None)?;
            let written: i64 = self
                .redis
                .run_async("fenced write", |mut c| async move {
                    write.invoke_async(&mut c).await
                })
                .await?;
            if written == 1 {
                self.replay.written(&names.value);
            }
            Ok(written == 1)
        })
    }

    fn restamp_async<'a>(&'a self, key: &'a K, from: Stamp, to: Stamp) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let restamp = Self::restamp_script(&self.names(key)?, from, to);
            let done: i64 = self
                .redis
                .run_async("restamp", |mut c| async move {
                    restamp.invoke_async(&mut c).await
                })
                .await?;
            Ok(done == 1)
        })
    }

    fn remove_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let name = self.names(key)?.value;
            let mut del = ::redis::cmd("DEL");
            del.arg(&name);
            self.redis
                .run_async(
                    "DEL",
                    |mut c| async move { del.query_async::<()>(&mut c).await },
                )
                .await?;
            self.replay.written(&name);
            Ok(())
        })
    }

    fn invalidate_before_async(&self, cutoff: Timestamp, soft: bool) -> StoreFuture<'_, ()> {
        let _ = cutoff;
        Box::pin(async move {
            bump_epochs_async(&self.redis, &self.namespace, soft).await?;
            self.replay.all_invalidated(soft);
            Ok(())
        })
    }

    fn clear_async(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.invalidate_before_async(Timestamp::from_nanos(0), false)
                .await?;
            if self.redis.is_cluster() {
                return Ok(());
            }
            let mut cursor: u64 = 0;
            loop {
                let scan = self.scan(cursor);
                let (next, names): (u64, Vec<Vec<u8>>) = self
                    .redis
                    .run_async(
                        "SCAN",
                        |mut c| async move { scan.query_async(&mut c).await },
                    )
                    .await?;
                if !names.is_empty() {
                    let mut del = ::redis::cmd("DEL");
                    del.arg(names);
                    self.redis
                        .run_async(
                            "DEL",
                            |mut c| async move { del.query_async::<()>(&mut c).await },
                        )
                        .await?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })
    }
}

impl<K, V> fmt::Debug for RedisStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_bytes_do_not_decode() {
        let stamp = Stamp::new(Timestamp::from_nanos(42));
        let bytes = encode(&("ann".to_string(), 7u32), stamp).unwrap();
        assert_eq!(
            decode::<(String, u32)>(&bytes),
            Some((("ann".to_string(), 7), stamp))
        );
        // The first format: a creation time, no more.
        let mut first = vec![FORMAT_1];
        first.extend(42i64.to_be_bytes());
        first.extend(postcard::to_stdvec(&("ann".to_string(), 7u32)).unwrap());
        assert_eq!(
            decode::<(String, u32)>(&first),
            Some((("ann".to_string(), 7), stamp))
        );
        assert_eq!(decode::<(String, u32)>(b""), None);
        assert_eq!(decode::<(String, u32)>(b"\x01short"), None);
        assert_eq!(decode::<(String, u32)>(b"plain text from elsewhere"), None);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode::<(String, u32)>(&trailing), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Bytes from anywhere (another program, a changed type, corruption) decode to a
            /// value or to nothing; never a panic.
            #[test]
            fn any_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let _ = decode::<(String, u32)>(&bytes);
                let _ = decode::<Vec<u64>>(&bytes);
                let _ = decode::<u8>(&bytes);
            }

            /// What is encoded decodes to itself, with its creation time, negative ones (a key
            /// soft-invalidated) included.
            #[test]
            fn values_round_trip(text in ".{0,20}", n in any::<u32>(), created in any::<i64>()) {
                let stamp = Stamp::new(Timestamp::from_nanos(created));
                let bytes = encode(&(text.clone(), n), stamp).unwrap();
                prop_assert_eq!(decode::<(String, u32)>(&bytes), Some(((text, n), stamp)));
            }

            /// A value cut short, or followed by anything, is refused.
            #[test]
            fn truncated_or_padded_values_are_refused(
                text in ".{1,20}",
                cut in 1usize..8,
                pad in prop::collection::vec(any::<u8>(), 1..8),
            ) {
                let bytes = encode(&text, Timestamp::from_nanos(5).into()).unwrap();
                let cut = bytes.len().saturating_sub(cut);
                prop_assert_eq!(decode::<String>(&bytes[..cut]), None);
                let mut padded = bytes.clone();
                padded.extend(pad);
                prop_assert_eq!(decode::<String>(&padded), None);
            }
        }
    }
}
