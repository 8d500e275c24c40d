//! What `#[dogpile]` expands to. Not public API: no stability promise, may change in any
//! release; use [`Region`] directly instead.
//!
//! An annotated function has one hidden dispatcher that takes its arguments, builds the key
//! from references to them (so the key consumes none of them and a mistake in it shows once),
//! finds the region, and runs an operation: [`Get`] for the function itself, [`Refresh`],
//! [`Peek`], [`Invalidate`] and [`SoftInvalidate`] for its companions ([`Op`] for a blocking
//! function, [`AsyncOp`] for an `async fn`). A [`Rule`] says how the return type maps onto what
//! is cached.

use std::any::Any;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock, PoisonError};

pub use std::borrow::{Borrow, ToOwned};
pub use std::clone::Clone;
pub use std::option::Option::{self, None, Some};
pub use std::result::Result::{self, Err, Ok};
pub use std::time::Duration;

use dogpile_runtime::lock::RawMutex;
pub use dogpile_runtime::region::OnBackendError;
pub use dogpile_runtime::region::{CacheKey, CacheValue, Store};
use dogpile_runtime::region::{Pool, Served};
pub use dogpile_runtime::Region;
#[cfg(feature = "tokio")]
pub use dogpile_runtime::{lock::AsyncRawMutex, region::AsyncRegion, region::AsyncStore};
use dogpile_runtime::{RegionError, Statistics};

/// The key, checked where the user wrote it.
#[inline(always)]
pub fn key<K: CacheKey>(key: K) -> K {
    key
}

/// How a return type maps onto the cached value: every value ([`All`]), `Ok` of a `Result`
/// ([`OkOnly`]) or `Some` of an `Option` ([`SomeOnly`]).
pub trait Rule<R> {
    /// The cached value (checked to be a `CacheValue` where the function is expanded, once).
    type Value;
    /// What a creator's failure carries through the region.
    type Error: Send + Sync + 'static;
    /// The creator's return, as the region takes it.
    fn split(returned: R) -> Result<Self::Value, Self::Error>;
    /// The region's answer, as the function returns it.
    fn join(answer: Result<Self::Value, RegionError<Self::Error>>) -> R;
}

/// Every returned value is cached.
pub enum All {}

impl<R> Rule<R> for All {
    type Value = R;
    type Error = Infallible;

    #[inline(always)]
    fn split(returned: R) -> Result<R, Infallible> {
        Ok(returned)
    }

    #[inline(always)]
    fn join(answer: Result<R, RegionError<Infallible>>) -> R {
        match answer {
            Ok(value) => value,
            Err(err) => match err.into_creator() {
                Ok(never) => match *never {},
                Err(other) => fail(other),
            },
        }
    }
}

/// Only `Ok` is cached; an `Err` reaches its caller.
pub enum OkOnly {}

impl<T, E: Send + Sync + 'static> Rule<Result<T, E>> for OkOnly {
    type Value = T;
    type Error = E;

    #[inline(always)]
    fn split(returned: Result<T, E>) -> Result<T, E> {
        returned
    }

    #[inline(always)]
    fn join(answer: Result<T, RegionError<E>>) -> Result<T, E> {
        // The attribute's regions share no failures: each error is its caller's alone.
        answer.map_err(
            |err| match err.into_creator().map(std::sync::Arc::try_unwrap) {
                Ok(Ok(err)) => err,
                Ok(Err(_)) => unshared(),
                Err(other) => fail(other),
            },
        )
    }
}

/// Only `Some` is cached; `None` reaches its caller.
pub enum SomeOnly {}

/// `None` from an `Option` creator, carried through the `Result` path.
pub struct NoValue;

impl<T> Rule<Option<T>> for SomeOnly {
    type Value = T;
    type Error = NoValue;

    #[inline(always)]
    fn split(returned: Option<T>) -> Result<T, NoValue> {
        returned.ok_or(NoValue)
    }

    #[inline(always)]
    fn join(answer: Result<T, RegionError<NoValue>>) -> Option<T> {
        match answer {
            Ok(value) => Some(value),
            Err(err) => match err.into_creator() {
                Ok(_) => None,
                Err(other) => fail(other),
            },
        }
    }
}

/// A region the attribute calls through shares no failures, so a creator's error is never
/// anyone else's.
#[cold]
#[inline(never)]
fn unshared() -> ! {
    panic!("a #[dogpile] function got a failure shared with other calls, which it cannot return")
}

/// A recursion, or a backend set to return errors, in a function that cannot return them.
#[cold]
#[inline(never)]
#[track_caller]
fn fail(err: RegionError<Infallible>) -> ! {
    panic!("{err}")
}

/// An operation of an annotated function, run by its dispatcher with the region, the key and
/// the body (a closure over the arguments). `V` is the cached value, `R` the return type.
pub trait Op<V, R> {
    /// What the operation returns.
    type Output;

    /// Runs the operation.
    fn run<K, S, M>(
        self,
        region: &Region<K, V, S, M>,
        key: K,
        body: impl FnOnce() -> R,
    ) -> Self::Output
    where
        K: CacheKey,
        V: CacheValue,
        S: Store<K, V>,
        M: RawMutex + 'static;

    /// Runs the operation for a function with `background`, whose body can move to the pool.
    #[inline(always)]
    fn run_background<K, S, M>(
        self,
        region: &Region<K, V, S, M>,
        key: K,
        body: impl FnOnce() -> R + Send + 'static,
    ) -> Self::Output
    where
        K: CacheKey,
        V: CacheValue,
        S: Store<K, V>,
        M: RawMutex + 'static,
        Self: Sized,
    {
        self.run(region, key, body)
    }
}

/// The same for an `async fn`: the body returns a future.
#[cfg(feature = "tokio")]
pub trait AsyncOp<V, R> {
    /// What the operation's future gives.
    type Output;

    /// Runs the operation.
    fn run<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, V, S, M>,
        key: K,
        body: impl FnOnce() -> Fut,
    ) -> impl std::future::Future<Output = Self::Output>
    where
        K: CacheKey,
        V: CacheValue,
        S: AsyncStore<K, V>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R>;

    /// Runs the operation for a function with `background`.
    fn run_background<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, V, S, M>,
        key: K,
        body: impl FnOnce() -> Fut + Send + 'static,
    ) -> impl std::future::Future<Output = Self::Output>
    where
        K: CacheKey,
        V: CacheValue,
        S: AsyncStore<K, V>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        Self: Sized,
    {
        self.run(region, key, body)
    }
}

/// The function itself: get or create.
pub struct Get<Ru>(PhantomData<Ru>);

impl<Ru> Get<Ru> {
    /// The operation.
    pub const NEW: Self = Get(PhantomData);
}

impl<Ru: Rule<R>, R> Op<Ru::Value, R> for Get<Ru> {
    type Output = R;

    #[inline(always)]
    fn run<K, S, M>(
        self,
        region: &Region<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> R,
    ) -> R
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: Store<K, Ru::Value>,
        M: RawMutex + 'static,
    {
        Ru::join(region.try_get_with(&key, || Ru::split(body())))
    }

    #[inline(always)]
    fn run_background<K, S, M>(
        self,
        region: &Region<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> R + Send + 'static,
    ) -> R
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: Store<K, Ru::Value>,
        M: RawMutex + 'static,
    {
        Ru::join(region.background().try_get_with(&key, || Ru::split(body())))
    }
}

#[cfg(feature = "tokio")]
impl<Ru: Rule<R>, R> AsyncOp<Ru::Value, R> for Get<Ru> {
    type Output = R;

    async fn run<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> Fut,
    ) -> R
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: AsyncStore<K, Ru::Value>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R>,
    {
        let init = || async move { Ru::split(body().await) };
        Ru::join(region.try_get_with(&key, init).await)
    }

    async fn run_background<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> Fut + Send + 'static,
    ) -> R
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: AsyncStore<K, Ru::Value>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
    {
        let init = || async move { Ru::split(body().await) };
        Ru::join(region.background().try_get_with(&key, init).await)
    }
}

/// The `_served` companion: the function, and how the call was served.
pub struct GetServed<Ru>(PhantomData<Ru>);

impl<Ru> GetServed<Ru> {
    /// The operation.
    pub const NEW: Self = GetServed(PhantomData);
}

/// The function's return value and how it was served; a creator's failure was this caller's
/// own creation.
fn served<Ru: Rule<R>, R>(
    answer: Result<(Ru::Value, Served), RegionError<Ru::Error>>,
) -> (R, Served) {
    match answer {
        Ok((value, served)) => (Ru::join(Ok(value)), served),
        Err(err) => (Ru::join(Err(err)), Served::Created),
    }
}

impl<Ru: Rule<R>, R> Op<Ru::Value, R> for GetServed<Ru> {
    type Output = (R, Served);

    #[inline(always)]
    fn run<K, S, M>(
        self,
        region: &Region<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> R,
    ) -> (R, Served)
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: Store<K, Ru::Value>,
        M: RawMutex + 'static,
    {
        served::<Ru, R>(region.try_get_with_served(&key, || Ru::split(body())))
    }

    #[inline(always)]
    fn run_background<K, S, M>(
        self,
        region: &Region<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> R + Send + 'static,
    ) -> (R, Served)
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: Store<K, Ru::Value>,
        M: RawMutex + 'static,
    {
        let answer = region
            .background()
            .try_get_with_served(&key, || Ru::split(body()));
        served::<Ru, R>(answer)
    }
}

#[cfg(feature = "tokio")]
impl<Ru: Rule<R>, R> AsyncOp<Ru::Value, R> for GetServed<Ru> {
    type Output = (R, Served);

    async fn run<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> Fut,
    ) -> (R, Served)
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: AsyncStore<K, Ru::Value>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R>,
    {
        let init = || async move { Ru::split(body().await) };
        served::<Ru, R>(region.try_get_with_served(&key, init).await)
    }

    async fn run_background<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> Fut + Send + 'static,
    ) -> (R, Served)
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: AsyncStore<K, Ru::Value>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
    {
        let init = || async move { Ru::split(body().await) };
        served::<Ru, R>(region.background().try_get_with_served(&key, init).await)
    }
}

/// The `_refresh` companion.
pub struct Refresh<Ru>(PhantomData<Ru>);

impl<Ru> Refresh<Ru> {
    /// The operation.
    pub const NEW: Self = Refresh(PhantomData);
}

impl<Ru: Rule<R>, R> Op<Ru::Value, R> for Refresh<Ru> {
    type Output = R;

    fn run<K, S, M>(
        self,
        region: &Region<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> R,
    ) -> R
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: Store<K, Ru::Value>,
        M: RawMutex + 'static,
    {
        Ru::join(region.refresh(&key, || Ru::split(body())))
    }
}

#[cfg(feature = "tokio")]
impl<Ru: Rule<R>, R> AsyncOp<Ru::Value, R> for Refresh<Ru> {
    type Output = R;

    async fn run<K, S, M, Fut>(
        self,
        region: &AsyncRegion<K, Ru::Value, S, M>,
        key: K,
        body: impl FnOnce() -> Fut,
    ) -> R
    where
        K: CacheKey,
        Ru::Value: CacheValue,
        S: AsyncStore<K, Ru::Value>,
        M: AsyncRawMutex + 'static,
        Fut: std::future::Future<Output = R>,
    {
        let init = || async move { Ru::split(body().await) };
        Ru::join(region.refresh(&key, init).await)
    }
}

/// The `_peek` companion.
pub struct Peek;

/// The `_invalidate` companion.
pub struct Invalidate;

/// The `_soft_invalidate` companion.
pub struct SoftInvalidate;

/// The companions that only read or drop the value: the body is not run.
macro_rules! keyed {
    ($op:ty, $output:ty, |$region:ident, $key:ident| $sync:expr, $async:expr) => {
        impl<V, R> Op<V, R> for $op {
            type Output = $output;

            fn run<K, S, M>(
                self,
                $region: &Region<K, V, S, M>,
                $key: K,
                _: impl FnOnce() -> R,
            ) -> $output
            where
                K: CacheKey,
                V: CacheValue,
                S: Store<K, V>,
                M: RawMutex + 'static,
            {
                $sync
            }
        }

        #[cfg(feature = "tokio")]
        impl<V, R> AsyncOp<V, R> for $op {
            type Output = $output;

            async fn run<K, S, M, Fut>(
                self,
                $region: &AsyncRegion<K, V, S, M>,
                $key: K,
                _: impl FnOnce() -> Fut,
            ) -> $output
            where
                K: CacheKey,
                V: CacheValue,
                S: AsyncStore<K, V>,
                M: AsyncRawMutex + 'static,
                Fut: std::future::Future<Output = R>,
            {
                $async
            }
        }
    };
}

keyed!(
    Peek,
    Option<V>,
    |region, key| region.peek(&key),
    region.peek(&key).await
);
keyed!(
    Invalidate,
    (),
    |region, key| region.invalidate(&key),
    region.invalidate(&key).await
);
keyed!(
    SoftInvalidate,
    (),
    |region, key| region.soft_invalidate(&key),
    region.soft_invalidate(&key).await
);

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
    /// Past its expiry by more than this, a value is not served.
    pub max_stale: Option<Duration>,
    /// A failed regeneration serves a value expired by no more than this.
    pub stale_if_error: Option<Duration>,
    /// The share of a lifetime after which a hit refreshes the value in the background.
    pub refresh_ahead: Option<f64>,
    /// Each value's lifetime is shortened by up to this share, at random.
    pub jitter: Option<f64>,
}

/// How long a value lives, by the function named with `expire_with`.
pub type ExpireWith<V> = Option<fn(&V) -> Duration>;

/// `expire_with = f`: `f` as the function pointer the region keeps.
#[inline(always)]
pub fn expire_with<V>(f: fn(&V) -> Duration) -> ExpireWith<V> {
    Some(f)
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
    /// The handle: an `AsyncRegion` with the `tokio` feature (it holds the `Region`), a
    /// `Region` without.
    typed: Box<dyn Any + Send + Sync>,
    control: Box<dyn Control + Send + Sync>,
}

#[cfg(feature = "tokio")]
type Handle<K, V> = AsyncRegion<K, V, dogpile_runtime::region::MemoryStore<K, V>, LocalMutex>;
#[cfg(not(feature = "tokio"))]
type Handle<K, V> = Region<K, V>;
#[cfg(feature = "tokio")]
use dogpile_runtime::lock::LocalMutex;

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
    pub fn region<K: CacheKey, V: CacheValue>(
        &'static self,
        expire_with: ExpireWith<V>,
    ) -> &'static Region<K, V> {
        #[cfg(feature = "tokio")]
        {
            self.handle::<K, V>(expire_with).as_sync()
        }
        #[cfg(not(feature = "tokio"))]
        {
            self.handle::<K, V>(expire_with)
        }
    }

    /// The region from async code.
    #[cfg(feature = "tokio")]
    #[inline]
    pub fn async_region<K: CacheKey, V: CacheValue>(
        &'static self,
        expire_with: ExpireWith<V>,
    ) -> &'static AsyncRegion<K, V, dogpile_runtime::region::MemoryStore<K, V>, LocalMutex> {
        self.handle::<K, V>(expire_with)
    }

    /// The handle; `expire_with` (the same at every call of one function) is used when the
    /// region is built.
    #[inline]
    fn handle<K: CacheKey, V: CacheValue>(
        &'static self,
        expire_with: ExpireWith<V>,
    ) -> &'static Handle<K, V> {
        let built = self.cell.get_or_init(|| self.build::<K, V>(expire_with));
        match built.typed.downcast_ref() {
            Some(handle) => handle,
            None => self.another::<K, V>(expire_with),
        }
    }

    /// The region of other key and value types than the first ones (a generic `impl`).
    #[cold]
    #[inline(never)]
    fn another<K: CacheKey, V: CacheValue>(
        &'static self,
        expire_with: ExpireWith<V>,
    ) -> &'static Handle<K, V> {
        let mut more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        let built = match more.iter().find(|b| b.typed.is::<Handle<K, V>>()) {
            Some(built) => *built,
            None => {
                // One per instantiation of the impl, kept for the program's life as a static.
                let built: &'static Built = Box::leak(Box::new(self.build::<K, V>(expire_with)));
                more.push(built);
                built
            }
        };
        built
            .typed
            .downcast_ref()
            .unwrap_or_else(|| mismatch(self.config.name))
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
    fn build<K: CacheKey, V: CacheValue>(&self, expire_with: ExpireWith<V>) -> Built {
        let config = &self.config;
        let mut builder = Region::<K, V>::builder().name(config.name);
        if let Some(expiry) = config.expiry {
            builder = builder.expiry(expiry);
        }
        if let Some(timeout) = config.lock_timeout {
            builder = builder.lock_timeout(timeout);
        }
        if config.background || config.refresh_ahead.is_some() {
            builder = builder.background(Pool::shared());
        }
        if let Some(max_stale) = config.max_stale {
            builder = builder.max_stale(max_stale);
        }
        if let Some(window) = config.stale_if_error {
            builder = builder.stale_if_error(window);
        }
        if let Some(share) = config.refresh_ahead {
            builder = builder.refresh_ahead(share);
        }
        if let Some(share) = config.jitter {
            builder = builder.jitter(share);
        }
        if let Some(expire_with) = expire_with {
            builder = builder.expire_with(expire_with);
        }
        if let Some(capacity) = config.capacity {
            builder = builder.capacity(capacity);
        }
        // The attribute checked every value at compile time. Its calls return the creator's
        // error by value: they share no failures.
        let region = match builder.build() {
            Ok(region) => region.with_shared_failures(false),
            Err(err) => panic!("#[dogpile] on {}: {err}", config.name),
        };
        #[cfg(feature = "tokio")]
        let handle = region.to_async();
        #[cfg(not(feature = "tokio"))]
        let handle = region.clone();
        Built {
            control: Box::new(region),
            typed: Box::new(handle),
        }
    }
}

#[cold]
#[inline(never)]
fn mismatch(name: &str) -> ! {
    // Every use of a slot comes from one expansion, whose key and value types are fixed for
    // each instantiation.
    panic!("the region of {name} was used with two key or value types")
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
        let mut sum = Statistics::default();
        for built in self.all() {
            sum += built.control.statistics();
        }
        sum
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

#[cfg(feature = "tokio")]
impl<K, V, S, M> Control for AsyncRegion<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    fn invalidate_all(&self) {
        self.as_sync().invalidate_all();
    }
    fn soft_invalidate_all(&self) {
        self.as_sync().soft_invalidate_all();
    }
    fn statistics(&self) -> Statistics {
        self.as_sync().statistics()
    }
}

/// A region given with `region = PATH`, through any `Deref` to it.
#[inline(always)]
pub fn given<K, V, S, M: RawMutex>(region: &Region<K, V, S, M>) -> &Region<K, V, S, M> {
    region
}

/// A handle on a region given with `region = PATH`, with the function's expiry: never zero
/// nor beyond 100 years, which the attribute checked where it was written.
pub fn with_expiry<K, V, S, M>(
    region: &Region<K, V, S, M>,
    expiry: Option<Duration>,
) -> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    region.with_expiry(expiry).unwrap_or_else(refused)
}

/// A setting of a given region's handle refused at run time, which the attribute's own checks
/// rule out where it was written.
#[cold]
pub fn refused<T>(err: dogpile_runtime::ConfigError) -> T {
    panic!("{err}")
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
