//! The `metrics` feature through a recording `metrics` recorder: each call moves the counter of
//! its outcome, creators and waits are timed in histograms, the store's entries, weight and
//! evictions are published, and a handle with statistics of its own reports under its
//! namespace.
#![cfg(feature = "metrics")]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::{Clock, ManualClock};
use dogpile_runtime::Region;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A recorder that keeps every series, read without draining it.
#[derive(Clone)]
struct Kept(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Kept {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        (self.0).get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        (self.0).get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        (self.0).get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

impl Kept {
    fn new() -> Self {
        Kept(Arc::new(Registry::atomic()))
    }

    /// The value of the series `name` whose labels include every one of `labels`, summed over
    /// the series that match (0 if none): a counter's count, a gauge's value, a histogram's
    /// number of samples.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matches = |key: &Key| {
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        };
        let counters = self.0.get_counter_handles().into_iter();
        let counters = counters
            .filter(|(k, _)| matches(k))
            .map(|(_, c)| c.load(Relaxed) as f64);
        let gauges = self.0.get_gauge_handles().into_iter();
        let gauges = gauges
            .filter(|(k, _)| matches(k))
            .map(|(_, g)| f64::from_bits(g.load(Relaxed)));
        let histograms = self.0.get_histogram_handles().into_iter();
        let histograms = histograms
            .filter(|(k, _)| matches(k))
            .map(|(_, h)| h.data().len() as f64);
        counters.chain(gauges).chain(histograms).sum()
    }
}

/// A region built with `recorder` as the recorder: its handles report there whatever thread
/// calls it later.
fn region_on(recorder: &Kept, clock: Arc<ManualClock>) -> Region<u32, String> {
    metrics::with_local_recorder(recorder, || {
        Region::builder()
            .name("prices")
            .expiry(Duration::from_secs(60))
            .max_weight(100)
            .weigher(|_, value: &String| value.len() as u32)
            .clock(clock)
            .build()
            .unwrap()
    })
}

#[test]
fn each_call_moves_the_counter_of_its_outcome() {
    let recorder = Kept::new();
    let snap = recorder.clone();
    let clock = Arc::new(ManualClock::starting_now());
    let region = region_on(&recorder, clock.clone());
    let requests = |outcome| {
        snap.value(
            "dogpile_cache_requests_total",
            &[("region", "prices"), ("outcome", outcome)],
        )
    };

    region.get_with(&1, || "one".to_string());
    region.get_with(&1, || unreachable!());
    region.get_with(&1, || unreachable!());
    // Hits are published by batches of a thread's 64, or when anything else is counted, or
    // when the statistics are read.
    assert_eq!(requests("created"), 1.0);
    assert_eq!(region.statistics().hits, 2);
    assert_eq!(requests("fresh"), 2.0);
    for _ in 0..62 {
        region.get_with(&1, || unreachable!());
    }
    assert_eq!(requests("fresh"), 64.0);
    assert_eq!(snap.value("dogpile_cache_misses_total", &[]), 1.0);
    assert_eq!(snap.value("dogpile_regenerations_total", &[]), 1.0);

    // Expired: a call regenerates while another is served the stale value.
    clock.advance(Duration::from_secs(61));
    let holding = Arc::new(Barrier::new(2));
    let creator = {
        let (region, holding) = (region.clone(), Arc::clone(&holding));
        thread::spawn(move || {
            region.get_with(&1, || {
                holding.wait();
                holding.wait();
                "uno".to_string()
            })
        })
    };
    holding.wait();
    assert_eq!(region.get_with(&1, || unreachable!()), "one");
    holding.wait();
    assert_eq!(creator.join().unwrap(), "uno");
    assert_eq!((requests("stale"), requests("created")), (1.0, 2.0));
    assert_eq!(requests("fresh"), 64.0);

    // A failed creator: a failure and a failed run in the histogram.
    assert!(region
        .try_get_with(&2, || Err::<String, _>("down"))
        .is_err());
    assert_eq!(
        snap.value(
            "dogpile_regeneration_failures_total",
            &[("reason", "error")]
        ),
        1.0
    );
    let runs = |result| {
        snap.value(
            "dogpile_creator_duration_seconds",
            &[("region", "prices"), ("result", result)],
        )
    };
    assert_eq!((runs("success"), runs("failure")), (2.0, 1.0));

    // The store's entries, weight and evictions, published when statistics are read.
    for key in 10..20 {
        region.get_with(&key, || "x".repeat(20));
    }
    let stats = region.statistics();
    assert_eq!(
        snap.value("dogpile_cache_entries", &[]),
        stats.entries as f64
    );
    assert!(stats.evictions > 0);
    assert_eq!(
        snap.value("dogpile_cache_evictions_total", &[]),
        stats.evictions as f64
    );
    assert_eq!(
        snap.value("dogpile_cache_evicted_weight_total", &[]),
        stats.eviction_weight as f64
    );
    let weight = snap.value("dogpile_cache_weight", &[("region", "prices")]);
    assert!(weight > 0.0 && weight <= 100.0, "{weight}");
}

#[test]
fn a_wait_for_another_caller_s_creator_is_timed() {
    let recorder = Kept::new();
    let snap = recorder.clone();
    let region = region_on(&recorder, Arc::new(ManualClock::starting_now()));
    let started = Arc::new(Barrier::new(2));
    let creator = {
        let (region, started) = (region.clone(), Arc::clone(&started));
        thread::spawn(move || {
            region.get_with(&1, || {
                started.wait();
                thread::sleep(Duration::from_millis(50));
                "one".to_string()
            })
        })
    };
    started.wait();
    assert_eq!(region.get_with(&1, || unreachable!()), "one");
    creator.join().unwrap();
    let waited = &[("region", "prices"), ("outcome", "waited")];
    assert_eq!(snap.value("dogpile_cache_requests_total", waited), 1.0);
    assert_eq!(snap.value("dogpile_wait_duration_seconds", &[]), 1.0);
}

#[test]
fn a_handle_with_its_own_statistics_reports_under_its_namespace() {
    let recorder = Kept::new();
    let snap = recorder.clone();
    let region = region_on(&recorder, Arc::new(ManualClock::starting_now()));
    let quotes = metrics::with_local_recorder(&recorder, || region.with_own_statistics("quotes"));
    quotes.get_with(&1, || "q".to_string());
    quotes.get_with(&1, || unreachable!());
    region.get_with(&1, || unreachable!());
    // Reading the region's statistics publishes its handles' hits too.
    let _ = region.statistics();
    let fresh = |labels: &[(&str, &str)]| {
        let mut labels = labels.to_vec();
        labels.push(("outcome", "fresh"));
        snap.value("dogpile_cache_requests_total", &labels)
    };
    assert_eq!(fresh(&[("namespace", "quotes")]), 1.0);
    // Each call counts once: in its handle's namespace, or the region's series.
    assert_eq!(fresh(&[("region", "prices")]), 2.0);
    let created = &[("namespace", "quotes"), ("outcome", "created")];
    assert_eq!(snap.value("dogpile_cache_requests_total", created), 1.0);
}

#[test]
fn the_store_gauges_are_published_again_at_once_after_the_clock_steps_back() {
    let recorder = Kept::new();
    let snap = recorder.clone();
    let clock = Arc::new(ManualClock::starting_now());
    let region = region_on(&recorder, clock.clone());
    let entries = || snap.value("dogpile_cache_entries", &[]);
    region.get_with(&1, || "a".to_string());
    assert_eq!(entries(), 1.0);
    region.get_with(&2, || "b".to_string());
    assert_eq!(entries(), 1.0, "at most one publication a second");
    // An hour back: the next publication is not an hour away.
    clock.set(clock.now() - Duration::from_secs(3600));
    region.get_with(&3, || "c".to_string());
    assert_eq!(entries(), 3.0);
}
