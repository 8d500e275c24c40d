//! What this process holds in its lock directories, and which of its threads asks the OS.
//!
//! Keys are striped over a fixed set of lock files, so two keys may share a file. The OS lock
//! belongs to an open file: a thread that waited in `flock` for a file its own process holds
//! would wait for keys it does not want, and with nested creators (one holds `a` and waits for
//! `c`, the other holds `c` and waits in `flock` for `d`, on `a`'s file) forever. So the process
//! locks a stripe once and records here each key held through it, unlocking the file with the
//! last key; and at most one thread of the process asks the OS for a stripe at a time. The
//! others wait on this table and look again when it changes, so a thread only ever waits for
//! its own key, or for another process.
//!
//! | the stripe in the table          | a thread asking for key `k` on it               |
//! |----------------------------------|-------------------------------------------------|
//! | absent                           | marks it *locking* and asks the OS (may wait)   |
//! | locking (another thread asks)    | waits on the table; a try is refused            |
//! | held, `k` not among its keys     | takes `k` at once                               |
//! | held, `k` among its keys         | waits on the table; a try is refused            |
//!
//! Lock files are made under the directory's exclusive lock, which waits for every shared one,
//! this process's too. So a thread makes them only when no other stripe of the directory is in
//! the table (and refuses otherwise: it would wait for its own process); meanwhile the
//! directory is *creating*, and the other threads asking for its stripes wait on the table.
//!
//! The table knows nothing of files: the caller passes how to lock a stripe and how to make
//! the directory's files, so the same code runs over `flock` and, in the model checks, over a
//! stand-in for the OS and another process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::sync::{Condvar, Mutex};
use crate::BackendError;

/// A stripe: its directory (absolute) and its number there.
pub type StripeId = (Arc<Path>, u32);

/// What the OS answered when asked for a stripe's lock.
#[derive(Debug)]
pub enum Locked<H> {
    /// Locked, until `H` is dropped.
    Held(H),
    /// Held by another process (only when asked not to wait).
    Busy,
    /// The stripe's file does not exist: the directory's files must be made first.
    Missing,
}

/// The stripes this process holds, by directory, and the keys held through each. `H` is a
/// locked stripe (its drop unlocks it).
pub struct Table<H> {
    state: Mutex<State<H>>,
    /// Notified whenever a stripe, a key or a directory changes state.
    changed: Condvar,
}

struct State<H> {
    stripes: HashMap<StripeId, Stripe<H>>,
    dirs: HashMap<Arc<Path>, Dir>,
}

enum Stripe<H> {
    /// A thread of this process is asking the OS for it; no other thread may.
    Locking,
    /// Locked by this process, for these keys.
    Held { _held: H, keys: Vec<u64> },
}

#[derive(Default)]
struct Dir {
    /// Stripes of the directory in the table, locking or held.
    stripes: usize,
    /// A thread is making the directory's files, under its exclusive lock.
    creating: bool,
}

/// What a thread asking for a key does next, as the table decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The key is now held by the caller.
    Taken,
    /// Not without waiting, and the caller would not wait.
    Busy,
    /// Wait for the table to change, then ask again.
    Wait,
    /// The stripe is marked locking for the caller: ask the OS for it.
    Lock,
}

impl<H> State<H> {
    fn new() -> Self {
        State {
            stripes: HashMap::new(),
            dirs: HashMap::new(),
        }
    }

    /// Decides for a thread that wants `key` on `id`. Changes nothing unless it answers
    /// `Taken` or `Lock`.
    fn next(&mut self, id: &StripeId, key: u64, wait: bool) -> Next {
        let later = if wait { Next::Wait } else { Next::Busy };
        if self.dirs.get(&id.0).is_some_and(|dir| dir.creating) {
            return later;
        }
        match self.stripes.get_mut(id) {
            None => {
                self.stripes.insert(id.clone(), Stripe::Locking);
                self.dirs.entry(Arc::clone(&id.0)).or_default().stripes += 1;
                Next::Lock
            }
            Some(Stripe::Locking) => later,
            Some(Stripe::Held { keys, .. }) if keys.contains(&key) => later,
            Some(Stripe::Held { keys, .. }) => {
                keys.push(key);
                Next::Taken
            }
        }
    }

    /// The OS answered the thread that marked `id` locking: held for `key`, or not at all.
    fn locked(&mut self, id: &StripeId, key: u64, held: Option<H>) {
        match held {
            Some(held) => {
                let stripe = Stripe::Held {
                    _held: held,
                    keys: vec![key],
                };
                self.stripes.insert(id.clone(), stripe);
            }
            None => drop(self.forget(id)),
        }
    }

    /// Removes a stripe from the table (dropping its lock, if held).
    fn forget(&mut self, id: &StripeId) -> Option<Stripe<H>> {
        let stripe = self.stripes.remove(id)?;
        if let Some(dir) = self.dirs.get_mut(&id.0) {
            dir.stripes -= 1;
            if dir.stripes == 0 && !dir.creating {
                self.dirs.remove(&id.0);
            }
        }
        Some(stripe)
    }

    /// The thread locking `id` found its file missing: it may make the directory's files only
    /// if no other stripe of the directory is in the table (their shared locks would make it
    /// wait for its own process).
    fn create(&mut self, id: &StripeId) -> Result<(), BackendError> {
        let dir = self.dirs.entry(Arc::clone(&id.0)).or_default();
        if dir.stripes > 1 || dir.creating {
            return Err(BackendError::new(format!(
                "a lock file in {} is missing (a cleaner removed it?) and cannot be made again \
                 while this process holds another lock in that directory (making it would wait \
                 for that lock); it is made again once they are released",
                id.0.display()
            )));
        }
        dir.creating = true;
        Ok(())
    }

    fn created(&mut self, id: &StripeId) {
        if let Some(dir) = self.dirs.get_mut(&id.0) {
            dir.creating = false;
        }
    }

    /// Releases `key` on `id`: `None` if this process does not hold it; else, with the
    /// stripe's last key, the stripe's lock, which the caller drops under the table's lock.
    fn release(&mut self, id: &StripeId, key: u64) -> Option<Option<Stripe<H>>> {
        let Some(Stripe::Held { keys, .. }) = self.stripes.get_mut(id) else {
            return None;
        };
        let at = keys.iter().position(|&k| k == key)?;
        keys.swap_remove(at);
        if !keys.is_empty() {
            return Some(None);
        }
        Some(self.forget(id))
    }
}

impl<H> Default for Table<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H> Table<H> {
    /// An empty table.
    pub fn new() -> Self {
        Table {
            state: Mutex::new(State::new()),
            changed: Condvar::new(),
        }
    }

    /// Takes `key` on stripe `id`: at once if this process holds the stripe (and not this key),
    /// else through `lock`, which asks the OS for the stripe, waiting if `wait`, and `create`,
    /// which makes the directory's files (`false`: not without waiting, and `wait` is false).
    /// `Ok(false)` if `wait` is false and the key or stripe is held, or being taken.
    ///
    /// # Errors
    ///
    /// What `lock` or `create` returned, or a missing file that cannot be made while this
    /// process holds another stripe of the directory.
    pub fn acquire(
        &self,
        id: &StripeId,
        key: u64,
        wait: bool,
        lock: impl FnMut(bool) -> Result<Locked<H>, BackendError>,
        create: impl FnMut(bool) -> Result<bool, BackendError>,
    ) -> Result<bool, BackendError> {
        let mut state = self.state.lock();
        loop {
            match state.next(id, key, wait) {
                Next::Taken => return Ok(true),
                Next::Busy => return Ok(false),
                Next::Wait => state = self.changed.wait(state),
                Next::Lock => {
                    drop(state);
                    return self.lock(id, key, wait, lock, create);
                }
            }
        }
    }

    /// Asks the OS for the stripe that `next` marked locking for this thread, the only one of
    /// the process that may.
    #[cold]
    fn lock(
        &self,
        id: &StripeId,
        key: u64,
        wait: bool,
        mut lock: impl FnMut(bool) -> Result<Locked<H>, BackendError>,
        mut create: impl FnMut(bool) -> Result<bool, BackendError>,
    ) -> Result<bool, BackendError> {
        // Unmarks the stripe whatever happens below, a panic included.
        let mut marked = Marked {
            table: self,
            id,
            key,
            held: None,
        };
        loop {
            match lock(wait)? {
                Locked::Held(held) => {
                    marked.held = Some(held);
                    return Ok(true);
                }
                Locked::Busy => return Ok(false),
                Locked::Missing => {
                    self.state.lock().create(id)?;
                    let creating = Creating { table: self, id };
                    let made = create(wait);
                    drop(creating);
                    if !made? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Releases `key` on stripe `id`; the stripe's lock is dropped with its last key. `false`
    /// if this process does not hold the key there.
    pub fn release(&self, id: &StripeId, key: u64) -> bool {
        let mut state = self.state.lock();
        let Some(last) = state.release(id, key) else {
            return false;
        };
        // Unlocked under the table's lock, so a thread that finds no entry finds it free.
        drop(last);
        drop(state);
        self.changed.notify_all();
        true
    }
}

/// A stripe marked locking by this thread; dropped, it records what the OS answered.
struct Marked<'a, H> {
    table: &'a Table<H>,
    id: &'a StripeId,
    key: u64,
    held: Option<H>,
}

impl<H> Drop for Marked<'_, H> {
    fn drop(&mut self) {
        let mut state = self.table.state.lock();
        state.locked(self.id, self.key, self.held.take());
        drop(state);
        self.table.changed.notify_all();
    }
}

/// A directory whose files this thread makes; dropped, the others may go on.
struct Creating<'a, H> {
    table: &'a Table<H>,
    id: &'a StripeId,
}

impl<H> Drop for Creating<'_, H> {
    fn drop(&mut self) {
        self.table.state.lock().created(self.id);
        self.table.changed.notify_all();
    }
}

#[cfg(all(test, not(loom)))]
#[path = "process_tests.rs"]
mod tests;
