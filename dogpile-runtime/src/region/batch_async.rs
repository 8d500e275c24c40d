//! Many keys in one async call: [`AsyncRegion::try_get_with_many`], by the rules and in the
//! order of the blocking batch (`batch.rs`).

use std::collections::HashMap;
use std::future::Future;

use super::asynchronous::{while_holding, AsyncGuard};
use super::batch::{assemble, order, rescue, Slot};
use super::stats::Counter;
use super::{trace, AsyncRegion, AsyncStore, CacheKey, CacheValue, RegionError};
use crate::lock::drive::Stop;
use crate::lock::protocol::{Failure, Protocol};
use crate::AsyncRawMutex;

impl<K, V, S, M> AsyncRegion<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// [`Region::try_get_with_many`](super::Region::try_get_with_many) for async code: the
    /// values of `keys`, in their order, with one call of `init` for all the keys that need a
    /// value; waiting tasks never block a worker thread.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with_many`](super::Region::try_get_with_many).
    ///
    /// ```
    /// use dogpile_runtime::Region;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dogpile_runtime::ConfigError> {
    /// let region = Region::<u32, u32>::builder().build()?.to_async();
    /// let squares = region
    ///     .try_get_with_many(&[2, 3], |keys| {
    ///         let values = keys.iter().map(|k| k * k).collect();
    ///         async move { Ok::<_, ()>(values) }
    ///     })
    ///     .await;
    /// assert_eq!(squares.unwrap(), [4, 9]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_get_with_many<E, F, Fut>(
        &self,
        keys: &[K],
        init: F,
    ) -> Result<Vec<V>, RegionError<E>>
    where
        F: FnOnce(&[K]) -> Fut,
        Fut: Future<Output = Result<Vec<V>, E>>,
    {
        let region = &self.region;
        let inner = &*region.inner;
        let mut slots: Vec<Option<Slot<'_, V, AsyncGuard<M>>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut first_of: HashMap<&K, usize> = HashMap::new();
        let sorted = order(keys);
        for &index in &sorted {
            let key = &keys[index];
            if let Some(&first) = first_of.get(key) {
                slots[index] = Some(Slot::Same(first));
                continue;
            }
            first_of.insert(key, index);
            let mutex = inner.mutexes.get(key);
            let mut protocol = Protocol::new(
                region.rules(region.on_backend_error, false),
                Some(&inner.stats),
            );
            let slot = match self.advance(key, &mutex, &mut protocol).await {
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
                    region.note_direct(key, &err);
                    Slot::Create {
                        protocol,
                        guard: None,
                        store: false,
                    }
                }
                Stop::Failed(Failure::WouldDeadlock) => return Err(region.recursion(key)),
                Stop::Failed(Failure::Backend(err)) => return Err(RegionError::Backend(err)),
                Stop::Failed(Failure::Timeout(_)) => {
                    unreachable!("a region never fails on its lock timeout")
                }
            };
            slots[index] = Some(slot);
        }

        let to_create: Vec<usize> = sorted
            .into_iter()
            .filter(|&i| matches!(slots[i], Some(Slot::Create { .. })))
            .collect();
        if to_create.is_empty() {
            return Ok(assemble(keys.len(), slots, &to_create, Vec::new()));
        }
        let asked: Vec<K> = to_create.iter().map(|&i| keys[i].clone()).collect();
        let held: Vec<_> = to_create
            .iter()
            .filter_map(|&i| match &slots[i] {
                Some(Slot::Create {
                    guard: Some(guard), ..
                }) => Some(&guard.mutex),
                _ => None,
            })
            .collect();
        let span = trace::AsyncRegeneration::start(&inner.name, &asked);
        let made = while_holding(&held, span.instrument(init(&asked))).await;
        let values = match made {
            Ok(values) if values.len() == asked.len() => values,
            Ok(values) => {
                span.finish("error");
                inner.stats.add(Counter::Error);
                release(&mut slots, &to_create).await;
                return Err(RegionError::Batch {
                    asked: asked.len(),
                    returned: values.len(),
                });
            }
            Err(err) => {
                span.finish(region.count_creation(false, None));
                let stale = rescue(&to_create, &mut slots, RegionError::Creator(err));
                release(&mut slots, &to_create).await;
                return stale.map(|stale| assemble(keys.len(), slots, &to_create, stale));
            }
        };
        let mut outcome = "stored";
        for (&index, value) in to_create.iter().zip(&values) {
            let Some(Slot::Create { guard, store, .. }) = &slots[index] else {
                continue;
            };
            if !*store || !region.caches(value) {
                if *store {
                    outcome = region.count_creation(true, None);
                }
                continue;
            }
            let stamp = region.stamp_value(value, None);
            let fence = guard.as_ref().and_then(|g| g.mutex.fence());
            let stored = match &fence {
                None => self.put(&keys[index], value, stamp).await.map(|()| true),
                Some(fence) => self.put_fenced(&keys[index], value, stamp, fence).await,
            };
            outcome = region.count_creation(true, Some(stored));
        }
        span.finish(outcome);
        release(&mut slots, &to_create).await;
        Ok(assemble(keys.len(), slots, &to_create, values))
    }
}

/// Releases the mutexes a batch holds, awaiting each release.
async fn release<V, M: AsyncRawMutex + 'static>(
    slots: &mut [Option<Slot<'_, V, AsyncGuard<M>>>],
    to_create: &[usize],
) {
    for &index in to_create.iter().rev() {
        if let Some(Slot::Create { guard, .. }) = &mut slots[index] {
            if let Some(guard) = guard.take() {
                guard.release().await;
            }
        }
    }
}
