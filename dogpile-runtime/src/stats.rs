//! A region's statistics: counters striped per thread, so that counting a hit writes no cache
//! line that another thread writes too.
//!
//! Each thread claims a stripe of its own at its first count (released when the thread ends)
//! and, being its only writer, counts with a plain load and store instead of a locked
//! read-modify-write. Threads beyond the owned stripes share one more stripe, counted with
//! `fetch_add`.

use std::fmt;
use std::ops::AddAssign;
use std::time::Duration;

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
    /// Creator runs, and those that failed.
    CreatorRun,
    CreatorFailure,
    /// Nanoseconds: creators' runs, failed runs, the longest run.
    CreatorNanos,
    CreatorFailureNanos,
    CreatorMaxNanos,
    /// Nanoseconds waited for a key's mutex, in all and the longest wait.
    WaitNanos,
    WaitMaxNanos,
}

pub(crate) const COUNTERS: usize = Counter::WaitMaxNanos as usize + 1;

/// With the `metrics` feature, a thread's hits are published to the recorder every this many
/// (and by every call that counts anything else, or when the statistics are read): a hit writes
/// only its thread's stripe, never the recorder's shared counter.
#[cfg(feature = "metrics")]
const HITS_PER_PUBLICATION: u64 = 64;

/// One thread's counters, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Stripe([AtomicU64; COUNTERS]);

/// The counters of a region's calls, or of the calls of the handles that keep statistics of
/// their own under one name (a region's statistics add those up with its own).
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
    /// The name of a handle's own statistics; `None`: the region's.
    pub(crate) namespace: Option<String>,
    /// The series these counts are reported to, with the `metrics` feature.
    #[cfg(feature = "metrics")]
    exported: crate::export::Exported,
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
    /// The counters of `region`, or of a handle's own statistics kept under `namespace`.
    pub(crate) fn new(region: &str, namespace: Option<&str>) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (region, namespace);
        Counters {
            stripes: (0..=OWNED).map(|_| Stripe::default()).collect(),
            namespace: namespace.map(str::to_string),
            #[cfg(feature = "metrics")]
            exported: crate::export::Exported::new(region, namespace),
        }
    }

    /// Counts one `counter` (and reports it, with the `metrics` feature).
    #[inline]
    pub(crate) fn add(&self, counter: Counter) {
        let _count = self.add_n(counter, 1);
        #[cfg(feature = "metrics")]
        self.export(counter, _count);
    }

    /// Reports `counter` to the series: a hit by batches, anything else at once.
    #[cfg(feature = "metrics")]
    #[inline]
    fn export(&self, counter: Counter, count: u64) {
        if let Counter::Hit = counter {
            if count.is_multiple_of(HITS_PER_PUBLICATION) {
                self.publish_hits();
            }
        } else {
            self.exported.add(counter);
            // Off the hot path: the hits are brought up to date too, once per call (a sum over
            // every thread's stripe): a miss, a regeneration and a lock timeout are each followed
            // in their call by what it ends with (a creation, a wait, a failure).
            if !matches!(
                counter,
                Counter::Miss | Counter::Regeneration | Counter::LockTimeout
            ) {
                self.publish_hits();
            }
        }
    }

    /// Counts a call ended with a value, by how it was served.
    #[inline]
    pub(crate) fn served(&self, served: Served) {
        match served {
            Served::Fresh => self.add(Counter::Hit),
            Served::Stale => self.add(Counter::StaleHit),
            Served::Waited => self.add(Counter::Wait),
            // Creations are counted where the creator runs; only the metrics count the call.
            Served::Created => {
                #[cfg(feature = "metrics")]
                {
                    self.exported.created();
                    self.publish_hits();
                }
            }
            Served::Direct => {}
        }
    }

    /// Adds `n`; the stripe's count now.
    #[inline]
    fn add_n(&self, counter: Counter, n: u64) -> u64 {
        self.add_at(stripe_index(), counter, n)
    }

    /// [`add_n`](Self::add_n) on the stripe at `index`, this thread's.
    #[inline]
    fn add_at(&self, index: usize, counter: Counter, n: u64) -> u64 {
        let cell = &self.stripes[index].0[counter as usize];
        if index < OWNED {
            // This thread is the stripe's only writer.
            let now = cell.load(Ordering::Relaxed).wrapping_add(n);
            cell.store(now, Ordering::Relaxed);
            now
        } else {
            cell.fetch_add(n, Ordering::Relaxed).wrapping_add(n)
        }
    }

    /// Publishes the hits counted in these counters' own series to the recorder.
    #[cfg(feature = "metrics")]
    #[cold]
    pub(crate) fn publish_hits(&self) {
        self.exported.hits(self.sum(Counter::Hit));
    }

    /// Raises a maximum to `n`, if higher, on the stripe at `index`, this thread's.
    fn raise_at(&self, index: usize, counter: Counter, n: u64) {
        let cell = &self.stripes[index].0[counter as usize];
        if index < OWNED {
            if cell.load(Ordering::Relaxed) < n {
                cell.store(n, Ordering::Relaxed);
            }
        } else {
            cell.fetch_max(n, Ordering::Relaxed);
        }
    }

    /// Counts a creator's run of `took`, failed or not.
    pub(crate) fn creator(&self, took: Duration, failed: bool) {
        #[cfg(feature = "metrics")]
        self.exported.creator(took, failed);
        let took = nanos(took);
        // The thread's stripe, looked up once for the three or five counts.
        let index = stripe_index();
        let _ = self.add_at(index, Counter::CreatorRun, 1);
        let _ = self.add_at(index, Counter::CreatorNanos, took);
        self.raise_at(index, Counter::CreatorMaxNanos, took);
        if failed {
            let _ = self.add_at(index, Counter::CreatorFailure, 1);
            let _ = self.add_at(index, Counter::CreatorFailureNanos, took);
        }
    }

    /// Counts a wait of `took` for a key's mutex.
    pub(crate) fn waited(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        self.exported.waited(took);
        let took = nanos(took);
        let index = stripe_index();
        let _ = self.add_at(index, Counter::WaitNanos, took);
        self.raise_at(index, Counter::WaitMaxNanos, took);
    }

    fn sum(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[counter as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    fn max(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[counter as usize].load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    fn time(&self, counter: Counter) -> Duration {
        let nanos = if matches!(counter, Counter::CreatorMaxNanos | Counter::WaitMaxNanos) {
            self.max(counter)
        } else {
            self.sum(counter)
        };
        Duration::from_nanos(nanos)
    }

    /// The counts (what the store knows is left at 0).
    pub(crate) fn snapshot(&self) -> Statistics {
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
            creator_runs: self.sum(Counter::CreatorRun),
            creator_failures: self.sum(Counter::CreatorFailure),
            creator_time: self.time(Counter::CreatorNanos),
            creator_failure_time: self.time(Counter::CreatorFailureNanos),
            creator_time_max: self.time(Counter::CreatorMaxNanos),
            wait_time: self.time(Counter::WaitNanos),
            wait_time_max: self.time(Counter::WaitMaxNanos),
            ..Statistics::default()
        }
    }
}

fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
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
/// assert_eq!((stats.creator_runs, stats.creator_failures), (1, 0));
/// // The average time the upstream took when dogpile called it (Caffeine's load penalty).
/// let penalty = stats.creator_time / stats.creator_runs as u32;
/// assert!(penalty <= stats.creator_time_max);
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
    /// Runs of a creator (the function that makes a value: the upstream call), in the caller
    /// or in the background, direct calls included; a batch's creator counts once per run.
    pub creator_runs: u64,
    /// Creator runs that failed: an error (or an `Option` creator's `None`), a panic, or a run
    /// past the hard timeout. `creator_runs - creator_failures` succeeded.
    pub creator_failures: u64,
    /// The time creators ran, in all (failed runs included): `creator_time / creator_runs` is
    /// the average time a call that creates pays (Caffeine's average load penalty).
    pub creator_time: Duration,
    /// The part of `creator_time` spent in runs that failed.
    pub creator_failure_time: Duration,
    /// The longest creator run.
    pub creator_time_max: Duration,
    /// The time calls spent waiting for another caller's creator (on a miss), in all: the
    /// waits that ended with its value (counted in `waits`), and those that ended in a lock
    /// timeout (then the call created too) or a hard timeout.
    pub wait_time: Duration,
    /// The longest such wait.
    pub wait_time_max: Duration,
    /// Values the store evicted to stay within its capacity or maximum weight (values
    /// invalidated, replaced or removed are not counted).
    pub evictions: u64,
    /// The weight of the values counted in `evictions`, by the store's weigher (each value
    /// weighs 1 without one).
    pub eviction_weight: u64,
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
            creator_runs,
            creator_failures,
            creator_time,
            creator_failure_time,
            creator_time_max,
            wait_time,
            wait_time_max,
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
            eviction_weight,
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
        self.creator_runs += creator_runs;
        self.creator_failures += creator_failures;
        self.creator_time += creator_time;
        self.creator_failure_time += creator_failure_time;
        self.creator_time_max = self.creator_time_max.max(creator_time_max);
        self.wait_time += wait_time;
        self.wait_time_max = self.wait_time_max.max(wait_time_max);
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
        self.eviction_weight += eviction_weight;
        self.entries += entries;
    }
}

impl fmt::Display for Statistics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} hits, {} stale hits, {} misses, {} regenerations, {} errors, {} panics, \
             {} lock timeouts, {} waits, {} direct calls, {} refused writes, {} stale on error, \
             {} shared failures, {} creator runs ({} failed) in {:?} (longest {:?}, failed \
             {:?}), waited {:?} (longest {:?}), {} backend failures, {} breaker rejections, {} breaker opens, \
             {} breaker closes, {} invalidations queued, {} invalidations replayed, \
             {} invalidations pending, {} undecodable values, {} evictions (weight {}), \
             {} entries",
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
            self.creator_runs,
            self.creator_failures,
            self.creator_time,
            self.creator_time_max,
            self.creator_failure_time,
            self.wait_time,
            self.wait_time_max,
            self.backend_failures,
            self.breaker_rejections,
            self.breaker_opens,
            self.breaker_closes,
            self.invalidations_queued,
            self.invalidations_replayed,
            self.invalidations_pending,
            self.undecodable,
            self.evictions,
            self.eviction_weight,
            self.entries
        )?;
        // A near cache's own counts, only where there is one.
        if self.near_misses + self.near_suspect + self.near_dropped + self.near_listener_lost > 0 {
            write!(
                f,
                "; near tier: {} misses, {} suspect reads, {} copies dropped, listener lost {} \
                 and regained {} times, {} served in an outage",
                self.near_misses,
                self.near_suspect,
                self.near_dropped,
                self.near_listener_lost,
                self.near_listener_regained,
                self.near_outage_served
            )?;
        }
        Ok(())
    }
}
