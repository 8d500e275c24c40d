//! The async form of a [`Creation`]: the same steps as the blocking
//! [`Creation::create`](crate::region::creation::Creation), awaiting the creator, the store and
//! the release of the mutex where that one blocks.

use std::future::Future;

use super::driver::{while_holding, AsyncGuard, CatchUnwind};
use crate::region::creation::{end, Creation, Guard, Run, Write};
use crate::region::{AsyncStore, CacheKey, CacheValue, Made, RegionError, Served};
use crate::{AsyncRawMutex, BackendError};

impl<K, V, S, M> Creation<'_, K, V, S, M, AsyncGuard<M>>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// Runs the creator (marked as holding the key in this task), stores what it made, and
    /// releases the mutex. Dropping the future (a cancelled call) drops the guard, which
    /// releases the mutex, and stores nothing.
    pub(in crate::region) async fn create_async<E: Send + Sync + 'static, O, Fut>(
        mut self,
        init: impl FnOnce() -> Fut,
    ) -> Result<(V, Served), RegionError<E>>
    where
        Fut: Future<Output = Result<O, E>>,
        O: Made<V>,
    {
        if let Some(shared) = self.shared() {
            if let Some(guard) = self.guard.take() {
                guard.release().await;
            }
            return end(shared);
        }
        let run = Run::start(self.region, self.key);
        let held = self.guard.as_ref().map(|guard| guard.mutex().clone());
        let ended = {
            let creation = std::pin::pin!(async {
                let creating = CatchUnwind(std::pin::pin!(run.span().instrument(init())));
                let made = match self.region.inner.hard_timeout {
                    None => run.ran(creating.await),
                    // Past it, the creator's future is dropped: cancelled, nothing stored.
                    Some(timeout) => match tokio::time::timeout(timeout, creating).await {
                        Ok(made) => run.ran(made),
                        Err(_) => Err(run.timed_out(timeout)),
                    },
                };
                match made {
                    Ok(made) => {
                        let (value, life) = made.into_parts();
                        let stored = match self.write(&value, life) {
                            Some(write) => Some(write.awaiting().await),
                            None => None,
                        };
                        self.made(run, value, stored)
                    }
                    Err(failed) => {
                        run.failed(&failed);
                        self.failed(failed)
                    }
                }
            });
            while_holding(held.as_ref(), creation).await
        };
        if let Some(guard) = self.guard.take() {
            guard.release().await;
        }
        end(ended)
    }
}

impl<K, V, S, M> Write<'_, K, V, S, M>
where
    K: CacheKey,
    V: CacheValue,
    S: AsyncStore<K, V>,
    M: AsyncRawMutex + 'static,
{
    /// Writes, awaiting a store that does not answer at once.
    pub(in crate::region) async fn awaiting(self) -> Result<bool, BackendError> {
        let store = &self.region.inner.store;
        if store.answers_at_once() {
            return self.blocking();
        }
        let written = match &self.fence {
            None => store
                .put_async(self.key, self.value, self.stamp)
                .await
                .map(|()| true),
            Some(fence) => {
                store
                    .put_fenced_async(self.key, self.value, self.stamp, fence)
                    .await
            }
        };
        self.written(written)
    }
}
