//! Where the region comes from: the key and the region for it at the head of each item, and
//! the hidden functions that give the region (the function's own, built by one builder call
//! per option, or a handle on the one given with `region = ...`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::{respan, Expansion};
use crate::attr::Expire;

impl Expansion<'_> {
    /// `let __dogpile_key = ...; let __dogpile_region = ...;`: the key, and the region for it.
    pub(super) fn key_and_region(&self) -> TokenStream {
        let key = self.key();
        let region = Ident::new("__dogpile_region", self.function.ret.span());
        let get = self.region();
        quote! {
            let __dogpile_key = #key;
            let #region = #get;
        }
    }
    /// The value type with `expire_with`'s function, for the hidden region function whose
    /// bound checks it.
    fn value(&self) -> TokenStream {
        let span = self.function.ret.span();
        let p = self.private_at(span);
        let value = self.value_type();
        let expire_with = match self.args.expire_with.get() {
            Some(path) => {
                let p = self.private_at(path.span());
                quote_spanned!(path.span()=> #p::expire_with(#path))
            }
            None => quote!(#p::None),
        };
        let _ = value;
        let shares = self.sharing("shares");
        quote_spanned!(span=> #p::Value::new(#expire_with, #shares))
    }
    /// The region, typed: from the function's own slot for this key type, or the handle on
    /// the region given with `region = PATH`. Spanned at the return type, where a value type
    /// that cannot be cached is reported by the hidden function's bound.
    pub(super) fn region(&self) -> TokenStream {
        let span = self.function.ret.span();
        let sibling = respan(&self.sibling, span);
        // The user's own span (not a hygienic one located there), so that the call's span is
        // the return type's: a hidden function is an item, named from anywhere alike.
        let region = Ident::new(&self.hidden("region").to_string(), span);
        let value = self.value();
        match self.args.region.get() {
            Some(path) => {
                let p = self.private_at(path.span());
                quote!(#sibling #region(#p::given(&#path), #value))
            }
            None => {
                // At the return type's first token, as every use of the region: a value type
                // that cannot be cached is reported there by this call's bound, and the verbs'
                // same obligations at the same place are not reported again.
                let value_type = respan(&self.value_type(), span);
                quote_spanned!(span=> #sibling #region::<_, #value_type>(&__dogpile_key, #value))
            }
        }
    }
    /// What `_invalidate_all`, `_soft_invalidate_all` and `_statistics` act on: the
    /// function's slot, or the given region (whose handles share its values and counters).
    pub(super) fn control(&self) -> TokenStream {
        if let Some(path) = self.args.region.get() {
            let p = self.private_at(path.span());
            quote_spanned!(path.span()=> #p::given(&#path))
        } else {
            let (sibling, slot) = (&self.sibling, self.hidden("slot"));
            quote!(#sibling #slot())
        }
    }
    /// The hidden functions that give the region: for the function's own, a slot and the typed
    /// region it builds with the attribute's options; for a given region, the handle on it
    /// with the function's expiry.
    pub(super) fn region_fns(&self) -> TokenStream {
        let p = &self.private;
        let cfgs = self.cfg_attrs();
        let region_fn = self.hidden("region");
        let k = format_ident!("__DogpileKey");
        let v = format_ident!("__DogpileValue");
        let attrs = quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #[inline]
        };
        if self.args.region.get().is_some() {
            let (s, m) = (
                format_ident!("__DogpileStore"),
                format_ident!("__DogpileMutex"),
            );
            let (handle, store, mutex, to_async) = if self.is_async() {
                let to_async = quote!(.to_async());
                (
                    quote!(AsyncRegion),
                    quote!(AsyncStore),
                    quote!(AsyncRawMutex),
                    to_async,
                )
            } else {
                (
                    quote!(Region),
                    quote!(Store),
                    quote!(RawMutex),
                    TokenStream::new(),
                )
            };
            let expiry = self.expiry();
            let statistics = self.statistics_name();
            // The attribute has no error to return: a failing backend means a direct call.
            return quote! {
                #attrs
                fn #region_fn<#k, #v, #s, #m>(
                    given: &#p::Region<#k, #v, #s, #m>,
                    value: #p::Value<#v>,
                ) -> &'static #p::#handle<#k, #v, #s, #m>
                where
                    #k: #p::CacheKey,
                    #v: #p::CacheValue,
                    #s: #p::#store<#k, #v>,
                    #m: #p::#mutex + 'static,
                {
                    static HANDLE: #p::Handle = #p::Handle::new();
                    HANDLE.get(|| {
                        // The attribute checked the expiry where it was written. Its calls
                        // return each creator's error by value: they share no failures.
                        // Its calls count in the function's own statistics too.
                        let handle = given
                            .with_own_statistics(#statistics)
                            .with_expiry(#expiry)
                            .unwrap_or_else(#p::refused)
                            .with_on_backend_error(#p::OnBackendError::CallDirectly);
                        value.on(handle) #to_async
                    })
                }
            };
        }
        let (sibling, slot_fn) = (&self.sibling, self.hidden("slot"));
        let builder = self.builder();
        let own = quote!(#sibling #slot_fn().get(value, |builder| #builder));
        let (handle, own) = if self.is_async() {
            (quote!(#p::Own<#k, #v>), own)
        } else {
            (quote!(#p::Region<#k, #v>), quote!(#p::blocking(#own)))
        };
        quote! {
            #attrs
            fn #slot_fn() -> &'static #p::Slot {
                static SLOT: #p::Slot = #p::Slot::new();
                &SLOT
            }

            #attrs
            fn #region_fn<#k: #p::CacheKey, #v: #p::CacheValue>(
                _: &#k,
                value: #p::Value<#v>,
            ) -> &'static #handle {
                #own
            }
        }
    }
    /// The function's own region, configured: one builder call per option.
    fn builder(&self) -> TokenStream {
        let p = &self.private;
        let args = self.args;
        let name = self.function.name().to_string();
        let mut chain = quote!(builder.name(::core::concat!(::core::module_path!(), "::", #name)));
        if let Some(Expire::After(nanos)) = args.expire.get() {
            let expiry = self.duration(*nanos);
            chain.extend(quote!(.expiry(#expiry)));
        }
        if let Some(capacity) = args.capacity.get() {
            chain.extend(quote!(.capacity(#capacity)));
        }
        if let Some(nanos) = args.lock_timeout.get() {
            let timeout = self.duration(*nanos);
            chain.extend(quote!(.lock_timeout(#timeout)));
        }
        if let Some(nanos) = args.hard_timeout.get() {
            let timeout = self.duration(*nanos);
            chain.extend(quote!(.hard_timeout(#timeout)));
        }
        if let Some(nanos) = args.fail_safe_throttle.get() {
            let throttle = self.duration(*nanos);
            chain.extend(quote!(.fail_safe_throttle(#throttle)));
        }
        if self.in_background() {
            chain.extend(quote!(.background(#p::Pool::shared())));
        }
        if let Some(nanos) = args.max_stale.get() {
            let max_stale = self.duration(*nanos);
            chain.extend(quote!(.max_stale(#max_stale)));
        }
        if let Some(nanos) = args.stale_if_error.get() {
            let window = self.duration(*nanos);
            chain.extend(quote!(.stale_if_error(#window)));
        }
        if let Some(millionths) = args.refresh_ahead.get() {
            let share = f64::from(*millionths) / 1e6;
            chain.extend(quote!(.refresh_ahead(#share)));
        }
        if let Some(millionths) = args.jitter.get() {
            let share = f64::from(*millionths) / 1e6;
            chain.extend(quote!(.jitter(#share)));
        }
        chain
    }
    fn duration(&self, nanos: crate::duration::Nanos) -> TokenStream {
        let p = &self.private;
        let (secs, nanos) = nanos.secs_nanos();
        quote!(#p::Duration::new(#secs, #nanos))
    }
    /// `Some(expiry)`, or `None` for `expire = never`.
    fn expiry(&self) -> TokenStream {
        let p = &self.private;
        match self.args.expire.get() {
            Some(Expire::After(nanos)) => {
                let expiry = self.duration(*nanos);
                quote!(#p::Some(#expiry))
            }
            Some(Expire::Never) | None => quote!(#p::None),
        }
    }
}
