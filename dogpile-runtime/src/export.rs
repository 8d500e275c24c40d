//! The `metrics` feature: each region's counts reported through the `metrics` crate, to
//! whatever recorder the program installed (a Prometheus exporter, OpenTelemetry, ...).
//!
//! Handles are registered once, when a region (or a handle with statistics of its own) is
//! made, with the recorder installed then: a call only increments a handle, and a fresh hit not
//! even that: hits are counted in the thread's stripe, and published (the recorder's counter
//! set to their sum) every 64 hits of a thread, whenever anything else is counted, and when the
//! statistics are read. A call counts in one series: its handle's namespace, if it keeps
//! statistics of its own, else the region's.
//! What the store knows (entries, weight, evictions, the backend's failures) is published
//! when the region's statistics are read, and at most once a second as values are stored.

use std::time::Duration;

use metrics::{Counter as Count, Gauge, Histogram, Label};

use crate::region::Statistics;
use crate::stats::{Counter, COUNTERS};

/// The outcomes of `dogpile_cache_requests_total`, in `Served`'s terms.
const OUTCOMES: [&str; 5] = ["fresh", "stale", "waited", "created", "direct"];

/// The series one set of counters reports to.
pub(crate) struct Exported {
    /// By [`Counter`]; a no-op handle for what is not exported as a count.
    counts: [Count; COUNTERS],
    /// `outcome="created"`: counted as served, not by a [`Counter`].
    created: Count,
    /// A creator's run, by `result="success"` and `"failure"`.
    creator: [Histogram; 2],
    wait: Histogram,
}

fn labels(region: &str, namespace: Option<&str>) -> Vec<Label> {
    let mut labels = vec![Label::new("region", region.to_string())];
    if let Some(namespace) = namespace {
        labels.push(Label::new("namespace", namespace.to_string()));
    }
    labels
}

fn with(labels: &[Label], key: &'static str, value: &'static str) -> Vec<Label> {
    let mut labels = labels.to_vec();
    labels.push(Label::new(key, value));
    labels
}

impl Exported {
    /// The handles of a region's series (`namespace`: a handle's own).
    pub(crate) fn new(region: &str, namespace: Option<&str>) -> Self {
        let labels = labels(region, namespace);
        let requests = |outcome: &'static str| {
            metrics::counter!(
                "dogpile_cache_requests_total",
                with(&labels, "outcome", outcome)
            )
        };
        let failures = |reason: &'static str| {
            metrics::counter!(
                "dogpile_regeneration_failures_total",
                with(&labels, "reason", reason)
            )
        };
        let plain = |name: &'static str| metrics::counter!(name, labels.clone());
        let counts = std::array::from_fn(|index| match index {
            i if i == Counter::Hit as usize => requests(OUTCOMES[0]),
            i if i == Counter::StaleHit as usize => requests(OUTCOMES[1]),
            i if i == Counter::Wait as usize => requests(OUTCOMES[2]),
            i if i == Counter::DirectCall as usize => requests(OUTCOMES[4]),
            i if i == Counter::Miss as usize => plain("dogpile_cache_misses_total"),
            i if i == Counter::Regeneration as usize => plain("dogpile_regenerations_total"),
            i if i == Counter::Error as usize => failures("error"),
            i if i == Counter::Panic as usize => failures("panic"),
            i if i == Counter::LockTimeout as usize => plain("dogpile_lock_timeouts_total"),
            i if i == Counter::RefusedWrite as usize => plain("dogpile_refused_writes_total"),
            i if i == Counter::StaleIfError as usize => plain("dogpile_stale_on_error_total"),
            i if i == Counter::SharedFailure as usize => plain("dogpile_shared_failures_total"),
            _ => Count::noop(),
        });
        let creator = |result: &'static str| {
            metrics::histogram!(
                "dogpile_creator_duration_seconds",
                with(&labels, "result", result)
            )
        };
        Exported {
            counts,
            created: requests(OUTCOMES[3]),
            creator: [creator("success"), creator("failure")],
            wait: metrics::histogram!("dogpile_wait_duration_seconds", labels.clone()),
        }
    }

    /// Counts one `counter` (not a hit: those are published by [`hits`](Self::hits)).
    pub(crate) fn add(&self, counter: Counter) {
        self.counts[counter as usize].increment(1);
    }

    /// `outcome="created"`.
    pub(crate) fn created(&self) {
        self.created.increment(1);
    }

    /// Sets `outcome="fresh"` to the hits counted so far (the recorder keeps the highest).
    pub(crate) fn hits(&self, hits: u64) {
        self.counts[Counter::Hit as usize].absolute(hits);
    }

    pub(crate) fn creator(&self, took: Duration, failed: bool) {
        self.creator[usize::from(failed)].record(took.as_secs_f64());
    }

    pub(crate) fn waited(&self, took: Duration) {
        self.wait.record(took.as_secs_f64());
    }
}

/// What a region's store knows, published as gauges and counters set to its totals.
pub(crate) struct StoreExported {
    entries: Gauge,
    weight: Gauge,
    evictions: Count,
    eviction_weight: Count,
    backend_failures: Count,
    breaker_rejections: Count,
    breaker_opens: Count,
    invalidations_pending: Gauge,
    /// When the next publication on a write is due, in nanoseconds of the region's clock.
    next: std::sync::atomic::AtomicI64,
}

/// Describes every metric to the recorder (its `# HELP` line), once per process.
fn describe() {
    use metrics::Unit;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, unit, help) in [
            (
                "dogpile_cache_requests_total",
                Unit::Count,
                "Calls by how they were served",
            ),
            (
                "dogpile_cache_misses_total",
                Unit::Count,
                "Calls that found no value",
            ),
            (
                "dogpile_regenerations_total",
                Unit::Count,
                "Values made and stored",
            ),
            (
                "dogpile_regeneration_failures_total",
                Unit::Count,
                "Creations that failed",
            ),
            (
                "dogpile_lock_timeouts_total",
                Unit::Count,
                "Waits that ran out",
            ),
            (
                "dogpile_refused_writes_total",
                Unit::Count,
                "Fenced writes refused",
            ),
            (
                "dogpile_stale_on_error_total",
                Unit::Count,
                "Stale values served on error",
            ),
            (
                "dogpile_shared_failures_total",
                Unit::Count,
                "Failures shared, not rerun",
            ),
            (
                "dogpile_cache_evictions_total",
                Unit::Count,
                "Values evicted",
            ),
            (
                "dogpile_cache_evicted_weight_total",
                Unit::Count,
                "Weight evicted",
            ),
            (
                "dogpile_backend_failures_total",
                Unit::Count,
                "Backend calls unanswered",
            ),
            (
                "dogpile_breaker_rejections_total",
                Unit::Count,
                "Backend calls refused",
            ),
            (
                "dogpile_breaker_opens_total",
                Unit::Count,
                "Times the breaker opened",
            ),
        ] {
            metrics::describe_counter!(name, unit, help);
        }
        metrics::describe_histogram!(
            "dogpile_creator_duration_seconds",
            Unit::Seconds,
            "Time a creator (the upstream call) ran"
        );
        metrics::describe_histogram!(
            "dogpile_wait_duration_seconds",
            Unit::Seconds,
            "Time a call waited for another caller's creator"
        );
        metrics::describe_gauge!("dogpile_cache_entries", Unit::Count, "Values held");
        metrics::describe_gauge!("dogpile_cache_weight", Unit::Count, "Weight held");
        metrics::describe_gauge!(
            "dogpile_invalidations_pending",
            Unit::Count,
            "Invalidations queued for replay"
        );
    });
}

impl StoreExported {
    pub(crate) fn new(region: &str) -> Self {
        describe();
        let labels = labels(region, None);
        let count = |name: &'static str| metrics::counter!(name, labels.clone());
        let gauge = |name: &'static str| metrics::gauge!(name, labels.clone());
        StoreExported {
            entries: gauge("dogpile_cache_entries"),
            weight: gauge("dogpile_cache_weight"),
            evictions: count("dogpile_cache_evictions_total"),
            eviction_weight: count("dogpile_cache_evicted_weight_total"),
            backend_failures: count("dogpile_backend_failures_total"),
            breaker_rejections: count("dogpile_breaker_rejections_total"),
            breaker_opens: count("dogpile_breaker_opens_total"),
            invalidations_pending: gauge("dogpile_invalidations_pending"),
            next: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Whether a publication is due at `now` (at most one a second, or at once after the clock
    /// stepped back: [`claim_period`](crate::clock::claim_period)); claims it if so.
    pub(crate) fn due(&self, now: i64) -> bool {
        crate::clock::claim_period(&self.next, now, 1_000_000_000)
    }

    /// Publishes `stats` (and the store's weight, if it tells it).
    pub(crate) fn publish(&self, stats: &Statistics, weight: Option<u64>, backend: bool) {
        self.entries.set(stats.entries as f64);
        self.weight
            .set(weight.unwrap_or(stats.entries as u64) as f64);
        self.evictions.absolute(stats.evictions);
        self.eviction_weight.absolute(stats.eviction_weight);
        if backend {
            self.backend_failures.absolute(stats.backend_failures);
            self.breaker_rejections.absolute(stats.breaker_rejections);
            self.breaker_opens.absolute(stats.breaker_opens);
            self.invalidations_pending
                .set(stats.invalidations_pending as f64);
        }
    }
}
