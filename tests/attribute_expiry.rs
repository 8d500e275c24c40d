//! `#[dogpile]` and time: durations read with their units, and the expiry options.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use dogpile::dogpile;

static MILLIS: AtomicUsize = AtomicUsize::new(0);
static MINUTES: AtomicUsize = AtomicUsize::new(0);
static HOURS: AtomicUsize = AtomicUsize::new(0);
static FRACTION: AtomicUsize = AtomicUsize::new(0);
static QUOTED_FRACTION: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 100ms)]
fn millis() -> usize {
    MILLIS.fetch_add(1, Ordering::SeqCst) + 1
}

#[dogpile(expire = 5m)]
fn minutes() -> usize {
    MINUTES.fetch_add(1, Ordering::SeqCst) + 1
}

#[dogpile(expire = 1h30m)]
fn hours() -> usize {
    HOURS.fetch_add(1, Ordering::SeqCst) + 1
}

#[dogpile(expire = 0.1)]
fn a_tenth_of_a_second() -> usize {
    FRACTION.fetch_add(1, Ordering::SeqCst) + 1
}

#[dogpile(expire = "0.1s")]
fn a_quoted_tenth_of_a_second() -> usize {
    QUOTED_FRACTION.fetch_add(1, Ordering::SeqCst) + 1
}

/// `expire = 100ms` is a tenth of a second (it once meant 100 s), `5m` five minutes and
/// `1h30m` ninety minutes; a fraction without a unit is seconds.
#[test]
fn literal_durations_mean_what_they_say() {
    for f in [
        millis,
        minutes,
        hours,
        a_tenth_of_a_second,
        a_quoted_tenth_of_a_second,
    ] {
        assert_eq!(f(), 1);
    }
    thread::sleep(Duration::from_millis(150));
    // Expired: this caller regenerates (the value was there, so it does not wait for another).
    assert_eq!(millis(), 2);
    assert_eq!(a_tenth_of_a_second(), 2);
    assert_eq!(a_quoted_tenth_of_a_second(), 2);
    // Fresh for minutes and hours.
    assert_eq!(minutes(), 1);
    assert_eq!(hours(), 1);
}

#[dogpile(expire = 60, key = name)]
fn greeting(name: String, excited: bool) -> String {
    // The key named `name`, and the body still owns it.
    let mut text = format!("hello {name}");
    if excited {
        text.push('!');
    }
    text
}

#[derive(Clone)]
struct Request {
    path: String,
    verbose: bool,
}

#[dogpile(expire = 60, key = request.path)]
fn route(request: Request) -> String {
    format!("{} ({})", request.path, request.verbose)
}

/// A key naming an owned argument, or a field of one, borrows it: the body gets it whole.
#[test]
fn a_key_does_not_consume_the_arguments_it_names() {
    assert_eq!(greeting("ann".to_string(), true), "hello ann!");
    assert_eq!(greeting("ann".to_string(), false), "hello ann!");
    assert_eq!(
        greeting_peek("ann".to_string(), false).as_deref(),
        Some("hello ann!")
    );
    let request = Request {
        path: "/a".to_string(),
        verbose: true,
    };
    assert_eq!(route(request.clone()), "/a (true)");
    assert_eq!(
        route(Request {
            verbose: false,
            ..request
        }),
        "/a (true)"
    );
}
