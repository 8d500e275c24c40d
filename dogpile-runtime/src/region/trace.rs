//! Spans for regenerations and events that explain a bad minute, with the `tracing` feature;
//! nothing without it. Each kind of event is sent at most once a second in the process (during
//! an outage every call would send one), saying how many went unreported since the last.

use std::fmt::Debug;

/// A `dogpile.regenerate` span naming the region and the key (or a batch's keys), entered
/// while a blocking creator runs and attached to an async creator's future (an entered span
/// cannot cross an `.await`); [`finish`](Self::finish) records the outcome.
pub(super) struct Regeneration {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl Regeneration {
    #[inline]
    pub(super) fn start(region: &str, key: &dyn Debug) -> Self {
        #[cfg(feature = "tracing")]
        {
            Regeneration {
                span: tracing::info_span!(
                    "dogpile.regenerate",
                    region,
                    key = ?key,
                    outcome = tracing::field::Empty,
                    took = tracing::field::Empty
                ),
            }
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (region, key);
            Regeneration {}
        }
    }

    /// Runs `f` inside the span.
    #[inline]
    pub(super) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "tracing")]
        {
            self.span.in_scope(f)
        }
        #[cfg(not(feature = "tracing"))]
        {
            f()
        }
    }

    /// `future`, run inside the span.
    #[cfg(feature = "tokio")]
    #[inline]
    pub(super) fn instrument<F: std::future::Future>(
        &self,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        {
            tracing::Instrument::instrument(future, self.span.clone())
        }
        #[cfg(not(feature = "tracing"))]
        {
            future
        }
    }

    /// Records how the regeneration ended ("stored", "error", ...) and how long it took. The
    /// time is read only for a span that records it: without a subscriber a miss does not pay
    /// for a clock read (about 200 instructions with the subtraction).
    #[inline]
    pub(super) fn finish(self, outcome: &'static str, took: impl FnOnce() -> std::time::Duration) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            self.span.record("outcome", outcome);
            self.span.record("took", tracing::field::debug(took()));
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (outcome, took);
    }
}

/// Reports a call that bypassed the cache because its store or mutex failed.
#[inline]
pub(super) fn direct_call(region: &str, key: &dyn Debug, error: &dyn std::error::Error) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = limits::DIRECT.due() {
        tracing::warn!(
            region,
            key = ?key,
            %error,
            unreported,
            "dogpile backend failed; calling the creator directly"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (region, key, error);
}

/// Reports a call that got its store's or mutex's error (the handle returns it rather than
/// calling the creator directly).
#[cold]
pub(super) fn backend_failed(region: &str, key: &dyn Debug, error: &dyn std::error::Error) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = limits::BACKEND.due() {
        tracing::warn!(
            region,
            key = ?key,
            %error,
            unreported,
            "dogpile backend failed; returning the error"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (region, key, error);
}

/// Reports a call answered with a failure of the key's creator made just before (it waited
/// for it, or came within the failure throttle) instead of calling the upstream again.
#[cold]
pub(super) fn shared_failure(region: &str, key: &dyn Debug) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = limits::SHARED.due() {
        tracing::info!(
            region,
            key = ?key,
            unreported,
            "dogpile creator failed just before; sharing its failure instead of calling again"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (region, key);
}

/// Reports a stale value served because its regeneration failed (stale-if-error).
#[cold]
pub(super) fn stale_on_error(region: &str, key: &dyn Debug) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = limits::STALE.due() {
        tracing::warn!(
            region,
            key = ?key,
            unreported,
            "dogpile creator failed; serving the stale value"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (region, key);
}

/// Reports a fenced write refused: the creator's hold on the key's mutex ran out while it ran.
#[cold]
pub(super) fn refused_write(region: &str, key: &dyn Debug) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = limits::REFUSED.due() {
        tracing::warn!(
            region,
            key = ?key,
            unreported,
            "dogpile write refused: the creator's lease on the key ran out while it ran"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (region, key);
}

/// Reports a purge of the values too stale to serve: how many went, how many are left.
#[cold]
pub(super) fn purged(region: &str, removed: usize, left: Option<usize>) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = limits::PURGE.due() {
        tracing::info!(
            region,
            removed,
            left,
            unreported,
            "dogpile purged values too stale to serve"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (region, removed, left);
}

#[cfg(feature = "tracing")]
mod limits {
    // Plain `std` atomics: loom builds have no `tracing`, and loom atomics cannot be statics.
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use crate::clock::claim_period;

    /// One kind of event, sent at most once a second.
    pub(super) struct Limit {
        /// When the next event may be sent, in milliseconds since the epoch.
        next: AtomicI64,
        unreported: AtomicU64,
    }

    pub(super) static DIRECT: Limit = Limit::new();
    pub(super) static BACKEND: Limit = Limit::new();
    pub(super) static SHARED: Limit = Limit::new();
    pub(super) static STALE: Limit = Limit::new();
    pub(super) static REFUSED: Limit = Limit::new();
    pub(super) static PURGE: Limit = Limit::new();

    impl Limit {
        const fn new() -> Self {
            Limit {
                next: AtomicI64::new(0),
                unreported: AtomicU64::new(0),
            }
        }

        /// `Some(events not reported since the last)` if an event is due now.
        pub(super) fn due(&self) -> Option<u64> {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            self.due_at(now)
        }

        /// [`due`](Self::due) at `now`, in milliseconds of the wall clock: one event a second,
        /// and one at once after the clock stepped back ([`claim_period`]).
        pub(super) fn due_at(&self, now: i64) -> Option<u64> {
            if !claim_period(&self.next, now, 1000) {
                self.unreported.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Some(self.unreported.swap(0, Ordering::Relaxed))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::Limit;

        #[test]
        fn one_event_a_second_and_one_at_once_after_the_clock_steps_back() {
            let limit = Limit::new();
            let now = 1_700_000_000_000;
            assert_eq!(limit.due_at(now), Some(0));
            assert_eq!(limit.due_at(now + 500), None);
            assert_eq!(limit.due_at(now + 999), None);
            assert_eq!(limit.due_at(now + 1000), Some(2), "two held back meanwhile");
            // An hour back: reported at once, then one a second from there.
            assert_eq!(limit.due_at(now - 3_600_000), Some(0));
            assert_eq!(limit.due_at(now - 3_600_000 + 10), None);
        }
    }
}
