//! Model checks of the runtime's concurrency with loom: every interleaving of a few threads on
//! the real code, whose locks and atomics come from `loom` under `--cfg loom`.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p dogpile-runtime --test loom --release
//! ```
#![cfg(loom)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
use dogpile_runtime::lock::{Got, LocalMutex, NameRegistry, ReadWriteMutex};
use dogpile_runtime::{Lock, NeedRegeneration};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Mutex;
use loom::thread;

const EXPIRY: Duration = Duration::from_secs(10);

struct Shared {
    mutex: Arc<LocalMutex>,
    store: Mutex<Option<(usize, Timestamp)>>,
    clock: ManualClock,
    created: AtomicUsize,
}

impl Shared {
    fn new(initial: Option<usize>) -> Arc<Self> {
        let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000_000));
        let stale = clock.now() - EXPIRY * 2;
        Arc::new(Shared {
            mutex: Arc::new(LocalMutex::new()),
            store: Mutex::new(initial.map(|v| (v, stale))),
            clock,
            created: AtomicUsize::new(0),
        })
    }

    fn get(&self) -> Got<usize> {
        self.store.lock().unwrap().ok_or(NeedRegeneration)
    }

    fn enter(&self) -> usize {
        Lock::new(
            &self.mutex,
            || {
                let n = self.created.fetch_add(1, Ordering::SeqCst) + 1;
                *self.store.lock().unwrap() = Some((n, self.clock.now()));
                Ok::<_, Infallible>(n)
            },
            || self.get(),
            Some(EXPIRY),
        )
        .with_clock(&self.clock)
        .enter()
        .unwrap()
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// A missing value: callers wait for one creator, then read its value.
#[test]
fn missing_value_is_created_once_and_waiters_get_it() {
    model(|| {
        let shared = Shared::new(None);
        let other = {
            let shared = shared.clone();
            thread::spawn(move || shared.enter())
        };
        let here = shared.enter();
        let there = other.join().unwrap();
        assert_eq!(shared.created.load(Ordering::SeqCst), 1);
        assert_eq!((here, there), (1, 1));
    });
}

/// An expired value: one caller regenerates; the other gets the stale value or
/// the new one, and the re-read after the try-lock stops a second regeneration.
#[test]
fn expired_value_is_regenerated_once() {
    model(|| {
        let shared = Shared::new(Some(0));
        let other = {
            let shared = shared.clone();
            thread::spawn(move || shared.enter())
        };
        let here = shared.enter();
        let there = other.join().unwrap();
        assert_eq!(shared.created.load(Ordering::SeqCst), 1);
        assert!(here <= 1 && there <= 1 && here + there >= 1);
    });
}

/// The owned guard can be released by another thread (a background creator), and a blocked
/// waiter then proceeds.
#[test]
fn guard_released_on_another_thread_wakes_a_waiter() {
    model(|| {
        let shared = Shared::new(Some(0));
        let guard = dogpile_runtime::lock::OwnedMutexGuard::acquire(shared.mutex.clone()).unwrap();
        let releaser = thread::spawn(move || drop(guard));
        let waiter = {
            let shared = shared.clone();
            thread::spawn(move || {
                let _g =
                    dogpile_runtime::lock::OwnedMutexGuard::acquire(shared.mutex.clone()).unwrap();
            })
        };
        releaser.join().unwrap();
        waiter.join().unwrap();
    });
}

/// A writer excludes readers, readers may overlap, and a released writer lets them in.
#[test]
fn read_write_mutex_excludes_writer_from_readers() {
    model(|| {
        let rw = Arc::new(ReadWriteMutex::new());
        let readers = Arc::new(AtomicUsize::new(0));
        let writing = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (rw, readers, writing) = (rw.clone(), readers.clone(), writing.clone());
            thread::spawn(move || {
                let _r = rw.read();
                readers.fetch_add(1, Ordering::SeqCst);
                assert_eq!(writing.load(Ordering::SeqCst), 0);
                readers.fetch_sub(1, Ordering::SeqCst);
            })
        };
        {
            let _w = rw.write();
            writing.fetch_add(1, Ordering::SeqCst);
            assert_eq!(readers.load(Ordering::SeqCst), 0);
            writing.fetch_sub(1, Ordering::SeqCst);
        }
        reader.join().unwrap();
        assert!(rw.try_write().is_some());
    });
}

/// The explicit calls: a non-blocking read fails while a writer is in, and succeeds after.
#[test]
fn read_write_mutex_non_blocking_calls() {
    model(|| {
        let rw = Arc::new(ReadWriteMutex::new());
        let writer = {
            let rw = rw.clone();
            thread::spawn(move || {
                assert!(rw.acquire_write_lock(true));
                rw.release_write_lock().unwrap();
            })
        };
        if rw.acquire_read_lock(false) {
            rw.release_read_lock().unwrap();
        }
        writer.join().unwrap();
        assert!(rw.acquire_read_lock(false));
        rw.release_read_lock().unwrap();
    });
}

/// A stray explicit release while another thread reads through a guard is refused, and the
/// guard's own release still lets a writer in: the count is never corrupted.
#[test]
fn read_write_mutex_explicit_release_beside_a_guard() {
    model(|| {
        let rw = Arc::new(ReadWriteMutex::new());
        let reader = {
            let rw = rw.clone();
            thread::spawn(move || {
                let _r = rw.read();
            })
        };
        let stray = {
            let rw = rw.clone();
            thread::spawn(move || rw.release_read_lock())
        };
        {
            let _w = rw.write();
        }
        reader.join().unwrap();
        assert!(stray.join().unwrap().is_err());
        assert!(rw.try_write().is_some());
    });
}

/// Concurrent gets of one identifier while it is held return the same object; the creator runs
/// once for it.
#[test]
fn name_registry_shares_one_object_while_held() {
    model(|| {
        let made = Arc::new(AtomicUsize::new(0));
        let registry = {
            let made = made.clone();
            Arc::new(NameRegistry::new(move |_: &u8| {
                made.fetch_add(1, Ordering::SeqCst);
            }))
        };
        let other = {
            let registry = registry.clone();
            thread::spawn(move || registry.get(&1))
        };
        let here = registry.get(&1);
        let there = other.join().unwrap();
        assert!(Arc::ptr_eq(&here, &there));
        assert_eq!(made.load(Ordering::SeqCst), 1);
        drop((here, there));
        assert_eq!(registry.len(), 0);
    });
}

/// A get racing with the drop of the last holder returns either the old object (still alive)
/// or a new one, never a dead one.
#[test]
fn name_registry_get_racing_a_drop() {
    model(|| {
        let registry = Arc::new(NameRegistry::new(|id: &u8| *id));
        let first = registry.get(&1);
        let dropper = thread::spawn(move || drop(first));
        let again = registry.get(&1);
        dropper.join().unwrap();
        assert_eq!(*again, 1);
        assert_eq!(registry.len(), 1);
    });
}

/// A release racing with a get of the same identifier: the getter's object keeps its entry
/// while held (it is the releaser's, which is then not the last, or a new one), and once both
/// are given back the registry is empty, in every order.
#[test]
fn name_registry_release_racing_a_get() {
    model(|| {
        let registry = Arc::new(NameRegistry::new(|id: &u8| *id));
        let first = registry.get(&1);
        let releaser = {
            let registry = registry.clone();
            thread::spawn(move || registry.release(&1, first))
        };
        let again = registry.get(&1);
        releaser.join().unwrap();
        assert_eq!(registry.entries(), 1);
        assert_eq!(*again, 1);
        registry.release(&1, again);
        assert_eq!(registry.entries(), 0);
    });
}

/// An async waiter's registration and the holder's release, in any order: a waiter told
/// `Registered` is always woken; one told `Free` finds the mutex free.
#[test]
fn a_registered_waker_is_never_missed_by_a_release() {
    use dogpile_runtime::lock::{RawMutex, WakeOnRelease};
    use loom::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    loom::model(|| {
        let mutex = Arc::new(LocalMutex::new());
        mutex.acquire().unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waiter = {
            let (mutex, flag) = (mutex.clone(), flag.clone());
            thread::spawn(move || mutex.wake_on_release(&Waker::from(flag)))
        };
        let holder = {
            let mutex = mutex.clone();
            thread::spawn(move || mutex.release().unwrap())
        };
        holder.join().unwrap();
        match waiter.join().unwrap() {
            WakeOnRelease::Registered => assert!(flag.0.load(Ordering::SeqCst), "missed wake-up"),
            WakeOnRelease::Free => assert!(mutex.try_acquire().unwrap()),
            WakeOnRelease::Unsupported => unreachable!("LocalMutex wakes its waiters"),
        }
    });
}

// ---- the protocol through a region ----------------------------------------------------------

use dogpile_runtime::region::{Stamp, Store};
use dogpile_runtime::{BackendError, Region};

/// A store that loom sees: the in-memory store's map is not instrumented, so loom's reduction
/// would treat its reads and writes as independent of each other and never interleave them.
#[derive(Default)]
struct LoomStore(Mutex<Vec<(u8, usize, Stamp)>>);

impl Store<u8, usize> for LoomStore {
    fn get(&self, key: &u8) -> Result<Option<(usize, Stamp)>, BackendError> {
        let map = self.0.lock().unwrap();
        Ok(map.iter().find(|e| e.0 == *key).map(|e| (e.1, e.2)))
    }

    fn put(&self, key: &u8, value: &usize, stamp: Stamp) -> Result<(), BackendError> {
        let mut map = self.0.lock().unwrap();
        map.retain(|e| e.0 != *key);
        map.push((*key, *value, stamp));
        Ok(())
    }

    fn restamp(&self, key: &u8, from: Stamp, to: Stamp) -> Result<bool, BackendError> {
        let mut map = self.0.lock().unwrap();
        Ok(match map.iter_mut().find(|e| e.0 == *key && e.2 == from) {
            Some(entry) => {
                entry.2 = to;
                true
            }
            None => false,
        })
    }

    fn remove(&self, key: &u8) -> Result<(), BackendError> {
        self.0.lock().unwrap().retain(|e| e.0 != *key);
        Ok(())
    }

    fn clear(&self) -> Result<(), BackendError> {
        self.0.lock().unwrap().clear();
        Ok(())
    }

    fn count(&self) -> Option<usize> {
        Some(self.0.lock().unwrap().len())
    }
}

fn region(clock: &Arc<ManualClock>) -> Region<u8, usize, LoomStore> {
    Region::builder()
        .expiry(EXPIRY)
        .clock(clock.clone())
        .store(LoomStore::default())
        .build()
        .unwrap()
}

/// Two callers of a region on a missing key: one creator, both get its value.
#[test]
fn region_creates_a_missing_value_once() {
    model(|| {
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000_000)));
        let region = region(&clock);
        let created = Arc::new(AtomicUsize::new(0));
        let call = {
            let (region, created) = (region.clone(), created.clone());
            move || {
                region.get_with(&1, || {
                    created.fetch_add(1, Ordering::SeqCst);
                    7
                })
            }
        };
        let other = thread::spawn(call.clone());
        assert_eq!(call(), 7);
        assert_eq!(other.join().unwrap(), 7);
        assert_eq!(created.load(Ordering::SeqCst), 1);
    });
}

/// Two callers of a region on an expired key: one regenerates; the other gets the stale value
/// or the new one, never a second regeneration.
#[test]
fn region_regenerates_an_expired_value_once() {
    model(|| {
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000_000)));
        let region = region(&clock);
        region.insert(&1, 0).unwrap();
        clock.advance(EXPIRY * 2);
        let created = Arc::new(AtomicUsize::new(0));
        let call = {
            let (region, created) = (region.clone(), created.clone());
            move || region.get_with(&1, || created.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let other = thread::spawn(call.clone());
        let (here, there) = (call(), other.join().unwrap());
        assert_eq!(created.load(Ordering::SeqCst), 1);
        assert!(here <= 1 && there <= 1 && here + there >= 1);
    });
}

/// A value stored before `invalidate_all` returns is gone for every read that starts after it,
/// in any thread, even with a clock that does not move (as a coarse clock within one tick);
/// a value created by a caller racing the invalidation is either gone or its own, never the
/// old one.
#[test]
fn invalidate_all_covers_every_value_stored_before_it() {
    model(|| {
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000_000)));
        let region = region(&clock);
        let writer = {
            let region = region.clone();
            thread::spawn(move || region.insert(&1, 1).unwrap())
        };
        let invalidator = {
            let region = region.clone();
            thread::spawn(move || {
                writer.join().unwrap();
                region.invalidate_all().unwrap();
            })
        };
        let racer = {
            let region = region.clone();
            thread::spawn(move || region.get_with(&2, || 20))
        };
        invalidator.join().unwrap();
        assert_eq!(region.peek(&1), None);
        assert_eq!(region.get_with(&1, || 2), 2);
        assert_eq!(racer.join().unwrap(), 20);
        assert!(matches!(region.peek(&2), None | Some(20)));
    });
}

// ---- the process's table of striped lock files ----------------------------------------------

use dogpile_runtime::backend::file::process::{Locked, StripeId, Table};
use loom::sync::Condvar;
use std::path::Path;

/// A stand-in for `flock` on two stripes' files: a stripe is held by at most one open file, of
/// this process or another, and a locker waits until it is free. It fails the model if a
/// thread of this process waits for a stripe its own process holds, or if two of its threads
/// ask for one stripe at once: the table must never let either happen.
#[derive(Default)]
struct Flock {
    state: Mutex<FlockState>,
    freed: Condvar,
}

#[derive(Default)]
struct FlockState {
    /// Who holds each stripe: `Some(true)` this process, `Some(false)` the other one.
    held: [Option<bool>; 2],
    /// Threads of this process asking for each stripe.
    asking: [usize; 2],
}

impl Flock {
    /// Locks `stripe` for this process (`ours`) or the other one.
    fn lock(self: &Arc<Self>, stripe: usize, wait: bool, ours: bool) -> Locked<FlockHeld> {
        let mut state = self.state.lock().unwrap();
        if ours {
            assert_eq!(
                state.asking[stripe], 0,
                "two threads ask the OS for one stripe"
            );
            state.asking[stripe] += 1;
        }
        while let Some(holder) = state.held[stripe] {
            assert!(
                !(ours && holder),
                "a thread waits in the OS for its own process"
            );
            if !wait {
                state.asking[stripe] -= usize::from(ours);
                return Locked::Busy;
            }
            state = self.freed.wait(state).unwrap();
        }
        state.held[stripe] = Some(ours);
        state.asking[stripe] -= usize::from(ours);
        Locked::Held(FlockHeld(self.clone(), stripe))
    }

    fn free(&self) -> bool {
        self.state.lock().unwrap().held == [None, None]
    }
}

/// A stripe locked in the stand-in, until dropped.
struct FlockHeld(Arc<Flock>, usize);

impl Drop for FlockHeld {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().held[self.1] = None;
        self.0.freed.notify_all();
    }
}

fn take(table: &Table<FlockHeld>, os: &Arc<Flock>, (id, key): &(StripeId, u64)) {
    let stripe = id.1 as usize;
    let lock = |wait| Ok(os.lock(stripe, wait, true));
    let taken = table.acquire(id, *key, true, lock, |_| Ok(true));
    assert!(taken.unwrap());
}

/// The nesting that deadlocked: one thread holds `a` and asks for `c`, the other holds `c` and
/// asks for `d`; `a` and `d` share a stripe, which another process holds until some point. In
/// every interleaving both finish: a thread waits in the OS only while no other thread of its
/// process holds or is asking for the stripe; the others wait on the table and take their key
/// once the stripe is in.
#[test]
fn striped_table_nested_creators_never_wait_for_their_own_process() {
    model(|| {
        let os = Arc::new(Flock::default());
        let table = Arc::new(Table::new());
        let dir: Arc<Path> = Path::new("/locks").into();
        let (a, c, d) = (((dir.clone(), 0), 1), ((dir.clone(), 1), 2), ((dir, 0), 3));
        let Locked::Held(other_process) = os.lock(0, false, false) else {
            unreachable!("free at first")
        };
        let other = thread::spawn(move || drop(other_process));
        let nest = |outer: (StripeId, u64), inner: (StripeId, u64)| {
            let (table, os) = (table.clone(), os.clone());
            thread::spawn(move || {
                take(&table, &os, &outer);
                take(&table, &os, &inner);
                assert!(table.release(&inner.0, inner.1));
                assert!(table.release(&outer.0, outer.1));
            })
        };
        let first = nest(a, c.clone());
        let second = nest(c, d);
        other.join().unwrap();
        first.join().unwrap();
        second.join().unwrap();
        assert!(os.free());
    });
}

/// A try beside a thread that waits in the OS for the stripe: refused at once (the stripe is
/// being taken), never a second asker of the OS; once the stripe is in, a try of another key
/// on it succeeds without the OS.
#[test]
fn striped_table_a_try_never_asks_the_os_beside_a_waiter() {
    model(|| {
        let os = Arc::new(Flock::default());
        let table = Arc::new(Table::new());
        let id: StripeId = (Path::new("/locks").into(), 0);
        let Locked::Held(other_process) = os.lock(0, false, false) else {
            unreachable!("free at first")
        };
        let waiter = {
            let (table, os, id) = (table.clone(), os.clone(), id.clone());
            thread::spawn(move || {
                take(&table, &os, &(id.clone(), 1));
                assert!(table.release(&id, 1));
            })
        };
        let lock = |wait| Ok(os.lock(0, wait, true));
        let tried = table.acquire(&id, 2, false, lock, |_| Ok(true));
        drop(other_process);
        if tried.unwrap() {
            assert!(table.release(&id, 2));
        }
        waiter.join().unwrap();
        assert!(os.free());
    });
}
