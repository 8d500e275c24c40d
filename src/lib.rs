//! **dogpile** stops the dogpile (thundering herd) on expensive values: when a cached value
//! expires, exactly one caller regenerates it while every other caller keeps getting the previous
//! value at once. Only on a first miss do callers wait, and then for that one creator.
//!
//! It is a Rust rebuild of Python's `dogpile.core` lock. This crate is the one to depend on: it
//! re-exports the runtime ([`dogpile_runtime`]) and, as it lands, the `#[dogpile]` attribute.
//!
//! ```
//! use dogpile::{LocalMutex, Lock, NeedRegeneration, Clock, SystemClock, Timestamp};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! let stored: Mutex<Option<(String, Timestamp)>> = Mutex::new(None);
//! let mutex = Arc::new(LocalMutex::new());
//! let report = Lock::new(
//!     &mutex,
//!     || {
//!         let fresh = "report".to_string();
//!         *stored.lock().unwrap() = Some((fresh.clone(), SystemClock.now()));
//!         Ok::<_, std::convert::Infallible>(fresh)
//!     },
//!     || stored.lock().unwrap().clone().ok_or(NeedRegeneration),
//!     Some(Duration::from_secs(3600)),
//! )
//! .enter()
//! .unwrap();
//! assert_eq!(report, "report");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(inline)]
pub use dogpile_runtime::*;

#[doc(inline)]
pub use dogpile_macros::dogpile;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
