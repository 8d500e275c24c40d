//! Several threads read one value across its expiry: one regenerates, the others get the stale
//! value at once. Only the very first read, when there is no value yet, makes anyone wait.
//!
//! Run with `cargo run --example quickstart`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::{Clock, LocalMutex, Lock, NeedRegeneration, SystemClock, Timestamp};

/// Where the value lives between calls: any cache that keeps a creation time beside the value.
type Slot = Mutex<Option<(u32, Timestamp)>>;

const EXPIRY: Duration = Duration::from_millis(300);
const CREATION: Duration = Duration::from_millis(150);

fn main() {
    let slot: Arc<Slot> = Arc::default();
    let mutex = Arc::new(LocalMutex::new());
    let generation = Arc::new(AtomicU32::new(0));
    let start = Instant::now();

    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (slot, mutex, generation) = (slot.clone(), mutex.clone(), generation.clone());
            thread::spawn(move || {
                for _ in 0..12 {
                    let asked = Instant::now();
                    let mut created_here = false;
                    let value = Lock::new(
                        &mutex,
                        || {
                            created_here = true;
                            thread::sleep(CREATION); // the expensive part
                            let value = (
                                generation.fetch_add(1, Ordering::SeqCst) + 1,
                                SystemClock.now(),
                            );
                            *slot.lock().unwrap() = Some(value);
                            Ok::<_, Infallible>(value)
                        },
                        // The getter returns the value (here carrying its own creation time,
                        // to print it) and the creation time the lock judges expiry by.
                        || {
                            slot.lock()
                                .unwrap()
                                .map(|v| (v, v.1))
                                .ok_or(NeedRegeneration)
                        },
                        Some(EXPIRY),
                    )
                    .enter()
                    .unwrap();
                    let waited = asked.elapsed();
                    let (value, created) = value;
                    let what = if created_here {
                        "regenerated it"
                    } else if created.is_expired_at(SystemClock.now(), Some(EXPIRY)) {
                        "got the stale value"
                    } else {
                        "got the fresh value"
                    };
                    println!(
                        "{:>6.0?}  reader {reader}: generation {value}, {what} (waited {:.1?})",
                        start.elapsed(),
                        waited,
                    );
                    thread::sleep(Duration::from_millis(60));
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    println!(
        "{} generations for 4 readers x 12 reads over {:.1?}",
        generation.load(Ordering::SeqCst),
        start.elapsed()
    );
}
