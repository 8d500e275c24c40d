//! Python dogpile.core's deprecated `Dogpile` and `SyncReaderDogpile`, through their public API.
#![allow(deprecated)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
use dogpile_runtime::legacy::{Dogpile, SyncReaderDogpile};
use dogpile_runtime::NeedRegeneration;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000_000)))
}

#[test]
fn dogpile_creates_once_then_again_after_expiry() {
    let clock = clock();
    let dogpile = Dogpile::new(Some(Duration::from_secs(1)))
        .unwrap()
        .with_clock(clock.clone());
    assert!(dogpile.is_expired() && !dogpile.has_value());
    let runs = AtomicUsize::new(0);
    let create = || {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, ()>(())
    };
    dogpile.acquire(create).unwrap();
    dogpile.acquire(create).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        dogpile.created_time(),
        Timestamp::from_nanos(1_000_000_000_000)
    );
    assert!(!dogpile.is_expired());

    clock.advance(Duration::from_secs(1));
    assert!(!dogpile.is_expired(), "age equal to the expiry is fresh");
    clock.advance(Duration::from_nanos(1));
    assert!(dogpile.is_expired());
    dogpile.acquire(create).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn dogpile_init_counts_as_a_value() {
    let dogpile = Dogpile::new(None).unwrap().init();
    dogpile
        .acquire(|| -> Result<(), ()> { panic!("init means the value exists") })
        .unwrap();
}

#[test]
fn dogpile_threads_wait_for_the_first_creation_only() {
    let dogpile = Arc::new(Dogpile::new(None).unwrap());
    let resource = Arc::new(Mutex::new(None));
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (dogpile, resource, runs, barrier) = (
                dogpile.clone(),
                resource.clone(),
                runs.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                dogpile
                    .acquire_value(
                        || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(20));
                            *resource.lock().unwrap() = Some("made");
                            Ok::<_, ()>("made")
                        },
                        || {
                            resource
                                .lock()
                                .unwrap()
                                .expect("value_fn runs only with a value")
                        },
                    )
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "made");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn dogpile_value_and_created_picks_up_where_another_left_off() {
    let clock = clock();
    let stored = Timestamp::from_nanos(999_000_000_000); // one second before the clock
    let dogpile = Dogpile::new(Some(Duration::from_secs(5)))
        .unwrap()
        .with_clock(clock.clone());
    let v = dogpile
        .acquire_value_and_created(|| Ok::<_, ()>("new"), || Ok(("cached", stored)))
        .unwrap();
    assert_eq!(v, "cached");
    assert_eq!(dogpile.created_time(), stored);

    let v = dogpile
        .acquire_value_and_created(|| Ok::<_, ()>("new"), || Err(NeedRegeneration))
        .unwrap();
    assert_eq!(v, "new");
    assert_eq!(dogpile.created_time(), clock.now());
}

#[test]
fn sync_reader_dogpile_holds_a_read_lock_while_the_value_is_used() {
    let dogpile = Arc::new(SyncReaderDogpile::new(None).unwrap());
    let reading = dogpile.acquire_value(|| Ok::<_, ()>(1), || 1).unwrap();
    assert_eq!(*reading, 1);

    // A creator's write lock waits for the reader.
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let dogpile = dogpile.clone();
        thread::spawn(move || {
            let _w = dogpile.acquire_write_lock();
            tx.send(()).unwrap();
        })
    };
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    drop(reading);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    writer.join().unwrap();
}
