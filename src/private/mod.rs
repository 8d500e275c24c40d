//! What `#[dogpile]` expands to. Not public API: no stability promise, may change in any
//! release; use [`Region`] directly instead.
//!
//! The expansion calls the region itself: each item computes its key, gets its region from a
//! hidden function (the function's own, built once by the builder calls the expansion writes,
//! or a handle on the one given with `region = ...`), and calls one of the region's verbs.
//! Here is only what the expansion cannot write inline: the checks of the key and value types
//! (`check`), how a return type maps onto what is cached (`rule`), where a function's own
//! region lives (`slot`), and the one place each for the companions that take no key.
//!
//! No future is made here: a generic layer between an `async fn` and the region (a trait
//! whose method returns the future, called through a type parameter) leaves a projection in
//! the caller's future, whose `Send` the compiler then cannot prove for a body that borrows its
//! arguments, nor for a key with a `&'static str` in it (rust-lang/rust#110338).

mod check;
mod rule;
mod slot;

pub use check::{expire_with, given, key_for, AsIs, Key, KeyOf, NotAKey, Owned, Value};
pub use rule::{served, All, NoValue, OkOnly, Rule, Share, ShareByClone, ShareNot, SomeOnly};
pub use slot::{blocking, Configure, Handle, Own, Slot};

pub use std::borrow::{Borrow, ToOwned};
pub use std::clone::Clone;
pub use std::option::Option::{self, None, Some};
pub use std::result::Result::{self, Err, Ok};
pub use std::time::Duration;

pub use dogpile_runtime::lock::RawMutex;
pub use dogpile_runtime::region::{
    Background, CacheKey, CacheValue, OnBackendError, Pool, RegionBuilder, Store,
};
pub use dogpile_runtime::Region;
#[cfg(feature = "tokio")]
pub use dogpile_runtime::{
    lock::AsyncRawMutex, region::AsyncBackground, region::AsyncRegion, region::AsyncStore,
};
use dogpile_runtime::{BackendError, Statistics};

/// What `_invalidate_all`, `_soft_invalidate_all` and `_statistics` act on: every region of a
/// function's [`Slot`], or the region given with `region = ...`.
pub trait Control {
    /// Invalidates every key: hard, or soft.
    ///
    /// # Errors
    ///
    /// The store's, if the invalidation did not reach it (see [`Region::invalidate_all`]).
    fn invalidate_all(&self, soft: bool) -> Result<(), BackendError>;
    /// The statistics.
    fn statistics(&self) -> Statistics;
}

/// `_invalidate_all` of every function, and `_soft_invalidate_all` with `soft`; on a region
/// given with `region = ...`, `_invalidate_region` and `_soft_invalidate_region`: the whole
/// region, every function's values.
///
/// # Errors
///
/// The store's, if the invalidation did not reach it (see [`Region::invalidate_all`]).
pub fn invalidate_all(of: &dyn Control, soft: bool) -> Result<(), BackendError> {
    of.invalidate_all(soft)
}

/// `_statistics` of a function with its own region: the region's.
#[must_use]
pub fn statistics(of: &dyn Control) -> Statistics {
    of.statistics()
}

/// `_statistics` of a function given a shared region: its own calls', kept under `name` (its
/// namespace) by the handle its calls go through.
#[must_use]
pub fn namespace_statistics<K, V, S, M>(given: &Region<K, V, S, M>, name: &str) -> Statistics
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    given.with_own_statistics(name).statistics()
}

impl<K, V, S, M> Control for Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    fn invalidate_all(&self, soft: bool) -> Result<(), BackendError> {
        if soft {
            self.soft_invalidate_all()
        } else {
            Region::invalidate_all(self)
        }
    }

    fn statistics(&self) -> Statistics {
        Region::statistics(self)
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

/// A setting of a handle refused at run time, which the attribute's own checks rule out where
/// it was written.
#[cold]
pub fn refused<T>(err: dogpile_runtime::ConfigError) -> T {
    panic!("#[dogpile]: {err}")
}
