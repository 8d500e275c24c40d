//! The blocking driver of the protocol: a short loop that reads, locks and creates as
//! [`Protocol`] says, for [`Lock::enter`](super::Lock::enter) and a region's blocking calls.
//! The async driver, for a region's async calls, is in `region/asynchronous/driver.rs`. Both
//! stop where the caller must act: with a value, or with what a creation needs (the mutex, the
//! stale value that stands in for a failure); the creation itself is the caller's
//! (`region/creation.rs`, or [`Lock::enter`](super::Lock::enter)'s creator).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{Failure, Found, Hand, Next, Protocol, Refused, Waited};
use crate::lock::Release;
use crate::served::Served;
use crate::sync::thread_local;
use crate::{BackendError, OwnedMutexGuard, RawMutex};

/// What a blocking call reads and locks: its key's value, judged, and its key's mutex.
pub(crate) trait Key<V> {
    type Mutex: RawMutex + ?Sized;

    /// The key's dogpile mutex (asked for only when the protocol first needs it).
    fn mutex(&mut self) -> &Arc<Self::Mutex>;

    /// Reads the key's value and judges it by the caller's expiry rules.
    fn read(&mut self) -> Result<Found<V>, BackendError>;
}

/// Where a blocking call stops for its caller to act: with a value, or holding what it needs
/// to create one.
pub(crate) enum Stop<V, G> {
    /// A value read from the store (fresh, stale or waited for).
    Served(Served, V),
    /// Create the value: holding the mutex, or, `None`, after giving up waiting for it;
    /// `rescue` stands in for the creator's failure.
    Create { guard: Option<G>, rescue: Option<V> },
    /// Hand the regeneration to the background, with the mutex; end with
    /// [`Protocol::taken`](super::protocol::Protocol::taken) or
    /// [`Protocol::refused`](super::protocol::Protocol::refused).
    Hand(G, Hand<V>),
    /// The store or mutex failed and the rules say to call directly.
    Direct(BackendError),
    /// No value, by the rules.
    Failed(Failure),
}

/// Reads and locks as the protocol says, from `next` on, until the call needs its creator or
/// ends: the one loop of every blocking call, a single key's and each key of a batch. A mutex
/// held when the call ends without creating is released here.
#[inline]
pub(crate) fn advance<V, K: Key<V>>(
    key: &mut K,
    protocol: &mut Protocol<'_, V>,
    mut next: Next<V>,
) -> Stop<V, OwnedMutexGuard<K::Mutex>> {
    let mut guard = None;
    // The wait's limit counts from the first wait, however many holders come and go.
    let mut deadline = None;
    loop {
        next = match next {
            Next::Read => protocol.read(key.read()),
            Next::TryLock => {
                let taken = OwnedMutexGuard::try_acquire(Arc::clone(key.mutex()));
                protocol.try_lock(taken.map(|taken| {
                    guard = taken;
                    guard.is_some()
                }))
            }
            Next::Lock => {
                let rules = protocol.rules();
                let deadline = *deadline.get_or_insert_with(|| {
                    let (timeout, ended) = first_timeout(rules.lock_timeout, rules.hard_timeout);
                    timeout
                        .and_then(|t| std::time::Instant::now().checked_add(t))
                        .map(|at| (at, ended))
                });
                let waited =
                    wait(key.mutex(), deadline, &mut || protocol.blocks()).map(|(waited, g)| {
                        guard = g;
                        waited
                    });
                protocol.lock(waited)
            }
            Next::Create { rescue } => return Stop::Create { guard, rescue },
            Next::Hand(hand) => match guard.take() {
                Some(held) => return Stop::Hand(held, hand),
                // Handing off is only asked for while holding; without the mutex, create.
                None => {
                    return match protocol.refused(hand) {
                        Refused::Done(served, value) => Stop::Served(served, value),
                        Refused::Create { rescue } => Stop::Create {
                            guard: None,
                            rescue,
                        },
                    }
                }
            },
            Next::Done(served, value) => return Stop::Served(served, value),
            Next::Direct(err) => return Stop::Direct(err),
            Next::Fail(failure) => return Stop::Failed(failure),
        };
    }
}

/// Waits for the mutex, up to `deadline` (and how the wait ends there: the lock timeout or the
/// hard timeout): the guard when taken. A mutex that can wake its waiters is not taken but
/// waited for: released, the caller reads first (as async waiters do), so that the waiters of a
/// first miss all return at once with the value stored. `blocks` is told before the call
/// blocks: a free mutex (an uncontended miss) is taken without it.
#[cold]
fn wait<M: RawMutex + ?Sized>(
    mutex: &Arc<M>,
    deadline: Option<(std::time::Instant, Waited)>,
    blocks: &mut dyn FnMut(),
) -> Result<(Waited, Option<OwnedMutexGuard<M>>), BackendError> {
    if held_by_this_thread(mutex) {
        return Ok((Waited::WouldDeadlock, None));
    }
    let (at, ended) = match deadline {
        Some((at, ended)) => (Some(at), ended),
        None => (None, Waited::TimedOut),
    };
    loop {
        match crate::lock::wait_for_release(&**mutex, at, blocks) {
            Release::Released => return Ok((Waited::Released, None)),
            Release::TimedOut => return Ok((ended, None)),
            Release::Free => {
                if let Some(guard) = OwnedMutexGuard::try_acquire(Arc::clone(mutex))? {
                    return Ok((Waited::Acquired, Some(guard)));
                }
            }
            Release::Unsupported => break,
        }
    }
    blocks();
    let timeout = at.map(|d| d.saturating_duration_since(std::time::Instant::now()));
    let guard = match timeout {
        None => Some(OwnedMutexGuard::acquire(Arc::clone(mutex))?),
        Some(timeout) => OwnedMutexGuard::acquire_timeout(Arc::clone(mutex), timeout)?,
    };
    Ok(match guard {
        Some(guard) => (Waited::Acquired, Some(guard)),
        None => (ended, None),
    })
}

/// The wait's limit, and how the wait ends at it: the lock timeout (create beside the holder)
/// or the hard timeout (give up), whichever comes first; the hard one at a tie.
pub(crate) fn first_timeout(
    lock_timeout: Option<Duration>,
    hard_timeout: Option<Duration>,
) -> (Option<Duration>, Waited) {
    match (lock_timeout, hard_timeout) {
        (Some(lock), Some(hard)) if lock < hard => (Some(lock), Waited::TimedOut),
        (_, Some(hard)) => (Some(hard), Waited::GaveUp),
        (lock, None) => (lock, Waited::TimedOut),
    }
}

// loom's `thread_local!` takes no `const { }` initializer.
#[allow(clippy::missing_const_for_thread_local)]
mod holding {
    use super::{thread_local, Marks, RefCell};
    thread_local! {
        /// The mutexes whose creators are running on this thread: its blocking creators', and,
        /// while this thread polls an async creation, its task's (swapped in for each poll,
        /// so they follow the task from thread to thread as a task-local would).
        pub(super) static HOLDING: RefCell<Marks> = RefCell::new(Marks::new());
    }
}
use holding::HOLDING;

/// How many mutexes marks hold without allocating: a creation holds one, and a creator that
/// calls another key nests one more.
const INLINE_MARKS: usize = 4;

/// The addresses of the mutexes held by creators (a set, with repeats). Every async creation
/// copies its task's marks: the first few inline, so that a miss allocates none (a `Vec` cost
/// a miss an allocation, its growth and its release, about 450 instructions); a batch's many
/// spill to the heap.
#[derive(Clone, Default)]
pub(crate) struct Marks {
    inline: [usize; INLINE_MARKS],
    len: usize,
    spilled: Vec<usize>,
}

impl Marks {
    pub(crate) const fn new() -> Self {
        Marks {
            inline: [0; INLINE_MARKS],
            len: 0,
            spilled: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, address: usize) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = address;
                self.len += 1;
            }
            None => self.spilled.push(address),
        }
    }

    /// Removes one mark of `address`, if there is one; the last mark takes its place.
    fn remove(&mut self, address: usize) {
        if let Some(at) = self.spilled.iter().position(|&a| a == address) {
            self.spilled.swap_remove(at);
        } else if let Some(at) = self.inline[..self.len].iter().position(|&a| a == address) {
            self.inline[at] = match self.spilled.pop() {
                Some(last) => last,
                None => {
                    self.len -= 1;
                    self.inline[self.len]
                }
            };
        }
    }

    fn contains(&self, address: usize) -> bool {
        self.inline[..self.len].contains(&address) || self.spilled.contains(&address)
    }

    /// This thread's marks, copied.
    #[cfg(feature = "tokio")]
    pub(crate) fn of_this_thread() -> Self {
        HOLDING
            .try_with(|held| held.borrow().clone())
            .unwrap_or_default()
    }

    /// Swaps `self` with this thread's marks.
    #[cfg(feature = "tokio")]
    pub(crate) fn swap_with_this_thread(&mut self) {
        // Only while the thread is being torn down is the slot gone: nothing is marked then.
        let _ = HOLDING.try_with(|held| std::mem::swap(&mut *held.borrow_mut(), self));
    }
}

/// Marks a mutex as held by this thread's running creator, so that a creator asking to wait for
/// its own mutex fails instead of waiting forever.
pub(crate) struct Holding(usize);

/// What marks a mutex as held: its address.
pub(crate) fn address<M: ?Sized>(mutex: &Arc<M>) -> usize {
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
        HOLDING.with(|held| held.borrow_mut().remove(self.0));
    }
}

/// A held mutex whose creator runs on this thread: the guard, then the mark, released in that
/// order when dropped (on an unwind too).
pub(crate) struct Held<M: RawMutex + ?Sized> {
    guard: OwnedMutexGuard<M>,
    _mark: Holding,
}

impl<M: RawMutex + ?Sized> Held<M> {
    /// Marks `guard`'s mutex as this thread's creator's.
    #[inline]
    pub(crate) fn new(guard: OwnedMutexGuard<M>) -> Self {
        let mark = Holding::enter(guard.mutex());
        Held { guard, _mark: mark }
    }

    /// The mutex held.
    pub(crate) fn mutex(&self) -> &Arc<M> {
        self.guard.mutex()
    }
}

/// Whether this thread is running a creator under `mutex`: a blocking creator, or the async
/// creator of the task it is polling (a blocking call made inside an async creator, or an
/// async call awaited inside a blocking one, asks with the same marks).
pub(crate) fn held_by_this_thread<M: ?Sized>(mutex: &Arc<M>) -> bool {
    let id = address(mutex);
    HOLDING
        .try_with(|held| held.borrow().contains(id))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::Marks;

    #[test]
    fn marks_removed_in_any_order_leave_the_others_whether_inline_or_spilled() {
        for order in [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 4, 1, 3]] {
            let mut marks = Marks::new();
            // Six marks, one of them twice: four inline, three spilled.
            for address in [10, 11, 12, 13, 14, 15, 12] {
                marks.push(address);
            }
            let mut left = vec![10, 11, 12, 13, 14, 15, 12];
            for at in order {
                let address = 10 + at;
                marks.remove(address);
                let pos = left.iter().position(|&a| a == address).expect("marked");
                left.remove(pos);
                for a in 10..16 {
                    assert_eq!(marks.contains(a), left.contains(&a), "{a} after {left:?}");
                }
            }
            // The repeat is still there until removed too.
            assert!(marks.contains(12));
            marks.remove(12);
            assert!(!marks.contains(12));
            assert_eq!((marks.len, marks.spilled.len()), (0, 0));
        }
    }
}
