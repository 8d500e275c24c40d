//! Python dogpile.core's original API, [`Dogpile`] and [`SyncReaderDogpile`], kept as thin wrappers over
//! [`Lock`] for code ported from it. New code uses `Lock` (or a region) directly.
#![allow(deprecated)]

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::{AtomicI64, Ordering};
use crate::{
    Clock, ConfigError, LocalMutex, Lock, LockError, NeedRegeneration, RawMutex, ReadGuard,
    ReadWriteMutex, SystemClock, Timestamp, WriteGuard,
};

/// A dogpile lock that remembers its value's creation time itself.
///
/// Python dogpile.core's first API, deprecated there in favour of `Lock`, which keeps no state between calls
/// and so also works across processes. Each `acquire` builds a [`Lock`] over this object's mutex,
/// with a getter that reports the remembered creation time and a creator that updates it.
///
/// ```
/// #![allow(deprecated)]
/// use dogpile_runtime::legacy::Dogpile;
/// use std::sync::Mutex;
/// use std::time::Duration;
///
/// let resource = Mutex::new(None);
/// let dogpile = Dogpile::new(Some(Duration::from_secs(3600)))?;
/// dogpile
///     .acquire(|| {
///         *resource.lock().unwrap() = Some("expensive");
///         Ok::<_, ()>(())
///     })
///     .unwrap();
/// assert!(dogpile.has_value());
/// assert_eq!(*resource.lock().unwrap(), Some("expensive"));
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[deprecated(
    since = "0.1.0",
    note = "use `Lock`, which keeps no state between calls (as Python dogpile.core's 0.4 API does)"
)]
pub struct Dogpile<M: RawMutex + ?Sized = LocalMutex> {
    expiry: Option<Duration>,
    created: AtomicI64,
    mutex: Arc<M>,
    clock: Arc<dyn Clock>,
}

impl Dogpile<LocalMutex> {
    /// A dogpile with no value yet and an in-process mutex; `expiry` `None` never expires.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an expiry of zero (every value expired as soon as made) or of
    /// more than 100 years.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::Dogpile;
    /// # use std::time::Duration;
    /// assert!(!Dogpile::new(None)?.has_value());
    /// assert!(Dogpile::new(Some(Duration::ZERO)).is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn new(expiry: Option<Duration>) -> Result<Self, ConfigError> {
        Self::with_mutex(expiry, Arc::new(LocalMutex::new()))
    }
}

impl<M: RawMutex + ?Sized> Dogpile<M> {
    /// A dogpile over a custom mutex (Python dogpile.core's `lock` argument).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an expiry of zero or of more than 100 years.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::Dogpile;
    /// # use dogpile_runtime::lock::LocalMutex;
    /// # use std::sync::Arc;
    /// let d = Dogpile::with_mutex(None, Arc::new(LocalMutex::new()))?;
    /// assert!(d.is_expired());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_mutex(expiry: Option<Duration>, mutex: Arc<M>) -> Result<Self, ConfigError> {
        if let Some(expiry) = expiry {
            let instead = "use `None` for a value that never expires";
            crate::error::check_duration("expiry", expiry, instead)?;
        }
        Ok(Dogpile {
            expiry,
            created: AtomicI64::new(Timestamp::NONE.as_nanos()),
            mutex,
            clock: Arc::new(SystemClock),
        })
    }

    /// Reads time from `clock` (set it before `init`, which reads it).
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::clock::{ManualClock, Timestamp};
    /// # use dogpile_runtime::legacy::Dogpile;
    /// # use std::sync::Arc;
    /// let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(5)));
    /// let d = Dogpile::new(None)?.with_clock(clock).init();
    /// assert_eq!(d.created_time(), Timestamp::from_nanos(5));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Marks the value as created now (Python dogpile.core's `init=True`), for a value made elsewhere.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::Dogpile;
    /// assert!(Dogpile::new(None)?.init().has_value());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn init(self) -> Self {
        self.created
            .store(self.clock.now().as_nanos(), Ordering::SeqCst);
        self
    }

    /// The last known creation time; [`Timestamp::NONE`] until a value has been created.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::legacy::Dogpile;
    /// assert_eq!(Dogpile::new(None)?.created_time(), Timestamp::NONE);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn created_time(&self) -> Timestamp {
        Timestamp::from_nanos(self.created.load(Ordering::SeqCst))
    }

    /// Whether the creator has run at least once.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::Dogpile;
    /// let d = Dogpile::new(None)?;
    /// d.acquire(|| Ok::<_, ()>(())).unwrap();
    /// assert!(d.has_value());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn has_value(&self) -> bool {
        self.created_time().is_positive()
    }

    /// Whether the expiry is reached or there is no value.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::clock::{ManualClock, Timestamp};
    /// # use dogpile_runtime::legacy::Dogpile;
    /// # use std::{sync::Arc, time::Duration};
    /// let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000)));
    /// let d = Dogpile::new(Some(Duration::from_nanos(10)))?.with_clock(clock.clone()).init();
    /// assert!(!d.is_expired());
    /// clock.advance(Duration::from_nanos(11));
    /// assert!(d.is_expired());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn is_expired(&self) -> bool {
        self.created_time()
            .is_expired_at(self.clock.now(), self.expiry)
    }

    /// Runs `creator` if the value is missing or expired and this caller is chosen to create it.
    ///
    /// The value lives wherever the creator puts it. Callers wait only while there is no value.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::Dogpile;
    /// let d = Dogpile::new(None)?;
    /// let mut runs = 0;
    /// d.acquire(|| { runs += 1; Ok::<_, ()>(()) }).unwrap();
    /// d.acquire(|| { runs += 1; Ok::<_, ()>(()) }).unwrap();
    /// assert_eq!(runs, 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn acquire<E>(&self, creator: impl FnOnce() -> Result<(), E>) -> Result<(), LockError<E>> {
        self.acquire_value(creator, || ())
    }

    /// Like [`acquire`](Self::acquire), returning the value: `value_fn` reads the current one
    /// when it need not be created.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::Dogpile;
    /// use std::sync::Mutex;
    /// let store = Mutex::new(0);
    /// let d = Dogpile::new(None)?;
    /// let create = || { *store.lock().unwrap() = 7; Ok::<_, ()>(7) };
    /// assert_eq!(d.acquire_value(create, || *store.lock().unwrap()).unwrap(), 7);
    /// assert_eq!(d.acquire_value(|| Ok::<_, ()>(8), || *store.lock().unwrap()).unwrap(), 7);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn acquire_value<V, E>(
        &self,
        creator: impl FnOnce() -> Result<V, E>,
        mut value_fn: impl FnMut() -> V,
    ) -> Result<V, LockError<E>> {
        self.acquire_value_and_created(creator, || {
            let created = self.created_time();
            if created.is_positive() {
                Ok((value_fn(), created))
            } else {
                Err(NeedRegeneration)
            }
        })
    }

    /// Like [`acquire_value`](Self::acquire_value), with a getter that also returns the value's
    /// creation time, which then replaces this dogpile's own: another `Dogpile` can pick up
    /// where a previous one left off.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::clock::{Timestamp, Clock, SystemClock};
    /// # use dogpile_runtime::legacy::Dogpile;
    /// let made = SystemClock.now();
    /// let d = Dogpile::new(None)?;
    /// let v = d.acquire_value_and_created(|| Ok::<_, ()>(0), || Ok((5, made))).unwrap();
    /// assert_eq!(v, 5);
    /// assert_eq!(d.created_time(), made);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn acquire_value_and_created<V, E>(
        &self,
        creator: impl FnOnce() -> Result<V, E>,
        mut value_and_created_fn: impl FnMut() -> Result<(V, Timestamp), NeedRegeneration>,
    ) -> Result<V, LockError<E>> {
        let creator = || {
            let value = creator()?;
            self.created
                .store(self.clock.now().as_nanos(), Ordering::SeqCst);
            Ok(value)
        };
        let getter = || {
            let got = value_and_created_fn();
            if let Ok((_, created)) = &got {
                self.created.store(created.as_nanos(), Ordering::SeqCst);
            }
            got
        };
        Lock::new(&self.mutex, creator, getter, self.expiry)
            .with_clock(&*self.clock)
            .enter()
    }
}

impl<M: RawMutex + ?Sized> fmt::Debug for Dogpile<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dogpile")
            .field("expiry", &self.expiry)
            .field("created", &self.created_time())
            .finish_non_exhaustive()
    }
}

/// A [`Dogpile`] with a [`ReadWriteMutex`]: the creator can take the write lock to switch in a
/// new value once the readers of the old one are done.
///
/// [`acquire_value`](Self::acquire_value) returns the value inside a read lock, held until the
/// returned [`Reading`] drops; [`acquire_write_lock`](Self::acquire_write_lock) is for the creator.
///
/// ```
/// #![allow(deprecated)]
/// use dogpile_runtime::legacy::SyncReaderDogpile;
/// use std::sync::Mutex;
///
/// let datafile = Mutex::new(String::new());
/// let dogpile = SyncReaderDogpile::new(None)?;
/// let reading = dogpile
///     .acquire_value(
///         || {
///             let fresh = "new contents".to_string(); // prepared without any lock
///             let _w = dogpile.acquire_write_lock(); // switched in with no reader inside
///             *datafile.lock().unwrap() = fresh.clone();
///             Ok::<_, ()>(fresh)
///         },
///         || datafile.lock().unwrap().clone(),
///     )
///     .unwrap();
/// assert_eq!(*reading, "new contents");
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[deprecated(since = "0.1.0", note = "use `Lock` with a `ReadWriteMutex` directly")]
pub struct SyncReaderDogpile<M: RawMutex + ?Sized = LocalMutex> {
    rw: ReadWriteMutex,
    dogpile: Dogpile<M>,
}

impl SyncReaderDogpile<LocalMutex> {
    /// A dogpile with no value yet; `expiry` `None` never expires.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an expiry of zero or of more than 100 years.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::SyncReaderDogpile;
    /// assert!(!SyncReaderDogpile::new(None)?.dogpile().has_value());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn new(expiry: Option<Duration>) -> Result<Self, ConfigError> {
        Dogpile::new(expiry).map(Self::from_dogpile)
    }
}

impl<M: RawMutex + ?Sized> SyncReaderDogpile<M> {
    /// Adds a read-write lock to an existing dogpile.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::{Dogpile, SyncReaderDogpile};
    /// let d = SyncReaderDogpile::from_dogpile(Dogpile::new(None)?.init());
    /// assert!(d.dogpile().has_value());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn from_dogpile(dogpile: Dogpile<M>) -> Self {
        SyncReaderDogpile {
            rw: ReadWriteMutex::new(),
            dogpile,
        }
    }

    /// The underlying dogpile, for `created_time`, `is_expired` and `has_value`.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::SyncReaderDogpile;
    /// assert!(SyncReaderDogpile::new(None)?.dogpile().is_expired());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn dogpile(&self) -> &Dogpile<M> {
        &self.dogpile
    }

    /// The write lock, for the creator's critical section: it waits for every reader to leave.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::SyncReaderDogpile;
    /// let d = SyncReaderDogpile::new(None)?;
    /// let _w = d.acquire_write_lock();
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn acquire_write_lock(&self) -> WriteGuard<'_> {
        self.rw.write()
    }

    /// [`Dogpile::acquire_value`], returning the value inside a read lock.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::SyncReaderDogpile;
    /// let d = SyncReaderDogpile::new(None)?;
    /// let r = d.acquire_value(|| Ok::<_, ()>(3), || 3).unwrap();
    /// assert_eq!(*r, 3);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn acquire_value<V, E>(
        &self,
        creator: impl FnOnce() -> Result<V, E>,
        value_fn: impl FnMut() -> V,
    ) -> Result<Reading<'_, V>, LockError<E>> {
        let value = self.dogpile.acquire_value(creator, value_fn)?;
        Ok(Reading {
            value,
            _guard: self.rw.read(),
        })
    }
}

impl<M: RawMutex + ?Sized> fmt::Debug for SyncReaderDogpile<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncReaderDogpile")
            .field("dogpile", &self.dogpile)
            .field("rw", &self.rw)
            .finish()
    }
}

/// A value returned by [`SyncReaderDogpile::acquire_value`], read-locked until dropped.
///
/// ```
/// # #![allow(deprecated)]
/// # use dogpile_runtime::legacy::SyncReaderDogpile;
/// let d = SyncReaderDogpile::new(None)?;
/// let r = d.acquire_value(|| Ok::<_, ()>("v"), || "v").unwrap();
/// assert_eq!(r.into_inner(), "v");
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct Reading<'a, V> {
    value: V,
    _guard: ReadGuard<'a>,
}

impl<V> Reading<'_, V> {
    /// The value, releasing the read lock.
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// # use dogpile_runtime::legacy::SyncReaderDogpile;
    /// let d = SyncReaderDogpile::new(None)?;
    /// let v = d.acquire_value(|| Ok::<_, ()>(1), || 1).unwrap().into_inner();
    /// assert_eq!(v, 1);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn into_inner(self) -> V {
        self.value
    }
}

impl<V> Deref for Reading<'_, V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.value
    }
}
