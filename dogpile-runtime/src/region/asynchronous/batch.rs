//! Many keys in one async call: [`AsyncRegion::try_get_with_many`], by the rules and in the
//! order of the blocking batch (`region/batch.rs`), each key that needs a value a creation of
//! its own.

use std::future::Future;

use super::driver::{while_holding, CatchUnwind};
use super::{AsyncGuard, AsyncRegion};
use crate::lock::drive::Stop;
use crate::lock::protocol::{Protocol, Refused};
use crate::region::batch::{assemble, check, stored, unique_in_order, Checked, Slot};
use crate::region::creation::{Creation, Guard, Run};
use crate::region::{AsyncStore, CacheKey, CacheValue, KeyMutex, RegionError};
use crate::AsyncRawMutex;

impl<K, V, S, M> AsyncRegion<K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// [`Region::try_get_with_many`](crate::Region::try_get_with_many) for async code: the
    /// values of `keys`, in their order, with one call of `init` for all the keys that need a
    /// value; waiting tasks never block a worker thread.
    ///
    /// # Errors
    ///
    /// As [`Region::try_get_with_many`](crate::Region::try_get_with_many).
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
    pub async fn try_get_with_many<E: Send + Sync + 'static, F, Fut>(
        &self,
        keys: &[K],
        init: F,
    ) -> Result<Vec<V>, RegionError<E>>
    where
        F: FnOnce(&[K]) -> Fut,
        Fut: Future<Output = Result<Vec<V>, E>>,
    {
        let region = &self.region;
        let (unique, places) = unique_in_order(keys);
        let mut slots = Vec::with_capacity(unique.len());
        for &index in &unique {
            slots.push(self.advance_one(&keys[index]).await?);
        }
        let mut creations: Vec<&mut Creation<'_, K, V, S, M, AsyncGuard<M>>> = slots
            .iter_mut()
            .filter_map(|slot| slot.as_mut().err())
            .collect();
        if creations.is_empty() {
            return Ok(assemble(slots, Vec::new(), &places));
        }
        let asked: Vec<K> = creations.iter().map(|c| c.key.clone()).collect();
        let held: Vec<_> = creations
            .iter()
            .filter_map(|c| c.guard.as_ref().map(|g| g.mutex().clone()))
            .collect();
        let run = Run::start(region, &asked);
        let made = {
            let creation = std::pin::pin!(async {
                let creating = CatchUnwind(std::pin::pin!(run.span().instrument(init(&asked))));
                match region.inner.hard_timeout {
                    None => run.ran(creating.await),
                    Some(timeout) => match tokio::time::timeout(timeout, creating).await {
                        Ok(made) => run.ran(made),
                        Err(_) => Err(run.timed_out(timeout)),
                    },
                }
            });
            while_holding(&held, creation).await
        };
        let values = match check(run, &mut creations, made) {
            Checked::Made(run, values) => {
                let mut written = Vec::with_capacity(values.len());
                for (creation, value) in creations.iter().zip(&values) {
                    written.push(match creation.write(value, None) {
                        Some(write) => Some(write.awaiting().await),
                        None => None,
                    });
                }
                stored(run, &creations, written);
                values
            }
            Checked::Rescued(stale) => stale,
            Checked::Failed(ending) => {
                drop(creations);
                release(&mut slots).await;
                return Err(ending.into_error());
            }
        };
        drop(creations);
        release(&mut slots).await;
        Ok(assemble(slots, values, &places))
    }

    /// One key of a batch, up to its creation.
    async fn advance_one<'a, E: Send + Sync + 'static>(
        &'a self,
        key: &'a K,
    ) -> Result<Slot<'a, K, V, S, M, AsyncGuard<M>>, RegionError<E>> {
        let region = &self.region;
        let mut view = KeyMutex::new(region, key);
        // The batch runs its creator in place: no background, no refresh-ahead.
        let mut protocol = Protocol::new(
            region.rules(region.on_backend_error, false),
            Some(region.stats()),
        );
        let next = protocol.start();
        Ok(match self.advance(&mut view, &mut protocol, next).await {
            Stop::Served(_, value) => Ok(value),
            Stop::Create { guard, rescue } => Err(Creation::new(region, key, guard, rescue)),
            Stop::Hand(guard, hand) => match protocol.refused(hand) {
                Refused::Done(_, value) => {
                    guard.release().await;
                    Ok(value)
                }
                Refused::Create { rescue } => Err(Creation::new(region, key, Some(guard), rescue)),
            },
            Stop::Direct(err) => Err(Creation::direct(region, key, &err)),
            Stop::Failed(failure) => return Err(region.failure(key, failure)),
        })
    }
}

/// Releases the mutexes a batch holds, awaiting each release, in the reverse of their order.
async fn release<K, V, S, M: AsyncRawMutex + 'static>(
    slots: &mut [Slot<'_, K, V, S, M, AsyncGuard<M>>],
) {
    for slot in slots.iter_mut().rev() {
        if let Err(creation) = slot {
            if let Some(guard) = creation.guard.take() {
                guard.release().await;
            }
        }
    }
}
