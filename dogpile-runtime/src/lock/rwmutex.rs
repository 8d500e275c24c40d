//! [`ReadWriteMutex`]: many readers or one writer, guarding a critical section (not data).

use std::fmt;

use crate::sync::{current_thread, Condvar, Mutex, MutexGuard, ThreadId};
use crate::ReleaseError;

/// A mutex that admits many readers or one writer, with no data inside.
///
/// It guards a critical section, such as swapping a file that readers use: the creator of a new
/// value takes the write lock to switch it in once the readers of the old one are done. A
/// writer that is waiting blocks new readers, so a stream of readers cannot starve it.
///
/// | state                          | read              | write                         |
/// |--------------------------------|-------------------|-------------------------------|
/// | free                           | → reading (1)     | → writing                     |
/// | reading (n)                    | → reading (n + 1) | claims, waits for n readers   |
/// | writer claimed (waiting/writing)| waits            | waits                         |
///
/// RAII guards ([`read`](Self::read), [`write`](Self::write)) are the main API. Python dogpile.core's
/// explicit calls exist too; a release that matches no acquire is a [`ReleaseError`]. The two are
/// counted apart: an explicit release matches only an explicit acquire, never a lock that a guard
/// holds (the guard releases that one when it drops), so mixing them cannot corrupt the count.
///
/// ```
/// use dogpile_runtime::lock::ReadWriteMutex;
///
/// let rw = ReadWriteMutex::new();
/// {
///     let _a = rw.read();
///     let _b = rw.read();
///     assert!(rw.try_write().is_none());
/// }
/// let _w = rw.write();
/// assert!(rw.try_read().is_none());
/// ```
pub struct ReadWriteMutex {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Read locks held by [`ReadGuard`]s.
    guard_readers: usize,
    /// Read locks taken with `acquire_read_lock` and not yet released with `release_read_lock`.
    explicit_readers: usize,
    /// The writer that holds the lock, or has claimed it and waits for readers to leave.
    writer: Option<Writer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Writer {
    thread: ThreadId,
    /// Whether a guard holds it (released by its drop) or the explicit calls do.
    by_guard: bool,
}

impl State {
    fn readers(&self) -> usize {
        self.guard_readers + self.explicit_readers
    }
}

impl Default for ReadWriteMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadWriteMutex {
    /// A free mutex.
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// assert!(ReadWriteMutex::new().try_write().is_some());
    /// ```
    pub fn new() -> Self {
        ReadWriteMutex {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// Waits until no writer holds or claims the lock, then reads until the guard drops.
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// let rw = ReadWriteMutex::new();
    /// let guard = rw.read();
    /// drop(guard);
    /// ```
    pub fn read(&self) -> ReadGuard<'_> {
        self.acquire_read(true, true);
        ReadGuard { rw: self }
    }

    /// Reads if no writer holds or claims the lock; `None` otherwise, without waiting.
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// let rw = ReadWriteMutex::new();
    /// let _w = rw.write();
    /// assert!(rw.try_read().is_none());
    /// ```
    pub fn try_read(&self) -> Option<ReadGuard<'_>> {
        self.acquire_read(false, true)
            .then(|| ReadGuard { rw: self })
    }

    /// Waits until it is the only writer and every reader has left, then writes until the guard
    /// drops. New readers wait from the moment it starts waiting.
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// let rw = ReadWriteMutex::new();
    /// let guard = rw.write();
    /// assert!(rw.try_write().is_none());
    /// drop(guard);
    /// ```
    pub fn write(&self) -> WriteGuard<'_> {
        self.acquire_write(true, true);
        WriteGuard { rw: self }
    }

    /// Writes if there are no readers and no writer; `None` otherwise, without waiting.
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// let rw = ReadWriteMutex::new();
    /// let _r = rw.read();
    /// assert!(rw.try_write().is_none());
    /// ```
    pub fn try_write(&self) -> Option<WriteGuard<'_>> {
        self.acquire_write(false, true)
            .then(|| WriteGuard { rw: self })
    }

    /// Python dogpile.core's explicit read acquire: with `wait`, blocks and returns `true`; without,
    /// returns `false` at once if a writer holds or claims the lock. Pair it with
    /// [`release_read_lock`](Self::release_read_lock).
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// let rw = ReadWriteMutex::new();
    /// assert!(rw.acquire_read_lock(false));
    /// rw.release_read_lock().unwrap();
    /// ```
    pub fn acquire_read_lock(&self, wait: bool) -> bool {
        self.acquire_read(wait, false)
    }

    /// Python dogpile.core's explicit write acquire: with `wait`, blocks and returns `true`; without,
    /// returns `false` at once if anyone reads or writes. Pair it with
    /// [`release_write_lock`](Self::release_write_lock) on the same thread.
    ///
    /// ```
    /// # use dogpile_runtime::lock::ReadWriteMutex;
    /// let rw = ReadWriteMutex::new();
    /// assert!(rw.acquire_write_lock(false));
    /// assert!(!rw.acquire_read_lock(false));
    /// rw.release_write_lock().unwrap();
    /// ```
    pub fn acquire_write_lock(&self, wait: bool) -> bool {
        self.acquire_write(wait, false)
    }

    /// Releases one read lock taken with [`acquire_read_lock`](Self::acquire_read_lock). A read
    /// lock held by a [`ReadGuard`] does not count: the guard releases it when dropped.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{ReadWriteMutex, ReleaseError};
    /// let rw = ReadWriteMutex::new();
    /// assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
    /// let guard = rw.read();
    /// assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
    /// drop(guard);
    /// assert!(rw.try_write().is_some());
    /// ```
    pub fn release_read_lock(&self) -> Result<(), ReleaseError> {
        let mut state = self.state.lock();
        if state.explicit_readers == 0 {
            return Err(ReleaseError::NotReadLocked);
        }
        state.explicit_readers -= 1;
        self.notify_if_drained(state);
        Ok(())
    }

    /// Releases the write lock, which this thread must hold through
    /// [`acquire_write_lock`](Self::acquire_write_lock) (a [`WriteGuard`] releases its own lock
    /// when dropped).
    ///
    /// ```
    /// # use dogpile_runtime::lock::{ReadWriteMutex, ReleaseError};
    /// let rw = ReadWriteMutex::new();
    /// assert!(rw.acquire_write_lock(true));
    /// let other = std::thread::scope(|s| s.spawn(|| rw.release_write_lock()).join().unwrap());
    /// assert_eq!(other, Err(ReleaseError::NotWriteLocker));
    /// rw.release_write_lock().unwrap();
    /// let guard = rw.write();
    /// assert_eq!(rw.release_write_lock(), Err(ReleaseError::NotWriteLocker));
    /// drop(guard);
    /// ```
    pub fn release_write_lock(&self) -> Result<(), ReleaseError> {
        let mut state = self.state.lock();
        let this = Writer {
            thread: current_thread().id(),
            by_guard: false,
        };
        if state.writer != Some(this) {
            return Err(ReleaseError::NotWriteLocker);
        }
        state.writer = None;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    fn acquire_read(&self, wait: bool, by_guard: bool) -> bool {
        let mut state = self.state.lock();
        if state.writer.is_some() {
            if !wait {
                return false;
            }
            while state.writer.is_some() {
                state = self.changed.wait(state);
            }
        }
        if by_guard {
            state.guard_readers += 1;
        } else {
            state.explicit_readers += 1;
        }
        true
    }

    fn acquire_write(&self, wait: bool, by_guard: bool) -> bool {
        let mut state = self.state.lock();
        if state.writer.is_some() || state.readers() > 0 {
            if !wait {
                return false;
            }
            while state.writer.is_some() {
                state = self.changed.wait(state);
            }
        }
        // Claim first, so that readers arriving from now on wait behind this writer.
        state.writer = Some(Writer {
            thread: current_thread().id(),
            by_guard,
        });
        while state.readers() > 0 {
            state = self.changed.wait(state);
        }
        true
    }

    fn notify_if_drained(&self, state: MutexGuard<'_, State>) {
        let wake = state.readers() == 0 && state.writer.is_some();
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }

    fn release_read_guard(&self) {
        let mut state = self.state.lock();
        // Only guards touch this count, and each guard added one.
        state.guard_readers -= 1;
        self.notify_if_drained(state);
    }

    fn release_write_guard(&self) {
        // The guard proves ownership even if it moved to another thread, and no explicit
        // release can have taken it away.
        self.state.lock().writer = None;
        self.changed.notify_all();
    }
}

impl fmt::Debug for ReadWriteMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ReadWriteMutex")
            .field("readers", &state.readers())
            .field("writer", &state.writer.is_some())
            .finish()
    }
}

/// A read lock on a [`ReadWriteMutex`], released when dropped.
///
/// ```
/// # use dogpile_runtime::lock::ReadWriteMutex;
/// let rw = ReadWriteMutex::new();
/// let r = rw.read();
/// assert!(rw.try_write().is_none());
/// drop(r);
/// assert!(rw.try_write().is_some());
/// ```
#[must_use = "the read lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ReadGuard<'a> {
    rw: &'a ReadWriteMutex,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.rw.release_read_guard();
    }
}

/// The write lock on a [`ReadWriteMutex`], released when dropped.
///
/// ```
/// # use dogpile_runtime::lock::ReadWriteMutex;
/// let rw = ReadWriteMutex::new();
/// let w = rw.write();
/// assert!(rw.try_read().is_none());
/// drop(w);
/// assert!(rw.try_read().is_some());
/// ```
#[must_use = "the write lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct WriteGuard<'a> {
    rw: &'a ReadWriteMutex,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.rw.release_write_guard();
    }
}
