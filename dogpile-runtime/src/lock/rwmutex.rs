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
/// explicit calls exist too; a release that matches no acquire is an [`ReleaseError`].
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
    readers: usize,
    /// The writer that holds the lock, or has claimed it and waits for readers to leave.
    writer: Option<ThreadId>,
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
        self.acquire_read_lock(true);
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
        self.acquire_read_lock(false)
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
        self.acquire_write_lock(true);
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
        self.acquire_write_lock(false)
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
        let mut state = self.state.lock();
        if state.writer.is_some() {
            if !wait {
                return false;
            }
            while state.writer.is_some() {
                state = self.changed.wait(state);
            }
        }
        state.readers += 1;
        true
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
        let mut state = self.state.lock();
        if state.writer.is_some() || state.readers > 0 {
            if !wait {
                return false;
            }
            while state.writer.is_some() {
                state = self.changed.wait(state);
            }
        }
        // Claim first, so that readers arriving from now on wait behind this writer.
        state.writer = Some(current_thread().id());
        while state.readers > 0 {
            state = self.changed.wait(state);
        }
        true
    }

    /// Releases one read lock taken with [`acquire_read_lock`](Self::acquire_read_lock).
    ///
    /// ```
    /// # use dogpile_runtime::lock::{ReadWriteMutex, ReleaseError};
    /// let rw = ReadWriteMutex::new();
    /// assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
    /// ```
    pub fn release_read_lock(&self) -> Result<(), ReleaseError> {
        let mut state = self.state.lock();
        if state.readers == 0 {
            return Err(ReleaseError::NotReadLocked);
        }
        state.readers -= 1;
        self.notify_if_drained(state);
        Ok(())
    }

    /// Releases the write lock, which this thread must hold.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{ReadWriteMutex, ReleaseError};
    /// let rw = ReadWriteMutex::new();
    /// assert!(rw.acquire_write_lock(true));
    /// let other = std::thread::scope(|s| s.spawn(|| rw.release_write_lock()).join().unwrap());
    /// assert_eq!(other, Err(ReleaseError::NotWriteLocker));
    /// rw.release_write_lock().unwrap();
    /// ```
    pub fn release_write_lock(&self) -> Result<(), ReleaseError> {
        let mut state = self.state.lock();
        if state.writer != Some(current_thread().id()) {
            return Err(ReleaseError::NotWriteLocker);
        }
        state.writer = None;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    fn notify_if_drained(&self, state: MutexGuard<'_, State>) {
        let wake = state.readers == 0 && state.writer.is_some();
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }

    fn release_read_guard(&self) {
        let mut state = self.state.lock();
        state.readers -= 1;
        self.notify_if_drained(state);
    }

    fn release_write_guard(&self) {
        // The guard proves ownership even if it moved to another thread.
        self.state.lock().writer = None;
        self.changed.notify_all();
    }
}

impl fmt::Debug for ReadWriteMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ReadWriteMutex")
            .field("readers", &state.readers)
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
