//! Expiry and stamps: what a region stores beside each value ([`Stamp`]), and how a stamp
//! reads against a handle's expiry, its policies (refresh-ahead, max-stale, stale-if-error) and
//! the invalidations.
//!
//! A value that lives shorter than the handle's expiry (a lifetime of its own, `expire_with`,
//! jitter) is stamped as if created that much earlier, so every rule that reads its age (expiry,
//! stale windows) reads it against its own lifetime with one comparison on the hot path, in
//! this process and any other that shares the store; the stamp also keeps by how much it was
//! moved back, so refresh-ahead finds the value's own refresh point.

use std::time::Duration;

use super::{Inner, Region};
use crate::lock::protocol::Found;
use crate::sync::Ordering;
use crate::{Clock, CoarseClock, RawMutex, Timestamp};

/// When a stored value was made, as its region judges it: what a [`Store`](super::Store) keeps beside each
/// value and gives back as it was given.
///
/// A store never reads a stamp; the region does. A store that keeps bytes can keep
/// [`to_bytes`](Self::to_bytes) and give back [`from_bytes`](Self::from_bytes).
///
/// ```
/// use dogpile_runtime::clock::Timestamp;
/// use dogpile_runtime::region::Stamp;
///
/// let stamp = Stamp::new(Timestamp::from_nanos(7));
/// assert_eq!(stamp.created(), Timestamp::from_nanos(7));
/// assert_eq!(Stamp::from_bytes(stamp.to_bytes()), stamp);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The creation time, moved back by `shortened`.
    created: Timestamp,
    /// How much shorter than the expiry of the handle that stored it the value lives, in
    /// nanoseconds (0: the whole expiry).
    shortened: i64,
}

impl Stamp {
    /// The stamp of a value created at `created` that lives as long as its region's expiry.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::region::Stamp;
    /// assert_eq!(Stamp::new(Timestamp::from_nanos(1)).created(), Timestamp::from_nanos(1));
    /// ```
    pub const fn new(created: Timestamp) -> Self {
        Stamp {
            created,
            shortened: 0,
        }
    }

    /// The creation time the region reads ages from (for a value with a shorter lifetime of
    /// its own, earlier than its real one by the difference).
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::region::Stamp;
    /// let stamp: Stamp = Timestamp::from_nanos(5).into();
    /// assert_eq!(stamp.created().as_nanos(), 5);
    /// ```
    pub const fn created(self) -> Timestamp {
        self.created
    }

    /// The stamp as 16 bytes, for a store that keeps bytes.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::region::Stamp;
    /// assert_eq!(Stamp::new(Timestamp::from_nanos(1)).to_bytes().len(), 16);
    /// ```
    pub fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.created.as_nanos().to_be_bytes());
        bytes[8..].copy_from_slice(&self.shortened.to_be_bytes());
        bytes
    }

    /// The stamp that [`to_bytes`](Self::to_bytes) gave.
    ///
    /// ```
    /// # use dogpile_runtime::clock::Timestamp;
    /// # use dogpile_runtime::region::Stamp;
    /// let stamp = Stamp::new(Timestamp::from_nanos(-3));
    /// assert_eq!(Stamp::from_bytes(stamp.to_bytes()), stamp);
    /// ```
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let (created, shortened) = bytes.split_at(8);
        let word = |half: &[u8]| {
            let mut word = [0; 8];
            word.copy_from_slice(half);
            i64::from_be_bytes(word)
        };
        Stamp {
            created: Timestamp::from_nanos(word(created)),
            shortened: word(shortened),
        }
    }
}

/// A value that lives as long as its region's expiry, created at this time.
impl From<Timestamp> for Stamp {
    fn from(created: Timestamp) -> Self {
        Stamp::new(created)
    }
}

/// `expiry` as the hot path compares it: nanoseconds, `i64::MAX` for never.
pub(super) fn expiry_nanos(expiry: Option<Duration>) -> i64 {
    expiry.map_or(i64::MAX, |e| {
        i64::try_from(e.as_nanos()).map_or(i64::MAX - 1, |n| n.min(i64::MAX - 1))
    })
}

/// The hot path's one comparison for a value's age against its expiry and the tolerance: an
/// age shifted by the tolerance, as unsigned, is over this limit when the value is older than
/// its expiry or created further ahead of the clock than the tolerance.
pub(super) fn expiry_limit(expiry_nanos: i64, tolerance_nanos: i64) -> u64 {
    // Both are at most i64::MAX - 1 and 100 years: no overflow.
    expiry_nanos.saturating_add(tolerance_nanos).unsigned_abs()
}

/// Whether `at`, a moment the region's clock gave, is less than `window` before `now`. A moment
/// further ahead of the clock than `tolerance` (the clock stepped back since) is not, as a value
/// stamped then counts as expired: a step back ends a failure throttle, a back-off or the
/// sharing of a value made directly, instead of stretching it by the length of the step.
pub(super) fn within(now: i64, at: i64, window: i64, tolerance: i64) -> bool {
    let age = now.saturating_sub(at);
    age < window && age >= tolerance.saturating_neg()
}

/// The limit past which a value is due for refresh: `share` of its expiry.
pub(super) fn refresh_limit(expiry_nanos: i64, tolerance_nanos: i64, share: Option<f64>) -> u64 {
    match share {
        Some(share) if expiry_nanos != i64::MAX => {
            // `share` is in (0, 1): the product is below the expiry.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let due = (expiry_nanos as f64 * share) as i64;
            expiry_limit(due, tolerance_nanos)
        }
        _ => expiry_limit(expiry_nanos, tolerance_nanos),
    }
}

/// The creation time with which a store that judges invalidation itself (one shared by
/// processes) returns a soft-invalidated value: expired, whatever this process's cutoffs say.
/// Also the initial soft cutoff, so that it is always at or before it.
pub(super) const SOFT_INVALIDATED: Timestamp = Timestamp::from_nanos(1);

/// The stamp of a key soft-invalidated at `at`: its negation. It is below every cutoff, so the
/// slow path judges it: expired since `at`, unless a hard invalidation came after.
pub(super) fn soft_stamp(at: Stamp) -> Stamp {
    Stamp::new(Timestamp::from_nanos(-at.created.as_nanos().max(2)))
}

impl<V> Found<V> {
    /// What a stored value of `age` is to the protocol.
    #[inline]
    pub(super) fn aged(value: V, age: Age) -> Self {
        match age {
            Age::Fresh => Found::Fresh(value),
            Age::Due => Found::Due(value),
            Age::Expired(rescue) => Found::Expired(value, rescue),
            Age::Gone => Found::Missing,
        }
    }
}

/// How a stored value's creation time reads against a handle's expiry and the invalidations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Age {
    Fresh,
    /// Fresh, and late enough in its life that a refresh is due (refresh-ahead).
    Due,
    /// Expired; `true` if it may stand in for a failed regeneration (stale-if-error).
    Expired(bool),
    /// Hard-invalidated, too stale to serve, or not a real creation time: as if there were no
    /// value.
    Gone,
}

impl<K, V, S, M: RawMutex> Region<K, V, S, M> {
    /// What a stored value and its creation time amount to through this handle.
    #[inline]
    pub(super) fn judge(&self, stored: Option<(V, Stamp)>) -> Found<V> {
        match stored {
            None => Found::Missing,
            Some((value, stamp)) => Found::aged(value, self.age(stamp)),
        }
    }

    #[inline]
    pub(super) fn age(&self, stamp: Stamp) -> Age {
        let inner = &*self.inner;
        let nanos = stamp.created.as_nanos();
        if nanos <= inner.any_until.load(Ordering::Relaxed) {
            return self.age_invalidated(nanos);
        }
        if self.expiry_nanos == i64::MAX {
            return Age::Fresh;
        }
        // Creation times that reach this point are positive (past `missing_until`, at least
        // 0), and clocks read after 1970, so the subtraction cannot overflow. An age below
        // minus the tolerance (a creation time ahead of the clock: the clock stepped back, or
        // another host's runs ahead) wraps to a huge unsigned number and counts as expired, so
        // no clock jump keeps a value fresh past its lifetime plus the tolerance.
        let age = inner.now().as_nanos().wrapping_sub(nanos);
        let shifted = age.wrapping_add(inner.tolerance_nanos) as u64;
        if shifted <= self.refresh_limit {
            Age::Fresh
        } else {
            self.age_late(age, shifted, stamp.shortened)
        }
    }

    /// A value past the point of refresh: due, expired, or too stale.
    #[cold]
    fn age_late(&self, age: i64, shifted: u64, shortened: i64) -> Age {
        if shifted <= self.expiry_limit {
            self.due(shifted, shortened)
        } else if age < 0 {
            // Created further ahead of the clock than the tolerance: its age is unknown.
            Age::Expired(false)
        } else {
            self.staleness(age - self.expiry_nanos)
        }
    }

    /// A value past the handle's point of refresh but not its expiry: due, unless it lives
    /// `shortened` less than the expiry, when its own point of refresh (the same share of its
    /// own lifetime) may still be ahead.
    fn due(&self, shifted: u64, shortened: i64) -> Age {
        match self.inner.refresh_ahead {
            Some(share) if shortened > 0 => {
                // Of a lifetime shorter by `shortened`, the share `1 - share` still ahead at the
                // point of refresh is shorter by `(1 - share) * shortened`: the point comes
                // that much later in the (moved back) age.
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                let later = ((1.0 - share) * shortened as f64) as u64;
                if shifted <= self.refresh_limit.saturating_add(later) {
                    Age::Fresh
                } else {
                    Age::Due
                }
            }
            _ => Age::Due,
        }
    }

    /// An expired value, `stale_for` past its expiry.
    fn staleness(&self, stale_for: i64) -> Age {
        let inner = &*self.inner;
        if inner.max_stale_nanos.is_some_and(|most| stale_for > most) {
            Age::Gone
        } else {
            Age::Expired(inner.stale_if_error_nanos.is_some_and(|w| stale_for <= w))
        }
    }

    #[cold]
    fn age_invalidated(&self, nanos: i64) -> Age {
        let inner = &*self.inner;
        inner.distrust_future_cutoffs();
        let missing_until = inner.missing_until.load(Ordering::Relaxed);
        if nanos == SOFT_INVALIDATED.as_nanos() {
            // The store judged it soft-invalidated: it counts as just expired.
            self.staleness(0)
        } else if nanos < -1 {
            // One key soft-invalidated at `-nanos`: expired since then, unless every key was
            // hard-invalidated after it.
            let at = nanos.saturating_neg();
            let since = inner.now().as_nanos().saturating_sub(at);
            if at <= missing_until {
                Age::Gone
            } else if since < inner.tolerance_nanos.saturating_neg() {
                // Invalidated further ahead of the clock than the tolerance (the clock stepped
                // back since): how stale it is is unknown, as for a value stamped ahead.
                Age::Expired(false)
            } else {
                self.staleness(since.max(0))
            }
        } else if nanos <= missing_until {
            Age::Gone
        } else if nanos <= inner.expired_until.load(Ordering::Relaxed) {
            // Soft-invalidated with every key: stale since the invalidation.
            let since = inner.now().as_nanos() - inner.expired_until.load(Ordering::Relaxed);
            self.staleness(since.max(0))
        } else {
            // The cutoff that sent this value here was ahead of the clock and is gone.
            self.age(Stamp::new(Timestamp::from_nanos(nanos)))
        }
    }

    /// The creation time of a value stored now: never at or before an invalidation, even with
    /// a coarse clock.
    pub(super) fn stamp(&self) -> Stamp {
        Stamp::new(self.stamp_with(0))
    }

    /// The creation time of `value` stored now, with `lifetime` its own if it has one. A value
    /// that lives shorter than the handle's expiry (its own lifetime, `expire_with`, jitter) is
    /// stamped as if created that much earlier, so every rule that reads its age (expiry,
    /// refresh-ahead, stale windows) reads it against its own lifetime, in this process and any
    /// other that shares the store.
    pub(super) fn stamp_value(&self, value: &V, lifetime: Option<Duration>) -> Stamp {
        let inner = &*self.inner;
        if self.expiry_nanos == i64::MAX {
            // Never expires: there is no lifetime to shorten.
            return self.stamp();
        }
        let own = lifetime.or_else(|| self.expire_with.as_ref().map(|f| f(value)));
        let mut life = match own {
            Some(own) => crate::clock::saturating_nanos(own).min(self.expiry_nanos),
            None => self.expiry_nanos,
        };
        if let Some(share) = inner.jitter {
            // `share` is in (0, 1): the cut is below the lifetime.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let cut = (life as f64 * share * jitter_draw()) as i64;
            life -= cut;
        }
        let shortened = self.expiry_nanos - life;
        Stamp {
            created: self.stamp_with(shortened),
            shortened,
        }
    }

    /// A stamp `backdate` nanoseconds before now, but never at or before an invalidation.
    fn stamp_with(&self, backdate: i64) -> Timestamp {
        let inner = &*self.inner;
        inner.distrust_future_cutoffs();
        let floor = inner
            .missing_until
            .load(Ordering::Acquire)
            .max(inner.expired_until.load(Ordering::Acquire))
            .saturating_add(1);
        Timestamp::from_nanos(inner.now().as_nanos().saturating_sub(backdate).max(floor))
    }
}

impl<K, V, S, M: RawMutex> Inner<K, V, S, M> {
    /// A time at or after the creation stamp of every value stored so far: now, or, when
    /// values were stamped after an earlier cutoff within the same tick of a coarse clock,
    /// just past that cutoff.
    pub(super) fn cutoff(&self) -> i64 {
        self.distrust_future_cutoffs();
        let last = self
            .missing_until
            .load(Ordering::SeqCst)
            .max(self.expired_until.load(Ordering::SeqCst));
        self.now().as_nanos().max(last.saturating_add(1))
    }

    /// An invalidation made while the clock ran ahead would otherwise stamp every later value
    /// after it, and keep values created once the clock is corrected fresh until the clock
    /// catches up. A cutoff further ahead of the clock than the tolerance is brought back to
    /// now: every value it covered was created before now, and stays covered; values stamped
    /// under the fast clock are ahead of it too, and count as expired.
    fn distrust_future_cutoffs(&self) {
        let now = self.now().as_nanos();
        let trusted = now.saturating_add(self.tolerance_nanos);
        if self.any_until.load(Ordering::SeqCst) <= trusted {
            return;
        }
        for cutoff in [&self.missing_until, &self.expired_until, &self.any_until] {
            let _ = cutoff.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c > trusted).then_some(now)
            });
        }
    }

    /// Sets this process's cutoff, and returns it.
    pub(super) fn invalidate_all(&self, soft: bool) -> Timestamp {
        let cutoff = self.cutoff();
        let until = if soft {
            &self.expired_until
        } else {
            &self.missing_until
        };
        until.fetch_max(cutoff, Ordering::SeqCst);
        self.any_until.fetch_max(cutoff, Ordering::SeqCst);
        // The values made directly while the store failed were made before the cutoff too.
        self.directs.forget_all();
        Timestamp::from_nanos(cutoff)
    }

    #[inline]
    pub(super) fn now(&self) -> Timestamp {
        match &self.clock {
            None => CoarseClock.now(),
            Some(clock) => clock.now(),
        }
    }
}

/// A draw in [0, 1) for jitter: a per-thread xorshift, seeded from the thread's stack
/// address and the time; spread, not secrecy, is all it needs.
fn jitter_draw() -> f64 {
    use std::cell::Cell;
    // loom's `thread_local!` takes no `const { }` initializer.
    #[allow(clippy::missing_const_for_thread_local)]
    mod state {
        crate::sync::thread_local! {
            pub(super) static STATE: std::cell::Cell<u64> = std::cell::Cell::new(0);
        }
    }
    state::STATE.with(|state: &Cell<u64>| {
        let mut x = state.get();
        if x == 0 {
            let local = 0u8;
            let time = crate::SystemClock.now().as_nanos().unsigned_abs();
            x = ((&local as *const u8 as u64) ^ (time << 1)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        // The top 53 bits, as a fraction.
        #[allow(clippy::cast_precision_loss)]
        let draw = (x >> 11) as f64 / (1u64 << 53) as f64;
        draw
    })
}
