//! A region's statistics: counters striped per thread, so that counting a hit writes no cache
//! line that another thread writes too.
//!
//! Each thread claims a stripe of its own at its first count (released when the thread ends)
//! and, being its only writer, counts with a plain load and store instead of a locked
//! read-modify-write. Threads beyond the owned stripes share one more stripe, counted with
//! `fetch_add`.

use std::fmt;
use std::ops::AddAssign;

use crate::region::BackendHealth;
use crate::served::Served;
use crate::sync::{AtomicU64, Ordering};

/// Stripes that a thread can own; one more is shared by the threads that found none free.
#[cfg(not(loom))]
const OWNED: usize = 32;
/// Under loom every thread counts on the one shared stripe.
#[cfg(loom)]
const OWNED: usize = 0;
const SHARED: usize = OWNED;

#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Counter {
    Hit,
    StaleHit,
    Miss,
    Regeneration,
    Error,
    Panic,
    LockTimeout,
    Wait,
    DirectCall,
    RefusedWrite,
    StaleIfError,
    SharedFailure,
}

const COUNTERS: usize = Counter::SharedFailure as usize + 1;

/// One thread's counters, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Stripe([AtomicU64; COUNTERS]);

pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

#[cfg(not(loom))]
mod claims {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{OWNED, SHARED};

    /// Which owned stripes are taken, process-wide (the same index in every region). A plain
    /// `std` atomic: the stripes only spread the counting, and loom builds count on the shared
    /// stripe instead (loom atomics cannot live in a `static`).
    static TAKEN: [AtomicBool; OWNED] = [const { AtomicBool::new(false) }; OWNED];

    /// This thread's stripe; gives it back when the thread ends.
    struct Claim(Cell<usize>);

    impl Drop for Claim {
        fn drop(&mut self) {
            let index = self.0.get();
            if index < OWNED {
                // Release: the next owner's first load sees this thread's last store.
                TAKEN[index].store(false, Ordering::Release);
            }
        }
    }

    thread_local! {
        static CLAIM: Claim = const { Claim(Cell::new(usize::MAX)) };
    }

    #[inline]
    pub(super) fn stripe_index() -> usize {
        // During thread teardown the claim may be gone: count on the shared stripe then.
        let index = CLAIM.try_with(|c| c.0.get()).unwrap_or(SHARED);
        if index != usize::MAX {
            return index;
        }
        claim()
    }

    #[cold]
    #[inline(never)]
    fn claim() -> usize {
        let index = TAKEN
            .iter()
            .position(|taken| {
                taken
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .unwrap_or(SHARED);
        let _ = CLAIM.try_with(|c| c.0.set(index));
        index
    }
}

#[cfg(not(loom))]
use claims::stripe_index;

/// Under loom every thread counts on the shared stripe, with `fetch_add`.
#[cfg(loom)]
fn stripe_index() -> usize {
    SHARED
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            stripes: (0..=OWNED).map(|_| Stripe::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn add(&self, counter: Counter) {
        let index = stripe_index();
        let cell = &self.stripes[index].0[counter as usize];
        if index < OWNED {
            // This thread is the stripe's only writer.
            cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a call ended with a stored value, by how it was served. Creations are counted
    /// where the creator runs.
    #[inline]
    pub(crate) fn served(&self, served: Served) {
        match served {
            Served::Fresh => self.add(Counter::Hit),
            Served::Stale => self.add(Counter::StaleHit),
            Served::Waited => self.add(Counter::Wait),
            Served::Created | Served::Direct => {}
        }
    }

    fn sum(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[counter as usize].load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn snapshot(&self, entries: usize, evictions: u64) -> Statistics {
        Statistics {
            hits: self.sum(Counter::Hit),
            stale_hits: self.sum(Counter::StaleHit),
            misses: self.sum(Counter::Miss),
            regenerations: self.sum(Counter::Regeneration),
            errors: self.sum(Counter::Error),
            panics: self.sum(Counter::Panic),
            lock_timeouts: self.sum(Counter::LockTimeout),
            waits: self.sum(Counter::Wait),
            direct_calls: self.sum(Counter::DirectCall),
            refused_writes: self.sum(Counter::RefusedWrite),
            stale_on_error: self.sum(Counter::StaleIfError),
            shared_failures: self.sum(Counter::SharedFailure),
            evictions,
            entries,
            ..Statistics::default()
        }
    }
}

/// A snapshot of a region's counters since it was built.
///
/// Counters are summed over per-thread stripes when read, so a snapshot taken while other
/// threads call the region may be a few counts behind them.
///
/// ```
/// use dogpile_runtime::Region;
///
/// let region: Region<u32, String> = Region::builder().build()?;
/// region.get_with(&1, || "one".to_string());
/// region.get_with(&1, || unreachable!());
/// let stats = region.statistics();
/// assert_eq!((stats.misses, stats.hits, stats.regenerations, stats.entries), (1, 1, 1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Statistics {
    /// Calls answered with a fresh value.
    pub hits: u64,
    /// Calls answered with an expired value while another caller regenerated it.
    pub stale_hits: u64,
    /// Calls that found no value (they created it or waited for its creator).
    pub misses: u64,
    /// Creator runs that stored a value (in the caller or in the background).
    pub regenerations: u64,
    /// Creator runs that returned an error or a value the region does not cache.
    pub errors: u64,
    /// Creator runs that panicked.
    pub panics: u64,
    /// Waiters that gave up after the lock timeout and ran the creator themselves.
    pub lock_timeouts: u64,
    /// Calls that waited for another caller's creator.
    pub waits: u64,
    /// Calls that ran the creator without the cache because the store or mutex failed.
    pub direct_calls: u64,
    /// Values whose write the store refused because their creator's hold on the key's mutex
    /// ran out while it ran (another process may have regenerated the key meanwhile); the
    /// creator's caller still got its value.
    pub refused_writes: u64,
    /// Calls whose regeneration failed (an error or a panic) and that got the stale value
    /// instead, within the region's stale-if-error window (also counted in `stale_hits`).
    pub stale_on_error: u64,
    /// Calls that did not run the creator because another call's creator had just failed for
    /// the same key (they waited for it, or came within the failure throttle): they got its
    /// failure, or the stale value (then also counted in `stale_on_error`).
    pub shared_failures: u64,
    /// Values the store evicted to stay within its capacity or maximum weight (values
    /// invalidated, replaced or removed are not counted).
    pub evictions: u64,
    /// Calls to the store's backend that went unanswered: a timeout, a connection refused or
    /// broken (each cost up to the backend's timeout). 0 for a store that cannot fail. For
    /// Redis, the counts of the connection handle the store was made from, which the region's
    /// mutexes and any other region on the same handle share.
    pub backend_failures: u64,
    /// Calls to the backend failed at once, unsent, by its open circuit breaker (each cost
    /// nothing; the region then called the creator directly, or returned the error). Counted
    /// as `backend_failures` is.
    pub breaker_rejections: u64,
    /// Times the backend's circuit breaker opened: after failures in a row, or a probe that
    /// was not answered. Counted as `backend_failures` is.
    pub breaker_opens: u64,
    /// Times it closed again, a probe having been answered.
    pub breaker_closes: u64,
    /// Invalidations that did not reach the store and were queued to be replayed when it
    /// answers again (their callers got an error saying so).
    pub invalidations_queued: u64,
    /// Queued invalidations replayed once the store answered again.
    pub invalidations_replayed: u64,
    /// Invalidations queued when the snapshot was taken, waiting for the store (one per key,
    /// one for every key; a later write or invalidation may make one moot). A process that
    /// exits before they are replayed loses them: wait for 0 before a planned exit.
    pub invalidations_pending: u64,

    // A near cache: a Redis region with a memory tier in front (`RedisStore::near`); 0 for
    // other stores.
    /// Reads that went to Redis: those the memory tier could not answer (no copy, one older
    /// than `near`, the tier suspect), and the protocol's own reads after taking or waiting
    /// for a key's lock, which always do.
    pub near_misses: u64,
    /// Of those, reads made while the memory tier was suspect: its listener was not
    /// subscribed, so it might have missed another process's change.
    pub near_suspect: u64,
    /// Notifications from other processes that dropped copies from the memory tier.
    pub near_dropped: u64,
    /// Times the memory tier's listener lost its subscription (a connection broken or
    /// killed); the tier is suspect until it is regained.
    pub near_listener_lost: u64,
    /// Times the listener subscribed again after losing it (the tier then starts empty).
    pub near_listener_regained: u64,
    /// Reads Redis failed that the copy in memory answered (the region judged its age).
    pub near_outage_served: u64,
    /// Values the store read that did not decode (written with another type or serde
    /// layout, or by another program): each was a miss, and regenerated.
    pub undecodable: u64,

    /// Values in the store when the snapshot was taken, if the store can count them cheaply:
    /// a [`MemoryStore`](crate::region::MemoryStore)'s values in this process. A store shared by
    /// processes (Redis) does not count its values, and this is 0; count them on the server.
    /// The other fields are this process's counts, whatever the store.
    pub entries: usize,
}

impl Statistics {
    /// With what the store's backend reported, if it can fail.
    pub(crate) fn with_backend(mut self, health: Option<BackendHealth>) -> Self {
        if let Some(health) = health {
            self.backend_failures = health.failures;
            self.breaker_rejections = health.rejected;
            self.breaker_opens = health.breaker_opened;
            self.breaker_closes = health.breaker_closed;
            self.invalidations_queued = health.invalidations_queued;
            self.invalidations_replayed = health.invalidations_replayed;
            self.invalidations_pending = health.invalidations_pending;
            self.near_misses = health.near_misses;
            self.near_suspect = health.near_suspect;
            self.near_dropped = health.near_dropped;
            self.near_listener_lost = health.near_listener_lost;
            self.near_listener_regained = health.near_listener_regained;
            self.near_outage_served = health.near_outage_served;
            self.undecodable = health.undecodable;
        }
        self
    }
}

/// Sums counters, as for the regions of several instantiations of one generic function.
///
/// ```
/// use dogpile_runtime::Statistics;
/// let mut sum = Statistics::default();
/// let mut one = Statistics::default();
/// one.hits = 2;
/// sum += one;
/// sum += one;
/// assert_eq!(sum.hits, 4);
/// ```
impl AddAssign for Statistics {
    fn add_assign(&mut self, other: Statistics) {
        let Statistics {
            hits,
            stale_hits,
            misses,
            regenerations,
            errors,
            panics,
            lock_timeouts,
            waits,
            direct_calls,
            refused_writes,
            stale_on_error,
            shared_failures,
            backend_failures,
            breaker_rejections,
            breaker_opens,
            breaker_closes,
            invalidations_queued,
            invalidations_replayed,
            invalidations_pending,
            near_misses,
            near_suspect,
            near_dropped,
            near_listener_lost,
            near_listener_regained,
            near_outage_served,
            undecodable,
            evictions,
            entries,
        } = other;
        self.hits += hits;
        self.stale_hits += stale_hits;
        self.misses += misses;
        self.regenerations += regenerations;
        self.errors += errors;
        self.panics += panics;
        self.lock_timeouts += lock_timeouts;
        self.waits += waits;
        self.direct_calls += direct_calls;
        self.refused_writes += refused_writes;
        self.stale_on_error += stale_on_error;
        self.shared_failures += shared_failures;
        self.backend_failures += backend_failures;
        self.breaker_rejections += breaker_rejections;
        self.breaker_opens += breaker_opens;
        self.breaker_closes += breaker_closes;
        self.invalidations_queued += invalidations_queued;
        self.invalidations_replayed += invalidations_replayed;
        self.invalidations_pending += invalidations_pending;
        self.near_misses += near_misses;
        self.near_suspect += near_suspect;
        self.near_dropped += near_dropped;
        self.near_listener_lost += near_listener_lost;
        self.near_listener_regained += near_listener_regained;
        self.near_outage_served += near_outage_served;
        self.undecodable += undecodable;
        self.evictions += evictions;
        self.entries += entries;
    }
}

impl fmt::Display for Statistics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} hits, {} stale hits, {} misses, {} regenerations, {} errors, {} panics, \
             {} lock timeouts, {} waits, {} direct calls, {} refused writes, {} stale on error, \
             {} shared failures, {} backend failures, {} breaker rejections, {} breaker opens, \
             {} breaker closes, {} invalidations queued, {} invalidations replayed, \
             {} invalidations pending, {} evictions, {} entries",
            self.hits,
            self.stale_hits,
            self.misses,
            self.regenerations,
            self.errors,
            self.panics,
            self.lock_timeouts,
            self.waits,
            self.direct_calls,
            self.refused_writes,
            self.stale_on_error,
            self.shared_failures,
            self.backend_failures,
            self.breaker_rejections,
            self.breaker_opens,
            self.breaker_closes,
            self.invalidations_queued,
            self.invalidations_replayed,
            self.invalidations_pending,
            self.evictions,
            self.entries
        )
    }
}
