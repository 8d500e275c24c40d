//! How often keys were asked for lately: a count-min sketch of 4-bit counters, the frequency
//! filter of TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy", 2017).
//!
//! Each key has four counters, one in each of four rows; its estimate is the smallest of them.
//! The four counters of a key lie in one 64-byte block of the table, so that a look-up touches
//! one cache line. An increment raises only the counters that are at the minimum (the
//! "conservative update"), which keeps the keys that share a counter from inflating each other.
//! After a number of increments proportional to the table's size every counter is halved, so
//! that the sketch follows what is popular now rather than what was popular once; on a large
//! table the halving is spread over the following increments, so no single call pays for all of
//! it.

/// The largest count a counter holds.
pub(super) const MAX_COUNT: u8 = 15;

/// Words of the table halved per increment while an aging is under way.
const AGING_STEP: usize = 64;

/// Tables up to this many words are halved at once.
const AGE_AT_ONCE: usize = 4096;

/// Increments between two agings, per counter-set the table was sized for.
const PERIOD_PER_ENTRY: usize = 15;

/// Words of the table (sixteen counters each) per key the sketch is sized for. A key's four
/// counters share a 64-byte block with those of the keys that hash to it, and far more keys than
/// the store holds pass through the sketch between two agings (each miss is counted): with one
/// word per key, their collisions lifted the counts of keys seen once or twice and of the main
/// ring's victims. Two (replayed alone over five hash seeds): `recency` at 1,000 keys +0.44
/// point, `P6` at 16,384 and 32,768 +0.45 and +0.55, `P3` at 16,384 and 65,536 +0.45 and
/// +0.43, nothing down by more than 0.13; four gained a little more on `P6` and `P3` at 16,384
/// but cost `P2` at 16,384 0.15.
const WORDS_PER_ENTRY: usize = 2;

/// Every nibble but the top bit of each: `(word >> 1) & HALF` halves sixteen counters at once.
const HALF: u64 = 0x7777_7777_7777_7777;

pub(super) struct Sketch {
    /// Blocks of eight words; each word holds sixteen 4-bit counters.
    table: Box<[u64]>,
    block_mask: usize,
    /// Increments since the last aging began (halved when it begins).
    additions: usize,
    period: usize,
    /// The next word to halve; `table.len()` when no aging is under way.
    aging: usize,
}

impl Sketch {
    /// A sketch for a store that holds about `entries` keys: thirty-two counters per key
    /// ([`WORDS_PER_ENTRY`] words), rounded up to a power of two (twice the size of Caffeine's
    /// sketch).
    pub(super) fn new(entries: usize) -> Self {
        let words = entries
            .max(8)
            .saturating_mul(WORDS_PER_ENTRY)
            .checked_next_power_of_two()
            .unwrap_or(1 << 40);
        Sketch {
            table: vec![0; words].into_boxed_slice(),
            block_mask: words / 8 - 1,
            additions: 0,
            period: entries.max(8).saturating_mul(PERIOD_PER_ENTRY),
            aging: words,
        }
    }

    /// How many keys the sketch was sized for.
    pub(super) fn entries(&self) -> usize {
        self.period / PERIOD_PER_ENTRY
    }

    /// The block of `hash`'s counters (the index of its first word), and their four places in
    /// it: (word within the block, shift).
    #[inline]
    fn places(&self, hash: u64) -> (usize, [(usize, u32); 4]) {
        // Spread the bits again: the caller's hash may be weak in some of them.
        let hash = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let block = ((hash >> 32) as usize & self.block_mask) * 8;
        let mut places = [(0, 0); 4];
        for (row, place) in places.iter_mut().enumerate() {
            let bits = (hash >> (row * 8)) as usize;
            *place = ((row * 2 + (bits & 1)) & 7, ((bits >> 1) & 15) as u32 * 4);
        }
        (block, places)
    }

    /// The eight words of the block at `start`: one bounds check, and none for the places in
    /// it, whose word is below eight.
    #[inline]
    fn block(&self, start: usize) -> &[u64; 8] {
        let block: &[u64] = &self.table[start..start + 8];
        block.try_into().expect("a block is eight words")
    }

    #[inline]
    fn counter(block: &[u64; 8], (word, shift): (usize, u32)) -> u8 {
        ((block[word] >> shift) & 15) as u8
    }

    /// How often `hash` was counted lately (at most [`MAX_COUNT`]).
    pub(super) fn estimate(&self, hash: u64) -> u8 {
        let (start, places) = self.places(hash);
        let block = self.block(start);
        places
            .into_iter()
            .map(|place| Self::counter(block, place))
            .min()
            .unwrap_or(0)
    }

    /// Counts `hash` `times` more.
    pub(super) fn increment(&mut self, hash: u64, times: u8) {
        self.age_some();
        let (start, places) = self.places(hash);
        let block: &mut [u64; 8] = (&mut self.table[start..start + 8])
            .try_into()
            .expect("a block is eight words");
        let min = places
            .iter()
            .map(|&place| Self::counter(block, place))
            .min()
            .unwrap_or(0);
        let target = min.saturating_add(times).min(MAX_COUNT);
        if target == min {
            return;
        }
        for (word, shift) in places {
            let current = ((block[word] >> shift) & 15) as u8;
            if current < target {
                block[word] += u64::from(target - current) << shift;
            }
        }
        self.additions += usize::from(times);
        if self.additions >= self.period {
            self.additions /= 2;
            self.aging = 0;
            if self.table.len() <= AGE_AT_ONCE {
                self.age(self.table.len());
            }
        }
    }

    /// Continues an aging under way, if any.
    #[inline]
    fn age_some(&mut self) {
        if self.aging < self.table.len() {
            self.age(AGING_STEP);
        }
    }

    fn age(&mut self, words: usize) {
        let end = (self.aging + words).min(self.table.len());
        for word in &mut self.table[self.aging..end] {
            *word = (*word >> 1) & HALF;
        }
        self.aging = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_maximum() {
        let mut sketch = Sketch::new(1000);
        assert_eq!(sketch.estimate(42), 0);
        sketch.increment(42, 1);
        sketch.increment(42, 2);
        assert_eq!(sketch.estimate(42), 3);
        sketch.increment(42, 200);
        assert_eq!(sketch.estimate(42), MAX_COUNT);
    }

    #[test]
    fn a_key_counted_often_outranks_keys_counted_once() {
        let mut sketch = Sketch::new(1000);
        for _ in 0..10 {
            sketch.increment(7, 1);
        }
        let once: Vec<u64> = (100..600u64)
            .map(|k| k.wrapping_mul(0x2545_F491_4F6C_DD1D))
            .collect();
        for &k in &once {
            sketch.increment(k, 1);
        }
        assert_eq!(sketch.estimate(7), 10);
        // Collisions may lift a few, conservative updates keep them rare.
        let lifted = once.iter().filter(|&&k| sketch.estimate(k) > 1).count();
        assert!(
            lifted < once.len() / 20,
            "{lifted} of {} lifted",
            once.len()
        );
    }

    #[test]
    fn counts_halve_after_a_period() {
        let mut sketch = Sketch::new(64);
        for _ in 0..8 {
            sketch.increment(1, 1);
        }
        assert_eq!(sketch.estimate(1), 8);
        sketch.additions = sketch.period - 1;
        sketch.increment(2, 1);
        assert_eq!(sketch.estimate(1), 4);
        assert_eq!(sketch.additions, sketch.period / 2);
    }

    #[test]
    fn a_large_table_ages_a_little_at_each_increment() {
        let mut sketch = Sketch::new(1 << 14);
        sketch.increment(5, 8);
        sketch.additions = sketch.period - 1;
        sketch.increment(6, 1);
        assert_eq!(
            sketch.aging, 0,
            "an aging began without halving everything at once"
        );
        for k in 0..(sketch.table.len() / AGING_STEP) as u64 {
            sketch.increment(1_000_000 + k, 1);
        }
        assert_eq!(sketch.aging, sketch.table.len());
        assert_eq!(sketch.estimate(5), 4);
    }
}
