//! A `tracing` subscriber for a test binary: every event's level, message and `address` field.
#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub level: String,
    pub message: String,
    pub address: Option<String>,
}

struct Keep(Arc<Mutex<Vec<Seen>>>);

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "address" => self.address = Some(format!("{value:?}").trim_matches('"').into()),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "address" {
            self.address = Some(value.to_string());
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl Subscriber for Keep {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            level: event.metadata().level().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        self.0.lock().unwrap().push(seen);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Every event of this test binary from now on, from any thread.
pub fn collect() -> Arc<Mutex<Vec<Seen>>> {
    static EVENTS: OnceLock<Arc<Mutex<Vec<Seen>>>> = OnceLock::new();
    EVENTS
        .get_or_init(|| {
            let events = Arc::new(Mutex::new(Vec::new()));
            tracing::subscriber::set_global_default(Keep(Arc::clone(&events)))
                .expect("no other subscriber in this test binary");
            events
        })
        .clone()
}
