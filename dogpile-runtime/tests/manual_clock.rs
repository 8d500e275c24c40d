//! `ManualClock` never wraps: advancing past the last representable instant stops there, so a
//! test that jumps the clock far ahead never finds it before the epoch.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};

const START: Timestamp = Timestamp::from_nanos(1_000_000_000_000);

#[test]
fn advancing_by_the_largest_duration_saturates() {
    let clock = ManualClock::new(START);
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), Timestamp::from_nanos(i64::MAX));
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        clock.now(),
        Timestamp::from_nanos(i64::MAX),
        "it stays at the end"
    );
    assert!(clock.now() > START, "time never went backwards");
}

#[test]
fn advancing_just_past_the_end_saturates() {
    let clock = ManualClock::new(Timestamp::from_nanos(i64::MAX - 10));
    clock.advance(Duration::from_nanos(11));
    assert_eq!(clock.now(), Timestamp::from_nanos(i64::MAX));
    // A value created at the start is then simply very old, never from the future.
    assert!(START.is_expired_at(clock.now(), Some(Duration::from_secs(1))));
}

#[test]
fn set_then_advance_never_wraps() {
    let clock = ManualClock::new(START);
    clock.set(Timestamp::from_nanos(i64::MAX));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(clock.now(), Timestamp::from_nanos(i64::MAX));
    // Stepping back still works after saturating.
    clock.set(START);
    clock.advance(Duration::from_secs(2));
    assert_eq!(clock.now(), START + Duration::from_secs(2));
}

#[test]
fn concurrent_advances_saturate_without_wrapping() {
    let clock = Arc::new(ManualClock::new(START));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let clock = clock.clone();
            thread::spawn(move || {
                for _ in 0..1000 {
                    clock.advance(Duration::from_secs(u64::MAX / 4));
                    assert!(clock.now() >= START, "the clock wrapped");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(clock.now(), Timestamp::from_nanos(i64::MAX));
}
