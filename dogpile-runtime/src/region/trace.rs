//! Spans for regenerations, with the `tracing` feature; nothing without it.

use std::fmt::Debug;

#[cfg(feature = "tracing")]
pub(super) struct Regeneration(tracing::span::EnteredSpan);

#[cfg(not(feature = "tracing"))]
pub(super) struct Regeneration;

impl Regeneration {
    /// Enters a `dogpile.regenerate` span naming the region and the key.
    #[inline]
    pub(super) fn start(region: &str, key: &dyn Debug) -> Self {
        #[cfg(feature = "tracing")]
        {
            Regeneration(
                tracing::info_span!(
                    "dogpile.regenerate",
                    region,
                    key = ?key,
                    outcome = tracing::field::Empty
                )
                .entered(),
            )
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (region, key);
            Regeneration
        }
    }

    /// Records how the regeneration ended ("stored", "error", ...) and leaves the span.
    #[inline]
    pub(super) fn finish(self, outcome: &'static str) {
        #[cfg(feature = "tracing")]
        self.0.record("outcome", outcome);
        #[cfg(not(feature = "tracing"))]
        let _ = outcome;
    }
}

/// Reports a call that bypassed the cache because its store or mutex failed.
#[inline]
pub(super) fn direct_call(region: &str, key: &dyn Debug, error: &dyn std::error::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(region, key = ?key, %error, "dogpile backend failed; calling the creator directly");
    #[cfg(not(feature = "tracing"))]
    let _ = (region, key, error);
}

/// A `dogpile.regenerate` span for an async creator: not entered (an entered span cannot cross
/// an `.await`), but attached to the creator's future.
#[cfg(feature = "tokio")]
pub(super) struct AsyncRegeneration {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

#[cfg(feature = "tokio")]
impl AsyncRegeneration {
    #[inline]
    pub(super) fn start(region: &str, key: &dyn Debug) -> Self {
        #[cfg(feature = "tracing")]
        {
            AsyncRegeneration {
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
            AsyncRegeneration {}
        }
    }

    /// `future`, run inside the span.
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

    #[inline]
    pub(super) fn finish(self, outcome: &'static str) {
        #[cfg(feature = "tracing")]
        self.span.record("outcome", outcome);
        #[cfg(not(feature = "tracing"))]
        let _ = outcome;
    }
}
