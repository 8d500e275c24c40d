//! The companion items: `_uncached` (the original body), `_served`, `_peek`, `_refresh`,
//! `_invalidate`, `_soft_invalidate`, `_invalidate_all` and `_soft_invalidate_all` (named
//! `_invalidate_region` and `_soft_invalidate_region` on a region given with `region = ...`,
//! where they reach every function's values), `_statistics`. Each is one verb of the region.

use proc_macro2::TokenStream;
use quote::quote;

use super::{plain_signature, Expansion};
use crate::attr::CacheRule;

impl Expansion<'_> {
    pub(super) fn companions(&self) -> TokenStream {
        let item = self.function.item;
        let p = &self.private;
        let krate = &self.krate;
        let vis = &item.vis;
        let name = self.function.name().to_string();
        let cfgs = self.cfg_attrs();
        let keyed = plain_signature(&item.sig);
        let inputs = &keyed.inputs;
        let generics = &keyed.generics;
        let where_clause = &keyed.generics.where_clause;
        let unsafety = &keyed.unsafety;
        let asyncness = self.is_async().then(|| quote!(async));
        let ret = self.function.ret;
        let value = self.value_type();

        let uncached = self.companion("uncached");
        let invalidate = self.companion("invalidate");
        let soft_invalidate = self.companion("soft_invalidate");
        // On a shared region, every value of it goes, every function's: the name says so.
        let shared = self.args.region.get().is_some();
        let (invalidate_all, soft_invalidate_all) = if shared {
            (
                self.companion("invalidate_region"),
                self.companion("soft_invalidate_region"),
            )
        } else {
            (
                self.companion("invalidate_all"),
                self.companion("soft_invalidate_all"),
            )
        };
        let refresh = self.companion("refresh");
        let peek = self.companion("peek");
        let statistics = self.companion("statistics");
        let served = self.companion("served");

        let (prelude, key, key_ref) = (self.prelude(), self.key_and_region(), self.key_ref());
        let control = self.control();
        let statistics_of = match self.args.region.get() {
            // A function given a region: its own calls only.
            Some(path) => {
                let name = self.statistics_name();
                quote!(#p::namespace_statistics(#p::given(&#path), #name))
            }
            None => quote!(#p::statistics(#control)),
        };
        let (rule, rule_type) = (self.rule(), self.rule_type());
        let unshare = self.sharing("unshare");
        let (_, refresh_creator) = self.creator(false);
        let do_refresh = self.call("refresh", false, &quote!(#key_ref, #refresh_creator));
        let do_peek = self.call("peek", false, &key_ref);
        let do_invalidate = self.call("invalidate", false, &key_ref);
        let do_soft_invalidate = self.call("soft_invalidate", false, &key_ref);
        let (served_owned, served_call) = self.create("try_get_with_served");

        // The original body keeps the user's own attributes (but not the cached function's
        // docs) and signature, `mut` bindings included.
        let body_attrs = item.attrs.iter().filter(|a| !a.path().is_ident("doc"));
        let mut body_sig = item.sig.clone();
        body_sig.ident = uncached.clone();
        let block = &item.block;

        let errors_doc =
            if self.rule == CacheRule::Ok || self.function.inferred_rule == CacheRule::Ok {
                quote!(#[doc = "\n# Errors\n\nThe body's error; nothing is stored then."])
            } else {
                TokenStream::new()
            };
        let doc = |text: String| quote!(#[doc = #text]);
        let invalidation_errors_doc = quote!(#[doc = "\n# Errors\n\nThe store's, if the \
            invalidation did not reach it (a Redis region during an outage); it then says \
            whether the invalidation is queued, to be replayed when the store answers again \
            (`BackendError::is_queued_for_replay`)."]);
        let uncached_doc = doc(format!(
            "Runs the body of `{name}` directly: no cache read, nothing stored."
        ));
        let invalidate_doc = doc(format!(
            "Removes the value `{name}` cached for these arguments: the next call runs the body \
             and calls meanwhile wait for it."
        ));
        let soft_invalidate_doc = doc(format!(
            "Marks the value `{name}` cached for these arguments as expired: the next call \
             regenerates it while the others get the old value."
        ));
        let (invalidate_all_doc, soft_invalidate_all_doc) = if shared {
            (
                doc(format!(
                    "Removes every value in the region `{name}` uses, every function's (a \
                     shared region has no \"all of `{name}`\": invalidate keys one by one with \
                     `{name}_invalidate`, or give `{name}` a region of its own)."
                )),
                doc(format!(
                    "Marks every value in the region `{name}` uses as expired, every \
                     function's (as `{name}_invalidate_region`)."
                )),
            )
        } else {
            (
                doc(format!(
                    "Removes every value `{name}` has cached (as `{name}_invalidate` for each \
                     key)."
                )),
                doc(format!(
                    "Marks every value `{name}` has cached as expired (as \
                     `{name}_soft_invalidate` for each key)."
                )),
            )
        };
        let refresh_doc = doc(format!(
            "Runs the body of `{name}` now for these arguments and stores the result, whether \
             or not the cached value is fresh; never beside another creator of the same key."
        ));
        let peek_doc = doc(format!(
            "The value `{name}` has cached for these arguments, fresh or expired, without \
             running the body."
        ));
        let statistics_note = if shared {
            " The region is shared: these count the calls of `{name}` alone (the handles \
             named by its namespace, `Region::with_own_statistics`); `entries`, `evictions` \
             and the backend's counts are the whole region's."
                .replace("{name}", &name)
        } else {
            String::new()
        };
        let statistics_doc = doc(format!(
            "Hits, misses, regenerations and creator time of `{name}`.{statistics_note}"
        ));
        let served_doc = doc(format!(
            "Calls `{name}` and says how the call was served: fresh, stale, created, waited \
             for, or direct (for an `X-Cache` header, or a metric per route)."
        ));

        let common = quote! {
            #(#cfgs)*
            #[allow(dead_code, clippy::needless_pass_by_value, clippy::too_many_arguments)]
        };
        // The keyed companions that do not run the body leave the arguments outside the key
        // unused.
        let keyed_only = quote!(#[allow(unused_variables)]);
        quote! {
            #uncached_doc
            #errors_doc
            #(#body_attrs)*
            #[allow(dead_code, clippy::missing_errors_doc)]
            #vis #body_sig #block

            #served_doc
            #errors_doc
            #common
            #vis #unsafety #asyncness fn #served #generics(#inputs) -> (#ret, #krate::region::Served) #where_clause {
                #prelude
                #key
                #served_owned
                #p::served::<#rule_type, #ret>(#served_call, #unshare)
            }

            #refresh_doc
            #errors_doc
            #common
            #vis #unsafety #asyncness fn #refresh #generics(#inputs) -> #ret #where_clause {
                #prelude
                #key
                #rule::join(#do_refresh, #unshare)
            }

            #peek_doc
            #common
            #keyed_only
            #[must_use]
            #vis #unsafety #asyncness fn #peek #generics(#inputs) -> #p::Option<#value> #where_clause {
                #prelude
                #key
                #do_peek
            }

            #invalidate_doc
            #invalidation_errors_doc
            #common
            #keyed_only
            #vis #unsafety #asyncness fn #invalidate #generics(#inputs) -> #p::Result<(), #krate::BackendError> #where_clause {
                #prelude
                #key
                #do_invalidate
            }

            #soft_invalidate_doc
            #invalidation_errors_doc
            #common
            #keyed_only
            #vis #unsafety #asyncness fn #soft_invalidate #generics(#inputs) -> #p::Result<(), #krate::BackendError> #where_clause {
                #prelude
                #key
                #do_soft_invalidate
            }

            #invalidate_all_doc
            #invalidation_errors_doc
            #common
            #vis fn #invalidate_all() -> #p::Result<(), #krate::BackendError> {
                #p::invalidate_all(#control, false)
            }

            #soft_invalidate_all_doc
            #invalidation_errors_doc
            #common
            #vis fn #soft_invalidate_all() -> #p::Result<(), #krate::BackendError> {
                #p::invalidate_all(#control, true)
            }

            #statistics_doc
            #common
            #[must_use]
            #vis fn #statistics() -> #krate::Statistics {
                #statistics_of
            }
        }
    }
}
