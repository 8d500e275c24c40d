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
use crate::BackendError;
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

/// What a batch's creator run came to, before anything is stored.
pub(super) enum Checked<'r, V, E> {
    /// One value for each creation, in their order, to store; the run's span is closed once
    /// they are ([`stored`]).
    Made(Run<'r>, Vec<V>),
    /// The creator failed and stale-if-error covers every key it was asked for: their stale
    /// values, not stored.
    Rescued(Vec<V>),
    /// The call ends with this, once the mutexes are released.
    Failed(Ending<E>),
}

/// How a batch ends without values.
pub(super) enum Ending<E> {
    Creator(Failed<E>),
    Miscounted { asked: usize, returned: usize },
}

impl<E> Ending<E> {
    /// The caller's error (a creator's panic resumes).
    pub(super) fn into_error(self) -> RegionError<E> {
        match self {
            Ending::Creator(failed) => fail(failed),
            Ending::Miscounted { asked, returned } => RegionError::Batch { asked, returned },
        }
    }
}

/// Checks what the batch's creator made for `creations`: their values, the stale values that
/// stand in for its failure (every key's, or none), or the failure.
pub(super) fn check<'r, K, V, S, M, G, E>(
    run: Run<'r>,
    creations: &mut [&mut Creation<'_, K, V, S, M, G>],
    made: Result<Vec<V>, Failed<E>>,
) -> Checked<'r, V, E>
where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
    G: Guard<M>,
{
    match made {
        Ok(values) if values.len() == creations.len() => Checked::Made(run, values),
        Ok(values) => {
            run.miscounted();
            Checked::Failed(Ending::Miscounted {
                asked: creations.len(),
                returned: values.len(),
            })
        }
        Err(failed) => {
            run.failed(&failed);
            if creations.iter().all(|creation| creation.rescuable()) {
                Checked::Rescued(
                    creations
                        .iter_mut()
                        .filter_map(|creation| creation.take_rescue())
                        .collect(),
                )
            } else {
                Checked::Failed(Ending::Creator(failed))
            }
        }
    }
}

/// Counts what the store said of each creation's value, and closes the run's span.
pub(super) fn stored<K, V, S, M, G>(
    run: Run<'_>,
    creations: &[&mut Creation<'_, K, V, S, M, G>],
    stored: Vec<Option<Result<bool, BackendError>>>,
) where
    K: CacheKey,
    V: CacheValue,
    S: Store<K, V>,
    M: RawMutex + 'static,
    G: Guard<M>,
{
    let mut outcome = "stored";
    for (creation, stored) in creations.iter().zip(stored) {
        outcome = creation.stored(stored);
    }
    run.finish(outcome);
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
    pub fn try_get_with_many<E: Send + Sync + 'static>(
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
        let made = run.catch(|| init(&asked));
        let values = match check(run, &mut creations, made) {
            Checked::Made(run, values) => {
                let writes = creations.iter().zip(&values);
                let written = writes.map(|(c, v)| c.write(v, None).map(Write::blocking));
                stored(run, &creations, written.collect());
                values
            }
            Checked::Rescued(stale) => stale,
            Checked::Failed(ending) => {
                // The mutexes go before the failure reaches the caller.
                drop(creations);
                drop(slots);
                return Err(ending.into_error());
            }
        };
        drop(creations);
        // The mutexes are released as the slots go.
        Ok(assemble(slots, values, &places))
    }

    /// One key of a batch, up to its creation.
    fn advance_one<'a, E: Send + Sync + 'static>(
        &'a self,
        key: &'a K,
    ) -> Result<HeldSlot<'a, K, V, S, M>, RegionError<E>> {
        let mut view = KeyOf::new(self, key);
        // The batch runs its creator in place: no background, no refresh-ahead.
        let mut protocol =
            Protocol::new(self.rules(self.on_backend_error, false), Some(self.stats()));
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
