//! Invalidations that did not reach Redis, kept by a [`RedisStore`](super::RedisStore) and
//! applied once the server answers again, so that a process that lost the server during an
//! invalidation still converges with the others.
//!
//! | kept                 | replayed as                                  | a later one supersedes it |
//! |----------------------|----------------------------------------------|---------------------------|
//! | a key, hard          | `DEL` of its value                           | a write of the key, a hard invalidation of every key |
//! | a key, soft          | its value marked soft-invalidated, if there  | the same, a hard one of the key, a soft one of every key |
//! | every key, hard/soft | the shards' epochs bumped                    | a later one of the same kind (hard also covers soft) |
//!
//! One entry per key: a key invalidated again keeps the stronger (a hard invalidation then a
//! soft one leaves the value gone, as they would have in order). The keys are bounded
//! ([`KEYS_KEPT`]); one more, when they are full, is kept as an invalidation of every key of
//! its kind, which covers it. Meanwhile the store's own reads honour what is kept, so the
//! process that invalidated never serves the old value, before or after the server is back. A
//! thread of the store replays them as soon as the handle's circuit breaker lets calls through.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::Redis;
use crate::region::{Invalidation, Stamp};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};
use crate::Timestamp;

/// The most keys kept; beyond, an invalidation of every key stands in for them.
pub(super) const KEYS_KEPT: usize = 10_000;
/// How often the replaying thread tries while calls are refused or fail.
const TRY_EVERY: Duration = Duration::from_millis(20);

/// What a store keeps to replay, shared with its replaying thread.
#[derive(Default)]
pub(super) struct Replay {
    /// Whether anything is kept: the one check a read makes.
    pending: AtomicBool,
    kept: Mutex<Kept>,
    queued: AtomicU64,
    replayed: AtomicU64,
}

#[derive(Default)]
struct Kept {
    /// By the key's value name in Redis.
    keys: HashMap<Vec<u8>, Entry>,
    hard_all: Option<Entry>,
    soft_all: Option<Entry>,
    /// Counts changes, so that the replayer forgets only what it applied.
    changes: u64,
    /// Whether a replaying thread runs (it stops when nothing is kept).
    replaying: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    soft: bool,
    at: Timestamp,
    change: u64,
}

/// One thing to replay.
pub(super) enum Step {
    /// Deletes (hard) or marks soft-invalidated (soft) one value.
    Key { name: Vec<u8>, soft: bool },
    /// Bumps every shard's hard or soft epoch.
    All { soft: bool },
}

impl Replay {
    /// Keeps `invalidation` (of the key whose value is `name`); whether a thread must be
    /// started to replay it.
    pub(super) fn keep<K>(
        &self,
        invalidation: &Invalidation<'_, K>,
        name: Option<Vec<u8>>,
    ) -> bool {
        let mut kept = self.kept.lock();
        kept.changes += 1;
        let entry = Entry {
            soft: invalidation.soft,
            at: invalidation.at,
            change: kept.changes,
        };
        match name {
            Some(name) if kept.keys.contains_key(&name) || kept.keys.len() < KEYS_KEPT => {
                let stronger = kept.keys.get(&name).is_some_and(|old| !old.soft);
                kept.keys.insert(
                    name,
                    Entry {
                        soft: entry.soft && !stronger,
                        ..entry
                    },
                );
            }
            // Full: every key of its kind stands in for this one.
            _ => kept.all(entry),
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.pending.store(true, Ordering::Release);
        !std::mem::replace(&mut kept.replaying, true)
    }

    /// `found` as this process must see it while invalidations are kept: a value invalidated
    /// here counts as missing (hard) or expired (soft), whatever the server still holds.
    #[inline]
    pub(super) fn honour<V>(&self, name: &[u8], found: Option<(V, Stamp)>) -> Option<(V, Stamp)> {
        if !self.pending.load(Ordering::Acquire) {
            return found;
        }
        self.honour_kept(name, found)
    }

    #[cold]
    fn honour_kept<V>(&self, name: &[u8], found: Option<(V, Stamp)>) -> Option<(V, Stamp)> {
        let (value, stamp) = found?;
        let kept = self.kept.lock();
        let covers = |all: Option<Entry>| all.is_some_and(|e| stamp.created() <= e.at);
        let soft = match kept.keys.get(name) {
            Some(entry) => entry.soft,
            None if covers(kept.hard_all) => false,
            None if covers(kept.soft_all) => true,
            None => return Some((value, stamp)),
        };
        soft.then_some((value, super::store::SOFT_INVALIDATED))
    }

    /// The key's value was written or removed: what was kept for it is done.
    #[inline]
    pub(super) fn written(&self, name: &[u8]) {
        if self.pending.load(Ordering::Acquire) {
            let mut kept = self.kept.lock();
            kept.keys.remove(name);
        }
    }

    /// Every key was invalidated (`soft` or hard) on the server: what that covers is done.
    pub(super) fn all_invalidated(&self, soft: bool) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let mut kept = self.kept.lock();
        kept.soft_all = None;
        if soft {
            kept.keys.retain(|_, entry| !entry.soft);
        } else {
            kept.hard_all = None;
            kept.keys.clear();
        }
    }

    /// What to replay now, in order (every key before one key), with the change each is of.
    fn steps(&self) -> Vec<(Step, u64)> {
        let kept = self.kept.lock();
        let all = [kept.hard_all, kept.soft_all]
            .into_iter()
            .flatten()
            .map(|e| (Step::All { soft: e.soft }, e.change));
        let keys = kept.keys.iter().map(|(name, e)| {
            let step = Step::Key {
                name: name.clone(),
                soft: e.soft,
            };
            (step, e.change)
        });
        all.chain(keys).collect()
    }

    /// `step` (of `change`) reached the server: forgotten, unless kept again since.
    fn replayed(&self, step: &Step, change: u64) {
        let mut kept = self.kept.lock();
        let done = |entry: &Option<Entry>| entry.is_some_and(|e| e.change == change);
        match step {
            Step::All { soft: false } if done(&kept.hard_all) => kept.hard_all = None,
            Step::All { soft: true } if done(&kept.soft_all) => kept.soft_all = None,
            Step::Key { name, .. } if kept.keys.get(name).is_some_and(|e| e.change == change) => {
                kept.keys.remove(name);
            }
            _ => return,
        }
        self.replayed.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether nothing is left; if so the replaying thread stops (under the lock, so that a
    /// `keep` after it starts another).
    fn finished(&self) -> bool {
        let mut kept = self.kept.lock();
        let empty = kept.keys.is_empty() && kept.hard_all.is_none() && kept.soft_all.is_none();
        if empty {
            kept.replaying = false;
            self.pending.store(false, Ordering::Release);
        }
        empty
    }

    /// How many invalidations were kept, and how many of them replayed.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.queued.load(Ordering::Relaxed),
            self.replayed.load(Ordering::Relaxed),
        )
    }

    /// How many keys, and invalidations of every key, are kept now.
    pub(super) fn len(&self) -> usize {
        let kept = self.kept.lock();
        kept.keys.len()
            + usize::from(kept.hard_all.is_some())
            + usize::from(kept.soft_all.is_some())
    }
}

impl Kept {
    /// Keeps an invalidation of every key, and forgets what it covers.
    fn all(&mut self, entry: Entry) {
        let later = |old: Option<Entry>| Entry {
            at: old.map_or(entry.at, |old| old.at.max(entry.at)),
            ..entry
        };
        if entry.soft {
            self.keys.retain(|_, e| !e.soft);
            if self.hard_all.is_none_or(|hard| hard.at < entry.at) {
                self.soft_all = Some(later(self.soft_all));
            }
        } else {
            self.keys.clear();
            self.soft_all = None;
            self.hard_all = Some(later(self.hard_all));
        }
    }
}

/// Replays what `replay` keeps, on a thread of its own, until nothing is left.
pub(super) fn start(replay: Arc<Replay>, redis: Redis, namespace: String) {
    let thread = {
        let replay = Arc::clone(&replay);
        move || replay_until_done(&replay, &redis, &namespace)
    };
    let spawned = thread::Builder::new()
        .name("dogpile-redis-replay".into())
        .spawn(thread);
    if spawned.is_err() {
        // The next invalidation kept tries again; meanwhile reads still honour them.
        replay.kept.lock().replaying = false;
    }
}

/// Each time the breaker lets calls through, every step in order, stopping at the first that
/// fails; until nothing is left.
fn replay_until_done(replay: &Replay, redis: &Redis, namespace: &str) {
    loop {
        thread::sleep(TRY_EVERY);
        if !redis.shared.circuit.is_closed() {
            // The probe is on it; a call now would only be refused.
            continue;
        }
        let steps = replay.steps();
        let applied = steps
            .iter()
            .take_while(|(step, change)| {
                let done = super::store::apply(redis, namespace, step).is_ok();
                if done {
                    replay.replayed(step, *change);
                }
                done
            })
            .count();
        #[cfg(feature = "tracing")]
        if applied > 0 {
            tracing::info!(
                backend = "redis",
                address = redis.address(),
                namespace,
                replayed = applied,
                left = steps.len() - applied,
                "dogpile: invalidations that had not reached Redis were replayed"
            );
        }
        let _ = applied;
        if replay.finished() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(nanos: i64) -> Timestamp {
        Timestamp::from_nanos(nanos)
    }

    #[test]
    fn one_entry_per_key_and_hard_stays_hard() {
        let replay = Replay::default();
        let key = |soft, t| Invalidation::key(&1u8, soft, at(t));
        assert!(
            replay.keep(&key(false, 10), Some(b"k".to_vec())),
            "starts a replayer"
        );
        assert!(
            !replay.keep(&key(true, 11), Some(b"k".to_vec())),
            "one replayer"
        );
        assert_eq!(replay.len(), 1);
        let stamp = Stamp::new(at(5));
        assert_eq!(replay.honour(b"k", Some((7, stamp))), None, "still hard");
        assert_eq!(replay.honour(b"other", Some((7, stamp))), Some((7, stamp)));
        replay.written(b"k");
        assert_eq!(replay.honour(b"k", Some((7, stamp))), Some((7, stamp)));
        assert_eq!(replay.counts(), (2, 0));
    }

    #[test]
    fn every_key_supersedes_the_keys_it_covers() {
        let replay = Replay::default();
        replay.keep(
            &Invalidation::key(&1u8, true, at(10)),
            Some(b"soft".to_vec()),
        );
        replay.keep(
            &Invalidation::key(&2u8, false, at(10)),
            Some(b"hard".to_vec()),
        );
        replay.keep(&Invalidation::<u8>::all(true, at(20)), None);
        assert_eq!(
            replay.len(),
            2,
            "the soft key is covered; the hard one is not"
        );
        let old = Some((7, Stamp::new(at(15))));
        assert_eq!(
            replay.honour(b"soft", old),
            Some((7, super::super::store::SOFT_INVALIDATED))
        );
        let newer = Some((7, Stamp::new(at(25))));
        assert_eq!(replay.honour(b"soft", newer), newer, "written after it");
        replay.keep(&Invalidation::<u8>::all(false, at(30)), None);
        assert_eq!(replay.len(), 1, "hard of every key covers all");
        assert_eq!(replay.honour(b"hard", newer), None);
    }

    #[test]
    fn a_full_queue_stands_every_key_in_for_one_more() {
        let replay = Replay::default();
        for k in 0..KEYS_KEPT {
            replay.keep(
                &Invalidation::key(&k, false, at(10)),
                Some(k.to_be_bytes().to_vec()),
            );
        }
        replay.keep(
            &Invalidation::key(&0usize, false, at(11)),
            Some(b"one more".to_vec()),
        );
        assert_eq!(replay.len(), 1, "one invalidation of every key");
        let steps = replay.steps();
        assert!(matches!(steps.as_slice(), [(Step::All { soft: false }, _)]));
        let (step, change) = &steps[0];
        replay.replayed(step, *change);
        assert!(replay.finished());
        assert_eq!(replay.counts(), (KEYS_KEPT as u64 + 1, 1));
    }
}
