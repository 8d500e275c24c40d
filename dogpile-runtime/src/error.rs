//! The runtime's error types.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// "There is no value": what a getter returns when the value must be created.
///
/// It is Python dogpile.core's `NeedRegenerationException`, returned in a `Result` instead of raised.
///
/// ```
/// use dogpile_runtime::NeedRegeneration;
/// use dogpile_runtime::clock::Timestamp;
///
/// fn getter() -> Result<(u32, Timestamp), NeedRegeneration> {
///     Err(NeedRegeneration)
/// }
/// assert_eq!(getter().unwrap_err().to_string(), "the value must be regenerated");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeedRegeneration;

impl fmt::Display for NeedRegeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the value must be regenerated")
    }
}

impl StdError for NeedRegeneration {}

/// A mutex or store backend could not do what was asked (for example, its server is
/// unreachable).
///
/// The in-process [`LocalMutex`](crate::LocalMutex) and the in-memory store never return one;
/// mutexes and stores that live in a file or on a server do.
///
/// ```
/// use dogpile_runtime::BackendError;
/// let err = BackendError::new("lock server unreachable");
/// assert_eq!(err.to_string(), "dogpile backend: lock server unreachable");
/// ```
#[derive(Debug)]
pub struct BackendError {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
    /// An invalidation that failed, kept by its store to replay when it answers again.
    queued: bool,
}

impl BackendError {
    /// An error with a message saying what failed.
    ///
    /// ```
    /// # use dogpile_runtime::BackendError;
    /// let _ = BackendError::new("release by a non-holder");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
            source: None,
            queued: false,
        }
    }

    /// An error with a message and the underlying cause.
    ///
    /// ```
    /// # use dogpile_runtime::BackendError;
    /// use std::error::Error;
    /// let io = std::io::Error::new(std::io::ErrorKind::Other, "disk gone");
    /// let err = BackendError::with_source("cannot lock file", io);
    /// assert_eq!(err.source().unwrap().to_string(), "disk gone");
    /// ```
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        BackendError {
            message: message.into(),
            source: Some(source.into()),
            queued: false,
        }
    }

    /// The error of an invalidation that did not reach its store and that the store queued
    /// to replay when it answers again.
    pub(crate) fn queued(message: impl Into<String>, source: BackendError) -> Self {
        BackendError {
            queued: true,
            ..BackendError::with_source(message, source)
        }
    }

    /// Whether this is the error of an invalidation that did not reach its store now but was
    /// queued, to be applied when the store answers again (a Redis region's `invalidate*`
    /// during an outage). Meanwhile the region's own process already honours it; other
    /// processes do once it is replayed.
    ///
    /// ```
    /// # use dogpile_runtime::BackendError;
    /// assert!(!BackendError::new("unreachable").is_queued_for_replay());
    /// ```
    pub fn is_queued_for_replay(&self) -> bool {
        self.queued
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dogpile backend: {}", self.message)
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Why [`Lock::enter`](crate::Lock::enter) returned no value.
///
/// `E` is the creator's own error type.
///
/// ```
/// use dogpile_runtime::LockError;
/// use std::time::Duration;
///
/// let err: LockError<std::io::Error> = LockError::Timeout(Duration::from_millis(250));
/// assert_eq!(
///     err.to_string(),
///     "gave up waiting 250ms for another caller to create the value"
/// );
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum LockError<E> {
    /// The creator ran in this caller and failed; nothing was stored.
    Creator(E),
    /// There was no value, and the mutex was not acquired within the lock timeout.
    Timeout(Duration),
    /// This thread already holds the mutex (it is inside the creator of the same value) and asked
    /// to wait for it: waiting would never end.
    WouldDeadlock,
    /// The mutex implementation failed.
    Mutex(BackendError),
    /// A setting of the [`Lock`](crate::Lock) cannot work (a zero expiry, or a duration
    /// beyond 100 years); nothing was run.
    Config(ConfigError),
}

impl<E> LockError<E> {
    /// Maps the creator's error, keeping the other variants.
    ///
    /// ```
    /// # use dogpile_runtime::LockError;
    /// let err: LockError<u8> = LockError::Creator(7);
    /// assert!(matches!(err.map_creator(u32::from), LockError::Creator(7u32)));
    /// ```
    pub fn map_creator<F>(self, f: impl FnOnce(E) -> F) -> LockError<F> {
        match self {
            LockError::Creator(e) => LockError::Creator(f(e)),
            LockError::Timeout(t) => LockError::Timeout(t),
            LockError::WouldDeadlock => LockError::WouldDeadlock,
            LockError::Mutex(e) => LockError::Mutex(e),
            LockError::Config(e) => LockError::Config(e),
        }
    }
}

impl<E> From<BackendError> for LockError<E> {
    fn from(e: BackendError) -> Self {
        LockError::Mutex(e)
    }
}

/// Each variant says what went wrong in its message; the creator's error and the backend's
/// failure are its [`source`](StdError::source), not repeated in the message. `E` needs no
/// bound to be displayed.
impl<E> fmt::Display for LockError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Creator(_) => f.write_str("the creator failed"),
            LockError::Timeout(t) => write!(
                f,
                "gave up waiting {t:?} for another caller to create the value"
            ),
            LockError::WouldDeadlock => f.write_str(
                "the creator of this value asked for the same value again and would wait for \
                 itself forever; break the cycle in the creator",
            ),
            LockError::Mutex(_) => f.write_str("the dogpile mutex failed"),
            LockError::Config(_) => f.write_str("a setting of the lock cannot work"),
        }
    }
}

impl<E: StdError + 'static> StdError for LockError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            LockError::Creator(e) => Some(e),
            LockError::Mutex(e) => Some(e),
            LockError::Config(e) => Some(e),
            LockError::Timeout(_) | LockError::WouldDeadlock => None,
        }
    }
}

/// A release that does not match an acquire on a [`ReadWriteMutex`](crate::ReadWriteMutex).
///
/// ```
/// use dogpile_runtime::lock::{ReadWriteMutex, ReleaseError};
/// let rw = ReadWriteMutex::new();
/// assert_eq!(rw.release_read_lock(), Err(ReleaseError::NotReadLocked));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// `release_read_lock` was called with no read lock held.
    NotReadLocked,
    /// `release_write_lock` was called by a thread that does not hold the write lock.
    NotWriteLocker,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::NotReadLocked => {
                f.write_str("release_read_lock called, but no read lock is held")
            }
            ReleaseError::NotWriteLocker => f.write_str(
                "release_write_lock called by a thread that does not hold the write lock",
            ),
        }
    }
}

impl StdError for ReleaseError {}

/// Configuration that cannot work, found when a region, pool or backend is built rather than
/// at the first call: a capacity of 0, a pool without threads, a zero or absurd duration. A
/// builder reports every setting it refuses, not only the first.
///
/// ```
/// use dogpile_runtime::ConfigError;
/// let err = ConfigError::new("capacity", "must be at least 1");
/// assert_eq!(err.option(), "capacity");
/// assert_eq!(err.to_string(), "invalid `capacity`: must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Each refused setting, in the order it was found; never empty.
    invalid: Vec<Invalid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Invalid {
    option: &'static str,
    reason: String,
}

impl ConfigError {
    /// An error about `option` (its name as the builder spells it), with the `reason` it
    /// cannot work and what to use instead.
    ///
    /// ```
    /// # use dogpile_runtime::ConfigError;
    /// let _ = ConfigError::new("lease", "must be longer than the command timeout");
    /// ```
    pub fn new(option: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            invalid: vec![Invalid {
                option,
                reason: reason.into(),
            }],
        }
    }

    /// The first option that was refused.
    ///
    /// ```
    /// # use dogpile_runtime::ConfigError;
    /// assert_eq!(ConfigError::new("threads", "must be at least 1").option(), "threads");
    /// ```
    pub fn option(&self) -> &'static str {
        self.invalid[0].option
    }

    /// Every option that was refused, in the order the builder found them.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// use std::time::Duration;
    /// let err = Region::<u8, u8>::builder()
    ///     .capacity(0)
    ///     .expiry(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.options().collect::<Vec<_>>(), ["expiry", "capacity"]);
    /// ```
    pub fn options(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.invalid.iter().map(|invalid| invalid.option)
    }

    /// `self` with the settings `other` refuses too.
    pub(crate) fn and(mut self, other: ConfigError) -> Self {
        self.invalid.extend(other.invalid);
        self
    }

    /// Every error of `errors` as one, if there is any.
    pub(crate) fn all(errors: impl IntoIterator<Item = ConfigError>) -> Option<ConfigError> {
        errors.into_iter().reduce(ConfigError::and)
    }
}

/// `invalid `option`: reason`, for each refused setting, separated by `; `.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, Invalid { option, reason }) in self.invalid.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "invalid `{option}`: {reason}")?;
        }
        Ok(())
    }
}

impl StdError for ConfigError {}

/// The longest duration a setting accepts: longer is a mistake (a unit mixed up, or
/// `Duration::MAX` for "forever", which is leaving the setting unset).
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A duration setting must be positive and at most [`LONGEST`]; `instead` says what to do.
pub(crate) fn check_duration(
    option: &'static str,
    value: Duration,
    instead: &str,
) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(
            option,
            format!("must be longer than zero; {instead}"),
        ))
    } else if value > LONGEST {
        Err(ConfigError::new(
            option,
            format!("{value:?} is longer than 100 years; {instead}"),
        ))
    } else {
        Ok(())
    }
}
