//! What `#[dogpile]` expands to. Not public API: no stability promise, may change in any
//! release; use [`Region`] directly instead.

use std::any::Any;
use std::convert::Infallible;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock, PoisonError};

pub use std::borrow::{Borrow, ToOwned};
pub use std::clone::Clone;
pub use std::option::Option::{self, None, Some};
pub use std::result::Result::{self, Err, Ok};
pub use std::time::Duration;

use dogpile_runtime::lock::RawMutex;
pub use dogpile_runtime::region::OnBackendError;
use dogpile_runtime::region::{Pool, Store};
pub use dogpile_runtime::Region;
use dogpile_runtime::{RegionError, Statistics};

/// What a `#[dogpile]` function's key must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a #[dogpile] function",
    label = "the key must be an owned `Hash + Eq + Clone + Debug + Send + Sync + 'static` value",
    note = "for a borrowed argument, use an owned form in the key, such as `key = name.to_owned()`"
)]
pub trait CacheKey: Hash + Eq + Clone + Debug + Send + Sync + 'static {}

impl<T: Hash + Eq + Clone + Debug + Send + Sync + 'static> CacheKey for T {}

/// What a `#[dogpile]` function's cached value must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached by #[dogpile]: it is not `Clone + Send + Sync + 'static`",
    label = "every caller gets a clone of the cached value, from any thread",
    note = "wrap a value that cannot be cloned or shared in an `Arc`"
)]
pub trait CacheValue: Clone + Send + Sync + 'static {}

impl<T: Clone + Send + Sync + 'static> CacheValue for T {}

/// The key, checked where the user wrote it.
#[inline(always)]
pub fn key<K: CacheKey>(key: K) -> K {
    key
}

/// Checks the cached value type where the user wrote the return type.
pub fn value<V: CacheValue>() {}

/// A `Result` return type: only `Ok` is cached.
pub trait Fallible {
    /// The cached value.
    type Ok;
}

impl<T, E> Fallible for Result<T, E> {
    type Ok = T;
}

/// An `Option` return type: only `Some` is cached.
pub trait Optional {
    /// The cached value.
    type Some;
}

impl<T> Optional for Option<T> {
    type Some = T;
}

/// How a function's own region is built, fixed at compile time.
pub struct Config {
    /// The region's name: the function's path.
    pub name: &'static str,
    /// `None` for `expire = never`.
    pub expiry: Option<Duration>,
    /// The most values kept.
    pub capacity: Option<usize>,
    /// How long a waiter waits before creating the value itself.
    pub lock_timeout: Option<Duration>,
    /// Regenerate expired values on the shared pool.
    pub background: bool,
}

/// A function's own region, built on first use. The key type cannot be named in a `static`
/// (it is the type of the user's key expression), so the region is kept type-erased and the
/// typed handle is recovered by a downcast.
///
/// A method of a generic `impl` shares one slot between the impl's instantiations, whose key or
/// value types may differ: each (key, value) pair of types gets its own region, the first in
/// `cell` (the fast path), any others in `more`.
pub struct Slot {
    config: Config,
    cell: OnceLock<Built>,
    more: Mutex<Vec<&'static Built>>,
}

struct Built {
    typed: Box<dyn Any + Send + Sync>,
    control: Box<dyn Control + Send + Sync>,
}

impl Slot {
    /// An empty slot.
    pub const fn new(config: Config) -> Self {
        Slot {
            config,
            cell: OnceLock::new(),
            more: Mutex::new(Vec::new()),
        }
    }

    /// The region, built on the first call.
    #[inline]
    pub fn region<K: CacheKey, V: CacheValue>(&'static self) -> &'static Region<K, V> {
        let built = self.cell.get_or_init(|| self.build::<K, V>());
        match built.typed.downcast_ref() {
            Some(region) => region,
            None => self.another::<K, V>(),
        }
    }

    /// The region of other key and value types than the first ones (a generic `impl`).
    #[cold]
    #[inline(never)]
    fn another<K: CacheKey, V: CacheValue>(&'static self) -> &'static Region<K, V> {
        let mut more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        let built = match more.iter().find(|b| b.typed.is::<Region<K, V>>()) {
            Some(built) => *built,
            None => {
                // One per instantiation of the impl, kept for the program's life as a static.
                let built: &'static Built = Box::leak(Box::new(self.build::<K, V>()));
                more.push(built);
                built
            }
        };
        match built.typed.downcast_ref() {
            Some(region) => region,
            None => unreachable!("found by its type"),
        }
    }

    /// Every region built, for the calls that need no key.
    fn all(&self) -> Vec<&Built> {
        let more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        self.cell
            .get()
            .into_iter()
            .chain(more.iter().copied())
            .collect()
    }

    #[cold]
    fn build<K: CacheKey, V: CacheValue>(&self) -> Built {
        let config = &self.config;
        let mut builder = Region::<K, V>::builder().name(config.name);
        if let Some(expiry) = config.expiry {
            builder = builder.expiry(expiry);
        }
        if let Some(timeout) = config.lock_timeout {
            builder = builder.lock_timeout(timeout);
        }
        if config.background {
            builder = builder.background(Pool::shared());
        }
        if let Some(capacity) = config.capacity {
            builder = builder.capacity(capacity);
        }
        let region = builder.build();
        Built {
            control: Box::new(region.clone()),
            typed: Box::new(region),
        }
    }
}

#[cold]
#[inline(never)]
fn mismatch(name: &str) -> ! {
    // Every use of a derived handle comes from one expansion, on one region.
    unreachable!("the region of {name} was used with two key or value types")
}

/// The calls that need no key.
pub trait Control {
    /// Hard-invalidates every key.
    fn invalidate_all(&self);
    /// Soft-invalidates every key.
    fn soft_invalidate_all(&self);
    /// The region's statistics.
    fn statistics(&self) -> Statistics;
}

impl Control for Slot {
    fn invalidate_all(&self) {
        for built in self.all() {
            built.control.invalidate_all();
        }
    }
    fn soft_invalidate_all(&self) {
        for built in self.all() {
            built.control.soft_invalidate_all();
        }
    }
    fn statistics(&self) -> Statistics {
        self.all()
            .iter()
            .map(|built| built.control.statistics())
            .fold(Statistics::default(), |mut sum, s| {
                sum.hits += s.hits;
                sum.stale_hits += s.stale_hits;
                sum.misses += s.misses;
                sum.regenerations += s.regenerations;
                sum.errors += s.errors;
                sum.panics += s.panics;
                sum.lock_timeouts += s.lock_timeouts;
                sum.waits += s.waits;
                sum.direct_calls += s.direct_calls;
                sum.evictions += s.evictions;
                sum.entries += s.entries;
                sum
            })
    }
}

impl<K, V, S, M> Control for Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    fn invalidate_all(&self) {
        Region::invalidate_all(self);
    }
    fn soft_invalidate_all(&self) {
        Region::soft_invalidate_all(self);
    }
    fn statistics(&self) -> Statistics {
        Region::statistics(self)
    }
}

/// A region given with `region = PATH`, through any `Deref` to it.
#[inline(always)]
pub fn given<K, V, S, M: RawMutex>(region: &Region<K, V, S, M>) -> &Region<K, V, S, M> {
    region
}

/// The creator's error, or a panic with the region's (recursion, or a backend set to return
/// errors, which a function without a way to return it cannot report otherwise).
#[inline]
pub fn creator_error<E>(err: RegionError<E>) -> E {
    match err.into_creator() {
        Ok(err) => err,
        Err(other) => fail(other),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn fail(err: RegionError<Infallible>) -> ! {
    panic!("{err}")
}

/// `None` from an `Option` creator, carried through the `Result` path.
pub struct NoValue;

/// Turns an `Option` creator into a `Result` one.
#[inline(always)]
pub fn some<V>(value: Option<V>) -> Result<V, NoValue> {
    value.ok_or(NoValue)
}

/// The `Option` back from the `Result` path.
#[inline]
pub fn optional<V>(result: Result<V, RegionError<NoValue>>) -> Option<V> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            let NoValue = creator_error(err);
            None
        }
    }
}

/// Never fails.
#[inline(always)]
pub fn infallible<V>(value: V) -> Result<V, Infallible> {
    Ok(value)
}

/// The value back from a creator that never fails.
#[inline]
pub fn value_of<V>(result: Result<V, RegionError<Infallible>>) -> V {
    match result {
        Ok(value) => value,
        Err(err) => match err.into_creator() {
            Ok(never) => match never {},
            Err(other) => fail(other),
        },
    }
}

/// What the dispatcher of a `#[dogpile]` function is asked to do.
#[derive(Clone, Copy)]
pub enum Op {
    /// Get or create.
    Get,
    /// Regenerate now.
    Refresh,
    /// Read without creating.
    Peek,
    /// Hard-invalidate the key.
    Invalidate,
    /// Soft-invalidate the key.
    SoftInvalidate,
}

/// What the dispatcher answers; each caller knows which variant its operation gives.
pub enum Outcome<R, V> {
    /// From `Get` and `Refresh`.
    Value(R),
    /// From `Peek`.
    Peeked(Option<V>),
    /// From the invalidations.
    Done,
}

impl<R, V> Outcome<R, V> {
    /// The value of `Get` or `Refresh`.
    #[inline(always)]
    pub fn value(self) -> R {
        match self {
            Outcome::Value(value) => value,
            _ => wrong_outcome(),
        }
    }

    /// The value of `Peek`.
    #[inline(always)]
    pub fn peeked(self) -> Option<V> {
        match self {
            Outcome::Peeked(value) => value,
            _ => wrong_outcome(),
        }
    }
}

#[cold]
#[inline(never)]
fn wrong_outcome() -> ! {
    unreachable!("a #[dogpile] dispatcher answered with another operation's outcome")
}

/// A handle derived from a region given with `region = PATH` (its own expiry), made once.
pub struct Derived {
    cell: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Derived {
    /// An empty slot.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Derived {
            cell: OnceLock::new(),
        }
    }

    /// The handle, made by `init` on the first call.
    #[inline]
    pub fn get<R: Any + Send + Sync>(&'static self, init: impl FnOnce() -> R) -> &'static R {
        match self.cell.get_or_init(|| Box::new(init())).downcast_ref() {
            Some(handle) => handle,
            None => mismatch("a function with `region = ...`"),
        }
    }
}

/// Reached only if a dispatcher is asked for an operation its function routes elsewhere.
#[cold]
#[inline(never)]
pub fn wrong_op<T>() -> T {
    wrong_outcome()
}

/// Checks that `#[dogpile]` on an `async fn` has the async runtime support it needs.
#[cfg(feature = "tokio")]
#[inline(always)]
pub fn async_support<T>() {}

/// What an `async fn` needs, missing without the `tokio` feature.
#[cfg(not(feature = "tokio"))]
#[diagnostic::on_unimplemented(
    message = "#[dogpile] on an `async fn` needs the `tokio` feature of dogpile",
    label = "this function is async",
    note = "enable it in Cargo.toml: dogpile = {{ version = \"0.1\", features = [\"tokio\"] }}"
)]
pub trait AsyncSupport {}

/// Checks that `#[dogpile]` on an `async fn` has the async runtime support it needs.
#[cfg(not(feature = "tokio"))]
pub fn async_support<T: AsyncSupport>() {}
