//! A creation: what a call that must make a value holds, and everything done around its
//! creator, written once for every kind of call (a key, each key of a batch, the background,
//! a refresh) and both colours.
//!
//! The drivers stop where the protocol says "create" ([`Stop::Create`](crate::lock::drive::Stop)),
//! with the key's mutex held (or not, after the lock timeout) and the stale value that stands
//! in for a failure. A [`Creation`] owns those; it runs the creator ([`Run`]: the span, the
//! holder mark, a panic caught and counted), stamps what it made ([`Region::write`]: expiry,
//! jitter, a lifetime of the value's own), stores it (fenced by the mutex's lease), counts the
//! outcome and, when the creator fails, returns the stale value if stale-if-error covers it.
//! The blocking form is [`Creation::create`]; the async form (`asynchronous/creation.rs`) only
//! awaits where this one blocks.
//!
//! Every write of a region goes through [`Write`]: a created value's (fenced when its mutex has
//! a fence), an inserted one's; a soft invalidation re-stamps only the value it read
//! ([`Store::restamp`]); an invalidation removes.

use std::any::{Any, TypeId};
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use super::expiry;
use super::failures::Failure;
use super::{
    trace, CacheKey, CacheValue, Made, NotCached, Region, RegionError, Served, Stamp, Store,
};
use crate::lock::drive::Held;
use crate::lock::Fence;
use crate::stats::Counter;
use crate::{BackendError, RawMutex};

/// A held mutex, blocking or async: what a creation fences its write with.
pub(super) trait Guard<M> {
    fn mutex(&self) -> &Arc<M>;
}

impl<M: RawMutex> Guard<M> for Held<M> {
    fn mutex(&self) -> &Arc<M> {
        Held::mutex(self)
    }
}

/// How a creator run failed: an error (this call's creator's, or the one it shares), or a panic.
pub(super) enum Failed<E> {
    Error(Arc<E>),
    Panic(Box<dyn Any + Send>),
    /// The creator ran past the region's hard timeout.
    TimedOut(Duration),
}

impl<E> Failed<E> {
    /// The span's name for it.
    fn outcome(&self) -> &'static str {
        match self {
            Failed::Error(_) => "error",
            Failed::Panic(_) => "panic",
            Failed::TimedOut(_) => "timed out",
        }
    }
}

/// A creator that ran past the hard timeout, as its key's failure is kept for the calls that
/// share it.
struct TimedOut(Duration);

/// How a creation ended: a value, or its creator's failure.
pub(super) type Ended<V, E> = Result<(V, Served), Failed<E>>;

/// The call's answer: the value, the creator's error, or its panic, resumed in the caller.
pub(super) fn end<V, E>(ended: Ended<V, E>) -> Result<(V, Served), RegionError<E>> {
    ended.map_err(fail)
}

/// A creator's failure as its caller gets it: its error, or its panic, resumed.
pub(super) fn fail<E>(failed: Failed<E>) -> RegionError<E> {
    match failed {
        Failed::Error(err) => RegionError::Creator(err),
        Failed::Panic(panic) => panic::resume_unwind(panic),
        Failed::TimedOut(timeout) => RegionError::Timeout(timeout),
    }
}

/// One run of a creator (for one key, or a batch's keys): its span, and the counting of its
/// failure. The successes are counted per key, by [`Creation::stored`].
pub(super) struct Run<'a> {
    span: trace::Regeneration,
    stats: &'a crate::stats::Counters,
    /// When the creator started, for its time.
    began: std::time::Instant,
}

impl<'a> Run<'a> {
    pub(super) fn start<K, V, S, M: RawMutex>(
        region: &'a Region<K, V, S, M>,
        label: &dyn Debug,
    ) -> Self {
        Run {
            span: trace::Regeneration::start(&region.inner.name, label),
            stats: region.stats(),
            began: std::time::Instant::now(),
        }
    }

    /// Runs a blocking creator in the span, catching a panic.
    pub(super) fn catch<T, E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<T, Failed<E>> {
        let ran = self
            .span
            .in_scope(|| panic::catch_unwind(AssertUnwindSafe(init)));
        self.ran(ran)
    }

    /// What a creator's run came to, its failure counted.
    pub(super) fn ran<T, E>(&self, ran: std::thread::Result<Result<T, E>>) -> Result<T, Failed<E>> {
        let took = self.began.elapsed();
        let failed = match ran {
            Ok(Ok(made)) => {
                self.stats.creator(took, false);
                return Ok(made);
            }
            Ok(Err(err)) => Failed::Error(Arc::new(err)),
            Err(panic) => Failed::Panic(panic),
        };
        self.stats.creator(took, true);
        self.stats.add(match failed {
            Failed::Error(_) | Failed::TimedOut(_) => Counter::Error,
            Failed::Panic(_) => Counter::Panic,
        });
        Err(failed)
    }

    /// The creator ran past the hard timeout (and was cancelled): counted as an error.
    #[cfg(feature = "tokio")]
    pub(super) fn timed_out<E>(&self, timeout: Duration) -> Failed<E> {
        self.stats.creator(self.began.elapsed(), true);
        self.stats.add(Counter::Error);
        Failed::TimedOut(timeout)
    }

    /// The span, for an async creator's future.
    #[cfg(feature = "tokio")]
    pub(super) fn span(&self) -> &trace::Regeneration {
        &self.span
    }

    /// Records how the run ended and closes its span.
    pub(super) fn finish(self, outcome: &'static str) {
        self.span.finish(outcome, || self.began.elapsed());
    }

    /// A batch's creator returned another number of values than it was asked for: counted as
    /// an error, its span closed.
    pub(super) fn miscounted(self) {
        self.stats.add(Counter::Error);
        self.finish("error");
    }

    /// Closes the span of a run that failed.
    pub(super) fn failed<E>(self, failed: &Failed<E>) {
        self.finish(failed.outcome());
    }
}

/// One key's creation: the mutex held (`G`, blocking or async), the stale value that stands in
/// for a failure, and whether the value is stored.
pub(super) struct Creation<'a, K, V, S, M: RawMutex, G> {
    pub(super) region: &'a Region<K, V, S, M>,
    pub(super) key: &'a K,
    /// The key's mutex; `None` after the lock timeout (created beside the holder, stored
    /// unfenced) or for a direct call.
    pub(super) guard: Option<G>,
    /// Returned, counted as stale, if the creator fails.
    rescue: Option<V>,
    /// `false` for a direct call: the store or mutex failed, the value is not stored.
    stores: bool,
    /// How many failures the region had recorded when the call began: one recorded since is
    /// one this call waited for. `None`: the call shares no failure (a refresh, asked for
    /// explicitly).
    began: Option<u64>,
    /// Run in the background: no caller is served what it makes.
    background: bool,
}

impl<'a, K, V, S, M, G> Creation<'a, K, V, S, M, G>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
    G: Guard<M>,
{
    /// A creation holding `guard` (if any), rescued by `rescue` (if any).
    pub(super) fn new(
        region: &'a Region<K, V, S, M>,
        key: &'a K,
        guard: Option<G>,
        rescue: Option<V>,
    ) -> Self {
        Creation {
            region,
            key,
            guard,
            rescue,
            stores: true,
            began: None,
            background: false,
        }
    }

    /// The same creation, run in the background: what it makes serves no caller.
    pub(super) fn in_background(mut self) -> Self {
        self.background = true;
        self
    }

    /// The same creation for a call that began at `began`: it shares a failure of the key's
    /// creator made since then, or within the failure throttle, instead of running its own.
    pub(super) fn began(mut self, began: u64) -> Self {
        self.began = Some(began);
        self
    }

    /// A direct call: the store or mutex failed with `err`, the creator runs without the cache.
    #[cold]
    pub(super) fn direct(region: &'a Region<K, V, S, M>, key: &'a K, err: &BackendError) -> Self {
        region.stats().add(Counter::DirectCall);
        trace::direct_call(&region.inner.name, key, err);
        Creation {
            region,
            key,
            guard: None,
            rescue: None,
            stores: false,
            began: None,
            background: false,
        }
    }

    /// What to store of `value`: nothing for a direct call or a value the region does not
    /// cache; else the write, fenced by the held mutex's lease.
    pub(super) fn write<'w>(
        &'w self,
        value: &'w V,
        life: Option<Duration>,
    ) -> Option<Write<'w, K, V, S, M>> {
        if !self.stores || !self.region.caches(value) {
            return None;
        }
        let fence = self.guard.as_ref().and_then(|guard| guard.mutex().fence());
        Some(self.region.write(self.key, value, life, fence))
    }

    /// Counts a value made (`stored`: what the store said of it, if it was offered: written,
    /// refused by the fence, or failed) and names the outcome for the span.
    pub(super) fn stored(&self, stored: Option<Result<bool, BackendError>>) -> &'static str {
        if !self.stores {
            return "direct";
        }
        if !self.background {
            self.region.stats().served(Served::Created);
        }
        let (counter, outcome) = match stored {
            Some(Ok(true)) => (Counter::Regeneration, "stored"),
            Some(Ok(false)) => (Counter::RefusedWrite, "refused: the lease ran out"),
            Some(Err(_)) => (Counter::Error, "store failed"),
            None => (Counter::Error, "not cached"),
        };
        self.region.stats().add(counter);
        if let Counter::RefusedWrite = counter {
            trace::refused_write(&self.region.inner.name, self.key);
        }
        outcome
    }

    /// How a value this creation made is served.
    pub(super) fn served(&self) -> Served {
        if self.stores {
            Served::Created
        } else {
            Served::Direct
        }
    }

    /// The creator failed: recorded for the calls that share it, then answered with the stale
    /// value, if stale-if-error covers it, or the failure.
    pub(super) fn failed<E: Send + Sync + 'static>(&mut self, failed: Failed<E>) -> Ended<V, E> {
        self.record(&failed);
        self.rescue(failed)
    }

    /// The stale value, if stale-if-error covers it, counted; the failure otherwise.
    pub(super) fn rescue<E>(&mut self, failed: Failed<E>) -> Ended<V, E> {
        match self.take_rescue() {
            Some(stale) => Ok((stale, Served::Stale)),
            None => Err(failed),
        }
    }

    /// Keeps an error for the calls that share it: those that waited for this creator, and
    /// those within the failure throttle. Not a panic, nor an `Option` creator's `None` (an
    /// answer, not a failure), nor the failures of a handle that shares none.
    pub(super) fn record<E: Send + Sync + 'static>(&self, failed: &Failed<E>) {
        let region = self.region;
        let error: Arc<dyn Any + Send + Sync> = match failed {
            Failed::Error(_) if TypeId::of::<E>() == TypeId::of::<NotCached>() => return,
            Failed::Error(err) => Arc::clone(err) as _,
            Failed::TimedOut(timeout) => Arc::new(TimedOut(*timeout)),
            Failed::Panic(_) => return,
        };
        if !region.share_failures {
            return;
        }
        let now = region.inner.now().as_nanos();
        let (tolerance, throttle) = (
            region.inner.tolerance_nanos,
            region.inner.fail_safe_throttle_nanos,
        );
        region.inner.failures.record(
            self.key,
            now,
            error,
            (
                |failure: &Failure| {
                    // Kept while its throttle or its back-off (which may be shorter) lasts.
                    let lasts = region.backoff(failure).max(throttle);
                    !expiry::within(now, failure.at, lasts, tolerance)
                },
                throttle,
            ),
        );
    }

    /// Before running the creator: a failure of the key's creator that this call shares instead
    /// of calling the upstream again (one made since the call began, or within the failure
    /// throttle), answered with the stale value if stale-if-error covers it. `None`: run the
    /// creator (no such failure, or one of another error type).
    pub(super) fn shared<E: Send + Sync + 'static>(&mut self) -> Option<Ended<V, E>> {
        let region = self.region;
        let began = self.began?;
        if !region.share_failures {
            return None;
        }
        let failure = region.inner.failures.last(self.key)?;
        let now = region.inner.now().as_nanos();
        let throttle = region.inner.fail_safe_throttle_nanos;
        let within = expiry::within(now, failure.at, throttle, region.inner.tolerance_nanos);
        if failure.seq <= began && !within {
            return None;
        }
        // The stale value stands in for any failure; the error itself only for a call that
        // returns the same error type.
        let answer = match self.take_rescue() {
            Some(stale) => Ok((stale, Served::Stale)),
            None => match failure.error.downcast_ref::<TimedOut>() {
                Some(TimedOut(timeout)) => Err(Failed::TimedOut(*timeout)),
                None => Err(Failed::Error(failure.error.downcast::<E>().ok()?)),
            },
        };
        region.stats().add(Counter::SharedFailure);
        trace::shared_failure(&region.inner.name, self.key);
        Some(answer)
    }

    /// The stale value that stands in for a failed creator, counted as served.
    pub(super) fn take_rescue(&mut self) -> Option<V> {
        let stale = self.rescue.take()?;
        let stats = self.region.stats();
        stats.add(Counter::StaleIfError);
        stats.add(Counter::StaleHit);
        trace::stale_on_error(&self.region.inner.name, self.key);
        Some(stale)
    }

    /// Whether a failure of this creation is answered with a stale value.
    pub(super) fn rescuable(&self) -> bool {
        self.rescue.is_some()
    }

    /// The end of a run that made `made`: stored, counted, its span closed, the key's failures
    /// forgotten.
    pub(super) fn made<E>(
        &self,
        run: Run<'_>,
        value: V,
        stored: Option<Result<bool, BackendError>>,
    ) -> Ended<V, E> {
        run.finish(self.stored(stored));
        self.region.inner.failures.clear(self.key);
        Ok((value, self.served()))
    }
}

impl<K, V, S, M> Creation<'_, K, V, S, M, Held<M>>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// Runs the creator (unless the call shares a failure of the key's creator), stores what
    /// it made, and releases the mutex: the blocking form.
    pub(super) fn create<E: Send + Sync + 'static, O: Made<V>>(
        mut self,
        init: impl FnOnce() -> Result<O, E>,
    ) -> Result<(V, Served), RegionError<E>> {
        if let Some(shared) = self.shared() {
            drop(self.guard.take());
            return end(shared);
        }
        let run = Run::start(self.region, self.key);
        let ended = match run.catch(init) {
            Ok(made) => {
                let (value, life) = made.into_parts();
                let stored = self.write(&value, life).map(Write::blocking);
                self.made(run, value, stored)
            }
            Err(failed) => {
                run.failed(&failed);
                self.failed(failed)
            }
        };
        // Released before a panic resumes or the value returns; the mark goes after.
        drop(self.guard.take());
        end(ended)
    }
}

/// One write of a value to the region's store, with its stamp: a created value's (fenced by the
/// creator's lease when its mutex has one) or an inserted one's.
pub(super) struct Write<'a, K, V, S, M: RawMutex> {
    pub(super) region: &'a Region<K, V, S, M>,
    pub(super) key: &'a K,
    pub(super) value: &'a V,
    pub(super) stamp: Stamp,
    pub(super) fence: Option<Fence>,
}

impl<K, V, S, M> Write<'_, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// Writes, blocking: whether the store took it (a fenced write is refused when the lease
    /// ran out).
    pub(super) fn blocking(self) -> Result<bool, BackendError> {
        let store = &self.region.inner.store;
        let written = match &self.fence {
            None => store.put(self.key, self.value, self.stamp).map(|()| true),
            Some(fence) => store.put_fenced(self.key, self.value, self.stamp, fence),
        };
        self.written(written)
    }

    /// Counts a value written, for the purge of a region with `max_stale`.
    pub(super) fn written(
        &self,
        written: Result<bool, BackendError>,
    ) -> Result<bool, BackendError> {
        if let Ok(true) = written {
            self.region.stored();
            #[cfg(feature = "metrics")]
            self.region.publish_due();
        }
        written
    }
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// The write of `value` under `key` made now: stamped with the handle's expiry, jitter and
    /// `life` (its own lifetime) or what `expire_with` says of it.
    pub(super) fn write<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        life: Option<Duration>,
        fence: Option<Fence>,
    ) -> Write<'a, K, V, S, M> {
        // A value for the store is newer than one a direct call made: whatever becomes of the
        // write, that one is not shared again.
        let inner = &*self.inner;
        let window = (inner.fail_safe_throttle_nanos, inner.tolerance_nanos);
        (inner.directs).forget_made(key, || inner.now().as_nanos(), window);
        Write {
            region: self,
            key,
            value,
            stamp: self.stamp_value(value, life),
            fence,
        }
    }

    /// How long after `failure` the key's background regeneration waits: the failure throttle,
    /// doubled with each failure in a row (up to 64 times), spread by up to half so that keys
    /// failing together do not retry together.
    pub(super) fn backoff(&self, failure: &Failure) -> i64 {
        let throttle = self.inner.fail_safe_throttle_nanos;
        let doubled = throttle.saturating_mul(1 << failure.attempts.saturating_sub(1).min(6));
        // A spread drawn from the failure's time: the same for every caller that checks it.
        let spread = 512 + ((failure.at.unsigned_abs() >> 7) % 512) as i64;
        doubled / 1024 * spread
    }

    /// Whether `key`'s background regeneration waits, backing off from its creator's failures.
    pub(super) fn backing_off(&self, key: &K) -> bool {
        if !self.share_failures {
            return false;
        }
        self.inner.failures.last(key).is_some_and(|failure| {
            let now = self.inner.now().as_nanos();
            expiry::within(
                now,
                failure.at,
                self.backoff(&failure),
                self.inner.tolerance_nanos,
            )
        })
    }

    /// Whether the region's cache rule accepts `value`.
    pub(super) fn caches(&self, value: &V) -> bool {
        self.inner
            .should_cache
            .as_ref()
            .is_none_or(|accepts| accepts(value))
    }
}
