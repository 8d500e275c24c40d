//! The `metrics` feature through a recording `metrics` recorder: each call moves the counter of
//! its outcome, creators and waits are timed in histograms, the store's entries, weight and
//! evictions are published, and a handle with statistics of its own reports under its
//! namespace.
#![cfg(feature = "metrics")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::ManualClock;
use dogpile_runtime::Region;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// What a recorder recorded, in all: the debugging recorder's snapshots hand over what
/// changed since the last one (counters and histograms drained, gauges reset), so they are
/// added up here.
struct Recorded {
    snapshotter: Snapshotter,
    /// By series (name and labels): a counter's count, a histogram's number of samples, a
    /// gauge's last value set.
    series: RefCell<HashMap<(String, Vec<(String, String)>), f64>>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Recorded {
            snapshotter: recorder.snapshotter(),
            series: RefCell::default(),
        }
    }

    /// The value of the series `name` whose labels include every one of `labels`, summed over
    /// the series that match (0 if none).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut series = self.series.borrow_mut();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let id = (
                key.name().to_string(),
                key.labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
            );
            let total = series.entry(id).or_default();
            match value {
                DebugValue::Counter(n) => *total += n as f64,
                DebugValue::Histogram(samples) => *total += samples.len() as f64,
                DebugValue::Gauge(g) if g.into_inner() != 0.0 => *total = g.into_inner(),
                DebugValue::Gauge(_) => {}
            }
        }
        series
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// A region built with `recorder` as the recorder: its handles report there whatever thread
/// calls it later.
fn region_on(recorder: &DebuggingRecorder, clock: Arc<ManualClock>) -> Region<u32, String> {
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
    let recorder = DebuggingRecorder::new();
    let snap = Recorded::new(&recorder);
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
    assert_eq!((requests("created"), requests("fresh")), (1.0, 2.0));
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
    let recorder = DebuggingRecorder::new();
    let snap = Recorded::new(&recorder);
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
    let recorder = DebuggingRecorder::new();
    let snap = Recorded::new(&recorder);
    let region = region_on(&recorder, Arc::new(ManualClock::starting_now()));
    let quotes = metrics::with_local_recorder(&recorder, || region.with_own_statistics("quotes"));
    quotes.get_with(&1, || "q".to_string());
    quotes.get_with(&1, || unreachable!());
    region.get_with(&1, || unreachable!());
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
