//! What a store on a server says about its failures: the invalidations it keeps to replay when
//! the server answers again ([`Invalidation`]), and the counts a region reports in its
//! statistics ([`BackendHealth`]).

use crate::Timestamp;

/// An invalidation that did not reach its store, handed to
/// [`Store::replay_later`](super::Store::replay_later) by the region that made it.
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::{Invalidation, MemoryStore, Store};
///
/// let store: MemoryStore<u8, u8> = MemoryStore::new(None)?;
/// let one = Invalidation::key(&1, false, Timestamp::from_nanos(5));
/// assert_eq!((one.key, one.soft), (Some(&1), false));
/// assert!(!store.replay_later(one)); // memory never fails: nothing to replay
/// assert_eq!(Invalidation::<u8>::all(true, Timestamp::from_nanos(5)).key, None);
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invalidation<'a, K> {
    /// The key invalidated, or `None` for every key (`invalidate_all`, `clear`).
    pub key: Option<&'a K>,
    /// Soft (the value counts as expired, served stale while one caller regenerates it) or
    /// hard (it counts as missing).
    pub soft: bool,
    /// When it was made, by the region's clock: values created at or before it are covered.
    pub at: Timestamp,
}

impl<'a, K> Invalidation<'a, K> {
    /// The invalidation of `key`, made at `at`.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::region::Invalidation;
    /// assert!(Invalidation::key(&"k", true, Timestamp::from_nanos(1)).soft);
    /// ```
    pub fn key(key: &'a K, soft: bool, at: Timestamp) -> Self {
        Invalidation {
            key: Some(key),
            soft,
            at,
        }
    }

    /// The invalidation of every key, made at `at`.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::region::Invalidation;
    /// assert_eq!(Invalidation::<u8>::all(false, Timestamp::from_nanos(1)).key, None);
    /// ```
    pub fn all(soft: bool, at: Timestamp) -> Self {
        Invalidation {
            key: None,
            soft,
            at,
        }
    }
}

/// What a store's backend went through since it was built, for a store on a server (Redis):
/// calls that went unanswered, its circuit breaker, the invalidations it kept to replay. A
/// region adds them to its [`Statistics`](crate::Statistics).
///
/// ```
/// use dogpile_runtime::region::BackendHealth;
/// let health = BackendHealth::default();
/// assert_eq!((health.failures, health.invalidations_queued), (0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendHealth {
    /// Calls to the backend that went unanswered (a timeout, a connection refused or broken).
    pub failures: u64,
    /// Calls failed at once, unsent, by the backend's open circuit breaker.
    pub rejected: u64,
    /// Times the circuit breaker opened.
    pub breaker_opened: u64,
    /// Times it closed again, the backend answering.
    pub breaker_closed: u64,
    /// Invalidations that did not reach the backend and were queued for replay.
    pub invalidations_queued: u64,
    /// Queued invalidations applied once the backend answered again.
    pub invalidations_replayed: u64,
    /// Invalidations queued now, not yet replayed (one per key, one for every key).
    pub invalidations_pending: u64,

    // A near cache (a Redis store with a memory tier in front).
    /// Reads that went to the backend: those the memory tier could not answer, and the
    /// protocol's own reads after a lock, which always do.
    pub near_misses: u64,
    /// Of those, reads made while the tier was suspect (its listener not subscribed).
    pub near_suspect: u64,
    /// Copies dropped on another process's notification (one per notification).
    pub near_dropped: u64,
    /// Times the listener lost its subscription.
    pub near_listener_lost: u64,
    /// Times it subscribed again after losing it.
    pub near_listener_regained: u64,
    /// Reads the backend failed, answered with the copy in memory.
    pub near_outage_served: u64,
    /// Values read that did not decode (another program's, another type's), each a miss.
    pub undecodable: u64,
}
