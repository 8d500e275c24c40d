//! `#[dogpile]` through the macro alone: bursts, stale serving, independent keys, borrowed and
//! field keys, `Result`/`Option` rules, panics, methods, companion items, visibility.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::dogpile;

/// Runs `f` on `threads` threads released together; returns each result with its latency.
fn burst<T: Send + 'static>(
    threads: usize,
    f: impl Fn() -> T + Send + Sync + 'static,
) -> Vec<(T, Duration)> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (f, barrier) = (f.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let value = f();
                (value, start.elapsed())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

static COLD_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
fn cold(day: u32) -> Arc<String> {
    COLD_CALLS.fetch_add(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(20));
    Arc::new(format!("report for day {day}"))
}

#[test]
fn cold_burst_runs_the_body_once() {
    let results = burst(32, || cold(7));
    assert!(results.iter().all(|(v, _)| **v == "report for day 7"));
    assert_eq!(COLD_CALLS.load(Ordering::SeqCst), 1);
    let stats = cold_statistics();
    assert_eq!(stats.misses, 32);
    assert_eq!(stats.regenerations, 1);
}

static STALE_CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static RAN_BODY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[dogpile(expire = "100ms")]
fn slow_to_make() -> u64 {
    RAN_BODY.with(|ran| ran.set(true));
    let n = STALE_CALLS.fetch_add(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(100));
    n as u64
}

#[test]
fn expired_values_are_served_stale_while_one_caller_regenerates() {
    assert_eq!(slow_to_make(), 0);
    let start = Instant::now();
    let results = burst(32, move || {
        let mut slowest_other = Duration::ZERO;
        while start.elapsed() < Duration::from_millis(300) {
            RAN_BODY.with(|ran| ran.set(false));
            let t = Instant::now();
            let _ = slow_to_make();
            let took = t.elapsed();
            if !RAN_BODY.with(|ran| ran.get()) {
                slowest_other = slowest_other.max(took);
            }
            thread::sleep(Duration::from_millis(1));
        }
        slowest_other
    });
    let slowest = results.iter().map(|(s, _)| *s).max().unwrap();
    let body_runs = STALE_CALLS.load(Ordering::SeqCst) - 1;
    assert!(
        slowest < Duration::from_millis(5),
        "a caller waited {slowest:?}"
    );
    // The value expires every 100 ms + one 100 ms regeneration: at most 3 in 300 ms.
    assert!(
        (1..=3).contains(&body_runs),
        "{body_runs} regenerations in 300 ms"
    );
    let stats = slow_to_make_statistics();
    assert_eq!(stats.regenerations as usize, body_runs + 1);
    assert!(stats.stale_hits > 0, "{stats:?}");
}

#[dogpile(expire = 3600)]
fn sleepy(key: char) -> char {
    if key == 'a' {
        thread::sleep(Duration::from_millis(500));
    }
    key
}

#[test]
fn distinct_keys_do_not_wait_on_each_other() {
    let a = thread::spawn(|| sleepy('a'));
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    assert_eq!(sleepy('b'), 'b');
    assert!(start.elapsed() < Duration::from_millis(250));
    assert_eq!(a.join().unwrap(), 'a');
}

static GREET_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
fn greet(name: &str, punctuation: &char) -> String {
    GREET_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("hello {name}{punctuation}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct UserId(u64);

struct User {
    id: UserId,
    name: &'static str,
}

static PROFILE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600, key = user.id)]
fn profile(user: &User, verbose: bool) -> String {
    PROFILE_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{} ({verbose})", user.name)
}

#[test]
fn borrowed_arguments_and_field_keys() {
    assert_eq!(greet("ann", &'!'), "hello ann!");
    assert_eq!(greet(&String::from("ann"), &'!'), "hello ann!");
    assert_eq!(greet("ann", &'?'), "hello ann?");
    assert_eq!(GREET_CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(greet_peek("ann", &'!').as_deref(), Some("hello ann!"));

    let ann = User {
        id: UserId(1),
        name: "ann",
    };
    let ann_again = User {
        id: UserId(1),
        name: "renamed",
    };
    assert_eq!(profile(&ann, true), "ann (true)");
    // Same key: the other arguments do not count.
    assert_eq!(profile(&ann_again, false), "ann (true)");
    assert_eq!(PROFILE_CALLS.load(Ordering::SeqCst), 1);
}

static TRIMMED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A key expression that returns a reference: the key is its owned form (`String`).
#[dogpile(expire = 3600, key = name.trim())]
fn trimmed(name: &str) -> usize {
    TRIMMED_CALLS.fetch_add(1, Ordering::SeqCst);
    name.trim().len()
}

#[test]
fn a_key_expression_that_borrows_is_made_owned() {
    assert_eq!(trimmed(" ann "), 3);
    assert_eq!(trimmed("ann"), 3);
    assert_eq!(TRIMMED_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(trimmed_peek("  ann"), Some(3));
}

static FETCH_CALLS: AtomicUsize = AtomicUsize::new(0);

// No throttle: the test retries at once after each failure.
#[dogpile(expire = 3600, fail_safe_throttle = 0)]
fn fetch(sku: &str) -> Result<u32, String> {
    let n = FETCH_CALLS.fetch_add(1, Ordering::SeqCst);
    if n < 2 {
        Err(format!("attempt {n} failed for {sku}"))
    } else {
        Ok(100)
    }
}

static FIND_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
fn find(id: u8) -> Option<&'static str> {
    FIND_CALLS.fetch_add(1, Ordering::SeqCst);
    (id == 1).then_some("one")
}

#[dogpile(expire = 3600, cache = all)]
fn find_all(id: u8) -> Option<u8> {
    FIND_CALLS.fetch_add(1, Ordering::SeqCst);
    (id == 1).then_some(1)
}

type Fetched<T> = Result<T, std::io::Error>;

static ALIAS_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600, cache = ok)]
fn aliased(fail: bool) -> Fetched<u8> {
    ALIAS_CALLS.fetch_add(1, Ordering::SeqCst);
    if fail {
        Err(std::io::Error::other("no"))
    } else {
        Ok(1)
    }
}

#[test]
fn only_ok_and_some_are_cached() {
    assert_eq!(fetch("a").unwrap_err(), "attempt 0 failed for a");
    assert_eq!(fetch("a").unwrap_err(), "attempt 1 failed for a");
    assert_eq!(fetch("a"), Ok(100));
    assert_eq!(fetch("a"), Ok(100));
    assert_eq!(FETCH_CALLS.load(Ordering::SeqCst), 3);
    assert_eq!(fetch_statistics().errors, 2);

    assert_eq!(find(2), None);
    assert_eq!(find(2), None);
    assert_eq!(find(1), Some("one"));
    assert_eq!(find(1), Some("one"));
    assert_eq!(FIND_CALLS.load(Ordering::SeqCst), 3);
    // `cache = all` stores `None` too.
    assert_eq!(find_all(2), None);
    assert_eq!(find_all(2), None);
    assert_eq!(FIND_CALLS.load(Ordering::SeqCst), 4);

    assert!(aliased(true).is_err());
    assert!(aliased(true).is_err());
    assert_eq!(aliased(false).unwrap(), 1);
    assert_eq!(aliased(false).unwrap(), 1);
    assert_eq!(ALIAS_CALLS.load(Ordering::SeqCst), 3);
}

static SHARED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A failing upstream whose error can be cloned: one failure shared by every caller.
#[dogpile(expire = 3600, fail_safe_throttle = "200ms")]
fn quote_price(sku: &str) -> Result<u32, String> {
    SHARED_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(50));
    Err(format!("no price for {sku}"))
}

static OWN_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The same with an error that cannot be cloned: each caller gets its own.
#[dogpile(expire = 3600, fail_safe_throttle = "200ms")]
fn quote_stock(sku: &str) -> Result<u32, std::io::Error> {
    OWN_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(20));
    Err(std::io::Error::other(format!("no stock for {sku}")))
}

#[test]
fn a_cloneable_error_is_shared_by_the_callers_that_waited_for_it() {
    let callers: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| quote_price("x")))
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap().unwrap_err(), "no price for x");
    }
    assert_eq!(SHARED_CALLS.load(Ordering::SeqCst), 1);
    // Within the throttle, too, without a call; past it, a call again.
    assert!(quote_price("x").is_err());
    assert_eq!(SHARED_CALLS.load(Ordering::SeqCst), 1);
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert!(quote_price("x").is_err());
    assert_eq!(SHARED_CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(quote_price_statistics().shared_failures, 8);

    // An error that is not `Clone` stays its caller's: the waiters call one at a time.
    let callers: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| quote_stock("y")))
        .collect();
    for caller in callers {
        assert_eq!(
            caller.join().unwrap().unwrap_err().to_string(),
            "no stock for y"
        );
    }
    assert_eq!(OWN_CALLS.load(Ordering::SeqCst), 4);
}

static PANIC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
fn flaky() -> u8 {
    if PANIC_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("first call fails");
    }
    5
}

#[test]
fn a_panicking_body_poisons_nothing() {
    let first = panic::catch_unwind(AssertUnwindSafe(flaky));
    assert!(first.is_err());
    assert_eq!(flaky(), 5);
    assert_eq!(flaky(), 5);
    assert_eq!(PANIC_CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(flaky_statistics().panics, 1);
}

#[dogpile(expire = 3600)]
fn recursive(n: u8) -> u8 {
    if n == 0 {
        recursive(0)
    } else {
        n
    }
}

#[test]
fn same_key_recursion_fails_with_the_key_named() {
    let err = panic::catch_unwind(|| recursive(0)).unwrap_err();
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("key 0"), "{message}");
    assert!(message.contains("::recursive"), "{message}");
}

struct Service {
    tenant: u32,
    calls: AtomicUsize,
}

impl Service {
    #[dogpile(expire = 3600, key = (self.tenant, item))]
    fn price(&self, item: &str) -> u32 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.tenant * 1000 + item.len() as u32
    }

    #[dogpile(expire = 3600, key = self.tenant)]
    fn name(&self) -> Result<String, std::fmt::Error> {
        Ok(format!("tenant {}", self.tenant))
    }
}

#[test]
fn methods_with_an_explicit_key() {
    let a = Service {
        tenant: 1,
        calls: AtomicUsize::new(0),
    };
    let b = Service {
        tenant: 2,
        calls: AtomicUsize::new(0),
    };
    assert_eq!(a.price("xyz"), 1003);
    assert_eq!(a.price("xyz"), 1003);
    assert_eq!(b.price("xyz"), 2003);
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.price_peek("xyz"), Some(1003));
    a.price_invalidate("xyz").unwrap();
    assert_eq!(a.price("xyz"), 1003);
    assert_eq!(a.calls.load(Ordering::SeqCst), 2);
    assert_eq!(a.name().unwrap(), "tenant 1");
    assert_eq!(Service::price_statistics().regenerations, 3);
}

static COMPANION_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
fn counted(n: u32) -> usize {
    COMPANION_CALLS.fetch_add(1, Ordering::SeqCst) + n as usize
}

#[test]
fn companion_items() {
    let first = counted(10);
    assert_eq!(counted(10), first);
    assert_eq!(counted_peek(10), Some(first));
    assert_eq!(counted_peek(11), None);

    // Uncached: runs the body, stores nothing.
    let direct = counted_uncached(10);
    assert_ne!(direct, first);
    assert_eq!(counted(10), first);

    // Refresh: runs the body now and stores it.
    let refreshed = counted_refresh(10);
    assert_ne!(refreshed, first);
    assert_eq!(counted(10), refreshed);

    // Soft invalidation keeps the value visible but expired: the next call regenerates.
    counted_soft_invalidate(10).unwrap();
    assert_eq!(counted_peek(10), Some(refreshed));
    let regenerated = counted(10);
    assert_ne!(regenerated, refreshed);
    assert_eq!(counted(10), regenerated);

    // Hard invalidation removes it.
    counted_invalidate(10).unwrap();
    assert_eq!(counted_peek(10), None);
    let again = counted(10);
    assert_eq!(counted(20), counted(20));
    counted_soft_invalidate_all().unwrap();
    assert_ne!(counted(10), again);
    counted_invalidate_all().unwrap();
    assert_eq!(counted_peek(10), None);
    assert_eq!(counted_peek(20), None);

    let stats = counted_statistics();
    assert!(stats.hits >= 4, "{stats:?}");
}

mod nested {
    pub mod deeper {
        use dogpile::dogpile;

        #[dogpile(expire = 60)]
        pub(crate) fn doubled(n: i64) -> i64 {
            n * 2
        }
    }
}

#[test]
fn functions_in_nested_modules_with_restricted_visibility() {
    assert_eq!(nested::deeper::doubled(21), 42);
    assert_eq!(nested::deeper::doubled_peek(21), Some(42));
    assert_eq!(nested::deeper::doubled_statistics().misses, 1);
}

static BACKGROUND_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = "50ms", background, capacity = 100, lock_timeout = "5s")]
fn in_background(name: &str) -> String {
    let n = BACKGROUND_CALLS.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        thread::sleep(Duration::from_millis(200));
    }
    format!("{name}{n}")
}

#[test]
fn background_returns_the_stale_value_at_once() {
    assert_eq!(in_background("v"), "v0");
    thread::sleep(Duration::from_millis(80));
    let start = Instant::now();
    assert_eq!(in_background("v"), "v0");
    assert!(start.elapsed() < Duration::from_millis(100));
    // The pool finishes the regeneration, then the new value is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_background_peek("v").as_deref() != Some("v1") {
        assert!(Instant::now() < deadline, "no background regeneration");
        thread::sleep(Duration::from_millis(10));
    }
}

static NEVER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = never)]
fn forever() -> Arc<Vec<u8>> {
    NEVER_CALLS.fetch_add(1, Ordering::SeqCst);
    Arc::new(vec![1, 2, 3])
}

#[test]
fn expire_never_keeps_the_value_until_invalidated() {
    let first = forever();
    assert!(Arc::ptr_eq(&first, &forever()));
    forever_invalidate().unwrap();
    assert!(!Arc::ptr_eq(&first, &forever()));
    assert_eq!(NEVER_CALLS.load(Ordering::SeqCst), 2);
}

mod caches {
    use dogpile::Region;
    use std::sync::LazyLock;
    use std::time::Duration;

    /// Configured elsewhere, as a region on another store or mutex would be. Functions given a
    /// region put their namespace before their key.
    pub static USERS: LazyLock<Region<(&'static str, u64), String>> = LazyLock::new(|| {
        Region::builder()
            .name("users")
            .expiry(Duration::from_secs(3600))
            .build()
            .unwrap()
    });

    pub static ACCOUNTS: LazyLock<Region<(&'static str, u64), String>> =
        LazyLock::new(|| Region::builder().name("accounts").build().unwrap());

    /// Shared by `price` and `stock` only, whose statistics are checked.
    pub static CATALOG: LazyLock<Region<(&'static str, u64), u64>> =
        LazyLock::new(|| Region::builder().name("catalog").build().unwrap());
}

#[dogpile(expire = 60, region = caches::CATALOG, namespace = "prices")]
fn price(id: u64) -> u64 {
    id * 100
}

#[dogpile(expire = 60, region = caches::CATALOG)]
fn stock(id: u64) -> u64 {
    id + 1
}

/// Each function on a shared region reports its own calls; the region counts them all.
#[test]
fn functions_sharing_a_region_each_count_their_own_calls() {
    for _ in 0..3 {
        assert_eq!(price(1), 100);
    }
    assert_eq!(stock(1), 2);
    assert_eq!(stock(2), 3);
    let (p, s) = (price_statistics(), stock_statistics());
    assert_eq!(
        (p.hits, p.misses, p.regenerations, p.creator_runs),
        (2, 1, 1, 1)
    );
    assert_eq!(
        (s.hits, s.misses, s.regenerations, s.creator_runs),
        (0, 2, 2, 2)
    );
    let all = caches::CATALOG.statistics();
    assert_eq!((all.hits, all.misses, all.regenerations), (2, 3, 3));
    // What the store holds is the region's.
    assert_eq!((p.entries, s.entries), (3, 3));
}

static USER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = "50ms", region = caches::USERS, namespace = "users")]
fn user(id: u64) -> String {
    let n = USER_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("user {id} #{n}")
}

/// Another function on the same region, with the same key and value types.
#[dogpile(expire = 60, region = caches::USERS)]
fn nickname(id: u64) -> String {
    format!("nick {id}")
}

#[test]
fn a_region_configured_elsewhere_with_the_function_s_expiry() {
    assert_eq!(user(1), "user 1 #0");
    assert_eq!(user(1), "user 1 #0");
    // The value lives in the given region...
    assert_eq!(
        caches::USERS.peek(&("users", 1)).as_deref(),
        Some("user 1 #0")
    );
    assert_eq!(user_statistics().hits, 1);
    // ...and expires by the function's `expire`, not the region's hour.
    thread::sleep(Duration::from_millis(80));
    assert_eq!(user(1), "user 1 #1");
    assert_eq!(
        caches::USERS.get_with(&("users", 1), || unreachable!()),
        "user 1 #1"
    );
    user_invalidate(1).unwrap();
    assert_eq!(caches::USERS.peek(&("users", 1)), None);
}

/// Functions sharing a region never read each other's values: each key starts with the
/// function's namespace (its path, unless `namespace` names one).
#[test]
fn functions_sharing_a_region_never_read_each_other_s_values() {
    assert_eq!(nickname(7), "nick 7");
    assert!(user(7).starts_with("user 7"));
    assert_eq!(nickname(7), "nick 7");
    let path = concat!(module_path!(), "::nickname");
    assert_eq!(caches::USERS.peek(&(path, 7)).as_deref(), Some("nick 7"));
    assert!(caches::USERS
        .peek(&("users", 7))
        .unwrap()
        .starts_with("user 7"));
}

static SHELF: std::sync::LazyLock<dogpile::Region<(&'static str, u64), String>> =
    std::sync::LazyLock::new(|| dogpile::Region::builder().name("shelf").build().unwrap());

#[dogpile(expire = 60, region = SHELF)]
fn title(id: u64) -> String {
    format!("title {id} #{}", SHELF_CALLS.fetch_add(1, Ordering::SeqCst))
}

static SHELF_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 60, region = SHELF)]
fn blurb(id: u64) -> String {
    format!("blurb {id} #{}", SHELF_CALLS.fetch_add(1, Ordering::SeqCst))
}

/// On a shared region, the companions that take no key are named for what they reach: every
/// value of the region, every function's.
#[test]
fn the_region_wide_invalidations_of_a_shared_region_say_so_in_their_name() {
    let (title_key, blurb_key) = (
        (concat!(module_path!(), "::title"), 1),
        (concat!(module_path!(), "::blurb"), 1),
    );
    assert_eq!(title(1), "title 1 #0");
    assert_eq!(blurb(1), "blurb 1 #1");
    title_soft_invalidate_region().unwrap();
    // Both values are still there, as expired ones, and both are made again.
    assert_eq!(SHELF.peek(&title_key).as_deref(), Some("title 1 #0"));
    assert_eq!(SHELF.peek(&blurb_key).as_deref(), Some("blurb 1 #1"));
    assert_eq!(title(1), "title 1 #2");
    assert_eq!(blurb(1), "blurb 1 #3");
    blurb_invalidate_region().unwrap();
    assert_eq!(SHELF.peek(&title_key), None);
    assert_eq!(SHELF.peek(&blurb_key), None);
}

/// A short life for a "temporary" account, an hour for the others.
#[allow(clippy::ptr_arg)] // `expire_with` is given the cached value: a `&String`
fn account_lifetime(name: &String) -> Duration {
    if name.starts_with("temporary") {
        Duration::from_millis(30)
    } else {
        Duration::from_secs(3600)
    }
}

static ACCOUNT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 60, expire_with = account_lifetime, region = caches::ACCOUNTS)]
fn account(id: u64) -> String {
    let n = ACCOUNT_CALLS.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        format!("temporary #{n}")
    } else {
        format!("account {id} #{n}")
    }
}

/// On a given region, `expire_with` shortens the lives the function's `expire` gives.
#[test]
fn a_given_region_takes_the_function_s_expire_with() {
    assert_eq!(account(0), "temporary #0");
    assert_eq!(account(5), "account 5 #1");
    thread::sleep(Duration::from_millis(60));
    assert_eq!(account(0), "temporary #2", "lived 30 ms");
    assert_eq!(account(5), "account 5 #1", "lives on");
}

mod renamed {
    pub use dogpile as cache_lib;
}

#[dogpile(expire = 60, crate = renamed::cache_lib)]
fn through_a_renamed_crate(n: u8) -> u8 {
    n + 1
}

#[test]
fn the_crate_option_names_a_renamed_dependency() {
    assert_eq!(through_a_renamed_crate(1), 2);
    assert_eq!(through_a_renamed_crate_peek(1), Some(2));
}

struct Boxed<T> {
    id: u32,
    item: T,
}

impl<T: Clone + Send + Sync + 'static> Boxed<T> {
    /// The cached value's type depends on the impl's parameter: each instantiation gets a
    /// region of its own.
    #[dogpile(expire = 3600, key = self.id)]
    fn item(&self) -> T {
        self.item.clone()
    }
}

#[test]
fn methods_of_a_generic_impl_cache_per_instantiation() {
    let a = Boxed { id: 1, item: 5u8 };
    let b = Boxed {
        id: 1,
        item: "five".to_string(),
    };
    assert_eq!(a.item(), 5);
    assert_eq!(b.item(), "five");
    assert_eq!(Boxed { id: 1, item: 6u8 }.item(), 5, "cached by id");
    assert_eq!(b.item_peek().as_deref(), Some("five"));
    assert_eq!(
        Boxed::<u8>::item_statistics().misses,
        2,
        "both instantiations counted"
    );
    Boxed::<String>::item_invalidate_all().unwrap();
    assert_eq!(a.item_peek(), None);
    assert_eq!(b.item_peek(), None);
}

#[dogpile(expire = 60)]
fn with_lifetime<'a>(name: &'a str, suffix: &'a str) -> String {
    format!("{name}{suffix}")
}

#[cfg(any())]
#[dogpile(expire = 60)]
fn compiled_out(n: u32) -> u32 {
    n
}

#[test]
fn lifetime_parameters_and_cfg_are_kept() {
    assert_eq!(with_lifetime("a", "b"), "ab");
    assert_eq!(with_lifetime_peek("a", "b").as_deref(), Some("ab"));
}
