//! How a return type maps onto what is cached: every value ([`All`]), `Ok` of a `Result`
//! ([`OkOnly`]) or `Some` of an `Option` ([`SomeOnly`]). The expansion calls the region's `try_`
//! verbs with [`Rule::split`] around the body and [`Rule::join`] around the answer.

use std::convert::Infallible;

use dogpile_runtime::region::Served;
use dogpile_runtime::RegionError;

/// A cache rule for the return type `R`.
pub trait Rule<R> {
    /// The cached value.
    type Value;
    /// What a creator's failure carries through the region.
    type Error: Send + Sync + 'static;
    /// The creator's return, as the region takes it.
    fn split(returned: R) -> Result<Self::Value, Self::Error>;
    /// The region's answer, as the function returns it.
    fn join(answer: Result<Self::Value, RegionError<Self::Error>>) -> R;
}

/// Every returned value is cached.
pub enum All {}

impl<R> Rule<R> for All {
    type Value = R;
    type Error = Infallible;

    #[inline(always)]
    fn split(returned: R) -> Result<R, Infallible> {
        Ok(returned)
    }

    #[inline(always)]
    fn join(answer: Result<R, RegionError<Infallible>>) -> R {
        match answer {
            Ok(value) => value,
            Err(err) => match err.into_creator() {
                Ok(never) => match *never {},
                Err(other) => fail(other),
            },
        }
    }
}

/// Only `Ok` is cached; an `Err` reaches its caller.
pub enum OkOnly {}

impl<T, E: Send + Sync + 'static> Rule<Result<T, E>> for OkOnly {
    type Value = T;
    type Error = E;

    #[inline(always)]
    fn split(returned: Result<T, E>) -> Result<T, E> {
        returned
    }

    #[inline(always)]
    fn join(answer: Result<T, RegionError<E>>) -> Result<T, E> {
        // The attribute's handles share no failures: each error is its caller's alone.
        answer.map_err(
            |err| match err.into_creator().map(std::sync::Arc::try_unwrap) {
                Ok(Ok(err)) => err,
                Ok(Err(_)) => unshared(),
                Err(other) => fail(other),
            },
        )
    }
}

/// Only `Some` is cached; `None` reaches its caller.
pub enum SomeOnly {}

/// `None` from an `Option` creator, carried through the `Result` path.
pub struct NoValue;

impl<T> Rule<Option<T>> for SomeOnly {
    type Value = T;
    type Error = NoValue;

    #[inline(always)]
    fn split(returned: Option<T>) -> Result<T, NoValue> {
        returned.ok_or(NoValue)
    }

    #[inline(always)]
    fn join(answer: Result<T, RegionError<NoValue>>) -> Option<T> {
        match answer {
            Ok(value) => Some(value),
            Err(err) => match err.into_creator() {
                Ok(_) => None,
                Err(other) => fail(other),
            },
        }
    }
}

/// The `_served` companion's answer: the function's return value and how it was served; a
/// creator's failure was this caller's own creation.
#[inline(always)]
pub fn served<Ru: Rule<R>, R>(
    answer: Result<(Ru::Value, Served), RegionError<Ru::Error>>,
) -> (R, Served) {
    match answer {
        Ok((value, served)) => (Ru::join(Ok(value)), served),
        Err(err) => (Ru::join(Err(err)), Served::Created),
    }
}

/// A recursion, or a backend set to return errors, in a function that cannot return them.
/// The attribute's handles share no failures, so a creator's error is never anyone else's.
#[cold]
#[inline(never)]
fn unshared() -> ! {
    panic!("a #[dogpile] function got a failure shared with other calls, which it cannot return")
}

#[cold]
#[inline(never)]
#[track_caller]
fn fail(err: RegionError<Infallible>) -> ! {
    panic!("{err}")
}
