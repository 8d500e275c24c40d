//! Four threads read one cached value across several expiries. Each time it expires, one
//! reader runs the body again while the others get the previous value at once; only the very
//! first read, when there is no value yet, makes anyone wait.
//!
//! Run with `cargo run --example quickstart`. Each line is one read, in the order the reads
//! finished: when, which reader, how the read was served, what it got and how long it took.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dogpile::dogpile;
use dogpile::region::Served;

static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The expensive value: 150 ms to make, fresh for 300 ms.
#[dogpile(expire = 300ms)]
fn exchange_rate(pair: &str) -> String {
    thread::sleep(Duration::from_millis(150));
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{pair} rate #{generation}")
}

const READERS: usize = 4;
const READS_EACH: usize = 12;

/// One read, as a reader saw it.
struct Read {
    finished: Duration,
    reader: usize,
    served: Served,
    value: String,
    took: Duration,
}

fn main() {
    let start = Instant::now();
    let (reads, log) = mpsc::channel();
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let reads = reads.clone();
            thread::spawn(move || {
                for _ in 0..READS_EACH {
                    let asked = Instant::now();
                    let (value, served) = exchange_rate_served("EUR/USD");
                    let read = Read {
                        finished: start.elapsed(),
                        reader,
                        served,
                        value,
                        took: asked.elapsed(),
                    };
                    reads.send(read).expect("the log outlives the readers");
                    thread::sleep(Duration::from_millis(60));
                }
            })
        })
        .collect();
    drop(reads);

    println!("  time  reader  served   value               took");
    println!("------  ------  -------  ------------------  --------");
    let mut slowest_other = Duration::ZERO;
    // The channel delivers reads in the order they finished.
    for read in log {
        let note = match read.served {
            Served::Created => "  <- ran the body",
            Served::Waited => "  <- waited for the first value",
            _ => "",
        };
        if matches!(read.served, Served::Fresh | Served::Stale) {
            slowest_other = slowest_other.max(read.took);
        }
        println!(
            "{:>4} ms  {:>6}  {:<7}  {:<18}  {:>5.1} ms{note}",
            read.finished.as_millis(),
            read.reader,
            read.served,
            read.value,
            read.took.as_secs_f64() * 1e3,
        );
    }
    for reader in readers {
        reader.join().expect("a reader panicked");
    }

    let stats = exchange_rate_statistics();
    println!();
    println!(
        "{} reads: {} fresh, {} stale while another reader regenerated, {} waited for the first \
         value, {} ran the body",
        READERS * READS_EACH,
        stats.hits,
        stats.stale_hits,
        stats.waits,
        stats.regenerations,
    );
    println!(
        "the body ran {} times: once for the first value, then once per expiry; no read that got \
         a value from the cache took more than {:.1} ms",
        stats.regenerations,
        slowest_other.as_secs_f64() * 1e3,
    );
}
