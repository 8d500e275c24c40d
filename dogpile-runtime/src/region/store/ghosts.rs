//! The keys a bounded store evicted lately, and from where: what tells its policy which of its
//! two regions was too small (ARC's ghost lists, Megiddo and Modha, FAST 2003).
//!
//! A key asked for again soon after the window let it go would have been a hit with a larger
//! window; one asked for again soon after the main ring evicted it, with a larger main ring.
//! Only misses are looked up, under the store's lock, so hits stay free of any shared write.
//!
//! The ghosts are fingerprints in a direct-mapped table of one to two slots per key the store
//! holds (eight bytes a slot, made when the store first fills): a newer ghost overwrites an older
//! one in its slot, so a ghost is forgotten after about as many evictions as the store holds
//! keys, as ARC's lists forget theirs. Each ghost carries its departure number, so the policy
//! can tell whether a region larger by the keys that left it since would still hold it.

/// Where an evicted key was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Window = 0,
    Main = 1,
}

/// Departure numbers are kept modulo 2^31.
pub(super) const SEQ_MASK: u64 = (1 << 31) - 1;

pub(super) struct Ghosts {
    /// Per slot: a fingerprint (the hash's high 32 bits), the departure number (31 bits) and the
    /// origin (the lowest bit); 0 is empty.
    slots: Box<[u64]>,
    mask: usize,
    /// How many slots hold a ghost of each origin.
    counts: [usize; 2],
}

impl Ghosts {
    /// Room for about `entries` ghosts.
    pub(super) fn new(entries: usize) -> Self {
        let slots = entries
            .max(64)
            .checked_next_power_of_two()
            .unwrap_or(1 << 40);
        Ghosts {
            slots: vec![0; slots].into_boxed_slice(),
            mask: slots - 1,
            counts: [0; 2],
        }
    }

    fn place(&self, hash: u64) -> (usize, u64) {
        // The slot from the low bits, the fingerprint from the high ones.
        let print = (hash >> 32).max(1) << 32;
        (hash as usize & self.mask, print)
    }

    /// Remembers that the key of `hash` was evicted from `origin`, as its `seq`th departure.
    pub(super) fn add(&mut self, hash: u64, origin: Origin, seq: u64) {
        let (slot, print) = self.place(hash);
        let ghost = print | (seq & SEQ_MASK) << 1 | origin as u64;
        let old = std::mem::replace(&mut self.slots[slot], ghost);
        if old != 0 {
            self.counts[(old & 1) as usize] -= 1;
        }
        self.counts[origin as usize] += 1;
    }

    /// Where the key of `hash` was evicted from lately, and as which departure (modulo 2^31),
    /// if it was; forgets it.
    pub(super) fn take(&mut self, hash: u64) -> Option<(Origin, u64)> {
        let (slot, print) = self.place(hash);
        let ghost = self.slots[slot];
        if ghost == 0 || ghost >> 32 << 32 != print {
            return None;
        }
        self.slots[slot] = 0;
        let origin = if ghost & 1 == 0 {
            Origin::Window
        } else {
            Origin::Main
        };
        self.counts[origin as usize] -= 1;
        Some((origin, (ghost >> 1) & SEQ_MASK))
    }

    /// How many ghosts of `origin` it holds.
    pub(super) fn count(&self, origin: Origin) -> usize {
        self.counts[origin as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_where_a_key_went_once() {
        let mut ghosts = Ghosts::new(100);
        ghosts.add(0xAAAA_0000_0000_0001, Origin::Window, 7);
        ghosts.add(0xBBBB_0000_0000_0002, Origin::Main, 8);
        assert_eq!(ghosts.count(Origin::Window), 1);
        assert_eq!(
            ghosts.take(0xAAAA_0000_0000_0001),
            Some((Origin::Window, 7))
        );
        assert_eq!(ghosts.take(0xAAAA_0000_0000_0001), None, "taken once");
        assert_eq!(
            ghosts.take(0xCCCC_0000_0000_0002),
            None,
            "another key, same slot"
        );
        assert_eq!(ghosts.take(0xBBBB_0000_0000_0002), Some((Origin::Main, 8)));
        assert_eq!(ghosts.count(Origin::Window) + ghosts.count(Origin::Main), 0);
    }

    #[test]
    fn a_newer_ghost_takes_its_slot() {
        let mut ghosts = Ghosts::new(64);
        ghosts.add(0x1111_0000_0000_0005, Origin::Window, 1);
        ghosts.add(0x2222_0000_0000_0005, Origin::Main, 2);
        assert_eq!(ghosts.count(Origin::Window), 0);
        assert_eq!(ghosts.count(Origin::Main), 1);
        assert_eq!(ghosts.take(0x1111_0000_0000_0005), None);
        assert_eq!(ghosts.take(0x2222_0000_0000_0005), Some((Origin::Main, 2)));
    }
}
