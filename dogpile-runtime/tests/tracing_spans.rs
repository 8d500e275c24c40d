//! With the `tracing` feature, each regeneration is a `dogpile.regenerate` span carrying the
//! region, the key and the outcome.
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dogpile_runtime::Region;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Spans = Mutex<HashMap<u64, (String, HashMap<String, String>)>>;

/// The spans seen: name and fields, by id.
#[derive(Default, Clone)]
struct Recorder {
    next: Arc<AtomicU64>,
    spans: Arc<Spans>,
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
    fn event(&self, _: &Event<'_>) {}
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
    assert_eq!(
        seen,
        [
            ("prices".into(), "\"sku-1\"".into(), "stored".into()),
            ("prices".into(), "\"sku-2\"".into(), "error".into()),
        ]
    );
}
