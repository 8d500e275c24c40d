//! With the `tracing` feature, each regeneration is a `dogpile.regenerate` span carrying the
//! region, the key, the outcome and the time it took; rate-limited events explain what went
//! wrong.
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use dogpile_runtime::clock::ManualClock;
use dogpile_runtime::Region;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Spans = Mutex<HashMap<u64, (String, HashMap<String, String>)>>;
/// Each event's level and fields.
type Events = Mutex<Vec<(String, HashMap<String, String>)>>;

/// The spans seen: name and fields, by id; and the events: level and fields.
#[derive(Default, Clone)]
struct Recorder {
    next: Arc<AtomicU64>,
    spans: Arc<Spans>,
    events: Arc<Events>,
}

impl Recorder {
    /// The events whose message contains `text`: their fields.
    fn events(&self, text: &str) -> Vec<HashMap<String, String>> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(_, f)| f.get("message").is_some_and(|m| m.contains(text)))
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = HashMap::new();
        span.record(&mut Fields(&mut fields));
        let name = span.metadata().name().to_string();
        self.spans.lock().unwrap().insert(id, (name, fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let level = event.metadata().level().to_string();
        self.events.lock().unwrap().push((level, fields));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_regeneration_is_a_span_with_region_key_and_outcome() {
    let recorder = Recorder::default();
    let region: Region<String, u32> = Region::builder().name("prices").build().unwrap();
    tracing::subscriber::with_default(recorder.clone(), || {
        assert_eq!(region.get_with(&"sku-1".to_string(), || 5), 5);
        assert_eq!(region.get_with(&"sku-1".to_string(), || 6), 5); // a hit: no span
        let failed = region.try_get_with(&"sku-2".to_string(), || Err::<u32, _>("down"));
        assert!(failed.is_err());
    });
    let spans = recorder.spans.lock().unwrap();
    let mut seen: Vec<_> = spans
        .values()
        .filter(|(name, _)| name == "dogpile.regenerate")
        .map(|(_, f)| {
            (
                f.get("region").cloned().unwrap_or_default(),
                f.get("key").cloned().unwrap_or_default(),
                f.get("outcome").cloned().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    // Each span says how long its creator took.
    assert!(spans
        .values()
        .filter(|(name, _)| name == "dogpile.regenerate")
        .all(|(_, f)| f.get("took").is_some_and(|t| t.ends_with('s'))));
    assert_eq!(
        seen,
        [
            ("prices".into(), "\"sku-1\"".into(), "stored".into()),
            ("prices".into(), "\"sku-2\"".into(), "error".into()),
        ]
    );
}

/// A stale value served on error, a failure shared within the throttle, and a purge are each
/// an event, at most one a second of each kind, the next saying how many went unreported.
#[test]
fn events_explain_a_bad_minute() {
    let recorder = Recorder::default();
    // Global: the purge runs on a thread of its own.
    tracing::subscriber::set_global_default(recorder.clone()).unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let region: Region<u32, u32> = Region::builder()
        .name("rates")
        .expiry(Duration::from_secs(1))
        .stale_if_error(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(3600))
        .fail_safe_throttle(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(region.get_with(&1, || 10), 10);
    clock.advance(Duration::from_secs(2));
    let began = Instant::now();
    // The upstream fails: the stale value, and an event saying so.
    assert_eq!(
        region.try_get_with(&1, || Err::<u32, _>("down")).unwrap(),
        10
    );
    // Within the throttle: the failure is shared, the upstream not called, and the stale value
    // served again: 50 more of each, reported at most once a second.
    for _ in 0..50 {
        let shared = region.try_get_with(&1, || -> Result<u32, &str> { unreachable!() });
        assert_eq!(shared.unwrap(), 10);
    }
    let most = began.elapsed().as_secs() as usize + 1;
    let stale = recorder.events("serving the stale value");
    assert!((1..=most).contains(&stale.len()), "{} events", stale.len());
    assert_eq!(stale[0]["region"], "rates");
    assert_eq!(stale[0]["key"], "1");
    assert_eq!(stale[0]["unreported"], "0");
    let shared = recorder.events("sharing its failure");
    assert!(
        (1..=most).contains(&shared.len()),
        "{} events",
        shared.len()
    );
    assert_eq!(region.statistics().shared_failures, 50);

    // A purge of the values too stale to serve, once enough values were stored.
    for key in 100..1100 {
        region.get_with(&key, || key);
    }
    clock.advance(Duration::from_secs(7200));
    for key in 2000..2100 {
        region.get_with(&key, || key);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.events("purged").is_empty() {
        assert!(Instant::now() < deadline, "no purge event");
        std::thread::sleep(Duration::from_millis(5));
    }
    let purged = &recorder.events("purged")[0];
    assert_eq!(purged["region"], "rates");
    assert!(purged["removed"].parse::<u64>().unwrap() >= 1000);
}
