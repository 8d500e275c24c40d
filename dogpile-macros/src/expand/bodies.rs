//! The get-or-create and refresh bodies of a dispatcher, by cache rule, blocking and async.

use proc_macro2::TokenStream;
use quote::quote;

use super::Expansion;
use crate::attr::CacheRule;

impl Expansion<'_> {
    pub(super) fn get_async_body(&self) -> TokenStream {
        let p = &self.private;
        if self.args.background.get().is_some() {
            let (owned, call) = self.call_uncached_owned();
            let creator = match self.rule {
                CacheRule::All => quote!(move || async move { #p::infallible(#call.await) }),
                CacheRule::Ok => quote!(move || async move { #call.await }),
                CacheRule::Some => quote!(move || async move { #p::some(#call.await) }),
            };
            let call = quote! {
                #p::Region::get_or_try_create_background_async(__dogpile_region, &__dogpile_key, #creator).await
            };
            return match self.rule {
                CacheRule::All => quote!(#owned #p::value_of(#call)),
                CacheRule::Ok => quote! {
                    #owned
                    match #call {
                        #p::Ok(value) => #p::Ok(value),
                        #p::Err(err) => #p::Err(#p::creator_error(err)),
                    }
                },
                CacheRule::Some => quote!(#owned #p::optional(#call)),
            };
        }
        let call = self.call_uncached();
        match self.rule {
            CacheRule::All => quote! {
                #p::Region::get_or_create_async(__dogpile_region, &__dogpile_key, || #call).await
            },
            CacheRule::Ok => quote! {
                match #p::Region::get_or_try_create_async(__dogpile_region, &__dogpile_key, || #call).await {
                    #p::Ok(value) => #p::Ok(value),
                    #p::Err(err) => #p::Err(#p::creator_error(err)),
                }
            },
            CacheRule::Some => quote! {
                #p::optional(#p::Region::get_or_try_create_async(__dogpile_region, &__dogpile_key, || {
                    let __dogpile_body = #call;
                    async move { #p::some(__dogpile_body.await) }
                }).await)
            },
        }
    }

    pub(super) fn refresh_async_body(&self) -> TokenStream {
        let p = &self.private;
        let call = self.call_uncached();
        let creator = match self.rule {
            CacheRule::All => quote!(|| {
                let __dogpile_body = #call;
                async move { #p::infallible(__dogpile_body.await) }
            }),
            CacheRule::Ok => quote!(|| #call),
            CacheRule::Some => quote!(|| {
                let __dogpile_body = #call;
                async move { #p::some(__dogpile_body.await) }
            }),
        };
        let call =
            quote!(#p::Region::refresh_async(__dogpile_region, &__dogpile_key, #creator).await);
        match self.rule {
            CacheRule::All => quote!(#p::value_of(#call)),
            CacheRule::Ok => quote! {
                match #call {
                    #p::Ok(value) => #p::Ok(value),
                    #p::Err(err) => #p::Err(#p::creator_error(err)),
                }
            },
            CacheRule::Some => quote!(#p::optional(#call)),
        }
    }

    /// Get-or-create, by the cache rule; `background` moves owned arguments to the pool.
    pub(super) fn get_body(&self) -> TokenStream {
        let p = &self.private;
        if self.args.background.get().is_some() {
            let (owned, call) = self.call_uncached_owned();
            return match self.rule {
                CacheRule::All => quote! {
                    #owned
                    #p::Region::get_or_create_background(__dogpile_region, &__dogpile_key, move || #call)
                },
                CacheRule::Ok => quote! {
                    #owned
                    match #p::Region::get_or_try_create_background(__dogpile_region, &__dogpile_key, move || #call) {
                        #p::Ok(value) => #p::Ok(value),
                        #p::Err(err) => #p::Err(#p::creator_error(err)),
                    }
                },
                CacheRule::Some => quote! {
                    #owned
                    #p::optional(#p::Region::get_or_try_create_background(
                        __dogpile_region, &__dogpile_key, move || #p::some(#call),
                    ))
                },
            };
        }
        let call = self.call_uncached();
        match self.rule {
            CacheRule::All => quote! {
                #p::Region::get_or_create(__dogpile_region, &__dogpile_key, || #call)
            },
            CacheRule::Ok => quote! {
                match #p::Region::get_or_try_create(__dogpile_region, &__dogpile_key, || #call) {
                    #p::Ok(value) => #p::Ok(value),
                    #p::Err(err) => #p::Err(#p::creator_error(err)),
                }
            },
            CacheRule::Some => quote! {
                #p::Region::get_or_create_optional(__dogpile_region, &__dogpile_key, || #call)
            },
        }
    }

    pub(super) fn refresh_body(&self) -> TokenStream {
        let p = &self.private;
        let call = self.call_uncached();
        match self.rule {
            CacheRule::All => quote! {
                #p::value_of(#p::Region::refresh(__dogpile_region, &__dogpile_key, || #p::infallible(#call)))
            },
            CacheRule::Ok => quote! {
                match #p::Region::refresh(__dogpile_region, &__dogpile_key, || #call) {
                    #p::Ok(value) => #p::Ok(value),
                    #p::Err(err) => #p::Err(#p::creator_error(err)),
                }
            },
            CacheRule::Some => quote! {
                #p::optional(#p::Region::refresh(__dogpile_region, &__dogpile_key, || #p::some(#call)))
            },
        }
    }
}
