//! Values in Redis: one string per key holding the creation time and the value, so one `GET`
//! reads both.

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Redis;
#[cfg(feature = "tokio")]
use crate::region::StoreFuture;
use crate::{BackendError, Store, Timestamp};

/// The format's first byte, so that a later format can tell old values apart.
const FORMAT: u8 = 1;

/// A [`Store`] in Redis: keys and values encoded with `postcard` (compact, serde), each value
/// beside its creation time under `<namespace>:v:<key>`.
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
/// store.put(&1, &"ann".to_string(), Timestamp::from_nanos(1))?;
/// assert_eq!(store.get(&1)?, Some(("ann".to_string(), Timestamp::from_nanos(1))));
/// # Ok::<(), dogpile_runtime::BackendError>(())
/// ```
pub struct RedisStore<K, V> {
    redis: Redis,
    namespace: String,
    retain: Option<Duration>,
    undecodable: AtomicU64,
    types: PhantomData<fn(&K) -> V>,
}

impl<K, V> RedisStore<K, V> {
    pub(super) fn new(redis: Redis, namespace: &str) -> Self {
        RedisStore {
            redis,
            namespace: namespace.to_string(),
            retain: None,
            undecodable: AtomicU64::new(0),
            types: PhantomData,
        }
    }

    /// Lets Redis delete a value `retain` after it was stored (its `PX`), however stale values
    /// are served until then. Keep it well above the region's expiry.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{Redis, RedisStore};
    /// # use std::time::Duration;
    /// let store: RedisStore<u64, String> =
    ///     Redis::open("redis://127.0.0.1/")?.store("names").retain(Duration::from_secs(3600));
    /// # Ok::<(), dogpile_runtime::BackendError>(())
    /// ```
    pub fn retain(mut self, retain: Duration) -> Self {
        self.retain = Some(retain);
        self
    }

    /// How many values read so far did not decode (and counted as misses).
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::{Redis, RedisStore};
    /// let store: RedisStore<u64, String> = Redis::open("redis://127.0.0.1/")?.store("names");
    /// assert_eq!(store.undecodable(), 0);
    /// # Ok::<(), dogpile_runtime::BackendError>(())
    /// ```
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// The Redis key of `key`'s value.
    fn redis_key(&self, key: &K) -> Result<Vec<u8>, BackendError>
    where
        K: Serialize,
    {
        let mut name = format!("{}:v:", self.namespace).into_bytes();
        let encoded = postcard::to_stdvec(key)
            .map_err(|e| BackendError::with_source("could not encode a key for Redis", e))?;
        name.extend(encoded);
        Ok(name)
    }
}

fn encode<V: Serialize>(value: &V, created: Timestamp) -> Result<Vec<u8>, BackendError> {
    let mut bytes = vec![FORMAT];
    bytes.extend(created.as_nanos().to_be_bytes());
    postcard::to_io(value, &mut bytes)
        .map_err(|e| BackendError::with_source("could not encode a value for Redis", e))?;
    Ok(bytes)
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<(V, Timestamp)> {
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT || rest.len() < 8 {
        return None;
    }
    let (created, value) = rest.split_at(8);
    let created = i64::from_be_bytes(created.try_into().ok()?);
    let (value, left) = postcard::take_from_bytes(value).ok()?;
    left.is_empty()
        .then_some((value, Timestamp::from_nanos(created)))
}

impl<K, V> RedisStore<K, V>
where
    V: DeserializeOwned,
{
    /// What a `GET` answered, decoded; bytes that do not decode are counted and are a miss.
    fn decoded(&self, bytes: Option<Vec<u8>>) -> Option<(V, Timestamp)> {
        let bytes = bytes?;
        let found = decode(&bytes);
        if found.is_none() {
            self.undecodable.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::warn!(
                namespace = %self.namespace,
                bytes = bytes.len(),
                "dogpile: a Redis value did not decode; regenerating it"
            );
        }
        found
    }

    /// `SET name bytes [PX retain]`.
    fn set(&self, name: Vec<u8>, bytes: Vec<u8>) -> ::redis::Cmd {
        let mut set = ::redis::cmd("SET");
        set.arg(name).arg(bytes);
        if let Some(retain) = self.retain {
            set.arg("PX")
                .arg(u64::try_from(retain.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        set
    }

    /// `SCAN cursor MATCH <namespace>:v:* COUNT 500`.
    fn scan(&self, cursor: u64) -> ::redis::Cmd {
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:v:*", glob_escape(&self.namespace)))
            .arg("COUNT")
            .arg(500);
        scan
    }
}

impl<K, V> Store<K, V> for RedisStore<K, V>
where
    K: Serialize + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get(&self, key: &K) -> Result<Option<(V, Timestamp)>, BackendError> {
        let name = self.redis_key(key)?;
        let bytes: Option<Vec<u8>> = self
            .redis
            .run("GET", |c| ::redis::cmd("GET").arg(&name).query(c))?;
        Ok(self.decoded(bytes))
    }

    fn put(&self, key: &K, value: &V, created: Timestamp) -> Result<(), BackendError> {
        let set = self.set(self.redis_key(key)?, encode(value, created)?);
        self.redis.run("SET", |c| set.query::<()>(c))
    }

    fn remove(&self, key: &K) -> Result<(), BackendError> {
        let name = self.redis_key(key)?;
        self.redis
            .run("DEL", |c| ::redis::cmd("DEL").arg(&name).query::<()>(c))
    }

    fn clear(&self) -> Result<(), BackendError> {
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

    fn get_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, Option<(V, Timestamp)>> {
        Box::pin(async move {
            let mut get = ::redis::cmd("GET");
            get.arg(self.redis_key(key)?);
            let bytes: Option<Vec<u8>> = self
                .redis
                .run_async("GET", |mut c| async move { get.query_async(&mut c).await })
                .await?;
            Ok(self.decoded(bytes))
        })
    }

    fn put_async<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        created: Timestamp,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let set = self.set(self.redis_key(key)?, encode(value, created)?);
            self.redis
                .run_async(
                    "SET",
                    |mut c| async move { set.query_async::<()>(&mut c).await },
                )
                .await
        })
    }

    fn remove_async<'a>(&'a self, key: &'a K) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut del = ::redis::cmd("DEL");
            del.arg(self.redis_key(key)?);
            self.redis
                .run_async(
                    "DEL",
                    |mut c| async move { del.query_async::<()>(&mut c).await },
                )
                .await
        })
    }

    fn clear_async(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
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

/// `text` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        let bytes = encode(&("ann".to_string(), 7u32), Timestamp::from_nanos(42)).unwrap();
        assert_eq!(
            decode::<(String, u32)>(&bytes),
            Some((("ann".to_string(), 7), Timestamp::from_nanos(42)))
        );
        assert_eq!(decode::<(String, u32)>(b""), None);
        assert_eq!(decode::<(String, u32)>(b"\x01short"), None);
        assert_eq!(decode::<(String, u32)>(b"plain text from elsewhere"), None);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode::<(String, u32)>(&trailing), None);
    }

    #[test]
    fn glob_characters_in_namespaces_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
