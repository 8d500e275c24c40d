//! The circuit breaker of a [`Redis`](super::Redis) handle: once the server has failed several
//! calls in a row (no answer within the timeout, a refused or broken connection), calls fail at
//! once instead of each paying a timeout, until a probe finds the server answering again.
//!
//! | state     | a call                              | leaves it when                                   |
//! |-----------|-------------------------------------|--------------------------------------------------|
//! | closed    | is sent                             | `breaker_failures` calls in a row go unanswered: open |
//! | open      | fails at once with [`BreakerOpen`]  | `breaker_cool_down` has passed: half-open        |
//! | half-open | fails at once with [`BreakerOpen`]  | the probe answers: closed; it does not: open     |
//!
//! The probe is a `PING` on a new connection, sent by a thread of the handle, so that no
//! caller pays for it. Only answers that never came count: an error the server answered (a
//! script's, `READONLY`, a refused fenced write) shows that it is there.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, Instant};

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Mutex, Ordering};

/// Events of one kind are reported at most this often; the next says how many were not.
#[cfg(feature = "tracing")]
const EVENT_EVERY: Duration = Duration::from_secs(10);

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The state of a [`Redis`](super::Redis) handle's circuit breaker.
///
/// ```
/// use dogpile_runtime::backend::redis::{BreakerState, Redis};
/// assert_eq!(Redis::open("redis://127.0.0.1/")?.breaker().state, BreakerState::Closed);
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls are sent to the server.
    Closed,
    /// The server failed too many calls in a row: calls fail at once until the cool-down ends.
    Open,
    /// The cool-down ended and a probe is on its way: calls still fail at once.
    HalfOpen,
}

/// What a [`Redis`](super::Redis) handle's circuit breaker is doing and has done since the
/// handle was built (its clones share it): from [`Redis::breaker`](super::Redis::breaker).
///
/// ```
/// use dogpile_runtime::backend::redis::Redis;
/// let breaker = Redis::open("redis://127.0.0.1/")?.breaker();
/// assert_eq!((breaker.failures, breaker.rejected, breaker.opened), (0, 0, 0));
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Breaker {
    /// Where the breaker is now.
    pub state: BreakerState,
    /// Calls that went unanswered: a timeout, a connection refused or broken (each cost up to
    /// the handle's timeout), the breaker's own probes included.
    pub failures: u64,
    /// Calls failed at once, unsent, because the breaker was open (each cost nothing).
    pub rejected: u64,
    /// Times it opened: after `breaker_failures` failures in a row, or a probe that failed.
    pub opened: u64,
    /// Times a probe was sent after a cool-down.
    pub half_opened: u64,
    /// Times it closed again, a probe having been answered.
    pub closed: u64,
}

/// The error behind a [`BackendError`](crate::BackendError) of a call that was not sent
/// because the handle's circuit breaker was open: the server failed calls in a row lately, and
/// this call was failed at once rather than made to wait for a timeout.
///
/// ```no_run
/// use dogpile_runtime::backend::redis::{BreakerOpen, Redis};
/// use dogpile_runtime::region::Store;
/// use std::error::Error;
///
/// let store = Redis::open("redis://127.0.0.1:6379/")?.store::<u64, String>("users");
/// if let Err(err) = store.get(&7) {
///     if let Some(open) = err.source().and_then(|s| s.downcast_ref::<BreakerOpen>()) {
///         println!("Redis is down; next probe in {:?}", open.probe_in());
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BreakerOpen {
    address: String,
    probe_in: Duration,
}

impl BreakerOpen {
    /// How long until the next probe of the server (zero: one is on its way).
    ///
    /// ```
    /// # fn f(open: &dogpile_runtime::backend::redis::BreakerOpen) {
    /// let _wait = open.probe_in();
    /// # }
    /// ```
    pub fn probe_in(&self) -> Duration {
        self.probe_in
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the circuit breaker of Redis at {} is open after failed calls: the call was not \
             sent (next probe in {:?})",
            self.address, self.probe_in
        )
    }
}

impl StdError for BreakerOpen {}

/// When the breaker opens and how long it stays open, as checked by the builder.
#[derive(Clone, Copy, Debug)]
pub(super) struct BreakerSettings {
    /// Calls failed in a row that open it.
    pub(super) failures: u32,
    /// How long it stays open before a probe.
    pub(super) cool_down: Duration,
}

/// The breaker's state and counts, shared by a handle's clones.
pub(super) struct Circuit {
    settings: BreakerSettings,
    /// The server's address, as events and errors name it (no credentials).
    address: String,
    phase: AtomicU8,
    in_a_row: AtomicU32,
    /// When the next probe is due, in milliseconds since `epoch`.
    probe_at: AtomicU64,
    epoch: Instant,
    failures: AtomicU64,
    rejected: AtomicU64,
    opened: AtomicU64,
    half_opened: AtomicU64,
    closed: AtomicU64,
    /// What the `tracing` events need: their rate limit, the outage's start.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    events: Mutex<Events>,
}

#[derive(Default)]
struct Events {
    /// When each kind of transition was last reported, and how many went unreported since.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    last: [Option<Instant>; 3],
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    unreported: [u64; 3],
    /// When the current outage began (the breaker opened from closed).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    outage_since: Option<Instant>,
}

impl Circuit {
    pub(super) fn new(settings: BreakerSettings, address: String) -> Self {
        Circuit {
            settings,
            address,
            phase: AtomicU8::new(CLOSED),
            in_a_row: AtomicU32::new(0),
            probe_at: AtomicU64::new(0),
            epoch: Instant::now(),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            half_opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            events: Mutex::new(Events::default()),
        }
    }

    pub(super) fn address(&self) -> &str {
        &self.address
    }

    /// Whether a call may be sent: `Err` with why not while the breaker is open or half-open.
    #[inline]
    pub(super) fn admit(&self) -> Result<(), BreakerOpen> {
        if self.phase.load(Ordering::Acquire) == CLOSED {
            return Ok(());
        }
        self.reject()
    }

    #[cold]
    fn reject(&self) -> Result<(), BreakerOpen> {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Err(BreakerOpen {
            address: self.address.clone(),
            probe_in: self.probe_in(),
        })
    }

    /// Whether the breaker lets calls through now (without counting a rejection).
    pub(super) fn is_closed(&self) -> bool {
        self.phase.load(Ordering::Acquire) == CLOSED
    }

    fn probe_in(&self) -> Duration {
        let at = Duration::from_millis(self.probe_at.load(Ordering::Relaxed));
        at.saturating_sub(self.epoch.elapsed())
    }

    /// The server answered a call.
    #[inline]
    pub(super) fn answered(&self) {
        // Read first: a hit writes nothing shared while nothing failed.
        if self.in_a_row.load(Ordering::Relaxed) != 0 {
            self.in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// A call went unanswered; `true` if that opened the breaker (the caller then starts the
    /// probe).
    #[cold]
    pub(super) fn failed(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self
            .in_a_row
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if in_a_row < self.settings.failures {
            return false;
        }
        let opened = self
            .phase
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if opened {
            self.schedule_probe();
            self.opened.fetch_add(1, Ordering::Relaxed);
            self.report(Transition::Opened, in_a_row);
        }
        opened
    }

    /// The probe could not be started: without it nothing would close the breaker, so it
    /// closes at once (calls pay their timeouts, as without a breaker).
    pub(super) fn no_probe(&self) {
        self.in_a_row.store(0, Ordering::Relaxed);
        self.phase.store(CLOSED, Ordering::Release);
    }

    fn schedule_probe(&self) {
        let at = self.epoch.elapsed().saturating_add(self.settings.cool_down);
        let millis = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.probe_at.store(millis, Ordering::Relaxed);
    }

    /// How long the prober sleeps before its next probe.
    pub(super) fn until_probe(&self) -> Duration {
        self.probe_in()
    }

    /// The cool-down is over: a probe is sent.
    pub(super) fn half_open(&self) {
        self.phase.store(HALF_OPEN, Ordering::Release);
        self.half_opened.fetch_add(1, Ordering::Relaxed);
        self.report(Transition::HalfOpened, 0);
    }

    /// The probe was answered: calls are sent again.
    pub(super) fn close(&self) {
        self.in_a_row.store(0, Ordering::Relaxed);
        self.phase.store(CLOSED, Ordering::Release);
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.report(Transition::Closed, 0);
    }

    /// The probe was not answered: another cool-down.
    pub(super) fn reopen(&self) {
        self.schedule_probe();
        self.phase.store(OPEN, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.report(Transition::Reopened, 0);
    }

    pub(super) fn snapshot(&self) -> Breaker {
        Breaker {
            state: match self.phase.load(Ordering::Acquire) {
                CLOSED => BreakerState::Closed,
                OPEN => BreakerState::Open,
                _ => BreakerState::HalfOpen,
            },
            failures: self.failures.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            half_opened: self.half_opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }

    /// A `tracing` event for a transition, at most one of each kind per [`EVENT_EVERY`].
    #[cfg(feature = "tracing")]
    fn report(&self, transition: Transition, in_a_row: u32) {
        let now = Instant::now();
        let (unreported, outage) = {
            let mut events = self.events.lock();
            if transition == Transition::Opened {
                events.outage_since = Some(now);
            }
            let outage = match transition {
                Transition::Closed => events.outage_since.take().map(|since| now - since),
                _ => None,
            };
            // Re-opening after a failed probe is the same kind of event as half-opening: both
            // repeat every cool-down for as long as the server stays down.
            let kind = match transition {
                Transition::Opened => 0,
                Transition::HalfOpened | Transition::Reopened => 1,
                Transition::Closed => 2,
            };
            if events.last[kind].is_some_and(|last| now - last < EVENT_EVERY) {
                events.unreported[kind] += 1;
                return;
            }
            events.last[kind] = Some(now);
            (std::mem::take(&mut events.unreported[kind]), outage)
        };
        let (backend, address) = ("redis", self.address.as_str());
        let cool_down = self.settings.cool_down;
        match transition {
            Transition::Opened => tracing::warn!(
                backend,
                address,
                failures_in_a_row = in_a_row,
                ?cool_down,
                unreported,
                "dogpile: Redis is not answering; circuit breaker open: calls fail at once \
                 until a probe is answered"
            ),
            Transition::HalfOpened => tracing::debug!(
                backend,
                address,
                unreported,
                "dogpile: Redis circuit breaker half-open: probing the server"
            ),
            Transition::Reopened => tracing::debug!(
                backend,
                address,
                ?cool_down,
                unreported,
                "dogpile: Redis probe not answered; circuit breaker open again"
            ),
            Transition::Closed => tracing::info!(
                backend,
                address,
                ?outage,
                unreported,
                "dogpile: Redis answers again; circuit breaker closed"
            ),
        }
    }

    #[cfg(not(feature = "tracing"))]
    fn report(&self, transition: Transition, in_a_row: u32) {
        let _ = (transition, in_a_row);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transition {
    Opened,
    HalfOpened,
    Reopened,
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(failures: u32) -> Circuit {
        let settings = BreakerSettings {
            failures,
            cool_down: Duration::from_secs(60),
        };
        Circuit::new(settings, "127.0.0.1:6379".into())
    }

    #[test]
    fn opens_after_failures_in_a_row_only() {
        let c = circuit(3);
        assert!(!c.failed());
        assert!(!c.failed());
        c.answered(); // an answer in between: the count starts over
        assert!(!c.failed());
        assert!(!c.failed());
        assert!(c.admit().is_ok());
        assert!(c.failed(), "the third in a row opens it");
        assert!(!c.failed(), "already open: opened once");
        let err = c.admit().unwrap_err();
        assert!(err.probe_in() > Duration::from_secs(59), "{err}");
        assert!(err.to_string().contains("127.0.0.1:6379"), "{err}");
        let b = c.snapshot();
        assert_eq!(
            (b.state, b.failures, b.rejected, b.opened),
            (BreakerState::Open, 6, 1, 1)
        );
    }

    #[test]
    fn a_probe_closes_or_reopens_it() {
        let c = circuit(1);
        assert!(c.failed());
        c.half_open();
        assert!(c.admit().is_err(), "half-open: only the probe is sent");
        c.reopen();
        assert_eq!(c.snapshot().state, BreakerState::Open);
        c.half_open();
        c.close();
        assert!(c.admit().is_ok());
        let b = c.snapshot();
        assert_eq!((b.opened, b.half_opened, b.closed), (2, 2, 1));
        assert_eq!(b.state, BreakerState::Closed);
    }
}
