//! Spans for regenerations, with the `tracing` feature; nothing without it.

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
                    outcome = tracing::field::Empty
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

    /// Records how the regeneration ended ("stored", "error", ...).
    #[inline]
    pub(super) fn finish(self, outcome: &'static str) {
        #[cfg(feature = "tracing")]
        self.span.record("outcome", outcome);
        #[cfg(not(feature = "tracing"))]
        let _ = outcome;
    }
}

/// Reports a call that bypassed the cache because its store or mutex failed: at most one such
/// event a second in the process (during an outage every call is one), each saying how many
/// went unreported since the last.
#[inline]
pub(super) fn direct_call(region: &str, key: &dyn Debug, error: &dyn std::error::Error) {
    #[cfg(feature = "tracing")]
    if let Some(unreported) = direct_calls::due() {
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

#[cfg(feature = "tracing")]
mod direct_calls {
    // Plain `std` atomics: loom builds have no `tracing`, and loom atomics cannot be statics.
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// When the next event may be sent, in milliseconds since the epoch.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static UNREPORTED: AtomicU64 = AtomicU64::new(0);

    /// `Some(calls not reported since the last event)` if an event is due now.
    pub(super) fn due() -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let next = NEXT.load(Ordering::Relaxed);
        if now < next
            || NEXT
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            UNREPORTED.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(UNREPORTED.swap(0, Ordering::Relaxed))
    }
}
