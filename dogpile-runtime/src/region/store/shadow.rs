//! Miniature simulations (Waldspurger et al., USENIX ATC 2017): which admission margin a large
//! store's policy uses, chosen by replaying a sample of its keys through two small copies of the
//! policy, one per margin, and following the one that missed less.
//!
//! A key is sampled by its hash (one key in `rate`, `rate` a power of two), so a copy sized at
//! the store's bound divided by `rate` sees the traffic the store would see at that scale: every
//! access to a sampled key, hits included, in about the order they came. No fixed margin wins
//! everywhere: a margin of 1 keeps loops slightly longer than the store (each newcomer must be
//! ahead of its victim by more than a tie), a margin of 0 lets a key that became frequent in
//! skewed traffic in sooner.
//!
//! The copies hold hashes only. They cost about 100 bytes for each sampled key (two policies
//! and two maps of at least [`SAMPLED_KEYS`] keys each), so stores below [`MIN_BOUND`] keys do
//! not simulate, and keep the margin of 1.

use std::cell::RefCell;
use std::collections::HashMap;

use foldhash::fast::FixedState;

use super::policy::{Policy, Residents, HITS_MAX};

/// The margins the two copies try; the first is the one a store starts with.
pub(super) const MARGINS: [u8; 2] = [1, 0];

/// Each copy holds at least this many keys: fewer would decide on noise.
const SAMPLED_KEYS: u64 = 8_192;

/// Stores bounded below this many keys (or by weight) do not simulate: at 16,384 and 32,768
/// keys, on the traces of the README, the copies (then a half and a quarter of the store)
/// chose worse than the fixed margin as often as better (P6 at 32,768 -0.21, P2 +0.17; four
/// traces' sums -0.17 and -0.26 over 5 seeds), and they nearly doubled what the policy keeps.
pub(super) const MIN_BOUND: u64 = 8 * SAMPLED_KEYS;

/// The copies are compared after this many times their size of sampled accesses.
const PERIOD_PER_KEY: u64 = 16;

/// A copy's resident keys: a hit counter and a node each (also the policy's tests' map, and the
/// trace bench's for the policy alone).
#[derive(Default)]
pub(super) struct Keys(pub(super) RefCell<HashMap<u64, (u8, u32), FixedState>>);

impl Residents<u64> for Keys {
    fn update_hits(&self, key: &u64, f: impl FnOnce(u8) -> u8) -> u8 {
        let mut keys = self.0.borrow_mut();
        let Some(entry) = keys.get_mut(key) else {
            return 0;
        };
        let before = entry.0;
        entry.0 = f(before);
        before
    }

    fn moved(&self, key: &u64, node: u32) {
        if let Some(entry) = self.0.borrow_mut().get_mut(key) {
            entry.1 = node;
        }
    }
}

/// One copy of the policy at the sample's scale, with one margin.
struct Copy {
    policy: Policy<u64, FixedState>,
    keys: Keys,
    /// Misses since the copies were last compared.
    misses: u64,
}

impl Copy {
    fn access(&mut self, hash: u64, evicted: &mut Vec<u64>) {
        if let Some(entry) = self.keys.0.get_mut().get_mut(&hash) {
            entry.0 = (entry.0 + 1).min(HITS_MAX);
            return;
        }
        self.misses += 1;
        let node = self.policy.insert(hash, 1).0;
        self.keys.0.get_mut().insert(hash, (0, node));
        self.policy.evict(&self.keys, |gone| evicted.push(gone));
        let keys = self.keys.0.get_mut();
        for gone in evicted.drain(..) {
            keys.remove(&gone);
        }
    }
}

pub(super) struct Shadows {
    copies: [Copy; 2],
    /// The copies' margins.
    margins: [u8; 2],
    /// A key is sampled if its hash's high bits masked by this are 0.
    mask: u64,
    /// Sampled accesses until the next comparison, and between comparisons.
    left: u64,
    period: u64,
    evicted: Vec<u64>,
    /// Accesses replayed.
    #[cfg(test)]
    replayed: u64,
}

impl Shadows {
    /// The simulations for a store of `bound` keys, if it is large enough to have them.
    pub(super) fn new(bound: u64) -> Option<Box<Self>> {
        if bound < MIN_BOUND {
            return None;
        }
        Some(Shadows::with_margins(bound, MARGINS))
    }

    /// The simulations for a store of `bound` keys (at least `2 * SAMPLED_KEYS`), with the
    /// copies trying `margins`.
    fn with_margins(bound: u64, margins: [u8; 2]) -> Box<Self> {
        // The largest power of two that leaves each copy at least `SAMPLED_KEYS` keys.
        let rate = 1u64 << (bound / SAMPLED_KEYS).ilog2();
        let size = bound / rate;
        let copy = |margin| {
            let mut policy = Policy::fixed(size, false, FixedState::with_seed(0x5eed));
            policy.set_admit_margin(margin);
            Copy {
                policy,
                keys: Keys::default(),
                misses: 0,
            }
        };
        let period = size * PERIOD_PER_KEY;
        Box::new(Shadows {
            copies: [copy(margins[0]), copy(margins[1])],
            margins,
            mask: rate - 1,
            left: period,
            period,
            evicted: Vec::new(),
            #[cfg(test)]
            replayed: 0,
        })
    }

    /// How many accesses were replayed.
    #[cfg(test)]
    pub(super) fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Whether the key of `hash` is in the sample.
    #[inline]
    pub(super) fn samples(&self, hash: u64) -> bool {
        (hash >> 32) & self.mask == 0
    }

    /// Replays an access to the sampled key of `hash` in both copies; at the end of a period,
    /// the margin that missed less, if one did.
    pub(super) fn access(&mut self, hash: u64) -> Option<u8> {
        for copy in &mut self.copies {
            copy.access(hash, &mut self.evicted);
        }
        #[cfg(test)]
        {
            self.replayed += 1;
        }
        self.left -= 1;
        if self.left > 0 {
            return None;
        }
        self.left = self.period;
        let [first, second] = &mut self.copies;
        let better = match first.misses.cmp(&second.misses) {
            std::cmp::Ordering::Less => Some(self.margins[0]),
            std::cmp::Ordering::Greater => Some(self.margins[1]),
            std::cmp::Ordering::Equal => None,
        };
        first.misses = 0;
        second.misses = 0;
        better
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Half the requests a loop over twice `bound` keys, half skewed over 40 times as many
    /// (rank r about 1/r as often), as hashes: the `loop` shape of the trace bench.
    fn looped(bound: u64, requests: u64) -> impl Iterator<Item = u64> {
        let hasher = FixedState::with_seed(9);
        let mut x = 5u64;
        (0..requests).map(move |at| {
            if at % 2 == 0 {
                return hasher.hash_one(at / 2 % (2 * bound));
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            hasher.hash_one(u64::MAX - (40.0 * bound as f64).powf(unit) as u64)
        })
    }

    #[test]
    fn the_shadows_follow_the_copy_that_missed_less_whichever_it_is() {
        // With a margin of 0, a loop key seen as often as its victim (another loop key)
        // displaces it just before the victim's turn comes; with 1, the store keeps a part of
        // the loop. Whichever copy has which margin, the choice is 1 at every period's end.
        const BOUND: u64 = 2 * SAMPLED_KEYS;
        for margins in [[1, 0], [0, 1]] {
            let mut shadows = Shadows::with_margins(BOUND, margins);
            let mut choices = Vec::new();
            for hash in looped(BOUND, 3 * BOUND * PERIOD_PER_KEY) {
                if shadows.samples(hash) {
                    choices.extend(shadows.access(hash));
                }
            }
            assert!(choices.len() >= 2, "{} periods ended", choices.len());
            assert!(choices.iter().all(|&m| m == 1), "chose {choices:?}");
        }
    }

    #[test]
    fn only_large_stores_simulate_and_each_copy_holds_at_least_the_sampled_keys() {
        assert!(Shadows::new(MIN_BOUND - 1).is_none());
        for bound in [MIN_BOUND, 100_000, 1 << 20, 3 << 24] {
            let shadows = Shadows::new(bound).expect("large enough");
            let size = shadows.copies[0].policy.max_weight();
            assert!(
                (SAMPLED_KEYS..2 * SAMPLED_KEYS).contains(&size),
                "{bound}: copies of {size}"
            );
            // About one key in `bound / size` is sampled.
            let hasher = FixedState::with_seed(9);
            let sampled = (0..1 << 20)
                .filter(|&key: &u64| shadows.samples(hasher.hash_one(key)))
                .count() as u64;
            let expected = (1 << 20) * size / bound;
            assert!(
                sampled.abs_diff(expected) * 5 < expected,
                "{bound}: {sampled} of 2^20 sampled, {expected} expected"
            );
        }
    }
}
