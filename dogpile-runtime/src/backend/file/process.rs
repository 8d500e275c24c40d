//! What this process holds in its lock directories.
//!
//! Keys are striped over a fixed set of lock files, so two keys may share a file. Two threads of
//! one process taking such keys must not lock the file twice (the OS lock belongs to an open
//! file, so the second would wait for the first, and a thread nesting two keys of one stripe
//! would wait for itself). Instead the process locks a stripe once, and each key held through it
//! is recorded here; the file is unlocked when the last key is released. Other processes see
//! the stripe held as long as any key on it is.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use fs4::fs_std::FileExt;
use std::sync::LazyLock;

use super::os;
use super::Config;
use crate::sync::{current_thread, Condvar, Mutex, MutexGuard, ThreadId};
use crate::BackendError;

/// A stripe's lock file, locked, with its directory's shared lock; both are released on drop.
pub(super) struct Held {
    _dir: os::Dir,
    file: File,
}

impl Held {
    pub(super) fn new(dir: os::Dir, file: File) -> Held {
        Held { _dir: dir, file }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Closing the files releases both locks too; unlocking first makes it immediate.
        let _ = FileExt::unlock(&self.file);
    }
}

struct Table {
    state: Mutex<State>,
    /// Notified whenever a key is released.
    released: Condvar,
}

#[derive(Default)]
struct State {
    stripes: HashMap<(Arc<Path>, u32), Stripe>,
    /// How many keys each thread took in each directory (and has not released yet).
    threads: HashMap<(Arc<Path>, ThreadId), usize>,
}

struct Stripe {
    /// Kept for its drop, which unlocks the file.
    _held: Held,
    /// The keys held through this stripe in this process, with the thread that took each.
    keys: Vec<(u64, ThreadId)>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    state: Mutex::new(State::default()),
    released: Condvar::new(),
});

impl State {
    fn count(&mut self, dir: &Arc<Path>, thread: ThreadId, up: bool) {
        let id = (Arc::clone(dir), thread);
        if up {
            *self.threads.entry(id).or_insert(0) += 1;
        } else if let Some(n) = self.threads.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.threads.remove(&id);
            }
        }
    }
}

/// Takes `key` on stripe `stripe` of `config`'s directory: at once if this process holds the
/// stripe already (and not this key), else by locking the stripe's file. `Ok(false)` if `wait`
/// is false and the key or stripe is held elsewhere.
pub(super) fn acquire(
    config: &Config,
    stripe: u32,
    key: u64,
    wait: bool,
) -> Result<bool, BackendError> {
    let id = (Arc::clone(&config.dir), stripe);
    let thread = current_thread().id();
    let mut state = TABLE.state.lock();
    loop {
        if let Some(held) = state.stripes.get_mut(&id) {
            if held.keys.iter().any(|&(k, _)| k == key) {
                // Another thread (or handle) of this process has this very key.
                if !wait {
                    return Ok(false);
                }
                state = TABLE.released.wait(state);
                continue;
            }
            held.keys.push((key, thread));
            state.count(&config.dir, thread, true);
            return Ok(true);
        }
        // Lock the file without blocking the other threads' bookkeeping. Another thread of
        // this process locking the same stripe meanwhile waits for this one's release (the OS
        // lock excludes open files, not processes), never beside it.
        drop(state);
        let held = os::lock_stripe(config, stripe, wait)?;
        state = TABLE.state.lock();
        let Some(held) = held else {
            return Ok(false);
        };
        let previous = state.stripes.insert(
            id,
            Stripe {
                _held: held,
                keys: vec![(key, thread)],
            },
        );
        // Only one open file can hold the stripe's lock, so no other entry can exist.
        debug_assert!(previous.is_none());
        state.count(&config.dir, thread, true);
        return Ok(true);
    }
}

/// Releases `key` on stripe `stripe`; the stripe's file is unlocked with its last key. `false`
/// if this process does not hold the key.
pub(super) fn release(config: &Config, stripe: u32, key: u64) -> bool {
    let id = (Arc::clone(&config.dir), stripe);
    let mut state = TABLE.state.lock();
    let Some(held) = state.stripes.get_mut(&id) else {
        return false;
    };
    let Some(at) = held.keys.iter().position(|&(k, _)| k == key) else {
        return false;
    };
    let (_, thread) = held.keys.swap_remove(at);
    let last = held.keys.is_empty();
    state.count(&config.dir, thread, false);
    if last {
        // Unlocked under the table's lock, so a thread that finds no entry finds the file free.
        drop(state.stripes.remove(&id));
    }
    wake(state);
    true
}

fn wake(state: MutexGuard<'_, State>) {
    drop(state);
    TABLE.released.notify_all();
}

/// Whether the calling thread holds a key in `dir` (so waiting for the directory's exclusive
/// lock would wait for itself).
pub(super) fn this_thread_holds(dir: &Arc<Path>) -> bool {
    let id = (Arc::clone(dir), current_thread().id());
    TABLE.state.lock().threads.contains_key(&id)
}
