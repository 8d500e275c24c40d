//! **dogpile** stops the dogpile (thundering herd) on expensive values: when a cached value
//! expires, exactly one caller regenerates it while every other caller keeps getting the previous
//! value at once. Only on a first miss do callers wait, and then for that one creator.
//!
//! # The attribute
//!
//! [`#[dogpile]`](macro@dogpile) caches a function, blocking or `async`, with its options
//! checked at compile time and companion items beside it (`_peek`, `_invalidate`, `_served`,
//! `_statistics`, ...):
//!
//! ```
//! use dogpile::dogpile;
//! use std::sync::Arc;
//!
//! #[dogpile(expire = 5m)]
//! fn exchange_rate(from: &str, to: &str) -> Arc<f64> {
//!     Arc::new(1.1) // a slow call to another service, made by one caller per pair and expiry
//! }
//!
//! assert_eq!(*exchange_rate("EUR", "USD"), 1.1);
//! assert_eq!(exchange_rate_statistics().misses, 1);
//! ```
//!
//! # The region
//!
//! A [`Region`] is the cache the attribute runs on, usable directly: a store of values with
//! their creation times, a dogpile mutex per key, expiry and its policies (stale windows,
//! refresh-ahead, jitter, per-value lifetimes), invalidation, [`Statistics`]. Its calls are
//! [`get_with`](Region::get_with), [`try_get_with`](Region::try_get_with) and
//! [`optionally_get_with`](Region::optionally_get_with), the same on
//! [`AsyncRegion`](region::AsyncRegion) for async code; see the [`region`] module.
//!
//! ```
//! use dogpile::Region;
//! use std::time::Duration;
//!
//! let prices: Region<String, u64> = Region::builder()
//!     .expiry(Duration::from_secs(300))
//!     .capacity(10_000)
//!     .build()?;
//! assert_eq!(prices.get_with(&"sku-1".to_string(), || 42), 42);
//! # Ok::<(), dogpile::ConfigError>(())
//! ```
//!
//! # Beyond one process
//!
//! A region's store and mutexes are pluggable ([`backend`]): lock files for the processes of
//! one host ([`backend::file`]), and Redis for processes on many hosts (`backend::redis`,
//! feature `redis`; TLS with `redis-tls`).
//!
//! # The lock and its primitives
//!
//! Under the region, the [`lock`] module has the dogpile lock of Python's `dogpile.core` as a
//! library: [`Lock`] (one call through the protocol, over any mutex and any store), the mutexes
//! ([`LocalMutex`](lock::LocalMutex), the [`RawMutex`](lock::RawMutex) trait), a
//! [`ReadWriteMutex`](lock::ReadWriteMutex) and a [`NameRegistry`](lock::NameRegistry).
//! [`clock`] has the injectable wall clock. The first API of `dogpile.core`, deprecated there,
//! is kept in [`legacy`].
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tokio` | yes | `#[dogpile]` on `async fn`, [`AsyncRegion`](region::AsyncRegion) |
//! | `redis` | no | the Redis store and mutex |
//! | `redis-tls` | no | Redis over TLS (`rediss://`), with rustls |
//! | `tracing` | no | a `dogpile.regenerate` span per regeneration, and rate-limited events when protection degrades |
//! | `metrics` | no | each region's counts through the `metrics` crate (the README lists every metric) |
//!
//! This crate re-exports the runtime, `dogpile-runtime`, and the attribute, `dogpile-macros`,
//! whose versions move with it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use dogpile_runtime::{backend, clock, legacy, lock, region, BackendError, ConfigError};
// At the root for short paths (`dogpile::Region`); documented once, in their modules.
#[doc(no_inline)]
pub use lock::{Lock, LockError, NeedRegeneration};
#[doc(no_inline)]
pub use region::{Region, RegionError, Served, Statistics};

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(all(doctest, feature = "redis", feature = "tokio"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Caches a function's values on a dogpile lock: when a value expires, one caller runs the
/// body again while every other caller gets the previous value at once; only when there is no
/// value yet do callers wait, and then for that one caller.
///
/// ```
/// use dogpile::dogpile;
/// use std::sync::Arc;
///
/// #[derive(Debug)]
/// pub struct Report { pub day: u32 }
///
/// #[dogpile(expire = 3600)]
/// pub fn report(day: u32) -> Arc<Report> {
///     Arc::new(Report { day }) // expensive work, run by one caller per day and hour
/// }
///
/// assert_eq!(report(7).day, 7);
/// assert!(Arc::ptr_eq(&report(7), &report(7)));
/// assert_eq!(report_statistics().hits, 2);
/// ```
///
/// # Options
///
/// | option | value | meaning |
/// |---|---|---|
/// | `expire` (required) | `3600` or `1.5` (seconds), `250ms`, `90s`, `5m`, `1h30m`, `"1.5s"` (a unit with or without quotes), or `never` | how long a value stays fresh; checked at compile time: a unit is read as written or rejected, never dropped |
/// | `expire_with` | a path to a `fn(&V) -> Duration`, such as `token_lifetime` | each value's own lifetime (a token's `expires_in`, a response's `max-age`), at most `expire`, which stays the longest a value lives |
/// | `jitter` | `0.1` or `"10%"` | each value's lifetime is shortened by a random share up to this, so keys created together do not expire together |
/// | `key` | an expression over the arguments, such as `user.id` or `(self.tenant, sku)` | what identifies a value; it must be owned: `Hash + Eq + Clone + Debug + Send + Sync + 'static`. The key borrows the arguments and consumes none: a bare argument is copied (`&T` through `ToOwned`, so `&str` becomes `String`; `T` through `Clone`), a field or index is cloned, an expression that returns a reference is made owned (`name.trim()` gives a `String`); any other value that borrows (an `Option<&str>`) needs an owned form. Default: every argument, copied that way |
/// | `capacity` | `10_000` | the most values kept: the ones asked for most often lately stay, and a scan of one-time keys passes through (W-TinyLFU, see [`MemoryStore`](crate::region::MemoryStore)) |
/// | `background` | (no value) | an expired value is regenerated on a shared thread pool; the caller that would regenerate returns the stale value too. Arguments are copied to owned values to move there (`&T` through `ToOwned`, so a method's `Self` must be `Clone`) |
/// | `lock_timeout` | `2s` | a caller waiting for a first value longer than this runs the body itself |
/// | `max_stale` | `5m`, or `0` | a value expired for longer than this is not served: callers wait as on a first miss (`0`: no stale value at all); such values are purged from the store now and then, so keys asked for once do not stay. Default: stale values are served however old |
/// | `stale_if_error` | `10m` | when the body fails (an error or a panic), callers whose value expired no longer ago than this get it instead; counted in `stale_on_error` |
/// | `refresh_ahead` | `0.8` or `"80%"` | a call late in a value's life (past that share of `expire`) gets it at once and starts one regeneration in the background, so a value in steady use never expires in front of a caller; implies `background` |
/// | `region` | a path to a [`Region`] (or anything that derefs to one), such as `crate::caches::USERS` | use a region configured elsewhere (another store or mutex, such as a Redis region, `backend::redis::RedisRegion`) instead of the function's own. Its keys are `(&'static str, K)`: the function's namespace, then its key, so functions sharing it never read each other's values; `_invalidate_all`, `_soft_invalidate_all` and `_statistics` act on the whole region |
/// | `namespace` | `"users"`, or `none` | with `region`: the namespace before each key (default: the function's path, `module::name`). `none` drops it, for a region no other function uses |
/// | `cache` | `ok`, `some` or `all` | which returned values are stored. Default: only `Ok` for a return type named `Result`, only `Some` for `Option`, every value otherwise; `cache = ok` for a type alias of `Result`, `cache = all` to store errors or `None` too |
/// | `crate` | a path, such as `::my_dogpile` | where the `dogpile` crate is, if renamed |
///
/// The return type must be `Clone + Send + Sync + 'static`: every caller gets a clone, from
/// any thread. Wrap large values in an `Arc`. A function with no arguments caches one value.
///
/// # Companion items
///
/// Beside `fn report(day: u32) -> Arc<Report>`, with the same visibility:
///
/// | item | does |
/// |---|---|
/// | `report_uncached(day) -> Arc<Report>` | runs the original body: no cache read, nothing stored |
/// | `report_peek(day) -> Option<Arc<Report>>` | the stored value, fresh or expired, without running the body |
/// | `report_refresh(day) -> Arc<Report>` | runs the body now and stores the value, never beside another creator of the key |
/// | `report_served(day) -> (Arc<Report>, Served)` | the function, and how the call was served ([`Served`]: fresh, stale, created, waited, direct), for an `X-Cache` header or a metric per route |
/// | `report_invalidate(day) -> Result<(), BackendError>` | removes the value: the next call runs the body and the others wait for it |
/// | `report_soft_invalidate(day) -> Result<(), BackendError>` | marks the value expired: the next call regenerates it while the others get the old value |
/// | `report_invalidate_all()`, `report_soft_invalidate_all()` | the same for every key; on a region given with `region = ...`, named `report_invalidate_region()` and `report_soft_invalidate_region()`: they reach every value of the shared region, every function's |
/// | | the invalidations' [`BackendError`] says the store was not reached (a Redis region during an outage) and whether the invalidation is queued to be replayed when it answers ([`BackendError::is_queued_for_replay`]); a region in memory never fails them |
/// | `report_statistics() -> Statistics` | hits, stale hits, misses, regenerations, errors, panics, waits, ... |
///
/// For a method, the keyed companions take the same receiver (`self.price_peek(sku)`) and the
/// others are associated functions (`Service::price_statistics()`).
///
/// ```
/// use dogpile::dogpile;
///
/// struct Prices { tenant: u32 }
///
/// impl Prices {
///     #[dogpile(expire = "5m", key = (self.tenant, sku))]
///     fn price(&self, sku: &str) -> Result<u64, std::num::ParseIntError> {
///         sku.parse() // only Ok values are stored
///     }
/// }
///
/// let prices = Prices { tenant: 1 };
/// assert!(prices.price("x").is_err());
/// assert_eq!(prices.price("12"), Ok(12));
/// assert_eq!(prices.price_peek("12"), Some(12));
/// prices.price_invalidate("12").expect("memory never fails");
/// assert_eq!(prices.price_peek("12"), None);
/// ```
///
/// # Equivalent code without the macro
///
/// `#[dogpile(expire = 3600)] fn report(day: u32) -> Arc<Report> { body }` behaves as:
///
/// ```
/// # use std::sync::Arc;
/// # pub struct Report { pub day: u32 }
/// use dogpile::Region;
/// use std::sync::LazyLock;
/// use std::time::Duration;
///
/// static REPORT: LazyLock<Region<u32, Arc<Report>>> = LazyLock::new(|| {
///     Region::builder()
///         .name(concat!(module_path!(), "::report"))
///         .expiry(Duration::from_secs(3600))
///         .build()
///         .expect("a valid configuration")
/// });
///
/// fn report(day: u32) -> Arc<Report> {
///     REPORT.get_with(&day, || report_uncached(day))
/// }
///
/// fn report_uncached(day: u32) -> Arc<Report> {
///     Arc::new(Report { day }) // the body
/// }
///
/// fn report_invalidate(day: u32) -> Result<(), dogpile::BackendError> {
///     REPORT.invalidate(&day)
/// }
/// // ... and the other companions, each one call on the region.
/// # assert_eq!(report(1).day, 1);
/// ```
///
/// A `Result` function calls [`Region::try_get_with`], an `Option` one
/// [`Region::optionally_get_with`], `background` the same calls on [`Region::background`], and
/// an `async fn` the same calls on [`AsyncRegion`](region::AsyncRegion).
///
/// # Async functions
///
/// ```
/// # #[cfg(feature = "tokio")] {
/// use dogpile::dogpile;
///
/// #[dogpile(expire = "30s")]
/// async fn profile(user: u64) -> String {
///     format!("user {user}") // an awaited call to another service, in practice
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// assert_eq!(profile(7).await, "user 7");
/// assert_eq!(profile_peek(7).await.as_deref(), Some("user 7")); // keyed companions await too
/// # });
/// # }
/// ```
///
/// # Errors at compile time
///
/// Misuse is a compile error at the offending tokens: an unknown or repeated option, a
/// missing, zero, negative or unreadable `expire`, a `key` that uses no argument, a generic,
/// `const`, `extern` or variadic function, a method without `key`, a `&mut` or `impl Trait`
/// argument in the default key, a key or return type that cannot be cached (one error for each
/// trait it lacks), a return type that borrows (`&str`: return a `String`).
///
/// ```compile_fail
/// #[dogpile::dogpile(expire = "5d")] // error: unknown unit `d`: there is no unit of days; write hours, `120h`
/// fn report(day: u32) -> u32 { day }
/// ```
///
/// # Limits
///
/// - On an `async fn` (feature `tokio`, on by default), waiting tasks await the creator
///   without blocking a worker thread, and the returned future is `Send` when the body's is,
///   borrowed arguments included: it can be spawned, or be an axum handler.
///   The companions that take the arguments (`_uncached`, `_served`, `_peek`, `_refresh`,
///   `_invalidate`, `_soft_invalidate`) are `async fn`s too, to be awaited; `_invalidate_all`,
///   `_soft_invalidate_all` and `_statistics` are not (on a Redis region, the first two wait
///   for the server on the calling thread). A creator whose future is dropped (a timeout, a
///   cancelled request) releases its key: the next caller creates.
/// - A method of a generic `impl` caches per instantiation of the impl (each key and value
///   type its own region); the companions that take no key cover all of them.
/// - Inside an `impl` block, an associated function without `self` must name `Self` in its
///   signature, or the companions cannot find each other (`Self::` is how they are called).
/// - When the region's store or mutex fails (Redis unreachable, say), the call runs the body
///   directly and counts it in `direct_calls`, whatever the region's
///   [`OnBackendError`](region::OnBackendError): the function has no error to return.
/// - A panic in the body reaches only the caller that ran it, and nothing is stored; a body
///   that calls its own function with the same key panics with a message naming the key,
///   instead of waiting for itself.
#[doc(inline)]
pub use dogpile_macros::dogpile;

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;
