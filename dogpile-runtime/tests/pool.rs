//! The background `Pool` never wedges a key: every job it accepts runs, every job it cannot run
//! is handed back, and a job's captured mutex guard is always released (the job ran, panicked,
//! or was handed back and run or dropped by the caller).
//!
//! Each job here holds an `OwnedMutexGuard` of a `LocalMutex`, as a region's background
//! regeneration holds its key's mutex; the tests assert that the mutex becomes free.
//!
//! The refused-thread case runs in a child process (this binary again, see
//! `support/children.rs`) started with `RUST_MIN_STACK` set far beyond the address space, so
//! that the OS refuses every thread started with the default stack size.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard, RawMutex};
use dogpile_runtime::region::Pool;

#[path = "support/children.rs"]
mod children;

const BOUND: Duration = Duration::from_secs(10);
const ROLE: &str = "DOGPILE_POOL_ROLE";

fn held() -> (Arc<LocalMutex>, OwnedMutexGuard<LocalMutex>) {
    let mutex = Arc::new(LocalMutex::new());
    let guard = OwnedMutexGuard::acquire(mutex.clone()).unwrap();
    (mutex, guard)
}

/// Waits (bounded) until `mutex` is free, and leaves it free.
fn becomes_free(mutex: &LocalMutex) -> bool {
    let deadline = Instant::now() + BOUND;
    loop {
        if mutex.try_acquire().unwrap() {
            mutex.release().unwrap();
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// What a child process does, by its role; nothing when run as a normal test.
#[test]
fn child() {
    match std::env::var(ROLE).as_deref() {
        Ok("refused-threads") => refused_threads(),
        Ok(role) => panic!("unknown role {role}"),
        Err(_) => {}
    }
}

#[test]
fn a_pool_without_threads_is_a_configuration_error() {
    let err = Pool::new(0, 16).unwrap_err();
    assert_eq!(err.option(), "threads");
    assert!(err.to_string().contains("at least 1"), "{err}");
    assert!(Pool::new(1, 0).is_ok(), "no queue is fine");
}

#[test]
fn a_job_that_panics_releases_its_mutex_and_the_thread_goes_on() {
    let pool = Pool::new(1, 4).unwrap();
    let (mutex, guard) = held();
    pool.try_spawn(move || {
        let _guard = guard;
        panic!("a creator that panics");
    })
    .unwrap();
    assert!(becomes_free(&mutex), "the panicking job kept the mutex");

    let (tx, rx) = mpsc::channel();
    pool.try_spawn(move || tx.send(()).unwrap()).unwrap();
    rx.recv_timeout(BOUND)
        .expect("the pool stopped running jobs");
}

#[test]
fn dropping_the_last_handle_runs_the_queued_jobs() {
    let pool = Pool::new(1, 8).unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (running_tx, running_rx) = mpsc::channel();
    let (first, guard) = held();
    pool.try_spawn(move || {
        let _guard = guard;
        running_tx.send(()).unwrap();
        let _ = go_rx.recv();
    })
    .unwrap();
    // Jobs queue behind a running thread only.
    running_rx.recv_timeout(BOUND).unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        let (mutex, guard) = held();
        pool.try_spawn(move || drop(guard)).unwrap();
        queued.push(mutex);
    }
    let clone = pool.clone();
    drop(pool);
    drop(clone); // the last handle
    go_tx.send(()).unwrap();
    assert!(becomes_free(&first));
    for mutex in &queued {
        assert!(becomes_free(mutex), "a queued job was stranded");
    }
}

#[test]
fn threads_exit_soon_after_the_last_handle_is_dropped() {
    thread_local! {
        /// Dropped, and so disconnected, when the thread that set it exits.
        static ON_EXIT: RefCell<Option<mpsc::Sender<()>>> = const { RefCell::new(None) };
    }
    let pool = Pool::new(1, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    pool.try_spawn(move || {
        tx.send(()).unwrap();
        ON_EXIT.with(|slot| *slot.borrow_mut() = Some(tx));
    })
    .unwrap();
    rx.recv_timeout(BOUND).expect("the job never ran");
    drop(pool);
    // An idle thread of a live pool waits 30 s for work; one of a dropped pool has none to wait
    // for.
    let start = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(RecvTimeoutError::Disconnected),
        "the thread of a dropped pool is still there after {:?}",
        start.elapsed()
    );
}

#[test]
fn a_thread_the_os_refuses_hands_its_job_back() {
    let child = children::spawn_child(&[
        (ROLE, "refused-threads"),
        // Every thread started with the default stack size now fails: no address space is
        // that large.
        ("RUST_MIN_STACK", "1125899906842624"),
    ]);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the child failed: {stdout}");
    assert!(stdout.contains("refused-threads: ok"), "{stdout}");
}

/// In the child: eight callers race to hand jobs to a pool that can start no thread. Each job
/// must come back to its own caller (whose mutex it holds); none may be queued behind a thread
/// that never started.
fn refused_threads() {
    const CALLERS: usize = 8;
    const ROUNDS: usize = 300;
    assert!(
        thread::Builder::new().spawn(|| ()).is_err(),
        "the OS started a thread; this test needs it to refuse"
    );
    let pool = Pool::new(2, 16).unwrap();
    let start = Arc::new(Barrier::new(CALLERS));
    let accepted = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (pool, start, accepted) = (pool.clone(), start.clone(), accepted.clone());
            thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    start.wait();
                    for _ in 0..ROUNDS {
                        let (mutex, guard) = held();
                        match pool.try_spawn(move || drop(guard)) {
                            Ok(()) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(full) => {
                                full.into_job()();
                                assert!(
                                    mutex.try_acquire().unwrap(),
                                    "the job handed back was another caller's"
                                );
                                mutex.release().unwrap();
                            }
                        }
                        assert!(becomes_free(&mutex), "a job was stranded");
                    }
                })
                .unwrap()
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no thread could run one"
    );
    assert_eq!(pool.threads(), 0);
    println!("refused-threads: ok");
}
