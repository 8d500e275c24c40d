//! Many keys in one call: each key by the dogpile rules, one creator call for all the keys that
//! need a value.
//!
//! The keys are taken in one order (by a hash of each key, its `Debug` form breaking ties) and
//! their mutexes held until the creator's values are stored, so two batches over the same keys
//! wait for each other in the same order and never deadlock. Each key that needs a value is a
//! [`Creation`] of its own (its mutex, its fence, its stale value); the creator runs once for
//! all of them.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use super::call::KeyOf;
use super::creation::{fail, Creation, Failed, Guard, Run, Write};
use super::{CacheKey, CacheValue, Region, RegionError, Store};
use crate::lock::drive::{self, Held, Stop};
use crate::lock::protocol::{Protocol, Refused};
use crate::stats::Counter;
use crate::RawMutex;

/// One key of a batch before the creator runs: its value, or its creation.
pub(super) type Slot<'a, K, V, S, M, G> = Result<V, Creation<'a, K, V, S, M, G>>;

/// A slot of a blocking batch.
type HeldSlot<'a, K, V, S, M> = Slot<'a, K, V, S, M, Held<M>>;

/// Each key of `keys` once, in the batch's lock order (by a hash with fixed keys, then by the
/// `Debug` form): the indices of their first occurrences, and for each key of `keys` the place
/// of its value among them.
pub(super) fn unique_in_order<K: Hash + Eq + std::fmt::Debug>(
    keys: &[K],
) -> (Vec<usize>, Vec<usize>) {
    let hasher = foldhash::fast::FixedState::with_seed(0x646f_6770_696c_6521);
    let hashes: Vec<u64> = keys.iter().map(|k| hasher.hash_one(k)).collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| {
        hashes[a]
            .cmp(&hashes[b])
            .then_with(|| format!("{:?}", keys[a]).cmp(&format!("{:?}", keys[b])))
    });
    let mut place: HashMap<&K, usize> = HashMap::with_capacity(keys.len());
    let mut unique = Vec::with_capacity(keys.len());
    let mut places = vec![0; keys.len()];
    for index in order {
        places[index] = *place.entry(&keys[index]).or_insert_with(|| {
            unique.push(index);
            unique.len() - 1
        });
    }
    (unique, places)
}

/// The creator ran and made `values` for the slots that asked (in their order): the value of
/// every unique key, in the batch's order; then each key's, in the order of `keys`.
pub(super) fn assemble<V: Clone, C>(
    slots: Vec<Result<V, C>>,
    values: Vec<V>,
    places: &[usize],
) -> Vec<V> {
    let mut made = values.into_iter();
    let unique: Vec<V> = slots
        .into_iter()
        .filter_map(|slot| match slot {
            Ok(value) => Some(value),
            Err(_) => made.next(),
        })
        .collect();
    places.iter().map(|&place| unique[place].clone()).collect()
}

/// The batch's creator failed: the stale values of the keys it was asked for, if stale-if-error
/// covers every one; the failure otherwise.
pub(super) fn rescue<K, V, S, M, G, E>(
    creations: &mut [&mut Creation<'_, K, V, S, M, G>],
    failed: Failed<E>,
) -> Result<Vec<V>, Failed<E>>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
    G: Guard<M>,
{
    if !creations.iter().all(|creation| creation.rescuable()) {
        return Err(failed);
    }
    Ok(creations
        .iter_mut()
        .filter_map(|creation| creation.take_rescue())
        .collect())
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
        let (unique, places) = unique_in_order(keys);
        let mut slots = Vec::with_capacity(unique.len());
        for &index in &unique {
            slots.push(self.advance_one(&keys[index])?);
        }
        let mut creations: Vec<&mut Creation<'_, K, V, S, M, Held<M>>> = slots
            .iter_mut()
            .filter_map(|slot| slot.as_mut().err())
            .collect();
        if creations.is_empty() {
            return Ok(assemble(slots, Vec::new(), &places));
        }
        let asked: Vec<K> = creations.iter().map(|c| c.key.clone()).collect();
        let run = Run::start(self, &asked);
        let values = match run.catch(|| init(&asked)) {
            Ok(values) if values.len() == asked.len() => {
                let mut outcome = "stored";
                for (creation, value) in creations.iter().zip(&values) {
                    let stored = creation.write(value, None).map(Write::blocking);
                    outcome = creation.stored(stored);
                }
                run.finish(outcome);
                values
            }
            Ok(values) => {
                run.finish("error");
                self.inner.stats.add(Counter::Error);
                return Err(RegionError::Batch {
                    asked: asked.len(),
                    returned: values.len(),
                });
            }
            Err(failed) => {
                run.failed(&failed);
                match rescue(&mut creations, failed) {
                    Ok(stale) => stale,
                    Err(failed) => {
                        // The mutexes go before the failure reaches the caller.
                        drop(creations);
                        drop(slots);
                        return Err(fail(failed));
                    }
                }
            }
        };
        drop(creations);
        // The mutexes are released as the slots go.
        Ok(assemble(slots, values, &places))
    }

    /// One key of a batch, up to its creation.
    fn advance_one<'a, E>(
        &'a self,
        key: &'a K,
    ) -> Result<HeldSlot<'a, K, V, S, M>, RegionError<E>> {
        let mut view = KeyOf::new(self, key);
        // The batch runs its creator in place: no background, no refresh-ahead.
        let mut protocol = Protocol::new(
            self.rules(self.on_backend_error, false),
            Some(&self.inner.stats),
        );
        let next = protocol.start();
        Ok(match drive::advance(&mut view, &mut protocol, next) {
            Stop::Served(_, value) => Ok(value),
            Stop::Create { guard, rescue } => {
                Err(Creation::new(self, key, guard.map(Held::new), rescue))
            }
            Stop::Hand(guard, hand) => match protocol.refused(hand) {
                Refused::Done(_, value) => Ok(value),
                Refused::Create { rescue } => {
                    Err(Creation::new(self, key, Some(Held::new(guard)), rescue))
                }
            },
            Stop::Direct(err) => Err(Creation::direct(self, key, &err)),
            Stop::Failed(failure) => return Err(self.failure(key, failure)),
        })
    }
}
