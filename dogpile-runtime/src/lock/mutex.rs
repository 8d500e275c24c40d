//! The dogpile mutex: a raw lock protocol ([`RawMutex`]), the in-process implementation
//! ([`LocalMutex`]) and the owned guard that releases it ([`OwnedMutexGuard`]).

use std::fmt;
use std::future::{ready, Future};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};
use crate::BackendError;

/// The lock protocol a [`Lock`](crate::Lock) needs from its mutex.
///
/// Unlike `std::sync::Mutex`, it guards no data and its release is not tied to the acquiring
/// thread: Python dogpile.core hands a held mutex to an async creator, which releases it elsewhere. That is
/// why it is a raw protocol (as in `lock_api`), with [`OwnedMutexGuard`] as its RAII face.
///
/// Implementations: [`LocalMutex`] for threads of one process; file and Redis mutexes for
/// processes and hosts. Errors are for mutexes that can fail (a file, a server).
///
/// ```
/// use dogpile_runtime::lock::{LocalMutex, RawMutex};
///
/// let m = LocalMutex::new();
/// assert!(m.try_acquire().unwrap());
/// assert!(!m.try_acquire().unwrap());
/// m.release().unwrap();
/// m.acquire().unwrap();
/// m.release().unwrap();
/// ```
pub trait RawMutex: Send + Sync {
    /// Takes the mutex if it is free, without waiting; `Ok(false)` if another holder has it.
    fn try_acquire(&self) -> Result<bool, BackendError>;

    /// Waits until the mutex is free, then takes it.
    fn acquire(&self) -> Result<(), BackendError>;

    /// Waits at most `timeout` for the mutex; `Ok(false)` if it was not taken in time.
    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError>;

    /// Releases the mutex, which the caller must hold (from any thread).
    fn release(&self) -> Result<(), BackendError>;

    /// For async waiters: asks to have `waker` woken when the mutex is next released, if it is
    /// held now. Checking and registering are one step, so a release cannot slip between them.
    ///
    /// The default, for mutexes that cannot notify (a file, a server), is
    /// [`WakeOnRelease::Unsupported`]: async waiters then try again after a short sleep.
    ///
    /// ```
    /// use dogpile_runtime::lock::{LocalMutex, RawMutex, WakeOnRelease};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::task::{Wake, Waker};
    ///
    /// struct Flag(AtomicBool);
    /// impl Wake for Flag {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.store(true, Ordering::SeqCst);
    ///     }
    /// }
    ///
    /// let m = LocalMutex::new();
    /// let flag = Arc::new(Flag(AtomicBool::new(false)));
    /// let waker = Waker::from(flag.clone());
    /// assert_eq!(m.wake_on_release(&waker), WakeOnRelease::Free);
    /// m.acquire().unwrap();
    /// assert_eq!(m.wake_on_release(&waker), WakeOnRelease::Registered);
    /// m.release().unwrap();
    /// assert!(flag.0.load(Ordering::SeqCst));
    /// ```
    fn wake_on_release(&self, waker: &Waker) -> WakeOnRelease {
        let _ = waker;
        WakeOnRelease::Unsupported
    }

    /// While held: what a store shared with other processes needs to refuse a write from a
    /// holder whose hold ran out (a lease that expired while its creator ran). `None` (the
    /// default) for mutexes whose hold cannot run out while held, as in-process ones.
    ///
    /// ```
    /// use dogpile_runtime::lock::{LocalMutex, RawMutex};
    /// let m = LocalMutex::new();
    /// m.acquire().unwrap();
    /// assert_eq!(m.fence(), None);
    /// # m.release().unwrap();
    /// ```
    fn fence(&self) -> Option<Fence> {
        None
    }
}

/// Proof of a hold on a mutex that can run out (a lease): the lock's name and the holder's
/// token. A store that shares a server with the mutex writes a creator's value only while the
/// lock still holds this token ([`Store::put_fenced`](crate::region::Store::put_fenced)), so a
/// creator that outlived its lease cannot overwrite the value of the one that came after it.
///
/// ```
/// use dogpile_runtime::lock::Fence;
/// let fence = Fence::new(b"users:lock:7".to_vec(), b"4f2a".to_vec());
/// assert_eq!(fence.lock(), b"users:lock:7");
/// assert_eq!(fence.token(), b"4f2a");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    lock: Vec<u8>,
    token: Vec<u8>,
}

impl Fence {
    /// The fence of the hold of `lock` by `token`.
    ///
    /// ```
    /// # use dogpile_runtime::lock::Fence;
    /// let _ = Fence::new("lock", "token");
    /// ```
    pub fn new(lock: impl Into<Vec<u8>>, token: impl Into<Vec<u8>>) -> Self {
        Fence {
            lock: lock.into(),
            token: token.into(),
        }
    }

    /// The lock's name (its key on the server).
    ///
    /// ```
    /// # use dogpile_runtime::lock::Fence;
    /// assert_eq!(Fence::new("l", "t").lock(), b"l");
    /// ```
    pub fn lock(&self) -> &[u8] {
        &self.lock
    }

    /// The holder's token.
    ///
    /// ```
    /// # use dogpile_runtime::lock::Fence;
    /// assert_eq!(Fence::new("l", "t").token(), b"t");
    /// ```
    pub fn token(&self) -> &[u8] {
        &self.token
    }
}

/// The async form of [`RawMutex`], which a region's async calls await so that no call blocks a
/// worker thread on the mutex.
///
/// A mutex in process memory or on a local file answers at once and returns ready futures; a
/// mutex on a server awaits its async client. Waiting for a held mutex is the caller's loop:
/// woken by [`RawMutex::wake_on_release`] where the mutex supports it, polled otherwise.
///
/// ```
/// use dogpile_runtime::lock::{AsyncRawMutex, LocalMutex};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let m = LocalMutex::new();
/// assert!(m.try_acquire_async().await.unwrap());
/// assert!(!m.try_acquire_async().await.unwrap());
/// m.release_async().await.unwrap();
/// # });
/// ```
pub trait AsyncRawMutex: RawMutex {
    /// [`RawMutex::try_acquire`], awaited.
    fn try_acquire_async(&self) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// [`RawMutex::release`], awaited.
    fn release_async(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Whether the blocking [`release`](RawMutex::release) returns at once (no I/O that can
    /// stall). A guard dropped in async code (a cancelled call) then releases in place;
    /// otherwise the release is spawned onto the runtime, so that the drop never blocks it.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{AsyncRawMutex, LocalMutex};
    /// assert!(LocalMutex::new().releases_at_once());
    /// ```
    fn releases_at_once(&self) -> bool;
}

/// For mutexes whose lock cannot wait (a file lock with a deadline, a Redis key): tries
/// `try_acquire`, sleeping between tries from `first` doubling up to `most`, until it succeeds
/// or `timeout` (if any) has passed.
pub(crate) fn poll_acquire(
    try_acquire: impl Fn() -> Result<bool, BackendError>,
    timeout: Option<Duration>,
    first: Duration,
    most: Duration,
) -> Result<bool, BackendError> {
    // A timeout too large for `Instant` means no timeout.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut pause = first;
    loop {
        if try_acquire()? {
            return Ok(true);
        }
        let now = Instant::now();
        match deadline {
            Some(deadline) if now >= deadline => return Ok(false),
            Some(deadline) => std::thread::sleep(pause.min(deadline - now)),
            None => std::thread::sleep(pause),
        }
        pause = (pause * 2).min(most);
    }
}

/// How [`wait_for_release`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The holder released the mutex; the caller did not take it.
    Released,
    /// The mutex was free: the caller may try to take it.
    Free,
    /// The deadline passed first.
    TimedOut,
    /// The mutex cannot wake waiters ([`WakeOnRelease::Unsupported`]): wait to take it.
    Unsupported,
}

/// Blocks until `mutex` is released, without taking it, or until `deadline`.
///
/// Every waiter of a [`LocalMutex`] then wakes at its release at once, and reads the value its
/// holder stored; taking the mutex in turn instead would wake them one after the other, each
/// after the previous one's read and release (32 threads on a first miss: the last returned
/// about 0.8 ms after the value was stored, against about 0.6 ms, on a busy machine).
///
/// `blocks` is told just before the thread parks (not when the mutex is free).
#[cfg(not(loom))]
pub(crate) fn wait_for_release<M: RawMutex + ?Sized>(
    mutex: &M,
    deadline: Option<Instant>,
    blocks: &mut dyn FnMut(),
) -> Release {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Wake;

    /// Wakes the waiting thread.
    struct Unpark {
        thread: std::thread::Thread,
        released: AtomicBool,
    }

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.released.store(true, Ordering::Release);
            self.thread.unpark();
        }
    }

    // Asked first with a waker that does nothing: a free mutex (an uncontended miss) costs no
    // handle, and one that cannot wake anyone is waited for as before.
    match mutex.wake_on_release(Waker::noop()) {
        WakeOnRelease::Free => return Release::Free,
        WakeOnRelease::Unsupported => return Release::Unsupported,
        WakeOnRelease::Registered => {}
    }
    let unpark = Arc::new(Unpark {
        thread: std::thread::current(),
        released: AtomicBool::new(false),
    });
    match mutex.wake_on_release(&Waker::from(Arc::clone(&unpark))) {
        WakeOnRelease::Free => return Release::Free,
        WakeOnRelease::Unsupported => return Release::Unsupported,
        WakeOnRelease::Registered => {}
    }
    blocks();
    // `park` may return spuriously: the flag says whether the release came.
    while !unpark.released.load(Ordering::Acquire) {
        match deadline {
            None => std::thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Release::TimedOut;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
    }
    Release::Released
}

/// loom models the mutex's hand-off from holder to waiter: its waiters take it in turn.
#[cfg(loom)]
pub(crate) fn wait_for_release<M: RawMutex + ?Sized>(
    _mutex: &M,
    _deadline: Option<Instant>,
    _blocks: &mut dyn FnMut(),
) -> Release {
    Release::Unsupported
}

/// The answer of [`RawMutex::wake_on_release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeOnRelease {
    /// The mutex is held; the waker will be woken when it is released.
    Registered,
    /// The mutex is free now: try to take it.
    Free,
    /// This mutex cannot wake waiters; poll it.
    Unsupported,
}

impl<M: RawMutex + ?Sized> RawMutex for Arc<M> {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        (**self).try_acquire()
    }

    fn acquire(&self) -> Result<(), BackendError> {
        (**self).acquire()
    }

    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        (**self).acquire_timeout(timeout)
    }

    fn release(&self) -> Result<(), BackendError> {
        (**self).release()
    }

    fn wake_on_release(&self, waker: &Waker) -> WakeOnRelease {
        (**self).wake_on_release(waker)
    }

    fn fence(&self) -> Option<Fence> {
        (**self).fence()
    }
}

/// A dogpile mutex for the threads of one process.
///
/// | state    | `try_acquire` | `acquire`            | `release`        |
/// |----------|---------------|----------------------|------------------|
/// | free     | → held, true  | → held               | error            |
/// | held     | false         | waits until free     | → free, wakes one|
///
/// Any thread may release it (the holder may have handed it to a background creator). It never
/// poisons: a creator that panics releases it through its guard's drop.
///
/// ```
/// use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
/// use std::sync::Arc;
///
/// let m = Arc::new(LocalMutex::new());
/// let guard = OwnedMutexGuard::acquire(m.clone()).unwrap();
/// assert!(OwnedMutexGuard::try_acquire(m.clone()).unwrap().is_none());
/// drop(guard);
/// assert!(OwnedMutexGuard::try_acquire(m).unwrap().is_some());
/// ```
#[derive(Default)]
pub struct LocalMutex {
    state: Mutex<State>,
    released: Condvar,
}

#[derive(Default)]
struct State {
    held: bool,
    /// Async waiters, woken (all) at the next release.
    wakers: Vec<Waker>,
}

impl LocalMutex {
    /// A free mutex.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, RawMutex};
    /// assert!(LocalMutex::new().try_acquire().unwrap());
    /// ```
    pub fn new() -> Self {
        LocalMutex {
            state: Mutex::new(State::default()),
            released: Condvar::new(),
        }
    }

    fn take_blocking(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.state.lock();
        while state.held {
            match deadline {
                None => state = self.released.wait(state),
                Some(deadline) => {
                    let (guard, timed_out) = self.released.wait_until(state, deadline);
                    state = guard;
                    if timed_out && state.held {
                        return false;
                    }
                }
            }
        }
        state.held = true;
        true
    }
}

impl RawMutex for LocalMutex {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        let mut state = self.state.lock();
        if state.held {
            return Ok(false);
        }
        state.held = true;
        Ok(true)
    }

    fn acquire(&self) -> Result<(), BackendError> {
        self.take_blocking(None);
        Ok(())
    }

    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        // A timeout too large for `Instant` means no timeout.
        Ok(self.take_blocking(Instant::now().checked_add(timeout)))
    }

    fn release(&self) -> Result<(), BackendError> {
        let mut state = self.state.lock();
        if !state.held {
            return Err(BackendError::new(
                "release of a LocalMutex that is not held",
            ));
        }
        state.held = false;
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.released.notify_one();
        // Every async waiter re-checks: the first to poll takes the mutex, or, on a first
        // miss, all of them find the value the creator stored.
        for waker in wakers {
            waker.wake();
        }
        Ok(())
    }

    fn wake_on_release(&self, waker: &Waker) -> WakeOnRelease {
        let mut state = self.state.lock();
        if !state.held {
            return WakeOnRelease::Free;
        }
        if !state.wakers.iter().any(|w| w.will_wake(waker)) {
            state.wakers.push(waker.clone());
        }
        WakeOnRelease::Registered
    }
}

/// In process memory, every call answers at once.
impl AsyncRawMutex for LocalMutex {
    fn try_acquire_async(&self) -> impl Future<Output = Result<bool, BackendError>> + Send {
        ready(self.try_acquire())
    }

    fn release_async(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        ready(self.release())
    }

    fn releases_at_once(&self) -> bool {
        true
    }
}

impl fmt::Debug for LocalMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMutex")
            .field("held", &self.state.lock().held)
            .finish()
    }
}

/// A held [`RawMutex`], released when dropped.
///
/// It owns an `Arc` of its mutex, so it can move to another thread or task: this is what a
/// [`Lock`](crate::Lock) hands to an async creator, whose drop of the guard ends the regeneration.
///
/// ```
/// use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let m = Arc::new(LocalMutex::new());
/// let guard = OwnedMutexGuard::acquire(m.clone()).unwrap();
/// let elsewhere = std::thread::spawn(move || guard.release().unwrap());
/// elsewhere.join().unwrap();
/// let again = OwnedMutexGuard::acquire_timeout(m, Duration::from_secs(1)).unwrap();
/// assert!(again.is_some());
/// ```
#[must_use = "the mutex is released as soon as the guard is dropped"]
pub struct OwnedMutexGuard<M: RawMutex + ?Sized> {
    mutex: Arc<M>,
    held: bool,
}

impl<M: RawMutex + ?Sized> OwnedMutexGuard<M> {
    /// Takes `mutex` if it is free; `None` if another holder has it.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
    /// # use std::sync::Arc;
    /// let m = Arc::new(LocalMutex::new());
    /// assert!(OwnedMutexGuard::try_acquire(m).unwrap().is_some());
    /// ```
    pub fn try_acquire(mutex: Arc<M>) -> Result<Option<Self>, BackendError> {
        Ok(if mutex.try_acquire()? {
            Some(OwnedMutexGuard { mutex, held: true })
        } else {
            None
        })
    }

    /// Waits for `mutex`, then takes it.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
    /// # use std::sync::Arc;
    /// let _guard = OwnedMutexGuard::acquire(Arc::new(LocalMutex::new())).unwrap();
    /// ```
    pub fn acquire(mutex: Arc<M>) -> Result<Self, BackendError> {
        mutex.acquire()?;
        Ok(OwnedMutexGuard { mutex, held: true })
    }

    /// Waits at most `timeout` for `mutex`; `None` if it was not taken in time.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// let m = Arc::new(LocalMutex::new());
    /// let _held = OwnedMutexGuard::acquire(m.clone()).unwrap();
    /// let late = OwnedMutexGuard::acquire_timeout(m, Duration::from_millis(10)).unwrap();
    /// assert!(late.is_none());
    /// ```
    pub fn acquire_timeout(mutex: Arc<M>, timeout: Duration) -> Result<Option<Self>, BackendError> {
        Ok(if mutex.acquire_timeout(timeout)? {
            Some(OwnedMutexGuard { mutex, held: true })
        } else {
            None
        })
    }

    /// The mutex this guard holds.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
    /// # use std::sync::Arc;
    /// let m = Arc::new(LocalMutex::new());
    /// let guard = OwnedMutexGuard::acquire(m.clone()).unwrap();
    /// assert!(Arc::ptr_eq(guard.mutex(), &m));
    /// ```
    pub fn mutex(&self) -> &Arc<M> {
        &self.mutex
    }

    /// Releases the mutex now and reports a failure, which dropping the guard cannot.
    ///
    /// ```
    /// # use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
    /// # use std::sync::Arc;
    /// let guard = OwnedMutexGuard::acquire(Arc::new(LocalMutex::new())).unwrap();
    /// guard.release().unwrap();
    /// ```
    pub fn release(mut self) -> Result<(), BackendError> {
        self.held = false;
        self.mutex.release()
    }
}

impl<M: RawMutex + ?Sized> Drop for OwnedMutexGuard<M> {
    fn drop(&mut self) {
        if self.held {
            // A failed release here (say, a lost server lease) has nowhere to go; the mutex's
            // own expiry frees it. Callers that care use `release`.
            let _ = self.mutex.release();
        }
    }
}

impl<M: RawMutex + ?Sized> fmt::Debug for OwnedMutexGuard<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedMutexGuard").finish_non_exhaustive()
    }
}
