//! `ReadWriteMutex` through its public API: exclusion, writer preference, non-blocking calls,
//! mismatched releases, and a stress run of readers and writers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use dogpile_runtime::lock::{ReadWriteMutex, ReleaseError};

const BOUND: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_millis(50);

#[test]
fn a_writer_excludes_readers_and_writers() {
    let rw = Arc::new(ReadWriteMutex::new());
    let w = rw.write();
    assert!(rw.try_read().is_none());
    assert!(rw.try_write().is_none());
    assert!(!rw.acquire_read_lock(false));
    assert!(!rw.acquire_write_lock(false));

    let (tx, rx) = mpsc::channel();
    let reader = {
        let rw = rw.clone();
        thread::spawn(move || {
            let _r = rw.read();
            tx.send(()).unwrap();
        })
    };
    assert!(
        rx.recv_timeout(SETTLE).is_err(),
        "a reader got in beside the writer"
    );
    drop(w);
    rx.recv_timeout(BOUND).unwrap();
    reader.join().unwrap();
}

#[test]
fn readers_share_and_exclude_writers() {
    let rw = ReadWriteMutex::new();
    let a = rw.read();
    let b = rw.try_read().expect("readers share");
    assert!(rw.try_write().is_none());
    drop(a);
    assert!(rw.try_write().is_none());
    drop(b);
    assert!(rw.try_write().is_some());
}

#[test]
fn a_waiting_writer_blocks_new_readers() {
    let rw = Arc::new(ReadWriteMutex::new());
    let first_reader = rw.read();
    let (wrote_tx, wrote_rx) = mpsc::channel();
    let writer = {
        let rw = rw.clone();
        thread::spawn(move || {
            let _w = rw.write();
            wrote_tx.send(()).unwrap();
        })
    };
    // Wait until the writer has claimed the lock: new readers are then refused.
    let mut refused = false;
    for _ in 0..1000 {
        if !rw.acquire_read_lock(false) {
            refused = true;
            break;
        }
        rw.release_read_lock().unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    assert!(refused, "the waiting writer never blocked new readers");
    assert!(
        wrote_rx.recv_timeout(SETTLE).is_err(),
        "the writer got in beside a reader"
    );
    drop(first_reader);
    wrote_rx.recv_timeout(BOUND).unwrap();
    writer.join().unwrap();
    assert!(rw.try_read().is_some());
}

#[test]
fn explicit_calls_pair_up() {
    let rw = ReadWriteMutex::new();
    assert!(rw.acquire_read_lock(true));
    assert!(rw.acquire_read_lock(false));
    rw.release_read_lock().unwrap();
    rw.release_read_lock().unwrap();
    assert!(rw.acquire_write_lock(true));
    rw.release_write_lock().unwrap();
}

#[test]
fn mismatched_releases_are_errors_and_leave_the_mutex_usable() {
    let rw = Arc::new(ReadWriteMutex::new());
    assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
    assert_eq!(rw.release_write_lock(), Err(ReleaseError::NotWriteLocker));

    assert!(rw.acquire_read_lock(true));
    rw.release_read_lock().unwrap();
    assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));

    assert!(rw.acquire_write_lock(true));
    let other = {
        let rw = rw.clone();
        thread::spawn(move || rw.release_write_lock())
            .join()
            .unwrap()
    };
    assert_eq!(other, Err(ReleaseError::NotWriteLocker));
    assert!(
        rw.try_read().is_none(),
        "the bad release did not free the lock"
    );
    rw.release_write_lock().unwrap();
    assert!(rw.try_write().is_some());
    assert_eq!(
        ReleaseError::NotWriteLocker.to_string(),
        "release_write_lock called by a thread that does not hold the write lock"
    );
}

#[test]
fn an_explicit_read_release_never_takes_a_guards_read_lock() {
    let rw = Arc::new(ReadWriteMutex::new());
    let guard = rw.read();
    // The guard's lock is not the explicit caller's to release.
    assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
    assert!(rw.try_write().is_none(), "the guard still reads");

    // Explicit and guard reads side by side: each release matches its own acquire.
    assert!(rw.acquire_read_lock(false));
    rw.release_read_lock().unwrap();
    assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
    assert!(rw.try_write().is_none(), "the guard still reads");

    // The guard's drop leaves the count at zero: a writer gets in, and after it readers again.
    drop(guard);
    let writer = {
        let rw = rw.clone();
        thread::spawn(move || {
            let _w = rw.write();
        })
    };
    writer.join().unwrap();
    assert!(rw.try_write().is_some());
    assert!(rw.try_read().is_some());
}

#[test]
fn an_explicit_write_release_never_takes_a_guards_write_lock() {
    let rw = ReadWriteMutex::new();
    let guard = rw.write();
    assert_eq!(rw.release_write_lock(), Err(ReleaseError::NotWriteLocker));
    assert!(rw.try_read().is_none(), "the guard still writes");
    assert!(rw.try_write().is_none(), "the guard still writes");
    drop(guard);
    assert!(rw.acquire_write_lock(false));
    rw.release_write_lock().unwrap();
    assert!(rw.try_read().is_some());
}

#[test]
fn stress_many_readers_and_writers() {
    const READERS: usize = 8;
    const WRITERS: usize = 4;
    const ROUNDS: usize = 500;
    let rw = Arc::new(ReadWriteMutex::new());
    let readers_in = Arc::new(AtomicUsize::new(0));
    let writers_in = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(READERS + WRITERS));

    let mut threads = Vec::new();
    for _ in 0..READERS {
        let (rw, readers_in, writers_in, overlapped, violations, start) = (
            rw.clone(),
            readers_in.clone(),
            writers_in.clone(),
            overlapped.clone(),
            violations.clone(),
            start.clone(),
        );
        threads.push(thread::spawn(move || {
            start.wait();
            for i in 0..ROUNDS {
                let _r = rw.read();
                if readers_in.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlapped.store(true, Ordering::SeqCst);
                }
                if writers_in.load(Ordering::SeqCst) != 0 {
                    violations.fetch_add(1, Ordering::SeqCst);
                }
                if i % 16 == 0 {
                    thread::yield_now();
                }
                readers_in.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    for _ in 0..WRITERS {
        let (rw, readers_in, writers_in, violations, start) = (
            rw.clone(),
            readers_in.clone(),
            writers_in.clone(),
            violations.clone(),
            start.clone(),
        );
        threads.push(thread::spawn(move || {
            start.wait();
            for _ in 0..ROUNDS / 4 {
                let _w = rw.write();
                if writers_in.fetch_add(1, Ordering::SeqCst) != 0
                    || readers_in.load(Ordering::SeqCst) != 0
                {
                    violations.fetch_add(1, Ordering::SeqCst);
                }
                thread::yield_now();
                writers_in.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(violations.load(Ordering::SeqCst), 0);

    // Readers overlapping may not happen by chance on two cores; show it on purpose.
    if !overlapped.load(Ordering::SeqCst) {
        let a = rw.read();
        let b = rw.try_read();
        assert!(b.is_some(), "two readers could not overlap");
        drop(a);
    }
    assert!(rw.try_write().is_some(), "the mutex ends free");
}
