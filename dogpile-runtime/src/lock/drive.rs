//! The blocking driver of the protocol: a short loop that reads, locks and creates as
//! [`Protocol`] says, for [`Lock::enter`](super::Lock::enter) and a region's blocking calls.
//! The async driver, for a region's async calls, is in `region/future.rs`.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use super::protocol::{Failure, Found, Next, Protocol, Served, Waited};
use crate::lock::{Fence, Release};
use crate::sync::thread_local;
use crate::{BackendError, OwnedMutexGuard, RawMutex};

/// What a blocking call reads and locks: its key's value, judged, and its key's mutex.
pub(crate) trait Key<V> {
    type Mutex: RawMutex + ?Sized;

    /// The key's dogpile mutex.
    fn mutex(&self) -> &Arc<Self::Mutex>;

    /// Reads the key's value and judges it by the caller's expiry rules.
    fn read(&mut self) -> Result<Found<V>, BackendError>;
}

/// A creator as the driver runs it: a closure, or a region's creator that stores what it
/// makes (and that a direct call runs bare).
pub(crate) trait Create<V, E> {
    /// Runs the creator; `fence`, when the mutex held has one, guards the write.
    fn create(self, fence: Option<Fence>) -> Result<V, E>;
}

impl<V, E, F: FnOnce() -> Result<V, E>> Create<V, E> for F {
    fn create(self, _: Option<Fence>) -> Result<V, E> {
        self()
    }
}

/// What became of a hand-off to the background.
pub(crate) enum Handoff<G, C, E> {
    /// The background runs the creator and releases the mutex when done.
    Taken,
    /// No room: the guard and the creator come back, to create here.
    Refused(G, C),
    /// The hand-off itself failed with the creator's error type (the guard was dropped).
    Failed(E),
}

/// How a blocking call ends.
pub(crate) enum Exit<V, E, C> {
    /// A value read from the store (fresh, stale or waited for), or handed off.
    Served(Served, V),
    /// The creator ran in this caller (holding the mutex, or after the lock timeout).
    Created(Result<V, E>),
    /// The store or mutex failed and the rules say to call directly: the creator, unrun.
    Direct(C, BackendError),
    /// No value, by the rules.
    Failed(Failure),
}

/// Where a blocking call stops for its caller to act: with a value, or holding what it needs
/// to create one.
pub(crate) enum Stop<V, G> {
    /// A value read from the store (fresh, stale or waited for).
    Served(Served, V),
    /// Create the value: holding the mutex, or, `None`, after giving up waiting for it.
    Create(Option<G>),
    /// Hand the regeneration of an expired value to the background, with the mutex.
    Hand(G),
    /// The store or mutex failed and the rules say to call directly.
    Direct(BackendError),
    /// No value, by the rules.
    Failed(Failure),
}

/// Reads and locks as the protocol says, until the call needs its creator or ends. The one
/// loop of every blocking call: a single key's ([`drive`]) and each key of a batch.
pub(crate) fn advance<V, K: Key<V>>(
    key: &mut K,
    protocol: &mut Protocol<'_, V>,
) -> Stop<V, OwnedMutexGuard<K::Mutex>> {
    let mutex = Arc::clone(key.mutex());
    let mut guard = None;
    // The lock timeout counts from the first wait, however many holders come and go.
    let mut deadline = None;
    let mut next = protocol.start();
    loop {
        next = match next {
            Next::Read => protocol.read(key.read()),
            Next::TryLock => {
                let taken = OwnedMutexGuard::try_acquire(Arc::clone(&mutex));
                protocol.try_lock(taken.map(|taken| {
                    guard = taken;
                    guard.is_some()
                }))
            }
            Next::Lock => {
                let timeout = protocol.rules().lock_timeout;
                let deadline = *deadline.get_or_insert_with(|| {
                    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
                });
                let waited = wait(&mutex, deadline).map(|(waited, g)| {
                    guard = g;
                    waited
                });
                protocol.lock(waited)
            }
            Next::Create => return Stop::Create(guard),
            Next::Hand => match guard.take() {
                Some(held) => return Stop::Hand(held),
                // Handing is only asked for while holding.
                None => return Stop::Create(None),
            },
            Next::Done(served, value) => return Stop::Served(served, value),
            Next::Direct(err) => return Stop::Direct(err),
            Next::Fail(failure) => return Stop::Failed(failure),
        };
    }
}

/// Runs one blocking call through the protocol. `hand`, when given, takes the mutex and the
/// creator of an expired value to regenerate elsewhere.
pub(crate) fn drive<V, E, C, K, H>(
    key: &mut K,
    mut protocol: Protocol<'_, V>,
    creator: C,
    hand: Option<H>,
) -> Exit<V, E, C>
where
    K: Key<V>,
    C: Create<V, E>,
    H: FnOnce(OwnedMutexGuard<K::Mutex>, C) -> Handoff<OwnedMutexGuard<K::Mutex>, C, E>,
{
    let mutex = Arc::clone(key.mutex());
    match advance(key, &mut protocol) {
        Stop::Served(served, value) => Exit::Served(served, value),
        Stop::Create(guard) => created(&mut protocol, &mutex, guard, creator),
        Stop::Hand(held) => {
            // Handing is only asked for when the rules allow it, which they do with a `hand`.
            let Some(hand) = hand else {
                return created(&mut protocol, &mutex, Some(held), creator);
            };
            match hand(held, creator) {
                Handoff::Taken => match protocol.handed(true) {
                    Next::Done(served, value) => Exit::Served(served, value),
                    _ => unreachable!("a taken hand-off ends the call"),
                },
                Handoff::Refused(held, creator) => match protocol.handed(false) {
                    // A refresh that the background cannot take is skipped.
                    Next::Done(served, value) => Exit::Served(served, value),
                    _ => created(&mut protocol, &mutex, Some(held), creator),
                },
                Handoff::Failed(err) => Exit::Created(Err(err)),
            }
        }
        Stop::Direct(err) => Exit::Direct(creator, err),
        Stop::Failed(failure) => Exit::Failed(failure),
    }
}

/// Runs the creator and ends the call: with its value, or, when it fails (an error or a
/// panic) and the stale-if-error window covers the stale value, with that.
fn created<V, E, C, M>(
    protocol: &mut Protocol<'_, V>,
    mutex: &Arc<M>,
    guard: Option<OwnedMutexGuard<M>>,
    creator: C,
) -> Exit<V, E, C>
where
    C: Create<V, E>,
    M: RawMutex + ?Sized,
{
    if !protocol.may_rescue() {
        return Exit::Created(create(mutex, guard, creator));
    }
    // The guard and the mark are dropped by `create` as the panic unwinds through it.
    match panic::catch_unwind(AssertUnwindSafe(|| create(mutex, guard, creator))) {
        Ok(Ok(value)) => Exit::Created(Ok(value)),
        Ok(Err(err)) => match protocol.failed() {
            Some(stale) => Exit::Served(Served::Stale, stale),
            None => Exit::Created(Err(err)),
        },
        Err(panic) => match protocol.failed() {
            Some(stale) => Exit::Served(Served::Stale, stale),
            None => panic::resume_unwind(panic),
        },
    }
}

/// Waits for the mutex, up to `deadline`: the guard when taken. A mutex that can wake its
/// waiters is not taken but waited for: released, the caller reads first (as async waiters do),
/// so that the waiters of a first miss all return at once with the value stored.
#[cold]
fn wait<M: RawMutex + ?Sized>(
    mutex: &Arc<M>,
    deadline: Option<std::time::Instant>,
) -> Result<(Waited, Option<OwnedMutexGuard<M>>), BackendError> {
    if held_by_this_thread(mutex) {
        return Ok((Waited::WouldDeadlock, None));
    }
    loop {
        match crate::lock::wait_for_release(&**mutex, deadline) {
            Release::Released => return Ok((Waited::Released, None)),
            Release::TimedOut => return Ok((Waited::TimedOut, None)),
            Release::Free => {
                if let Some(guard) = OwnedMutexGuard::try_acquire(Arc::clone(mutex))? {
                    return Ok((Waited::Acquired, Some(guard)));
                }
            }
            Release::Unsupported => break,
        }
    }
    let timeout = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
    let guard = match timeout {
        None => Some(OwnedMutexGuard::acquire(Arc::clone(mutex))?),
        Some(timeout) => OwnedMutexGuard::acquire_timeout(Arc::clone(mutex), timeout)?,
    };
    Ok(match guard {
        Some(guard) => (Waited::Acquired, Some(guard)),
        None => (Waited::TimedOut, None),
    })
}

/// Runs the creator, marked as holding `mutex` while it holds it. The mutex is released before
/// the mark is removed, on success, error and unwind alike.
fn create<V, E, M: ?Sized + RawMutex>(
    mutex: &Arc<M>,
    guard: Option<OwnedMutexGuard<M>>,
    creator: impl Create<V, E>,
) -> Result<V, E> {
    match guard {
        Some(guard) => {
            let holding = Holding::enter(mutex);
            let created = creator.create(mutex.fence());
            drop(guard);
            drop(holding);
            created
        }
        None => creator.create(None),
    }
}

// loom's `thread_local!` takes no `const { }` initializer.
#[allow(clippy::missing_const_for_thread_local)]
mod holding {
    use super::{thread_local, RefCell};
    thread_local! {
        /// The mutexes whose creators are running on this thread, innermost last.
        pub(super) static HOLDING: RefCell<Vec<usize>> = RefCell::new(Vec::new());
    }
}
use holding::HOLDING;

/// Marks a mutex as held by this thread's running creator, so that a creator asking to wait for
/// its own mutex fails instead of waiting forever.
pub(crate) struct Holding(usize);

fn address<M: ?Sized>(mutex: &Arc<M>) -> usize {
    Arc::as_ptr(mutex).cast::<()>() as usize
}

impl Holding {
    /// Marks `mutex` until the returned value is dropped.
    pub(crate) fn enter<M: ?Sized>(mutex: &Arc<M>) -> Self {
        let id = address(mutex);
        HOLDING.with(|held| held.borrow_mut().push(id));
        Holding(id)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let id = self.0;
        HOLDING.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(pos) = held.iter().rposition(|&h| h == id) {
                held.remove(pos);
            }
        });
    }
}

/// Whether this thread is running a creator under `mutex`.
pub(crate) fn held_by_this_thread<M: ?Sized>(mutex: &Arc<M>) -> bool {
    let id = address(mutex);
    HOLDING.with(|held| held.borrow().contains(&id))
}
