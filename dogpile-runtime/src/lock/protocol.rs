//! The dogpile protocol, written once: for each thing a caller learns about its key (what the
//! store holds, whether it got the mutex), the next thing to do. It does no I/O itself; the
//! blocking driver (`drive.rs`: [`Lock::enter`](super::Lock::enter) and a region's calls) and
//! the async driver (a region's async calls) read, lock and create as it says, so a rule added
//! here reaches every kind of call.
//!
//! | state              | learns                       | next                                     |
//! |--------------------|------------------------------|------------------------------------------|
//! | start              | read: fresh                  | done: fresh                              |
//! |                    | read: expired                | try the mutex (never wait)               |
//! |                    | read: missing                | wait for the mutex                       |
//! | trying             | taken                        | read again, holding                      |
//! |                    | held elsewhere               | done: the stale value                    |
//! | waiting            | acquired                     | read again, holding                      |
//! |                    | released (not taken)         | read again, as at the start              |
//! |                    | timed out                    | create unlocked, or fail                 |
//! | holding            | read: fresh                  | done: fresh (or waited), release         |
//! |                    | read: expired or missing     | create (or hand to the background)       |
//!
//! A backend failure at any step is a direct call or an error, as the rules say.

use std::fmt;
use std::time::Duration;

use crate::region::stats::{Counter, Counters};
use crate::BackendError;

/// How a call was served: what a caller learns beside its value.
///
/// ```
/// use dogpile_runtime::region::Served;
/// use dogpile_runtime::Region;
///
/// let region: Region<u8, u8> = Region::builder().build().unwrap();
/// assert_eq!(region.get_with_served(&1, || 1), (1, Served::Created));
/// assert_eq!(region.get_with_served(&1, || 2), (1, Served::Fresh));
/// assert_eq!(Served::Fresh.to_string(), "fresh");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Served {
    /// A stored value within its lifetime.
    Fresh,
    /// An expired stored value, returned at once while another caller (or the background)
    /// regenerates it.
    Stale,
    /// This caller ran the creator.
    Created,
    /// There was no value: this caller waited for another caller's creator and got its value.
    Waited,
    /// The store or mutex failed: this caller ran the creator without the cache.
    Direct,
}

impl Served {
    /// The lower-case name, as in an `X-Cache` header or a metric label.
    ///
    /// ```
    /// # use dogpile_runtime::region::Served;
    /// assert_eq!(Served::Stale.as_str(), "stale");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Fresh => "fresh",
            Served::Stale => "stale",
            Served::Created => "created",
            Served::Waited => "waited",
            Served::Direct => "direct",
        }
    }
}

/// The lower-case name, padded to a width if one is given, for aligned logs.
///
/// ```
/// use dogpile_runtime::region::Served;
/// assert_eq!(format!("{}", Served::Stale), "stale");
/// assert_eq!(format!("[{:<7}]", Served::Fresh), "[fresh  ]");
/// ```
impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a read of a key found, judged by its caller's expiry rules.
pub(crate) enum Found<V> {
    Fresh(V),
    /// Fresh, but late enough in its lifetime that a refresh is due (refresh-ahead).
    Due(V),
    /// Expired; `true` if it may stand in for a failed regeneration (stale-if-error).
    Expired(V, bool),
    /// No value, or one too stale to serve.
    Missing,
}

/// The rules a kind of caller plays by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// The longest wait for the mutex when there is no value (`None`: no limit).
    pub(crate) lock_timeout: Option<Duration>,
    /// After the lock timeout, create without the mutex (a region) rather than fail (a `Lock`).
    pub(crate) create_on_timeout: bool,
    /// An expired value's regeneration may be handed to the background.
    pub(crate) background: bool,
    /// A failing store or mutex means a direct call rather than an error.
    pub(crate) direct_on_backend_error: bool,
    /// A value due for refresh is refreshed in the background (the caller must be able to hand
    /// its creator off).
    pub(crate) refresh_ahead: bool,
    /// A failed regeneration returns the stale value when it is within the window.
    pub(crate) stale_if_error: bool,
}

/// What the driver does next.
pub(crate) enum Next<V> {
    /// Read the key (again) and report it with [`Protocol::read`].
    Read,
    /// Try the mutex without waiting; report with [`Protocol::try_lock`].
    TryLock,
    /// Wait for the mutex, up to the lock timeout; report with [`Protocol::lock`].
    Lock,
    /// Run the creator: this caller holds the mutex (or gave up waiting for it).
    Create,
    /// Holding the mutex for an expired value: hand the regeneration to the background, then
    /// report with [`Protocol::handed`].
    Hand,
    /// Return this value (releasing the mutex, if held).
    Done(Served, V),
    /// The store or mutex failed: run the creator without the cache (releasing the mutex).
    Direct(BackendError),
    /// Return this failure (releasing the mutex, if held).
    Fail(Failure),
}

/// Why a call ends without a value or a creator run.
#[derive(Debug)]
pub(crate) enum Failure {
    /// There was no value and the mutex was not free within the lock timeout.
    Timeout(Duration),
    /// This caller's own creator holds the mutex it would wait for.
    WouldDeadlock,
    /// The store or mutex failed.
    Backend(BackendError),
}

/// How a wait for the mutex ended.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) enum Waited {
    /// This caller holds the mutex now.
    Acquired,
    /// The holder released it; this caller did not take it (an async waiter woken by the
    /// release reads first, so that a thousand woken waiters do not take the mutex in turn).
    Released,
    /// The lock timeout passed.
    TimedOut,
    /// This caller's own creator holds it.
    WouldDeadlock,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Start,
    /// Holding the mutex of a value due for refresh, handing the refresh off.
    Refreshing,
    /// Woken by a release: read as at the start, but a fresh value was waited for.
    Released,
    Trying,
    Waiting,
    Holding {
        waited: bool,
    },
    Creating,
    Handing,
    Done,
}

/// One call's way through the protocol.
pub(crate) struct Protocol<'a, V> {
    rules: Rules,
    counters: Option<&'a Counters>,
    state: State,
    /// The expired value this call found, to return while another caller regenerates (or
    /// the value due for refresh, to return while the background refreshes it).
    stale: Option<V>,
    /// `stale` may stand in for a failed regeneration.
    rescue: bool,
    /// `stale` is fresh, due for refresh: a lost try-lock serves it as fresh.
    due: bool,
    /// The first read found no value: this call never hands a regeneration off.
    missed: bool,
}

impl<'a, V> Protocol<'a, V> {
    /// A call by the `rules`, counting into `counters` (a region's) if given.
    pub(crate) fn new(rules: Rules, counters: Option<&'a Counters>) -> Self {
        Protocol {
            rules,
            counters,
            state: State::Start,
            stale: None,
            rescue: false,
            due: false,
            missed: false,
        }
    }

    /// The first step: read the key.
    pub(crate) fn start(&self) -> Next<V> {
        Next::Read
    }

    /// The rules of this call.
    pub(crate) fn rules(&self) -> &Rules {
        &self.rules
    }

    fn count(&self, counter: Counter) {
        if let Some(counters) = self.counters {
            counters.add(counter);
        }
    }

    fn done(&mut self, served: Served, value: V) -> Next<V> {
        self.state = State::Done;
        self.count(match served {
            Served::Fresh => Counter::Hit,
            Served::Stale => Counter::StaleHit,
            Served::Waited => Counter::Wait,
            // Counted where the creator runs.
            Served::Created | Served::Direct => return Next::Done(served, value),
        });
        Next::Done(served, value)
    }

    fn backend(&mut self, err: BackendError) -> Next<V> {
        self.state = State::Done;
        if self.rules.direct_on_backend_error {
            Next::Direct(err)
        } else {
            Next::Fail(Failure::Backend(err))
        }
    }

    /// What a read of the key found.
    pub(crate) fn read(&mut self, found: Result<Found<V>, BackendError>) -> Next<V> {
        let found = match found {
            Ok(found) => found,
            Err(err) => return self.backend(err),
        };
        match (self.state, found) {
            (State::Holding { waited }, Found::Fresh(value) | Found::Due(value)) => {
                // Another caller finished while this one took the mutex.
                let served = if waited {
                    Served::Waited
                } else {
                    Served::Fresh
                };
                self.done(served, value)
            }
            (State::Refreshing, Found::Due(value)) => {
                // Still due under the mutex: hand the refresh off.
                self.stale = Some(value);
                Next::Hand
            }
            (State::Refreshing, Found::Fresh(value)) => {
                // Refreshed by another caller meanwhile.
                self.stale = None;
                self.done(Served::Fresh, value)
            }
            (State::Refreshing, found) => {
                // Expired or gone meanwhile (an invalidation): the expired rules apply.
                self.due = false;
                self.state = State::Holding { waited: false };
                self.read(Ok(found))
            }
            (State::Holding { .. }, found) => {
                if let Found::Expired(value, rescue) = found {
                    self.stale = Some(value);
                    self.rescue = rescue;
                }
                if self.stale.is_some() && self.rules.background && !self.missed {
                    self.state = State::Handing;
                    Next::Hand
                } else {
                    self.state = State::Creating;
                    Next::Create
                }
            }
            (State::Start, Found::Fresh(value)) => self.done(Served::Fresh, value),
            (State::Start, Found::Due(value)) if self.rules.refresh_ahead => {
                self.stale = Some(value);
                self.due = true;
                self.state = State::Trying;
                Next::TryLock
            }
            (State::Start, Found::Due(value)) => self.done(Served::Fresh, value),
            (State::Released, Found::Fresh(value) | Found::Due(value)) => {
                self.done(Served::Waited, value)
            }
            (State::Start | State::Released, Found::Expired(value, rescue)) => {
                self.stale = Some(value);
                self.rescue = rescue;
                self.state = State::Trying;
                Next::TryLock
            }
            (State::Start | State::Released, Found::Missing) => {
                if self.state == State::Start {
                    self.missed = true;
                    self.count(Counter::Miss);
                }
                self.state = State::Waiting;
                Next::Lock
            }
            (state, _) => unexpected(state, "a read"),
        }
    }

    /// Whether the mutex was free and is now held by this call.
    pub(crate) fn try_lock(&mut self, taken: Result<bool, BackendError>) -> Next<V> {
        debug_assert_eq!(self.state, State::Trying);
        match taken {
            // Read again under the mutex: the previous holder may have just stored a value.
            // Without this read a burst on one key regenerates once per slow getter call.
            Ok(true) => {
                self.state = if self.due {
                    State::Refreshing
                } else {
                    State::Holding { waited: false }
                };
                Next::Read
            }
            Ok(false) => {
                let served = if self.due {
                    Served::Fresh
                } else {
                    Served::Stale
                };
                match self.stale.take() {
                    Some(value) => self.done(served, value),
                    None => unexpected(self.state, "a refused try-lock"),
                }
            }
            // A value due for refresh is served whatever the backend says.
            Err(_) if self.due => match self.stale.take() {
                Some(value) => self.done(Served::Fresh, value),
                None => unexpected(self.state, "a failed try-lock"),
            },
            Err(err) => self.backend(err),
        }
    }

    /// How the wait for the mutex ended.
    pub(crate) fn lock(&mut self, waited: Result<Waited, BackendError>) -> Next<V> {
        debug_assert_eq!(self.state, State::Waiting);
        match waited {
            Ok(Waited::Acquired) => {
                self.state = State::Holding { waited: true };
                Next::Read
            }
            Ok(Waited::Released) => {
                self.state = State::Released;
                Next::Read
            }
            Ok(Waited::TimedOut) => {
                let timeout = self.rules.lock_timeout.unwrap_or(Duration::MAX);
                self.count(Counter::LockTimeout);
                if self.rules.create_on_timeout {
                    // Waited long enough: create here, beside the holder.
                    self.state = State::Creating;
                    Next::Create
                } else {
                    self.state = State::Done;
                    Next::Fail(Failure::Timeout(timeout))
                }
            }
            Ok(Waited::WouldDeadlock) => {
                self.state = State::Done;
                Next::Fail(Failure::WouldDeadlock)
            }
            Err(err) => self.backend(err),
        }
    }

    /// Whether the background took the regeneration (and the mutex with it).
    pub(crate) fn handed(&mut self, taken: bool) -> Next<V> {
        if self.state == State::Refreshing {
            // A refresh the background cannot take is skipped: the value is still fresh, and
            // this caller does not pay for the regeneration.
            return match self.stale.take() {
                Some(value) => self.done(Served::Fresh, value),
                None => unexpected(self.state, "a refresh without a value"),
            };
        }
        debug_assert_eq!(self.state, State::Handing);
        match (taken, self.stale.take()) {
            (true, Some(stale)) => self.done(Served::Stale, stale),
            (false, stale) => {
                // No room in the background: regenerate here.
                self.stale = stale;
                self.state = State::Creating;
                Next::Create
            }
            (true, None) => unexpected(self.state, "a hand-off without a stale value"),
        }
    }
}

impl<V> Protocol<'_, V> {
    /// Whether a failure of the creator about to run would be answered with the stale value:
    /// the driver then catches a panic of the creator too.
    pub(crate) fn may_rescue(&self) -> bool {
        self.rules.stale_if_error && self.rescue && self.stale.is_some()
    }

    /// The creator failed (an error, or a panic the driver caught): the stale value, if the
    /// stale-if-error window covers it; `None` to let the failure reach the caller.
    pub(crate) fn failed(&mut self) -> Option<V> {
        if !self.may_rescue() {
            return None;
        }
        self.state = State::Done;
        self.count(Counter::StaleIfError);
        self.count(Counter::StaleHit);
        self.stale.take()
    }
}

/// A driver reported something the protocol never asked for: a bug in the driver, never
/// reachable from user input.
#[cold]
#[inline(never)]
fn unexpected(state: State, what: &str) -> ! {
    panic!("dogpile protocol: {what} reported in state {state:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        lock_timeout: None,
        create_on_timeout: false,
        background: false,
        direct_on_backend_error: false,
        refresh_ahead: false,
        stale_if_error: false,
    };

    fn served<V>(next: Next<V>) -> (Served, V) {
        match next {
            Next::Done(served, value) => (served, value),
            _ => panic!("not done"),
        }
    }

    #[test]
    fn a_fresh_value_is_returned_without_the_mutex() {
        let mut p = Protocol::new(RULES, None);
        assert!(matches!(p.start(), Next::Read));
        assert_eq!(served(p.read(Ok(Found::Fresh(1)))), (Served::Fresh, 1));
    }

    #[test]
    fn an_expired_value_is_served_stale_when_the_mutex_is_held() {
        let mut p = Protocol::new(RULES, None);
        assert!(matches!(
            p.read(Ok(Found::Expired(1, false))),
            Next::TryLock
        ));
        assert_eq!(served(p.try_lock(Ok(false))), (Served::Stale, 1));
    }

    #[test]
    fn the_winner_reads_again_and_creates_only_if_still_expired() {
        let mut p = Protocol::new(RULES, None);
        p.read(Ok(Found::Expired(1, false)));
        assert!(matches!(p.try_lock(Ok(true)), Next::Read));
        assert_eq!(served(p.read(Ok(Found::Fresh(2)))), (Served::Fresh, 2));

        let mut p = Protocol::new(RULES, None);
        p.read(Ok(Found::Expired(1, false)));
        p.try_lock(Ok(true));
        assert!(matches!(p.read(Ok(Found::Expired(1, false))), Next::Create));
    }

    #[test]
    fn a_missing_value_is_waited_for_then_read_again() {
        let mut p = Protocol::new(RULES, None);
        assert!(matches!(p.read(Ok(Found::<u8>::Missing)), Next::Lock));
        assert!(matches!(p.lock(Ok(Waited::Acquired)), Next::Read));
        assert_eq!(served(p.read(Ok(Found::Fresh(3)))), (Served::Waited, 3));

        let mut p = Protocol::new(RULES, None);
        p.read(Ok(Found::<u8>::Missing));
        assert!(matches!(p.lock(Ok(Waited::Released)), Next::Read));
        assert!(matches!(p.read(Ok(Found::Missing)), Next::Lock));
        assert!(matches!(p.lock(Ok(Waited::Acquired)), Next::Read));
        assert!(matches!(p.read(Ok(Found::Missing)), Next::Create));
    }

    #[test]
    fn background_takes_expired_values_only() {
        let rules = Rules {
            background: true,
            ..RULES
        };
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        p.try_lock(Ok(true));
        assert!(matches!(p.read(Ok(Found::Expired(1, false))), Next::Hand));
        assert_eq!(served(p.handed(true)), (Served::Stale, 1));

        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        p.try_lock(Ok(true));
        p.read(Ok(Found::Expired(1, false)));
        assert!(matches!(p.handed(false), Next::Create));

        // A first miss is never handed off, even if a value shows up expired meanwhile.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Missing));
        p.lock(Ok(Waited::Acquired));
        assert!(matches!(p.read(Ok(Found::Expired(1, false))), Next::Create));
    }

    #[test]
    fn a_value_due_for_refresh_is_handed_off_or_served_fresh() {
        let rules = Rules {
            background: true,
            refresh_ahead: true,
            ..RULES
        };
        let mut p = Protocol::new(rules, None);
        assert!(matches!(p.read(Ok(Found::Due(1))), Next::TryLock));
        assert!(matches!(p.try_lock(Ok(true)), Next::Read));
        assert!(matches!(p.read(Ok(Found::Due(1))), Next::Hand));
        assert_eq!(served(p.handed(true)), (Served::Fresh, 1));

        // Held elsewhere (being refreshed), or the background is full: served as fresh.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Due(1)));
        assert_eq!(served(p.try_lock(Ok(false))), (Served::Fresh, 1));
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Due(1)));
        p.try_lock(Ok(true));
        p.read(Ok(Found::Due(1)));
        assert_eq!(served(p.handed(false)), (Served::Fresh, 1));

        // Without refresh-ahead in this call, due is fresh.
        let mut p = Protocol::new(RULES, None);
        assert_eq!(served(p.read(Ok(Found::Due(1)))), (Served::Fresh, 1));
    }

    #[test]
    fn a_failed_creation_falls_back_on_a_rescuable_stale_value() {
        let rules = Rules {
            stale_if_error: true,
            ..RULES
        };
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, true)));
        p.try_lock(Ok(true));
        assert!(matches!(p.read(Ok(Found::Expired(1, true))), Next::Create));
        assert!(p.may_rescue());
        assert_eq!(p.failed(), Some(1));

        // Beyond the window, or without the rule: the failure reaches the caller.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        p.try_lock(Ok(true));
        p.read(Ok(Found::Expired(1, false)));
        assert_eq!(p.failed(), None);
        let mut p = Protocol::new(RULES, None);
        p.read(Ok(Found::Expired(1, true)));
        p.try_lock(Ok(true));
        p.read(Ok(Found::Expired(1, true)));
        assert_eq!(p.failed(), None);
    }

    #[test]
    fn a_timeout_fails_or_creates_by_the_rules() {
        let rules = Rules {
            lock_timeout: Some(Duration::from_millis(5)),
            ..RULES
        };
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::<u8>::Missing));
        assert!(matches!(
            p.lock(Ok(Waited::TimedOut)),
            Next::Fail(Failure::Timeout(t)) if t == Duration::from_millis(5)
        ));

        let rules = Rules {
            create_on_timeout: true,
            ..rules
        };
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::<u8>::Missing));
        assert!(matches!(p.lock(Ok(Waited::TimedOut)), Next::Create));
    }

    #[test]
    fn backend_failures_are_direct_calls_or_errors_by_the_rules() {
        let mut p = Protocol::<u8>::new(RULES, None);
        assert!(matches!(
            p.read(Err(BackendError::new("down"))),
            Next::Fail(Failure::Backend(_))
        ));
        let rules = Rules {
            direct_on_backend_error: true,
            ..RULES
        };
        let mut p = Protocol::<u8>::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        assert!(matches!(
            p.try_lock(Err(BackendError::new("down"))),
            Next::Direct(_)
        ));
    }
}
