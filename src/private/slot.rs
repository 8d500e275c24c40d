//! Where a function's region lives: its own in a [`Slot`], built on first use; a handle on a
//! given one in a [`Handle`], made on first use. Both are statics of hidden functions that
//! cannot name the key type (the type of the user's key expression) or the given region's
//! store and mutex, so they keep the region type-erased and recover it by a downcast.

use std::any::Any;
use std::sync::{Mutex, OnceLock, PoisonError};

use dogpile_runtime::region::{CacheKey, CacheValue, RegionBuilder};
use dogpile_runtime::{BackendError, Region, Statistics};

use super::{Control, Value};

/// The attribute's options, as calls on the builder of a function's own region.
pub type Configure<K, V> = fn(RegionBuilder<K, V>) -> RegionBuilder<K, V>;

/// What a [`Slot`] keeps: the async face of the region with the `tokio` feature (it holds the
/// blocking one), the region without.
#[cfg(feature = "tokio")]
pub type Own<K, V> = dogpile_runtime::region::AsyncRegion<
    K,
    V,
    dogpile_runtime::region::MemoryStore<K, V>,
    dogpile_runtime::lock::LocalMutex,
>;
/// What a [`Slot`] keeps: the async face of the region with the `tokio` feature (it holds the
/// blocking one), the region without.
#[cfg(not(feature = "tokio"))]
pub type Own<K, V> = Region<K, V>;

/// The blocking face of a function's own region.
#[inline(always)]
pub fn blocking<K: CacheKey, V: CacheValue>(own: &Own<K, V>) -> &Region<K, V> {
    #[cfg(feature = "tokio")]
    {
        own.as_sync()
    }
    #[cfg(not(feature = "tokio"))]
    {
        own
    }
}

/// A function's own region.
///
/// A method of a generic `impl` shares one slot between the impl's instantiations, whose key or
/// value types may differ: each (key, value) pair of types gets its own region, the first in
/// `cell` (the fast path), any others in `more`.
pub struct Slot {
    cell: OnceLock<Built>,
    more: Mutex<Vec<&'static Built>>,
}

struct Built {
    typed: Box<dyn Any + Send + Sync>,
    control: Box<dyn Control + Send + Sync>,
}

impl Slot {
    /// An empty slot.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Slot {
            cell: OnceLock::new(),
            more: Mutex::new(Vec::new()),
        }
    }

    /// The region, built on the first call by `configure`.
    #[inline]
    pub fn get<K: CacheKey, V: CacheValue>(
        &'static self,
        value: Value<V>,
        configure: Configure<K, V>,
    ) -> &'static Own<K, V> {
        let built = self.cell.get_or_init(|| build(value, configure));
        match built.typed.downcast_ref() {
            Some(own) => own,
            None => self.another(value, configure),
        }
    }

    /// The region of other key and value types than the first ones (a generic `impl`).
    #[cold]
    #[inline(never)]
    fn another<K: CacheKey, V: CacheValue>(
        &'static self,
        value: Value<V>,
        configure: Configure<K, V>,
    ) -> &'static Own<K, V> {
        let mut more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        let built = match more.iter().find(|b| b.typed.is::<Own<K, V>>()) {
            Some(built) => *built,
            None => {
                // One per instantiation of the impl, kept for the program's life as a static.
                let built: &'static Built = Box::leak(Box::new(build(value, configure)));
                more.push(built);
                built
            }
        };
        built
            .typed
            .downcast_ref()
            .unwrap_or_else(|| mismatch("a function's own region"))
    }

    /// Every region built.
    fn all(&self) -> Vec<&Built> {
        let more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        self.cell
            .get()
            .into_iter()
            .chain(more.iter().copied())
            .collect()
    }
}

#[cold]
fn build<K: CacheKey, V: CacheValue>(value: Value<V>, configure: Configure<K, V>) -> Built {
    // The attribute checked every setting at compile time. Its calls return each creator's
    // error by value: they share failures only if it can be cloned.
    let region = match value.configure(configure(Region::builder())).build() {
        Ok(region) => region.with_shared_failures(value.shares()),
        Err(err) => panic!("#[dogpile]: {err}"),
    };
    #[cfg(feature = "tokio")]
    let own = region.to_async();
    #[cfg(not(feature = "tokio"))]
    let own = region.clone();
    Built {
        control: Box::new(region),
        typed: Box::new(own),
    }
}

impl Control for Slot {
    fn invalidate_all(&self, soft: bool) -> Result<(), BackendError> {
        // Every region is invalidated, whichever fails; the first failure is reported.
        let mut first = Ok(());
        for built in self.all() {
            let done = built.control.invalidate_all(soft);
            if first.is_ok() {
                first = done;
            }
        }
        first
    }

    fn statistics(&self) -> Statistics {
        let mut sum = Statistics::default();
        for built in self.all() {
            sum += built.control.statistics();
        }
        sum
    }
}

/// A handle on a region given with `region = PATH`, with the function's own expiry.
pub struct Handle {
    cell: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Handle {
    /// An empty slot.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Handle {
            cell: OnceLock::new(),
        }
    }

    /// The handle, made by `make` on the first call.
    #[inline]
    pub fn get<R: Any + Send + Sync>(&'static self, make: impl FnOnce() -> R) -> &'static R {
        match self.cell.get_or_init(|| Box::new(make())).downcast_ref() {
            Some(handle) => handle,
            None => mismatch("a region given with `region = ...`"),
        }
    }
}

#[cold]
#[inline(never)]
fn mismatch(what: &str) -> ! {
    // Every use of a slot comes from one expansion, whose key and value types are fixed for
    // each instantiation.
    panic!("{what} was used with two key or value types")
}
