//! An invalidation that did not reach the store: handed to the store to replay when it
//! answers again, and reported to its caller either way.

use std::fmt::Debug;

use super::{Invalidation, Region, Store};
use crate::{BackendError, RawMutex};

impl<K: Debug, V, S: Store<K, V>, M: RawMutex> Region<K, V, S, M> {
    /// The error an invalidation's caller gets when the store failed it with `err`: that it
    /// is queued for replay, if the store keeps it.
    #[cold]
    pub(super) fn unreached(
        &self,
        invalidation: Invalidation<'_, K>,
        err: BackendError,
    ) -> BackendError {
        let what = match (invalidation.key, invalidation.soft) {
            (Some(key), false) => format!("the invalidation of key {key:?}"),
            (Some(key), true) => format!("the soft invalidation of key {key:?}"),
            (None, false) => "the invalidation of every key".to_string(),
            (None, true) => "the soft invalidation of every key".to_string(),
        };
        let region = &self.inner.name;
        if self.inner.store.replay_later(invalidation) {
            BackendError::queued(
                format!(
                    "region {region:?}: {what} did not reach the store; this process honours \
                     it, and it is queued to be replayed when the store answers again"
                ),
                err,
            )
        } else {
            BackendError::with_source(
                format!("region {region:?}: {what} did not reach the store"),
                err,
            )
        }
    }
}
