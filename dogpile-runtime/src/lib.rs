//! The runtime of [dogpile](https://docs.rs/dogpile): a dogpile lock, after Python's
//! `dogpile.core`, and the pieces it is built from.
//!
//! A *dogpile lock* lets exactly one caller regenerate an expired value while every other
//! caller keeps using the old one until the new one is ready. Only when there is no value at all
//! do the others wait, and then for that single creator.
//!
//! - [`region`]: [`Region`], a cache on the lock, what a `#[dogpile]` function runs on: a
//!   [`Store`] of values, a mutex per key, expiry, invalidation,
//!   [`Statistics`].
//! - [`lock`]: [`Lock`], one call through the dogpile protocol over a
//!   [`RawMutex`], a creator and a getter; the in-process mutex, a
//!   read/write mutex and a registry of one shared object per key.
//! - [`clock`]: wall-clock time behind a [`Clock`] that tests can replace.
//! - [`backend`]: lock files for the processes of one host; Redis for processes on many
//!   hosts (feature `redis`).
//! - [`legacy`]: the deprecated first API of Python's `dogpile.core`, `Dogpile` and
//!   `SyncReaderDogpile`.
//!
//! ```
//! use dogpile_runtime::clock::{Clock, SystemClock, Timestamp};
//! use dogpile_runtime::lock::{LocalMutex, Lock, NeedRegeneration};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! // The value and its creation time live in some cache; here, a Mutex<Option<..>>.
//! let cache: Arc<Mutex<Option<(u64, Timestamp)>>> = Arc::default();
//! let mutex = Arc::new(LocalMutex::new());
//!
//! let get = || {
//!     let cache = cache.clone();
//!     let mutex = mutex.clone();
//!     std::thread::spawn(move || {
//!         Lock::new(
//!             &mutex,
//!             || {
//!                 let value = 42; // expensive work, done by one thread only
//!                 *cache.lock().unwrap() = Some((value, SystemClock.now()));
//!                 Ok::<_, std::convert::Infallible>(value)
//!             },
//!             || cache.lock().unwrap().ok_or(NeedRegeneration),
//!             Some(Duration::from_secs(60)),
//!         )
//!         .enter()
//!         .unwrap()
//!     })
//! };
//! let threads: Vec<_> = (0..4).map(|_| get()).collect();
//! for t in threads {
//!     assert_eq!(t.join().unwrap(), 42);
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
pub mod clock;
mod error;
#[cfg(feature = "metrics")]
mod export;
pub mod legacy;
pub mod lock;
pub mod region;
mod served;
mod stats;
mod sync;

pub use error::{BackendError, ConfigError};
// At the root for short paths (`dogpile::Region`); documented once, in their modules.
#[doc(no_inline)]
pub use lock::{Lock, LockError, NeedRegeneration};
#[doc(no_inline)]
pub use region::{Region, RegionError, Served, Statistics};

// The crate's own short paths to what it uses everywhere (not every feature set uses each).
#[allow(unused_imports)]
pub(crate) use clock::{Clock, CoarseClock, SystemClock, Timestamp};
#[allow(unused_imports)]
pub(crate) use lock::{
    AsyncRawMutex, LocalMutex, NameRegistry, OwnedMutexGuard, RawMutex, ReadGuard, ReadWriteMutex,
    ReleaseError, WakeOnRelease, WriteGuard,
};
#[allow(unused_imports)]
pub(crate) use region::Store;
