//! Many keys in one call: each key by the dogpile rules, one creator call for all the keys that
//! need a value.
//!
//! The keys are taken in one order (by a hash of each key, its `Debug` form breaking ties) and
//! their mutexes held until the creator's values are stored, so two batches over the same keys
//! wait for each other in the same order and never deadlock.

use std::hash::{BuildHasher, Hash};

use super::create::KeyOf;
use super::stats::Counter;
use super::{trace, CacheKey, CacheValue, Region, RegionError, Store};
use crate::lock::drive::{self, Holding, Stop};
use crate::lock::protocol::{Failure, Protocol};
use crate::{OwnedMutexGuard, RawMutex};

/// What became of one key of a batch before the creator runs; `G` is the guard of a held
/// mutex (blocking or async).
pub(super) enum Slot<'a, V, G> {
    Served(V),
    /// To create: the key's protocol (for stale-if-error), its mutex if held, and whether the
    /// value is stored (not after a backend failure).
    Create {
        protocol: Protocol<'a, V>,
        guard: Option<G>,
        store: bool,
    },
    /// A duplicate of an earlier key of the batch: its value, when known.
    Same(usize),
}

/// A stable order of keys for every batch: by a hash with fixed keys, then by the `Debug` form.
pub(super) fn order<K: Hash + std::fmt::Debug>(keys: &[K]) -> Vec<usize> {
    let hasher = foldhash::fast::FixedState::with_seed(0x646f_6770_696c_6521);
    let hashes: Vec<u64> = keys.iter().map(|k| hasher.hash_one(k)).collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| {
        hashes[a]
            .cmp(&hashes[b])
            .then_with(|| format!("{:?}", keys[a]).cmp(&format!("{:?}", keys[b])))
    });
    order
}

impl<K, V, S, M> Region<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
{
    /// The values of `keys`, in their order, with one call of `init` for all the keys that need
    /// a value. Each key follows the rules of [`try_get_with`](Self::try_get_with): a fresh
    /// value is returned as is; an expired one is returned stale while another caller
    /// regenerates it, or regenerated in this batch; a missing one is waited for while another
    /// caller creates it, or created in this batch. `init` gets the keys to create (in the
    /// batch's lock order, not the order of `keys`) and returns their values in the same order. (dogpile.cache's `get_or_create_multi`, Caffeine's
    /// `getAll`.)
    ///
    /// The keys' mutexes are taken in one order, by a hash of the key, and held until the
    /// values are stored, so two batches over the same keys cannot deadlock. A key that appears
    /// twice is created once.
    ///
    /// # Errors
    ///
    /// [`RegionError::Creator`] with `init`'s error (or the stale values, for a region with
    /// `stale_if_error` whose window covers every key `init` was asked for);
    /// [`RegionError::Batch`] if `init` returned another number of values than keys;
    /// [`RegionError::Recursion`] and [`RegionError::Backend`] as for a single key.
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// let region: Region<u32, String> = Region::builder().build()?;
    /// region.insert(&2, "two (cached)".to_string()).unwrap();
    /// let names = region
    ///     .try_get_with_many(&[1, 2, 3], |missing| {
    ///         assert_eq!(missing.len(), 2); // 1 and 3, in one call
    ///         Ok::<_, std::convert::Infallible>(missing.iter().map(|k| format!("#{k}")).collect())
    ///     })
    ///     .unwrap();
    /// assert_eq!(names, ["#1", "two (cached)", "#3"]);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_get_with_many<E>(
        &self,
        keys: &[K],
        init: impl FnOnce(&[K]) -> Result<Vec<V>, E>,
    ) -> Result<Vec<V>, RegionError<E>> {
        let mut slots: Vec<Option<Slot<'_, V, OwnedMutexGuard<M>>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut first_of: std::collections::HashMap<&K, usize> = std::collections::HashMap::new();
        for index in order(keys) {
            let key = &keys[index];
            if let Some(&first) = first_of.get(key) {
                slots[index] = Some(Slot::Same(first));
                continue;
            }
            first_of.insert(key, index);
            slots[index] = Some(self.advance_one(key)?);
        }

        // Every key that needs a value, held, in the batch's order.
        let to_create: Vec<usize> = order(keys)
            .into_iter()
            .filter(|&i| matches!(slots[i], Some(Slot::Create { .. })))
            .collect();
        let created = if to_create.is_empty() {
            Vec::new()
        } else {
            let asked: Vec<K> = to_create.iter().map(|&i| keys[i].clone()).collect();
            match self.run_batch(keys, &to_create, &mut slots, &asked, init) {
                Ok(created) => created,
                Err(err) => {
                    let stale = rescue(&to_create, &mut slots, err)?;
                    return Ok(assemble(keys.len(), slots, &to_create, stale));
                }
            }
        };
        Ok(assemble(keys.len(), slots, &to_create, created))
    }

    /// One key of a batch, up to its creation.
    fn advance_one<E>(&self, key: &K) -> Result<Slot<'_, V, OwnedMutexGuard<M>>, RegionError<E>> {
        let inner = &*self.inner;
        let mut view = KeyOf {
            region: self,
            key,
            mutex: inner.mutexes.get(key),
        };
        // The batch runs its creator in place: no background, no refresh-ahead.
        let mut protocol =
            Protocol::new(self.rules(self.on_backend_error, false), Some(&inner.stats));
        Ok(match drive::advance(&mut view, &mut protocol) {
            Stop::Served(_, value) => Slot::Served(value),
            Stop::Create(guard) => Slot::Create {
                protocol,
                guard,
                store: true,
            },
            Stop::Hand(guard) => Slot::Create {
                protocol,
                guard: Some(guard),
                store: true,
            },
            Stop::Direct(err) => {
                self.note_direct(key, &err);
                Slot::Create {
                    protocol,
                    guard: None,
                    store: false,
                }
            }
            Stop::Failed(Failure::WouldDeadlock) => return Err(self.recursion(key)),
            Stop::Failed(Failure::Backend(err)) => return Err(RegionError::Backend(err)),
            Stop::Failed(Failure::Timeout(_)) => {
                unreachable!("a region never fails on its lock timeout")
            }
        })
    }

    /// Runs the batch's creator, marked as holding every mutex held, and stores its values.
    fn run_batch<E>(
        &self,
        keys: &[K],
        to_create: &[usize],
        slots: &mut [Option<Slot<'_, V, OwnedMutexGuard<M>>>],
        asked: &[K],
        init: impl FnOnce(&[K]) -> Result<Vec<V>, E>,
    ) -> Result<Vec<V>, RegionError<E>> {
        let holding: Vec<Holding> = to_create
            .iter()
            .filter_map(|&i| match &slots[i] {
                Some(Slot::Create {
                    guard: Some(guard), ..
                }) => Some(Holding::enter(guard.mutex())),
                _ => None,
            })
            .collect();
        let span = trace::Regeneration::start(&self.inner.name, &asked);
        let made = init(asked);
        drop(holding);
        let values = match made {
            Ok(values) if values.len() == asked.len() => values,
            Ok(values) => {
                span.finish("error");
                self.inner.stats.add(Counter::Error);
                return Err(RegionError::Batch {
                    asked: asked.len(),
                    returned: values.len(),
                });
            }
            Err(err) => {
                span.finish(self.count_creation(false, None));
                return Err(RegionError::Creator(err));
            }
        };
        let mut outcome = "stored";
        for (&index, value) in to_create.iter().zip(&values) {
            let Some(Slot::Create { guard, store, .. }) = &slots[index] else {
                continue;
            };
            if !*store {
                continue;
            }
            let stored = self.caches(value).then(|| {
                let stamp = self.stamp_value(value, None);
                let fence = guard.as_ref().and_then(|g| g.mutex().fence());
                let store = &self.inner.store;
                match &fence {
                    None => store.put(&keys[index], value, stamp).map(|()| true),
                    Some(fence) => store.put_fenced(&keys[index], value, stamp, fence),
                }
            });
            outcome = self.count_creation(true, stored);
        }
        span.finish(outcome);
        Ok(values)
    }
}

/// The batch's creator failed: the stale values, if stale-if-error covers every key it was
/// asked for; the failure otherwise.
pub(super) fn rescue<V, G, E>(
    to_create: &[usize],
    slots: &mut [Option<Slot<'_, V, G>>],
    err: RegionError<E>,
) -> Result<Vec<V>, RegionError<E>> {
    if !matches!(err, RegionError::Creator(_)) {
        return Err(err);
    }
    let all = to_create.iter().all(
        |&i| matches!(&slots[i], Some(Slot::Create { protocol, .. }) if protocol.may_rescue()),
    );
    if !all {
        return Err(err);
    }
    Ok(to_create
        .iter()
        .filter_map(|&i| match &mut slots[i] {
            Some(Slot::Create { protocol, .. }) => protocol.failed(),
            _ => None,
        })
        .collect())
}

/// The values in the keys' order; the mutexes still held are released as the slots drop.
pub(super) fn assemble<V: Clone, G>(
    len: usize,
    slots: Vec<Option<Slot<'_, V, G>>>,
    to_create: &[usize],
    created: Vec<V>,
) -> Vec<V> {
    let mut values: Vec<Option<V>> = (0..len).map(|_| None).collect();
    for (&index, value) in to_create.iter().zip(created) {
        values[index] = Some(value);
    }
    let mut same = Vec::new();
    for (index, slot) in slots.into_iter().enumerate() {
        match slot {
            Some(Slot::Served(value)) => values[index] = Some(value),
            Some(Slot::Same(first)) => same.push((index, first)),
            _ => {}
        }
    }
    for (index, first) in same {
        values[index] = values[first].clone();
    }
    values
        .into_iter()
        .map(|value| value.unwrap_or_else(|| unreachable!("every key of a batch is served")))
        .collect()
}
