//! A small async service: 100 concurrent requests a round, each needing an exchange rate that
//! takes 200 ms to fetch and stays fresh for 300 ms. When it expires, one refetch runs in a
//! spawned task (`background`) and every request, the one that started it included, is answered
//! at once with the previous rate. Only the very first round waits, for the first fetch.
//!
//! Run with `cargo run --example async_service`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dogpile::dogpile;
use tokio::time::{sleep, Instant};

static FETCHES: AtomicU32 = AtomicU32::new(0);

/// The slow upstream call, cached. Without `background`, the request that finds the rate
/// expired refetches it in place (200 ms) while the others still get the previous rate.
#[dogpile(expire = "300ms", background)]
async fn exchange_rate(pair: &str) -> String {
    let n = FETCHES.fetch_add(1, Ordering::SeqCst) + 1;
    sleep(Duration::from_millis(200)).await;
    format!("{pair} #{n}")
}

/// A request handler.
async fn handle(request: u32) -> (u32, String, Duration) {
    let start = Instant::now();
    let rate = exchange_rate("EUR/USD").await;
    (request, rate, start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let start = Instant::now();
    for round in 0..8 {
        let tasks: Vec<_> = (0..100)
            .map(|r| tokio::spawn(handle(round * 100 + r)))
            .collect();
        let mut slowest = Duration::ZERO;
        let mut slow = 0;
        let mut rates = Vec::new();
        for task in tasks {
            let (_, rate, took) = task.await.expect("a handler panicked");
            slowest = slowest.max(took);
            if took > Duration::from_millis(5) {
                slow += 1;
            }
            if !rates.contains(&rate) {
                rates.push(rate);
            }
        }
        println!(
            "{:>5} ms  round {round}: 100 requests, {slow:>3} took over 5 ms (slowest {:>6.1} ms), rates served: {}",
            start.elapsed().as_millis(),
            slowest.as_secs_f64() * 1e3,
            rates.join(", "),
        );
        sleep(Duration::from_millis(100)).await;
    }
    let stats = exchange_rate_statistics();
    println!(
        "\nupstream fetches: {} (the first, then one per expiry); {} fresh, {} stale, {} waited for the first",
        stats.regenerations, stats.hits, stats.stale_hits, stats.waits
    );
}
