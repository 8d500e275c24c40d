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

static FLAKY: AtomicUsize = AtomicUsize::new(0);

/// Succeeds the first time, then fails.
#[dogpile(expire = 50ms, stale_if_error = "5s")]
fn flaky() -> Result<usize, String> {
    match FLAKY.fetch_add(1, Ordering::SeqCst) {
        0 => Ok(1),
        _ => Err("upstream down".to_string()),
    }
}

#[test]
fn stale_if_error_serves_the_stale_value_when_the_body_fails() {
    assert_eq!(flaky(), Ok(1));
    thread::sleep(Duration::from_millis(70));
    assert_eq!(flaky(), Ok(1), "the stale value, within the window");
    assert_eq!(flaky_statistics().stale_on_error, 1);
    assert_eq!(flaky_uncached(), Err("upstream down".to_string()));
}

#[dogpile(expire = 50ms, max_stale = 0)]
fn strict(n: u8) -> u8 {
    n
}

#[test]
fn max_stale_bounds_what_is_served() {
    assert_eq!(strict(3), 3);
    assert_eq!(strict_peek(3), Some(3));
    thread::sleep(Duration::from_millis(70));
    assert_eq!(
        strict_peek(3),
        None,
        "expired, and no stale value is served"
    );
}

static HOT: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 300ms, refresh_ahead = "50%")]
fn hot() -> usize {
    HOT.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn refresh_ahead_refreshes_a_hot_value_before_it_expires() {
    use dogpile::region::Served;
    assert_eq!(hot(), 1);
    thread::sleep(Duration::from_millis(180)); // past half of its 300 ms
    assert_eq!(
        hot_served(),
        (1, Served::Fresh),
        "served at once, refresh started"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hot_peek() != Some(2) {
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(hot(), 2);
    assert_eq!(hot_statistics().regenerations, 2);
}

#[dogpile(expire = 60)]
fn described(n: u8) -> u8 {
    n * 2
}

#[test]
fn the_served_companion_says_how_each_call_was_served() {
    use dogpile::region::Served;
    assert_eq!(described_served(4), (8, Served::Created));
    assert_eq!(described_served(4), (8, Served::Fresh));
    assert_eq!(described(4), 8);
}

#[cfg(feature = "tokio")]
#[dogpile(expire = 60)]
async fn described_async(n: u8) -> u8 {
    n * 3
}

#[cfg(feature = "tokio")]
#[test]
fn the_served_companion_of_an_async_fn_awaits() {
    use dogpile::region::Served;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            assert_eq!(described_async_served(4).await, (12, Served::Created));
            assert_eq!(described_async_served(4).await, (12, Served::Fresh));
        });
}

/// A token with its own lifetime, as an OAuth server returns it.
#[derive(Clone, Debug, PartialEq)]
struct Token {
    value: u32,
    expires_in_ms: u64,
}

fn token_lifetime(token: &Token) -> Duration {
    Duration::from_millis(token.expires_in_ms)
}

static TOKENS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 1h, expire_with = token_lifetime)]
fn token(scope: &str) -> Token {
    let n = TOKENS.fetch_add(1, Ordering::SeqCst);
    Token {
        value: u32::try_from(n).unwrap(),
        // The read scope's token lives 50 ms, the others an hour.
        expires_in_ms: if scope == "read" { 50 } else { 3_600_000 },
    }
}

#[test]
fn expire_with_lets_each_value_say_how_long_it_lives() {
    let read = token("read").value;
    let write = token("write").value;
    assert_eq!(token("read").value, read);
    thread::sleep(Duration::from_millis(80));
    assert_ne!(token("read").value, read, "its own 50 ms are over");
    assert_eq!(token("write").value, write, "the hour is not");
}

#[dogpile(expire = 60, jitter = "10%")]
fn jittered(n: u32) -> u32 {
    n
}

#[test]
fn jitter_is_accepted_as_a_share() {
    assert_eq!(jittered(1), 1);
    assert_eq!(jittered_statistics().misses, 1);
}
