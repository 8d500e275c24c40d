//! [`RegionError`]: why a region call returned no value.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::BackendError;

/// Why a [`Region`](crate::Region) call returned no value. `E` is the creator's error type.
///
/// ```
/// use dogpile_runtime::{Region, RegionError};
///
/// let region: Region<u32, u32> = Region::builder().name("prices").build()?;
/// let err = region
///     .try_get_with(&1, || region.try_get_with(&1, || Ok::<_, String>(1)).map_err(|e| e.to_string()))
///     .unwrap_err();
/// let RegionError::Creator(inner) = err else { panic!() };
/// assert_eq!(
///     *inner,
///     "the creator of key 1 in region \"prices\" asked for key 1 again and would wait for \
///      itself forever; break the cycle in the creator"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RegionError<E> {
    /// The creator failed; nothing was stored. It ran in this call, or in the call this one
    /// waited for, or just before (within the region's
    /// [`fail_safe_throttle`](crate::region::RegionBuilder::fail_safe_throttle)): one failure
    /// per attempt, shared by every call it answers.
    Creator(Arc<E>),
    /// The creator of `key` asked for `key` again (directly or through other keys) while there
    /// was no value: waiting for itself would never end.
    Recursion {
        /// The region's name.
        region: String,
        /// The key, in its `Debug` form.
        key: String,
    },
    /// A batch's creator ([`Region::try_get_with_many`](crate::Region::try_get_with_many))
    /// returned another number of values than it was asked for; nothing was stored.
    Batch {
        /// How many keys the creator was given.
        asked: usize,
        /// How many values it returned.
        returned: usize,
    },
    /// The creator ran past the region's
    /// [`hard_timeout`](crate::region::RegionBuilder::hard_timeout): this call's creator (async;
    /// it was cancelled, and nothing was stored), or the creator this call waited for.
    Timeout(std::time::Duration),
    /// The store or mutex failed and the region is set to return such errors
    /// ([`OnBackendError::ReturnError`](crate::region::OnBackendError::ReturnError)).
    Backend(BackendError),
}

impl<E> RegionError<E> {
    /// Separates the creator's own error from the region's: `Ok(e)` for
    /// [`Creator(e)`](Self::Creator), `Err` with the region's error otherwise.
    ///
    /// ```
    /// use dogpile_runtime::{Region, RegionError};
    /// let region: Region<u8, u8> = Region::builder().build()?;
    /// let err = region.try_get_with(&1, || Err::<u8, _>("down")).unwrap_err();
    /// assert_eq!(err.into_creator().ok().as_deref(), Some(&"down"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_creator(self) -> Result<Arc<E>, RegionError<std::convert::Infallible>> {
        match self {
            RegionError::Creator(e) => Ok(e),
            RegionError::Recursion { region, key } => Err(RegionError::Recursion { region, key }),
            RegionError::Batch { asked, returned } => Err(RegionError::Batch { asked, returned }),
            RegionError::Timeout(timeout) => Err(RegionError::Timeout(timeout)),
            RegionError::Backend(e) => Err(RegionError::Backend(e)),
        }
    }

    /// Panics with this error's message: for the calls whose creator cannot fail, where the only
    /// errors left are programming errors (recursion) or a backend set to return errors. A
    /// panic shows no error chain, so a backend's failure is spelled out.
    #[cold]
    #[track_caller]
    pub(crate) fn fail(self) -> ! {
        match &self {
            RegionError::Backend(e) => panic!("{self}: {e}"),
            _ => panic!("{self}"),
        }
    }
}

/// Each variant says what went wrong in its message; the creator's error and the backend's
/// failure are its [`source`](StdError::source), not repeated in the message. `E` needs no
/// bound to be displayed.
impl<E> fmt::Display for RegionError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::Creator(_) => f.write_str("the creator failed"),
            RegionError::Recursion { region, key } => write!(
                f,
                "the creator of key {key} in region {region:?} asked for key {key} again and \
                 would wait for itself forever; break the cycle in the creator"
            ),
            RegionError::Batch { asked, returned } => write!(
                f,
                "a batch's creator was asked for {asked} values and returned {returned}; it \
                 must return one value per key, in the keys' order"
            ),
            RegionError::Timeout(timeout) => write!(
                f,
                "the creator ran past the region's hard timeout of {timeout:?}"
            ),
            RegionError::Backend(_) => f.write_str("the region's store or mutex failed"),
        }
    }
}

impl<E: StdError + 'static> StdError for RegionError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            RegionError::Creator(e) => Some(&**e),
            RegionError::Backend(e) => Some(e),
            RegionError::Recursion { .. } | RegionError::Batch { .. } | RegionError::Timeout(_) => {
                None
            }
        }
    }
}
