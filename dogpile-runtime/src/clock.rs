//! Wall-clock time for creation times and expiry, behind a [`Clock`] that tests can replace.
//!
//! Creation times are wall-clock because they cross process and host boundaries (a value written
//! to a shared store by one process is judged fresh or expired by another). They are kept as
//! nanoseconds since the Unix epoch in an `i64`, which lasts until the year 2262.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::{AtomicI64, Ordering};

/// A point in wall-clock time: nanoseconds since the Unix epoch.
///
/// A timestamp that is not positive means "no value" to a [`Lock`](crate::Lock), as Python dogpile.core's
/// creation time of `-1` does.
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use std::time::Duration;
///
/// let t = Timestamp::from_nanos(1_000);
/// assert_eq!(t + Duration::from_nanos(500), Timestamp::from_nanos(1_500));
/// assert!(t.is_positive());
/// assert!(!Timestamp::NONE.is_positive());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The "no value yet" time, `-1` as in Python dogpile.core's `createdtime`.
    pub const NONE: Timestamp = Timestamp(-1);

    /// A timestamp from nanoseconds since the Unix epoch.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// assert_eq!(Timestamp::from_nanos(7).as_nanos(), 7);
    /// ```
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// assert_eq!(Timestamp::NONE.as_nanos(), -1);
    /// ```
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Converts a [`SystemTime`], saturating at the ends of the representable range.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let t = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(2));
    /// assert_eq!(t.as_nanos(), 2_000_000_000);
    /// ```
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp(saturating_nanos(after)),
            Err(before) => Timestamp(saturating_nanos(before.duration()).saturating_neg()),
        }
    }

    /// Whether this is a real creation time (strictly after the epoch).
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// assert!(!Timestamp::from_nanos(0).is_positive());
    /// ```
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// The time elapsed from `self` to `now`, or zero if `now` is earlier (a clock that stepped
    /// back never makes a value older).
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// use std::time::Duration;
    /// let created = Timestamp::from_nanos(1_000);
    /// assert_eq!(created.elapsed_at(Timestamp::from_nanos(4_000)), Duration::from_nanos(3_000));
    /// assert_eq!(created.elapsed_at(Timestamp::from_nanos(10)), Duration::ZERO);
    /// ```
    pub fn elapsed_at(self, now: Timestamp) -> Duration {
        let nanos = now.0.saturating_sub(self.0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }

    /// Whether a value created at `self` is expired at `now` under `expiry` (`None` = never).
    ///
    /// Expiry is strict: a value whose age equals the expiry is still fresh. A timestamp that is
    /// not positive is always expired, since it stands for "no value". A creation time more
    /// than [`TOLERANCE`] ahead of `now` (the clock stepped back, or another host's runs ahead)
    /// is expired too, so that no clock jump keeps a value fresh for longer than its lifetime
    /// plus the tolerance.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// use std::time::Duration;
    /// let created = Timestamp::from_nanos(1_000);
    /// let expiry = Some(Duration::from_nanos(10));
    /// assert!(!created.is_expired_at(Timestamp::from_nanos(1_010), expiry));
    /// assert!(created.is_expired_at(Timestamp::from_nanos(1_011), expiry));
    /// assert!(!created.is_expired_at(Timestamp::from_nanos(i64::MAX), None));
    /// // Created an hour after "now": the clock stepped back.
    /// let ahead = Timestamp::from_nanos(3_600_000_000_000);
    /// assert!(ahead.is_expired_at(Timestamp::from_nanos(1), Some(Duration::from_secs(60))));
    /// ```
    #[inline]
    pub fn is_expired_at(self, now: Timestamp, expiry: Option<Duration>) -> bool {
        if !self.is_positive() {
            return true;
        }
        match expiry {
            None => false,
            Some(expiry) => {
                let age = now.0.saturating_sub(self.0);
                age > saturating_nanos(expiry) || age < -saturating_nanos(TOLERANCE)
            }
        }
    }
}

/// How far ahead of the clock a creation time may be and still be trusted by
/// [`Timestamp::is_expired_at`] (and, by default, by a region): one second.
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// Claims an event of those allowed once per `period`, `next` holding when the next may come
/// (on the clock `now` is read from): whether one is due at `now`, `next` then moved a period
/// on. After the clock stepped back past the last one (a next time more than two periods
/// ahead, which threads reading the clock a tick apart never see), one is due at once rather
/// than after a silence as long as the step.
#[cfg(any(feature = "metrics", feature = "tracing"))]
pub(crate) fn claim_period(next: &std::sync::atomic::AtomicI64, now: i64, period: i64) -> bool {
    use std::sync::atomic::Ordering;
    let due = next.load(Ordering::Relaxed);
    (now >= due || due.saturating_sub(now) > period.saturating_mul(2))
        && next
            .compare_exchange(
                due,
                now.saturating_add(period),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(saturating_nanos(rhs)))
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(saturating_nanos(rhs)))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_positive() {
            let secs = self.0 / 1_000_000_000;
            let nanos = self.0 % 1_000_000_000;
            write!(f, "Timestamp({secs}.{nanos:09})")
        } else {
            write!(f, "Timestamp(none: {})", self.0)
        }
    }
}

pub(crate) fn saturating_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A source of wall-clock time.
///
/// The runtime reads time only through a `Clock`, so tests of expiry advance a [`ManualClock`]
/// instead of sleeping.
///
/// ```
/// use dogpile_runtime::clock::{Clock, SystemClock};
/// assert!(SystemClock.now().is_positive());
/// ```
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The system's wall clock, `SystemTime::now()`, at full resolution.
///
/// ```
/// use dogpile_runtime::clock::{Clock, SystemClock};
/// let a = SystemClock.now();
/// let b = SystemClock.now();
/// assert!(b >= a || a.elapsed_at(b).is_zero());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// The system's wall clock at the kernel's tick resolution: what a region reads on every hit.
///
/// On Linux it reads `CLOCK_REALTIME_COARSE`, which costs a few nanoseconds instead of the ~20
/// of a full-resolution read, and advances once per kernel tick (1 to 4 ms; see
/// [`resolution`](Self::resolution)). Expiry is then exact to within one tick: a value may be
/// served up to one tick past its expiry. Elsewhere it is [`SystemClock`].
///
/// ```
/// use dogpile_runtime::clock::{Clock, CoarseClock, SystemClock};
/// use std::time::Duration;
///
/// let coarse = CoarseClock.now();
/// let precise = SystemClock.now();
/// assert!(coarse.elapsed_at(precise) <= CoarseClock::resolution() + Duration::from_millis(50));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl CoarseClock {
    /// How far apart its successive readings are: the kernel's tick on Linux, zero elsewhere.
    ///
    /// ```
    /// # use dogpile_runtime::clock::CoarseClock;
    /// assert!(CoarseClock::resolution() <= std::time::Duration::from_millis(10));
    /// ```
    pub fn resolution() -> Duration {
        #[cfg(target_os = "linux")]
        {
            let res = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
            Duration::new(
                u64::try_from(res.tv_sec).unwrap_or(0),
                u32::try_from(res.tv_nsec).unwrap_or(0),
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            Duration::ZERO
        }
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> Timestamp {
        #[cfg(target_os = "linux")]
        {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
            // No overflow before the year 2262, where `i64` nanoseconds end anyway.
            Timestamp(
                now.tv_sec
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(now.tv_nsec),
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            SystemClock.now()
        }
    }
}

/// A clock that moves only when told to: for tests of expiry that must not sleep.
///
/// ```
/// use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000));
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), Timestamp::from_nanos(6_000_000_000));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    ///
    /// ```
    /// # use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
    /// let clock = ManualClock::new(Timestamp::from_nanos(42));
    /// assert_eq!(clock.now().as_nanos(), 42);
    /// ```
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            nanos: AtomicI64::new(start.as_nanos()),
        }
    }

    /// A clock stopped at the current system time.
    ///
    /// ```
    /// # use dogpile_runtime::clock::{Clock, ManualClock};
    /// assert!(ManualClock::starting_now().now().is_positive());
    /// ```
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward by `by`, stopping at the last representable instant (the year
    /// 2262) rather than wrapping around to a time before the epoch.
    ///
    /// ```
    /// # use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
    /// # use std::time::Duration;
    /// let clock = ManualClock::new(Timestamp::from_nanos(1));
    /// clock.advance(Duration::from_nanos(2));
    /// assert_eq!(clock.now().as_nanos(), 3);
    /// clock.advance(Duration::MAX);
    /// assert_eq!(clock.now().as_nanos(), i64::MAX);
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = saturating_nanos(by);
        // A plain `fetch_add` wraps past `i64::MAX` to a time before the epoch.
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the clock to `to` (which may be earlier than now, as a wall clock can step back).
    ///
    /// ```
    /// # use dogpile_runtime::clock::{Clock, ManualClock, Timestamp};
    /// let clock = ManualClock::new(Timestamp::from_nanos(10));
    /// clock.set(Timestamp::from_nanos(5));
    /// assert_eq!(clock.now().as_nanos(), 5);
    /// ```
    pub fn set(&self, to: Timestamp) {
        self.nanos.store(to.as_nanos(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst))
    }
}
