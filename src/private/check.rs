//! The key and the value type, checked where the user wrote them, so that a mistake is
//! reported once, at the user's tokens.

use std::time::Duration;

use dogpile_runtime::lock::RawMutex;
use dogpile_runtime::region::{CacheKey, CacheValue, RegionBuilder, Store};
use dogpile_runtime::Region;

/// A key, checked where the user wrote it: [`Key::checked`] exists for a [`CacheKey`]; for
/// anything else the compiler falls back to [`NotAKey::checked`] (imported as `_` by the
/// expansion), whose bound reports what the type lacks.
pub struct Key<K>(pub K);

impl<K: CacheKey> Key<K> {
    /// The key.
    #[inline(always)]
    pub fn checked(self) -> K {
        self.0
    }
}

/// The fallback of [`Key::checked`] for a type that cannot be a key. What it returns is left
/// to inference, so that nothing after it reports the same mistake again.
pub trait NotAKey<K> {
    /// Reports the mistake.
    fn checked<Unknown>(self) -> Unknown
    where
        K: CacheKey;
}

impl<K> NotAKey<K> for Key<K> {
    fn checked<Unknown>(self) -> Unknown
    where
        K: CacheKey,
    {
        unreachable!("the inherent `Key::checked` applies to every key")
    }
}

/// A part of an explicit key: a reference is made owned through `ToOwned` (`name.trim()`
/// gives a `String`); anything else is kept as it is, by [`AsIs::owned`].
pub struct Owned<T>(pub T);

impl<T: ?Sized + ToOwned> Owned<&T> {
    /// The owned form.
    #[inline(always)]
    pub fn owned(self) -> T::Owned {
        self.0.to_owned()
    }
}

/// The fallback of [`Owned::owned`] for a value that is not a reference.
pub trait AsIs<T> {
    /// The value.
    fn owned(self) -> T;
}

impl<T> AsIs<T> for Owned<T> {
    #[inline(always)]
    fn owned(self) -> T {
        self.0
    }
}

/// A region given with `region = PATH`, through any `Deref` to it.
#[inline(always)]
pub fn given<K, V, S, M: RawMutex>(region: &Region<K, V, S, M>) -> &Region<K, V, S, M> {
    region
}

/// The key of a function given `region = PATH`, checked against the region's key type.
#[inline(always)]
pub fn key_for<K, R: KeyOf<K>>(key: K, _region: &R) -> R::Key {
    R::key(key)
}

/// A region whose keys are `K`.
#[diagnostic::on_unimplemented(
    message = "the region given with `region = ...` does not hold `{K}` keys",
    label = "this region's key type is not `{K}`",
    note = "a region shared by functions holds `(&'static str, K)` keys, the function's \
            namespace then its key; with `namespace = none`, the key alone"
)]
pub trait KeyOf<K> {
    /// The region's key type: `K`.
    type Key;
    /// The key.
    fn key(key: K) -> Self::Key;
}

impl<K, V, S, M: RawMutex> KeyOf<K> for Region<K, V, S, M> {
    type Key = K;

    #[inline(always)]
    fn key(key: K) -> K {
        key
    }
}

/// The cached value's type, and the function that gives each value its own lifetime
/// (`expire_with`), which needs the type to be named. It is checked by the bound of the hidden
/// function that takes it, called at the return type: every obligation on the value type is
/// reported there, once.
pub struct Value<V> {
    expire_with: Option<fn(&V) -> Duration>,
    /// Whether the function's calls share their creators' failures (its error is `Clone`).
    shares: bool,
}

impl<V> Clone for Value<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Value<V> {}

impl<V> Value<V> {
    /// The value type, and `expire_with`.
    #[inline(always)]
    pub const fn new(expire_with: Option<fn(&V) -> Duration>, shares: bool) -> Self {
        Value {
            expire_with,
            shares,
        }
    }

    /// Whether the function's calls share their creators' failures.
    pub(super) fn shares(self) -> bool {
        self.shares
    }
}

impl<V: CacheValue> Value<V> {
    /// A function's own region with `expire_with`.
    pub(super) fn configure<K: CacheKey>(
        self,
        builder: RegionBuilder<K, V>,
    ) -> RegionBuilder<K, V> {
        match self.expire_with {
            Some(expire_with) => builder.expire_with(expire_with),
            None => builder,
        }
    }

    /// A handle on a given region with `expire_with`.
    pub fn on<K, S, M>(self, region: Region<K, V, S, M>) -> Region<K, V, S, M>
    where
        K: CacheKey,
        S: Store<K, V>,
        M: RawMutex + 'static,
    {
        let region = region.with_shared_failures(self.shares);
        match self.expire_with {
            // Never refused: `expire_with` needs an `expire`, which the attribute checked and
            // the handle was just given.
            Some(expire_with) => region
                .with_expire_with(expire_with)
                .unwrap_or_else(super::refused),
            None => region,
        }
    }
}

/// `expire_with = f`: `f` as the function pointer the region keeps.
#[inline(always)]
pub fn expire_with<V>(f: fn(&V) -> Duration) -> Option<fn(&V) -> Duration> {
    Some(f)
}
