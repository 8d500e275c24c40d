//! The dogpile protocol, written once: for each thing a caller learns about its key (what the
//! store holds, whether it got the mutex), the next thing to do. It does no I/O itself; the
//! blocking driver (`drive.rs`: [`Lock::enter`](super::Lock::enter) and a region's calls) and
//! the async driver (`region/asynchronous/driver.rs`) read, lock and create as it says, so a
//! rule added here reaches every kind of call.
//!
//! | state              | learns                       | next                                     |
//! |--------------------|------------------------------|------------------------------------------|
//! | start              | read: fresh                  | done: fresh                              |
//! |                    | read: expired (or due)       | try the mutex (never wait)               |
//! |                    | read: missing                | wait for the mutex                       |
//! | trying             | taken                        | read again, holding                      |
//! |                    | held elsewhere               | done: the stale value (fresh if due)     |
//! | waiting            | acquired                     | read again, holding                      |
//! |                    | released (not taken)         | read again, as at the start              |
//! |                    | timed out                    | create without the mutex                 |
//! | holding            | read: fresh                  | done: fresh (or waited), release         |
//! |                    | read: expired or missing     | create, or hand to the background        |
//!
//! The protocol stops where the caller must act: with a value ([`Next::Done`]), with a
//! creation to run ([`Next::Create`], carrying the stale value that stands in for a failure),
//! or with a hand-off ([`Next::Hand`]) whose two endings it decides too. A backend failure at
//! any step is a direct call or an error, as the rules say.

use std::time::Duration;

use crate::served::Served;
use crate::stats::Counters;
use crate::BackendError;

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
    /// The longest wait for the mutex when there is no value (`None`: no limit); then the
    /// caller creates beside the holder (a region) or fails (a `Lock`).
    pub(crate) lock_timeout: Option<Duration>,
    /// The longest wait for another caller's creator, after which the waiter gives up with a
    /// timeout (a region's hard timeout; `None`: no limit). The lock timeout, if shorter, comes
    /// first.
    pub(crate) hard_timeout: Option<Duration>,
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
    /// Run the creator: holding the mutex, or, when the driver holds none, after the lock
    /// timeout (a region creates beside the holder; a [`Lock`](super::Lock) fails).
    /// `rescue` is the stale value to return if the creator fails (stale-if-error).
    Create { rescue: Option<V> },
    /// Holding the mutex of an expired value, or of one due for refresh: hand the
    /// regeneration to the background, then end with [`Protocol::taken`] or
    /// [`Protocol::refused`].
    Hand(Hand<V>),
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
    /// This caller's own creator holds the mutex it would wait for.
    WouldDeadlock,
    /// The creator this caller waited for ran past the hard timeout.
    TimedOut(Duration),
    /// The store or mutex failed.
    Backend(BackendError),
}

/// How a wait for the mutex ended.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// This caller holds the mutex now.
    Acquired,
    /// The holder released it; this caller did not take it (an async waiter woken by the
    /// release reads first, so that a thousand woken waiters do not take the mutex in turn).
    Released,
    /// The lock timeout passed.
    TimedOut,
    /// The hard timeout passed: the waiter gives up.
    GaveUp,
    /// This caller's own creator holds it.
    WouldDeadlock,
}

/// A regeneration the protocol asks the driver to hand off, with the value the call returns.
pub(crate) struct Hand<V> {
    value: V,
    /// A refresh of a value still fresh (refresh-ahead), not a regeneration of an expired one.
    refresh: bool,
    /// The value may stand in for a failed regeneration.
    rescuable: bool,
}

/// What a call does when the background had no room for its hand-off.
pub(crate) enum Refused<V> {
    /// Return this value: a refresh is skipped (the value is still fresh).
    Done(Served, V),
    /// Regenerate here, as [`Next::Create`] says.
    Create { rescue: Option<V> },
}

/// A value read before the mutex was taken, kept to return if another caller regenerates.
struct Stale<V> {
    value: V,
    /// Fresh but due for refresh.
    due: bool,
    /// May stand in for a failed regeneration.
    rescuable: bool,
}

enum State<V> {
    Start,
    /// Woken by a release: read as at the start, but a fresh value was waited for.
    Released,
    Trying(Stale<V>),
    Waiting,
    Holding {
        waited: bool,
        /// The value read before the mutex was taken, if any.
        stale: Option<Stale<V>>,
    },
    Done,
}

impl<V> State<V> {
    fn name(&self) -> &'static str {
        match self {
            State::Start => "start",
            State::Released => "released",
            State::Trying(_) => "trying",
            State::Waiting => "waiting",
            State::Holding { .. } => "holding",
            State::Done => "done",
        }
    }
}

/// One call's way through the protocol.
pub(crate) struct Protocol<'a, V> {
    rules: Rules,
    counters: Option<&'a Counters>,
    state: State<V>,
    /// The first read found no value: this call never hands a regeneration off.
    missed: bool,
    /// When the call began to wait for the mutex, while it waits (and counts): set by
    /// [`blocks`](Self::blocks), so that a mutex taken at once reads no clock.
    waiting_since: Option<std::time::Instant>,
}

impl<'a, V> Protocol<'a, V> {
    /// A call by the `rules`, counting into `counters` (a region's) if given.
    pub(crate) fn new(rules: Rules, counters: Option<&'a Counters>) -> Self {
        Protocol {
            rules,
            counters,
            state: State::Start,
            missed: false,
            waiting_since: None,
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

    fn done(&mut self, served: Served, value: V) -> Next<V> {
        let (served, value) = self.finish(served, value);
        Next::Done(served, value)
    }

    /// Ends the call with `value`, counted as `served`.
    fn finish(&mut self, served: Served, value: V) -> (Served, V) {
        self.state = State::Done;
        if let Some(counters) = self.counters {
            counters.served(served);
            if matches!(served, Served::Waited) {
                self.count_wait();
            }
        }
        (served, value)
    }

    /// Counts the time waited for the mutex, if the call waited.
    #[cold]
    fn count_wait(&mut self) {
        if let (Some(counters), Some(since)) = (self.counters, self.waiting_since.take()) {
            counters.waited(since.elapsed());
        }
    }

    /// The call, told to [`Next::Lock`], found the mutex held and is about to wait for it:
    /// its wait is timed from now, if the call counts.
    pub(crate) fn blocks(&mut self) {
        if self.counters.is_some() && self.waiting_since.is_none() {
            self.waiting_since = Some(std::time::Instant::now());
        }
    }

    fn backend(&mut self, err: BackendError) -> Next<V> {
        self.state = State::Done;
        if self.rules.direct_on_backend_error {
            Next::Direct(err)
        } else {
            Next::Fail(Failure::Backend(err))
        }
    }

    fn create(&mut self, stale: Option<Stale<V>>) -> Next<V> {
        Next::Create {
            rescue: self.rescue(stale),
        }
    }

    /// Ends the call in a creation: the stale value that stands in for its failure, if the
    /// rules let it.
    fn rescue(&mut self, stale: Option<Stale<V>>) -> Option<V> {
        self.state = State::Done;
        stale
            .filter(|stale| self.rules.stale_if_error && stale.rescuable)
            .map(|stale| stale.value)
    }

    fn take(&mut self) -> State<V> {
        std::mem::replace(&mut self.state, State::Done)
    }

    /// What a read of the key found.
    pub(crate) fn read(&mut self, found: Result<Found<V>, BackendError>) -> Next<V> {
        let found = match found {
            Ok(found) => found,
            Err(err) => return self.backend(err),
        };
        match (self.take(), found) {
            (State::Start, Found::Fresh(value)) => self.done(Served::Fresh, value),
            (State::Start, Found::Due(value)) if self.rules.refresh_ahead => {
                self.state = State::Trying(Stale {
                    value,
                    due: true,
                    rescuable: false,
                });
                Next::TryLock
            }
            (State::Start, Found::Due(value)) => self.done(Served::Fresh, value),
            (State::Released, Found::Fresh(value) | Found::Due(value)) => {
                self.done(Served::Waited, value)
            }
            (State::Start | State::Released, Found::Expired(value, rescuable)) => {
                self.state = State::Trying(Stale {
                    value,
                    due: false,
                    rescuable,
                });
                Next::TryLock
            }
            (state @ (State::Start | State::Released), Found::Missing) => {
                if matches!(state, State::Start) {
                    self.missed = true;
                    if let Some(counters) = self.counters {
                        counters.add(crate::stats::Counter::Miss);
                    }
                }
                self.state = State::Waiting;
                Next::Lock
            }
            (
                State::Holding {
                    stale: Some(stale), ..
                },
                Found::Due(value),
            ) if stale.due => {
                // Still due under the mutex: hand the refresh off.
                Next::Hand(Hand {
                    value,
                    refresh: true,
                    rescuable: false,
                })
            }
            (State::Holding { waited, .. }, Found::Fresh(value) | Found::Due(value)) => {
                // Another caller finished (or refreshed) while this one took the mutex.
                let served = if waited {
                    Served::Waited
                } else {
                    Served::Fresh
                };
                self.done(served, value)
            }
            (State::Holding { .. }, Found::Expired(value, rescuable)) => {
                let stale = Stale {
                    value,
                    due: false,
                    rescuable,
                };
                if self.rules.background && !self.missed {
                    Next::Hand(Hand {
                        value: stale.value,
                        refresh: false,
                        rescuable: stale.rescuable,
                    })
                } else {
                    self.create(Some(stale))
                }
            }
            // Gone under the mutex (invalidated meanwhile): what was read before is not served
            // again, and the caller creates.
            (State::Holding { .. }, Found::Missing) => self.create(None),
            (state, _) => unexpected(state.name(), "a read"),
        }
    }

    /// Whether the mutex was free and is now held by this call.
    pub(crate) fn try_lock(&mut self, taken: Result<bool, BackendError>) -> Next<V> {
        let stale = match self.take() {
            State::Trying(stale) => stale,
            state => unexpected(state.name(), "a try-lock"),
        };
        match taken {
            // Read again under the mutex: the previous holder may have just stored a value.
            // Without this read a burst on one key regenerates once per slow getter call.
            Ok(true) => {
                self.state = State::Holding {
                    waited: false,
                    stale: Some(stale),
                };
                Next::Read
            }
            // Held elsewhere (being regenerated), or, for a value due for refresh, a backend
            // that cannot say: the value is served, fresh if it is.
            Ok(false) => self.serve(stale),
            Err(_) if stale.due => self.serve(stale),
            Err(err) => self.backend(err),
        }
    }

    fn serve(&mut self, stale: Stale<V>) -> Next<V> {
        let served = if stale.due {
            Served::Fresh
        } else {
            Served::Stale
        };
        self.done(served, stale.value)
    }

    /// How the wait for the mutex ended.
    pub(crate) fn lock(&mut self, waited: Result<Waited, BackendError>) -> Next<V> {
        match self.take() {
            State::Waiting => {}
            state => unexpected(state.name(), "a wait"),
        }
        // A wait that took the mutex counts if the call then finds the holder's value: else
        // the mutex was free, or its holder failed, and this call creates.
        if !matches!(waited, Ok(Waited::Acquired)) {
            self.count_wait();
        }
        match waited {
            Ok(Waited::Acquired) => {
                self.state = State::Holding {
                    waited: true,
                    stale: None,
                };
                Next::Read
            }
            Ok(Waited::Released) => {
                self.state = State::Released;
                Next::Read
            }
            Ok(Waited::TimedOut) => {
                if let Some(counters) = self.counters {
                    counters.add(crate::stats::Counter::LockTimeout);
                }
                self.create(None)
            }
            Ok(Waited::GaveUp) => {
                let timeout = self.rules.hard_timeout.unwrap_or(Duration::MAX);
                Next::Fail(Failure::TimedOut(timeout))
            }
            Ok(Waited::WouldDeadlock) => Next::Fail(Failure::WouldDeadlock),
            Err(err) => self.backend(err),
        }
    }

    /// The background took the regeneration (and the mutex with it): the call's value.
    pub(crate) fn taken(&mut self, hand: Hand<V>) -> (Served, V) {
        let served = if hand.refresh {
            Served::Fresh
        } else {
            Served::Stale
        };
        self.finish(served, hand.value)
    }

    /// The background had no room: a refresh is skipped (the value is still fresh, and this
    /// caller does not pay for it); an expired value is regenerated here.
    pub(crate) fn refused(&mut self, hand: Hand<V>) -> Refused<V> {
        if hand.refresh {
            let (served, value) = self.taken(hand);
            return Refused::Done(served, value);
        }
        Refused::Create {
            rescue: self.rescue(Some(Stale {
                value: hand.value,
                due: false,
                rescuable: hand.rescuable,
            })),
        }
    }
}

/// A driver reported something the protocol never asked for: a bug in the driver, never
/// reachable from user input.
#[cold]
#[inline(never)]
fn unexpected(state: &str, what: &str) -> ! {
    panic!("dogpile protocol: {what} reported in state {state}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        lock_timeout: None,
        hard_timeout: None,
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

    fn rescue<V>(next: Next<V>) -> Option<V> {
        match next {
            Next::Create { rescue } => rescue,
            _ => panic!("not a creation"),
        }
    }

    fn hand<V>(next: Next<V>) -> Hand<V> {
        match next {
            Next::Hand(hand) => hand,
            _ => panic!("not a hand-off"),
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
        assert_eq!(rescue(p.read(Ok(Found::Expired(1, false)))), None);
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
        assert_eq!(rescue(p.read(Ok(Found::Missing))), None);
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
        let h = hand(p.read(Ok(Found::Expired(1, false))));
        assert_eq!(p.taken(h), (Served::Stale, 1));

        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        p.try_lock(Ok(true));
        let h = hand(p.read(Ok(Found::Expired(1, false))));
        assert!(matches!(p.refused(h), Refused::Create { rescue: None }));

        // A first miss is never handed off, even if a value shows up expired meanwhile.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Missing));
        p.lock(Ok(Waited::Acquired));
        assert_eq!(rescue(p.read(Ok(Found::Expired(1, false)))), None);
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
        let h = hand(p.read(Ok(Found::Due(1))));
        assert_eq!(p.taken(h), (Served::Fresh, 1));

        // Held elsewhere (being refreshed), or the background is full: served as fresh.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Due(1)));
        assert_eq!(served(p.try_lock(Ok(false))), (Served::Fresh, 1));
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Due(1)));
        p.try_lock(Ok(true));
        let h = hand(p.read(Ok(Found::Due(1))));
        assert!(matches!(p.refused(h), Refused::Done(Served::Fresh, 1)));

        // Expired under the mutex (an invalidation): the expired rules apply.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Due(1)));
        p.try_lock(Ok(true));
        let h = hand(p.read(Ok(Found::Expired(2, false))));
        assert_eq!(p.taken(h), (Served::Stale, 2));

        // Without refresh-ahead in this call, due is fresh.
        let mut p = Protocol::new(RULES, None);
        assert_eq!(served(p.read(Ok(Found::Due(1)))), (Served::Fresh, 1));
    }

    #[test]
    fn a_creation_carries_the_stale_value_that_rescues_it() {
        let rules = Rules {
            stale_if_error: true,
            ..RULES
        };
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, true)));
        p.try_lock(Ok(true));
        assert_eq!(rescue(p.read(Ok(Found::Expired(1, true)))), Some(1));

        // Beyond the window, without the rule, or gone under the mutex: no rescue.
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        p.try_lock(Ok(true));
        assert_eq!(rescue(p.read(Ok(Found::Expired(1, false)))), None);
        let mut p = Protocol::new(RULES, None);
        p.read(Ok(Found::Expired(1, true)));
        p.try_lock(Ok(true));
        assert_eq!(rescue(p.read(Ok(Found::Expired(1, true)))), None);
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, true)));
        p.try_lock(Ok(true));
        assert_eq!(rescue(p.read(Ok(Found::Missing))), None);
    }

    #[test]
    fn a_timeout_creates_without_the_mutex() {
        let rules = Rules {
            lock_timeout: Some(Duration::from_millis(5)),
            ..RULES
        };
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::<u8>::Missing));
        assert_eq!(rescue(p.lock(Ok(Waited::TimedOut))), None);
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
        let mut p = Protocol::new(rules, None);
        p.read(Ok(Found::Expired(1, false)));
        assert!(matches!(
            p.try_lock(Err(BackendError::new("down"))),
            Next::Direct(_)
        ));
    }
}
