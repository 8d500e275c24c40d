//! The dogpile lock and the primitives it is built from: [`Lock`] (one call through the
//! protocol), the mutexes it runs over ([`RawMutex`], [`LocalMutex`], [`OwnedMutexGuard`]),
//! [`ReadWriteMutex`] and [`NameRegistry`].

pub(crate) mod drive;
mod mutex;
pub(crate) mod protocol;
mod registry;
mod rwmutex;

pub use crate::error::{LockError, NeedRegeneration, ReleaseError};
pub(crate) use mutex::{poll_acquire, wait_for_release, Release};
pub use mutex::{AsyncRawMutex, Fence, LocalMutex, OwnedMutexGuard, RawMutex, WakeOnRelease};
pub use registry::NameRegistry;
pub use rwmutex::{ReadGuard, ReadWriteMutex, WriteGuard};

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::{BackendError, Clock, ConfigError, SystemClock, Timestamp};
use drive::Stop;
use protocol::{Failure, Found, Protocol, Rules};

/// What a getter returns: the value and its creation time, or [`NeedRegeneration`].
pub type Got<V> = Result<(V, Timestamp), NeedRegeneration>;

type AsyncCreator<'a, M, E> = Box<dyn FnOnce(OwnedMutexGuard<M>) -> Result<(), E> + 'a>;

/// The dogpile lock: one caller regenerates an expired value while the others keep the old one.
///
/// A `Lock` is built for one call, from a shared mutex, a creator, a getter and an expiry, and
/// [`enter`](Lock::enter) returns the value (Python dogpile.core's `with Lock(...) as value`). It keeps no
/// state between calls: the value lives wherever the getter reads it and the creator writes it.
///
/// | the getter finds          | `enter` does                                                    |
/// |---------------------------|-----------------------------------------------------------------|
/// | a fresh value             | returns it; the mutex is not touched                            |
/// | an expired value          | tries the mutex without waiting; if held elsewhere, returns the stale value; if taken, reads again and creates only if still expired (or hands the mutex to the async creator and returns the stale value) |
/// | no value                  | waits for the mutex, reads again, creates only if still missing  |
///
/// Expiry is strict: a value whose age equals the expiry is fresh. A creation time that is not
/// positive means "no value". A creator that fails or panics releases the mutex, stores nothing
/// and reaches only its own caller; a waiter then becomes the creator.
///
/// ```
/// use dogpile_runtime::{Lock, NeedRegeneration};
/// use dogpile_runtime::clock::{SystemClock, Clock, Timestamp};
/// use dogpile_runtime::lock::LocalMutex;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// let mutex = Arc::new(LocalMutex::new());
/// let cache: Mutex<Option<(String, Timestamp)>> = Mutex::new(None);
///
/// let value = Lock::new(
///     &mutex,
///     || {
///         let created = ("expensive".to_string(), SystemClock.now());
///         *cache.lock().unwrap() = Some(created.clone());
///         Ok::<_, std::convert::Infallible>(created.0)
///     },
///     || cache.lock().unwrap().clone().ok_or(NeedRegeneration),
///     Some(Duration::from_secs(3600)),
/// )
/// .enter()
/// .unwrap();
/// assert_eq!(value, "expensive");
/// ```
#[must_use = "a Lock does nothing until entered"]
pub struct Lock<'a, M, V, E, C, G>
where
    M: RawMutex + ?Sized,
{
    mutex: &'a Arc<M>,
    creator: C,
    getter: G,
    expiry: Option<Duration>,
    clock: &'a dyn Clock,
    is_expired: Option<&'a dyn Fn(Timestamp) -> bool>,
    lock_timeout: Option<Duration>,
    async_creator: Option<AsyncCreator<'a, M, E>>,
    _value: PhantomData<fn() -> V>,
}

impl<'a, M, V, E, C, G> Lock<'a, M, V, E, C, G>
where
    M: RawMutex + ?Sized,
    C: FnOnce() -> Result<V, E>,
    G: FnMut() -> Got<V>,
{
    /// A lock over `mutex` (shared by every caller of the same value), with the `creator` that
    /// makes and stores a new value, the `getter` that reads the stored one, and its `expiry`
    /// (`None`: never expires). An expiry of zero (every value expired as soon as made) or of
    /// more than 100 years cannot work: [`enter`](Self::enter) returns
    /// [`LockError::Config`] for it, as a builder's `build` would.
    ///
    /// ```
    /// use dogpile_runtime::{Lock, NeedRegeneration};
    /// use dogpile_runtime::lock::LocalMutex;
    /// use std::sync::Arc;
    ///
    /// let mutex = Arc::new(LocalMutex::new());
    /// let v = Lock::new(&mutex, || Ok::<_, ()>(1), || Err(NeedRegeneration), None)
    ///     .enter()
    ///     .unwrap();
    /// assert_eq!(v, 1);
    /// ```
    pub fn new(mutex: &'a Arc<M>, creator: C, getter: G, expiry: Option<Duration>) -> Self {
        static SYSTEM: SystemClock = SystemClock;
        Lock {
            mutex,
            creator,
            getter,
            expiry,
            clock: &SYSTEM,
            is_expired: None,
            lock_timeout: None,
            async_creator: None,
            _value: PhantomData,
        }
    }

    /// Reads time from `clock` instead of the system clock.
    ///
    /// ```
    /// use dogpile_runtime::Lock;
    /// use dogpile_runtime::clock::{ManualClock, Timestamp};
    /// use dogpile_runtime::lock::LocalMutex;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new(Timestamp::from_nanos(10_000_000_000));
    /// let mutex = Arc::new(LocalMutex::new());
    /// let created = Timestamp::from_nanos(9_000_000_000); // one second old
    /// let v = Lock::new(&mutex, || Ok::<_, ()>("new"), || Ok(("old", created)),
    ///                   Some(Duration::from_secs(1)))
    ///     .with_clock(&clock)
    ///     .enter()
    ///     .unwrap();
    /// assert_eq!(v, "old"); // age == expiry is still fresh
    /// ```
    pub fn with_clock(mut self, clock: &'a dyn Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Decides expiry with `is_expired(created)` instead of the expiry and the clock: for rules
    /// beyond age, such as a cache's invalidation of everything created before some time.
    /// Creation times that are not positive still mean "no value".
    ///
    /// ```
    /// use dogpile_runtime::Lock;
    /// use dogpile_runtime::clock::Timestamp;
    /// use dogpile_runtime::lock::LocalMutex;
    /// use std::sync::Arc;
    ///
    /// let invalidated_before = Timestamp::from_nanos(500);
    /// let expired = |created: Timestamp| created <= invalidated_before;
    /// let mutex = Arc::new(LocalMutex::new());
    /// let v = Lock::new(&mutex, || Ok::<_, ()>("new"), || Ok(("old", Timestamp::from_nanos(400))), None)
    ///     .with_is_expired(&expired)
    ///     .enter()
    ///     .unwrap();
    /// assert_eq!(v, "new");
    /// ```
    pub fn with_is_expired(mut self, is_expired: &'a dyn Fn(Timestamp) -> bool) -> Self {
        self.is_expired = Some(is_expired);
        self
    }

    /// Waits at most `timeout` for the mutex when there is no value; past it, `enter` returns
    /// [`LockError::Timeout`] instead of a value. Zero does not wait at all; more than 100
    /// years is a [`LockError::Config`] (leave it unset to wait as long as the creator runs).
    ///
    /// ```
    /// use dogpile_runtime::{Lock, LockError, NeedRegeneration};
    /// use dogpile_runtime::lock::{LocalMutex, OwnedMutexGuard};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let mutex = Arc::new(LocalMutex::new());
    /// let _creating = OwnedMutexGuard::acquire(mutex.clone()).unwrap();
    /// let res = Lock::new(&mutex, || Ok::<_, ()>(1), || Err(NeedRegeneration), None)
    ///     .with_lock_timeout(Duration::from_millis(5))
    ///     .enter();
    /// assert!(matches!(res, Err(LockError::Timeout(_))));
    /// ```
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Regenerates expired values off the caller's path: when this caller wins the mutex for an
    /// expired value, `async_creator` receives the held mutex and `enter` returns the stale value
    /// at once. The async creator must arrange for the creation to happen and drop the guard when
    /// it is done. On a missing value it is never used: that caller creates and the others wait.
    /// If it returns an error, the guard it was given has been dropped and `enter` returns
    /// [`LockError::Creator`].
    ///
    /// ```
    /// use dogpile_runtime::Lock;
    /// use dogpile_runtime::clock::{ManualClock, Timestamp};
    /// use dogpile_runtime::lock::LocalMutex;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new(Timestamp::from_nanos(100_000_000_000));
    /// let old = Timestamp::from_nanos(1_000_000_000);
    /// let mutex = Arc::new(LocalMutex::new());
    /// let background = std::cell::Cell::new(None);
    /// let v = Lock::new(&mutex, || Ok::<_, ()>("new"), || Ok(("stale", old)),
    ///                   Some(Duration::from_secs(1)))
    ///     .with_clock(&clock)
    ///     .with_async_creator(|guard| {
    ///         background.set(Some(std::thread::spawn(move || drop(guard))));
    ///         Ok(())
    ///     })
    ///     .enter()
    ///     .unwrap();
    /// assert_eq!(v, "stale");
    /// background.take().unwrap().join().unwrap();
    /// ```
    pub fn with_async_creator(
        mut self,
        async_creator: impl FnOnce(OwnedMutexGuard<M>) -> Result<(), E> + 'a,
    ) -> Self {
        self.async_creator = Some(Box::new(async_creator));
        self
    }

    /// Runs the protocol and returns the value: the stored one if fresh, the stale one while
    /// another caller regenerates, or the one this caller created.
    ///
    /// ```
    /// use dogpile_runtime::lock::{LocalMutex, Lock, NeedRegeneration};
    /// use std::sync::Arc;
    ///
    /// let mutex = Arc::new(LocalMutex::new());
    /// let err = Lock::new(&mutex, || Err::<u8, _>("backend down"), || Err(NeedRegeneration), None)
    ///     .enter()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "the creator failed");
    /// assert!(matches!(err, dogpile_runtime::LockError::Creator("backend down")));
    /// ```
    pub fn enter(self) -> Result<V, LockError<E>> {
        self.check().map_err(LockError::Config)?;
        let rules = Rules {
            lock_timeout: self.lock_timeout,
            hard_timeout: None,
            background: self.async_creator.is_some(),
            direct_on_backend_error: false,
            refresh_ahead: false,
            stale_if_error: false,
        };
        let mut key = Getter {
            mutex: self.mutex,
            getter: self.getter,
            expiry: self.expiry,
            clock: self.clock,
            is_expired: self.is_expired,
        };
        let mut protocol = Protocol::new(rules, None);
        let next = protocol.start();
        let guard = match drive::advance(&mut key, &mut protocol, next) {
            Stop::Served(_, value) => return Ok(value),
            Stop::Create {
                guard: Some(guard), ..
            } => guard,
            // Only a wait that timed out ends without the mutex.
            Stop::Create { guard: None, .. } => {
                return Err(LockError::Timeout(
                    self.lock_timeout.unwrap_or(Duration::MAX),
                ))
            }
            Stop::Hand(guard, hand) => match self.async_creator {
                Some(async_creator) => {
                    return match async_creator(guard) {
                        Ok(()) => Ok(protocol.taken(hand).1),
                        Err(err) => Err(LockError::Creator(err)),
                    }
                }
                None => guard,
            },
            Stop::Direct(err) | Stop::Failed(Failure::Backend(err)) => {
                return Err(LockError::Mutex(err))
            }
            Stop::Failed(Failure::WouldDeadlock) => return Err(LockError::WouldDeadlock),
            Stop::Failed(Failure::TimedOut(timeout)) => return Err(LockError::Timeout(timeout)),
        };
        // Marked as this thread's, so that the creator asking for the same lock fails instead
        // of waiting for itself; released before the mark goes, on an unwind too.
        let held = drive::Held::new(guard);
        let created = (self.creator)();
        drop(held);
        created.map_err(LockError::Creator)
    }
}

impl<M, V, E, C, G> Lock<'_, M, V, E, C, G>
where
    M: RawMutex + ?Sized,
{
    /// The settings that cannot work, as the region builder refuses them.
    fn check(&self) -> Result<(), ConfigError> {
        if let Some(expiry) = self.expiry {
            let instead = "use `None` for values that never expire";
            crate::error::check_duration("expiry", expiry, instead)?;
        }
        match self.lock_timeout {
            Some(timeout) if timeout > crate::error::LONGEST => Err(ConfigError::new(
                "lock_timeout",
                format!(
                    "{timeout:?} is longer than 100 years; leave it unset to wait for as long \
                     as the creator runs"
                ),
            )),
            _ => Ok(()),
        }
    }
}

struct Getter<'a, M: ?Sized, G> {
    mutex: &'a Arc<M>,
    getter: G,
    expiry: Option<Duration>,
    clock: &'a dyn Clock,
    is_expired: Option<&'a dyn Fn(Timestamp) -> bool>,
}

impl<M, V, G> drive::Key<V> for Getter<'_, M, G>
where
    M: RawMutex + ?Sized,
    G: FnMut() -> Got<V>,
{
    type Mutex = M;

    fn mutex(&mut self) -> &Arc<M> {
        self.mutex
    }

    fn read(&mut self) -> Result<Found<V>, BackendError> {
        Ok(match (self.getter)() {
            Ok((value, created)) if created.is_positive() => {
                let expired = match self.is_expired {
                    Some(is_expired) => is_expired(created),
                    None => created.is_expired_at(self.clock.now(), self.expiry),
                };
                if expired {
                    Found::Expired(value, false)
                } else {
                    Found::Fresh(value)
                }
            }
            _ => Found::Missing,
        })
    }
}

impl<M, V, E, C, G> fmt::Debug for Lock<'_, M, V, E, C, G>
where
    M: RawMutex + ?Sized,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("expiry", &self.expiry)
            .field("lock_timeout", &self.lock_timeout)
            .field("async_creator", &self.async_creator.is_some())
            .finish_non_exhaustive()
    }
}
