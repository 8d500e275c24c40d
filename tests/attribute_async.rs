//! `#[dogpile]` on `async fn` under tokio: bursts, stale serving, cancellation, panics, methods
//! with borrowed arguments, and futures that are `Send`.
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dogpile::dogpile;
use tokio::time::{sleep, timeout, Instant};

const BOUND: Duration = Duration::from_secs(20);

static BURST_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
async fn report(day: u32) -> Arc<String> {
    BURST_CALLS.fetch_add(1, Ordering::SeqCst);
    sleep(Duration::from_millis(50)).await;
    Arc::new(format!("day {day}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_on_a_missing_key_run_the_body_once() {
    let tasks: Vec<_> = (0..1000).map(|_| tokio::spawn(report(3))).collect();
    for task in tasks {
        assert_eq!(*timeout(BOUND, task).await.unwrap().unwrap(), "day 3");
    }
    assert_eq!(BURST_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(report_statistics().misses, 1000);
}

static STALE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = "100ms")]
async fn rate() -> u64 {
    let n = STALE_CALLS.fetch_add(1, Ordering::SeqCst);
    sleep(Duration::from_millis(200)).await;
    n as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_value_is_served_stale_while_one_task_regenerates() {
    assert_eq!(rate().await, 0);
    sleep(Duration::from_millis(150)).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async {
                let start = Instant::now();
                let value = rate().await;
                (value, start.elapsed())
            })
        })
        .collect();
    let mut slow = 0;
    let mut slowest_other = Duration::ZERO;
    for task in tasks {
        let (value, took) = timeout(BOUND, task).await.unwrap().unwrap();
        if took >= Duration::from_millis(150) {
            slow += 1; // the one task that ran the body
            assert_eq!(value, 1);
        } else {
            assert_eq!(value, 0, "stale");
            slowest_other = slowest_other.max(took);
        }
    }
    assert_eq!(slow, 1);
    assert_eq!(STALE_CALLS.load(Ordering::SeqCst), 2);
    assert!(
        slowest_other < Duration::from_millis(5),
        "a task waited {slowest_other:?}"
    );
}

static CANCEL_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
async fn slow_first_time(key: u8) -> u8 {
    if CANCEL_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        sleep(Duration::from_secs(3600)).await;
    }
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_cancelled_by_a_timeout_lets_the_next_caller_create() {
    assert!(timeout(Duration::from_millis(50), slow_first_time(1))
        .await
        .is_err());
    assert_eq!(slow_first_time_peek(1).await, None);
    let next = timeout(BOUND, slow_first_time(1)).await.expect("hung");
    assert_eq!(next, 1);
}

static PANIC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600)]
async fn flaky() -> u8 {
    if PANIC_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("first call fails");
    }
    9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_body_poisons_nothing() {
    assert!(tokio::spawn(flaky()).await.unwrap_err().is_panic());
    assert_eq!(timeout(BOUND, flaky()).await.unwrap(), 9);
    assert_eq!(flaky_statistics().panics, 1);
}

#[derive(Debug)]
struct FetchError;

struct Prices {
    tenant: u32,
    calls: AtomicUsize,
}

impl Prices {
    #[dogpile(expire = 3600, key = (self.tenant, sku.to_owned()))]
    async fn price(&self, sku: &str, currency: &str) -> Result<String, FetchError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        sleep(Duration::from_millis(1)).await;
        if sku.is_empty() {
            return Err(FetchError);
        }
        Ok(format!("{}:{sku} in {currency}", self.tenant))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_with_borrowed_arguments_and_result_returns() {
    let prices = Prices {
        tenant: 4,
        calls: AtomicUsize::new(0),
    };
    assert!(prices.price("", "EUR").await.is_err());
    assert!(prices.price("", "EUR").await.is_err());
    assert_eq!(prices.price("a", "EUR").await.unwrap(), "4:a in EUR");
    assert_eq!(prices.price("a", "USD").await.unwrap(), "4:a in EUR");
    assert_eq!(prices.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        prices.price_peek("a", "").await.as_deref(),
        Some("4:a in EUR")
    );
    assert_eq!(
        prices.price_refresh("a", "USD").await.unwrap(),
        "4:a in USD"
    );
    prices.price_invalidate("a", "").await.unwrap();
    assert_eq!(prices.price_peek("a", "").await, None);
}

static OPTION_CALLS: AtomicUsize = AtomicUsize::new(0);

#[dogpile(expire = 3600, background)]
async fn lookup(name: &str) -> Option<usize> {
    OPTION_CALLS.fetch_add(1, Ordering::SeqCst);
    (!name.is_empty()).then_some(name.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_cache_only_some_also_in_background_mode() {
    assert_eq!(lookup("").await, None);
    assert_eq!(lookup("").await, None);
    assert_eq!(lookup("abc").await, Some(3));
    assert_eq!(lookup("abc").await, Some(3));
    assert_eq!(OPTION_CALLS.load(Ordering::SeqCst), 3);
}

#[test]
fn the_future_of_an_annotated_async_fn_is_send() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let future = report(1);
    assert_send(&future);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let handle = runtime.spawn(future);
    assert_eq!(*runtime.block_on(handle).unwrap(), "day 1");
}
