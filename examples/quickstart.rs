//! Four threads read one cached value across several expiries. Each time it expires, one
//! reader runs the body again while the others get the previous value at once; only the very
//! first read, when there is no value yet, makes anyone wait.
//!
//! Run with `cargo run --example quickstart`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::dogpile;

static GENERATION: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Set when this thread ran the body, to label its read.
    static RAN_BODY: Cell<bool> = const { Cell::new(false) };
}

/// The expensive value: 150 ms to make, fresh for 300 ms.
#[dogpile(expire = "300ms")]
fn exchange_rate(pair: &str) -> String {
    RAN_BODY.with(|ran| ran.set(true));
    thread::sleep(Duration::from_millis(150));
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{pair} rate #{generation}")
}

fn main() {
    let start = Instant::now();
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            thread::spawn(move || {
                let mut slowest_other = Duration::ZERO;
                for read in 0..12 {
                    RAN_BODY.with(|ran| ran.set(false));
                    let asked = Instant::now();
                    let value = exchange_rate("EUR/USD");
                    let took = asked.elapsed();
                    let ran = RAN_BODY.with(Cell::get);
                    if !ran && read > 0 {
                        slowest_other = slowest_other.max(took);
                    }
                    println!(
                        "{:>5} ms  reader {reader}  {value:<18} {:>7.1} ms{}",
                        start.elapsed().as_millis(),
                        took.as_secs_f64() * 1e3,
                        if ran { "  <- ran the body" } else { "" },
                    );
                    thread::sleep(Duration::from_millis(60));
                }
                slowest_other
            })
        })
        .collect();
    let slowest = readers
        .into_iter()
        .map(|r| r.join().expect("a reader panicked"))
        .max()
        .unwrap_or_default();

    let stats = exchange_rate_statistics();
    println!();
    println!(
        "48 reads: {} fresh, {} stale while another reader regenerated, {} waited for the first value",
        stats.hits,
        stats.stale_hits,
        stats.waits,
    );
    println!(
        "the body ran {} times: once for the first value, then once per expiry; after the first \
         value, the slowest read that did not run the body took {:.1} ms",
        stats.regenerations,
        slowest.as_secs_f64() * 1e3,
    );
}
