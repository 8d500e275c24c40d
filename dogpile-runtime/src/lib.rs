//! The runtime of [dogpile](https://docs.rs/dogpile): a dogpile lock, after Python's
//! `dogpile.core`, and the pieces it is built from.
//!
//! A *dogpile lock* lets exactly one caller regenerate an expired value while every other
//! caller keeps using the old one until the new one is ready. Only when there is no value at all
//! do the others wait, and then for that single creator.
//!
//! - [`Lock`]: one call through the protocol, over a [`RawMutex`], a creator and a getter.
//! - [`LocalMutex`], [`OwnedMutexGuard`]: the in-process mutex and its owned guard.
//! - [`NeedRegeneration`]: what a getter returns when there is no value.
//! - [`ReadWriteMutex`]: many readers or one writer, for swapping a value that readers use.
//! - [`FileMutex`], [`FileReadWriteMutex`]: the same across the processes of one host, on lock
//!   files.
//! - [`Redis`], [`RedisStore`], [`RedisMutex`] (feature `redis`): a store and a mutex for
//!   processes on many hosts.
//! - [`NameRegistry`]: one shared object (such as a mutex) per key, while it is in use.
//! - [`Clock`], [`SystemClock`], [`CoarseClock`], [`ManualClock`], [`Timestamp`]: wall-clock
//!   time, injectable.
//! - [`Region`]: a cache on the lock, what a `#[dogpile]` function runs on: a [`Store`] of
//!   values ([`MemoryStore`] by default), a mutex per key, expiry, invalidation, [`Statistics`].
//! - [`Dogpile`], [`SyncReaderDogpile`]: the seed's deprecated first API.
//!
//! ```
//! use dogpile_runtime::{Clock, LocalMutex, Lock, NeedRegeneration, SystemClock, Timestamp};
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

mod clock;
mod error;
mod file;
mod legacy;
mod lock;
mod mutex;
#[cfg(feature = "redis")]
mod on_redis;
mod region;
mod registry;
mod rwmutex;
mod sync;

pub use clock::{Clock, CoarseClock, ManualClock, SystemClock, Timestamp};
pub use error::{BackendError, LockError, NeedRegeneration, ReleaseError};
pub use file::{FileMutex, FileReadGuard, FileReadWriteMutex, FileWriteGuard};
#[allow(deprecated)]
pub use legacy::{Dogpile, Reading, SyncReaderDogpile};
pub use lock::{Got, Lock};
pub use mutex::{LocalMutex, OwnedMutexGuard, RawMutex, WakeOnRelease};
#[cfg(feature = "redis")]
pub use on_redis::{Redis, RedisMutex, RedisStore};
pub use region::{
    MemoryStore, OnBackendError, Pool, PoolFull, Region, RegionBuilder, RegionError, Statistics,
    Store,
};
pub use registry::NameRegistry;
pub use rwmutex::{ReadGuard, ReadWriteMutex, WriteGuard};
