//! How a return type maps onto what is cached: every value ([`All`]), `Ok` of a `Result`
//! ([`OkOnly`]) or `Some` of an `Option` ([`SomeOnly`]). The expansion calls the region's `try_`
//! verbs with [`Rule::split`] around the body and [`Rule::join`] around the answer.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

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
    /// The region's answer, as the function returns it; `unshare` gives a failure shared with
    /// other calls back by value ([`Share`]).
    fn join(
        answer: Result<Self::Value, RegionError<Self::Error>>,
        unshare: fn(Arc<Self::Error>) -> Self::Error,
    ) -> R;
}

/// Whether a function's calls share their creators' failures, by its error type: an error
/// that is `Clone` is shared with every call it answers (each gets a clone), others stay their
/// caller's own (the function's handle shares none). The expansion picks by autoref on the
/// function's concrete error type: `(&Share::<E>::new()).shares()`.
pub struct Share<E>(PhantomData<fn() -> E>);

impl<E> Default for Share<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Share<E> {
    /// The probe for `E`.
    #[inline(always)]
    pub const fn new() -> Self {
        Share(PhantomData)
    }
}

/// `E: Clone`: shared, each call given a clone.
pub trait ShareByClone<E> {
    /// Whether the calls share failures.
    fn shares(&self) -> bool;
    /// A shared failure, by value.
    fn unshare(&self) -> fn(Arc<E>) -> E;
}

impl<E: Clone> ShareByClone<E> for Share<E> {
    #[inline(always)]
    fn shares(&self) -> bool {
        true
    }

    #[inline(always)]
    fn unshare(&self) -> fn(Arc<E>) -> E {
        Arc::unwrap_or_clone
    }
}

/// Any other `E`: not shared, so each failure is its caller's alone.
pub trait ShareNot<E> {
    /// Whether the calls share failures.
    fn shares(&self) -> bool;
    /// A failure, by value: never shared, so it unwraps.
    fn unshare(&self) -> fn(Arc<E>) -> E;
}

impl<E> ShareNot<E> for &Share<E> {
    #[inline(always)]
    fn shares(&self) -> bool {
        false
    }

    #[inline(always)]
    fn unshare(&self) -> fn(Arc<E>) -> E {
        |err| Arc::try_unwrap(err).unwrap_or_else(|_| unshared())
    }
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
    fn join(answer: Result<R, RegionError<Infallible>>, _: fn(Arc<Infallible>) -> Infallible) -> R {
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
    fn join(answer: Result<T, RegionError<E>>, unshare: fn(Arc<E>) -> E) -> Result<T, E> {
        answer.map_err(|err| match err.into_creator() {
            Ok(err) => unshare(err),
            Err(other) => fail(other),
        })
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
    fn join(answer: Result<T, RegionError<NoValue>>, _: fn(Arc<NoValue>) -> NoValue) -> Option<T> {
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
    unshare: fn(Arc<Ru::Error>) -> Ru::Error,
) -> (R, Served) {
    match answer {
        Ok((value, served)) => (Ru::join(Ok(value), unshare), served),
        Err(err) => (Ru::join(Err(err), unshare), Served::Created),
    }
}

/// A function whose error is not `Clone` has a handle that shares no failures, so a creator's
/// error is never anyone else's.
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
