//! Write: the function routed through a region, and its companion items. Every item computes
//! its key, gets its region from a hidden function, and calls one of the region's verbs:
//!
//! ```text
//! // Input:
//! #[dogpile(expire = "5s")]
//! pub async fn rate(pair: &str) -> Rate { body }
//!
//! // Output (paths in `::dogpile::__private` shortened):
//! pub async fn rate(pair: &str) -> Rate {
//!     use ::dogpile::__private::{AsIs as _, NotAKey as _};
//!     async_support::<()>();
//!     let __dogpile_key = Key(ToOwned::to_owned(pair)).checked();
//!     let __dogpile_region = __dogpile_region_rate::<_, Rate>(&__dogpile_key, Value::new(None));
//!     <All as Rule<Rate>>::join(
//!         <AsyncRegion<_, _, _, _>>::try_get_with(__dogpile_region, &__dogpile_key, move || {
//!             async move { <All as Rule<Rate>>::split(rate_uncached(pair).await) }
//!         })
//!         .await,
//!     )
//! }
//! fn __dogpile_slot_rate() -> &'static Slot {
//!     static SLOT: Slot = Slot::new();
//!     &SLOT
//! }
//! fn __dogpile_region_rate<K: CacheKey, V: CacheValue>(_: &K, value: Value<V>) -> &'static Own<K, V> {
//!     __dogpile_slot_rate().get(value, |builder| {
//!         builder.name(concat!(module_path!(), "::", "rate")).expiry(Duration::new(5, 0))
//!     })
//! }
//! pub async fn rate_uncached(pair: &str) -> Rate { body }
//! pub async fn rate_peek(pair: &str) -> Option<Rate> {
//!     use ...; async_support::<()>();
//!     let __dogpile_key = ...; let __dogpile_region = ...;
//!     <AsyncRegion<_, _, _, _>>::peek(__dogpile_region, &__dogpile_key).await
//! }
//! pub fn rate_statistics() -> Statistics {
//!     statistics(__dogpile_slot_rate())
//! }
//! // ... `_served` (`try_get_with_served`), `_refresh`, `_invalidate`, `_soft_invalidate`,
//! // `_invalidate_all` and `_soft_invalidate_all` (`invalidate_all(slot, soft)`) alike.
//! ```
//!
//! The verbs are called by their path with the types left to inference, and every use of the
//! region is spanned at the return type: a value type that cannot be cached is reported once,
//! by the hidden function's bound. With `background` (or `refresh_ahead`) the creator takes
//! owned copies of the arguments and the verbs are `.background()`'s; with `region = PATH`
//! the hidden function returns a handle on that region with the function's expiry, the key is
//! `key_for((namespace, key), given(&PATH))`, and the keyless companions act on the region.
//! Each option of the function's own region is one call in the builder chain.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ItemFn, Pat, Signature};

mod call;
mod companions;
mod key;
mod region;

use crate::ast::Function;
use crate::attr::{Args, CacheRule};
use crate::errors::Errors;

pub fn dogpile(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let error = syn::Error::new(
                first_token_span(&input),
                "#[dogpile] goes on a function with a body, such as `fn report(day: u32) -> Report { ... }`",
            );
            return with_errors(input, error.to_compile_error());
        }
    };

    let mut errors = Errors::default();
    let mut parsed = Args::default();
    let parser = syn::meta::parser(|meta| parsed.parse(meta, &mut errors));
    if let Err(err) = syn::parse::Parser::parse2(parser, args) {
        errors.add(err);
    }
    let Some(function) = Function::from_item(&item, &mut errors) else {
        return with_errors(item.to_token_stream(), errors.into_compile_errors());
    };
    crate::valid::check(&parsed, &function, &mut errors);
    if !errors.is_empty() {
        if item.sig.variadic.is_some() {
            // Written out again, a C-variadic function outside an `extern` block is an error
            // of its own (unstable): the mistake shows alone.
            return errors.into_compile_errors();
        }
        // The function as written, so that its callers still type-check and only the real
        // mistake shows.
        return with_errors(item.to_token_stream(), errors.into_compile_errors());
    }
    Expansion::new(&parsed, &function).write()
}

fn with_errors(item: TokenStream, errors: TokenStream) -> TokenStream {
    quote!(#item #errors)
}

fn first_token_span(tokens: &TokenStream) -> Span {
    tokens
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

struct Expansion<'a> {
    args: &'a Args,
    function: &'a Function<'a>,
    /// `::dogpile::__private`, or the `crate = ...` path's.
    private: TokenStream,
    krate: TokenStream,
    /// `Self::` for methods and associated functions, nothing for free functions.
    sibling: TokenStream,
    rule: CacheRule,
}

impl<'a> Expansion<'a> {
    fn new(args: &'a Args, function: &'a Function<'a>) -> Self {
        let krate = match args.krate.get() {
            Some(path) => path.to_token_stream(),
            None => quote!(::dogpile),
        };
        Expansion {
            args,
            function,
            private: quote!(#krate::__private),
            krate,
            sibling: if function.in_impl {
                quote!(Self::)
            } else {
                TokenStream::new()
            },
            rule: args.cache.get().copied().unwrap_or(function.inferred_rule),
        }
    }

    fn write(&self) -> TokenStream {
        let mut out = self.main_fn();
        out.extend(self.region_fns());
        out.extend(self.companions());
        out
    }

    fn companion(&self, suffix: &str) -> Ident {
        let name = self.function.name();
        format_ident!("{}_{}", name, suffix, span = name.span())
    }

    /// A hidden item of this function: `__dogpile_region_name`, ...
    fn hidden(&self, what: &str) -> Ident {
        format_ident!(
            "__dogpile_{}_{}",
            what,
            self.function.name(),
            span = Span::mixed_site()
        )
    }

    /// The private module's path, spanned at the user's tokens that a check is about.
    fn private_at(&self, span: Span) -> TokenStream {
        respan(&self.private, span)
    }

    fn is_async(&self) -> bool {
        self.function.item.sig.asyncness.is_some()
    }

    /// Regenerations may run off the caller's path (`background`, or `refresh_ahead`, which
    /// refreshes there): the creator takes owned copies of the arguments along.
    fn in_background(&self) -> bool {
        self.args.background.get().is_some() || self.args.refresh_ahead.get().is_some()
    }

    /// The cache rule as the `__private::Rule` marker type.
    fn rule_type(&self) -> TokenStream {
        let p = &self.private;
        match self.rule {
            CacheRule::All => quote!(#p::All),
            CacheRule::Ok => quote!(#p::OkOnly),
            CacheRule::Some => quote!(#p::SomeOnly),
        }
    }

    /// `<Rule as Rule<R>>`, whose `split` and `join` wrap the body and the region's answer.
    fn rule(&self) -> TokenStream {
        let (p, rule, ret) = (&self.private, self.rule_type(), self.function.ret);
        quote!(<#rule as #p::Rule<#ret>>)
    }

    /// `(&Share::<E>::new()).method()` for the function's error type `E`: by autoref, whether
    /// its calls share failures (`shares`) and how a shared one is given back (`unshare`).
    fn sharing(&self, method: &str) -> TokenStream {
        let (p, rule) = (&self.private, self.rule());
        let method = Ident::new(method, Span::call_site());
        quote!((&#p::Share::<#rule::Error>::new()).#method())
    }

    /// The cached value's type.
    fn value_type(&self) -> TokenStream {
        let ret = self.function.ret;
        if self.rule == CacheRule::All {
            // The user's own tokens: a mistake in the type is reported over all of it.
            return ret.to_token_stream();
        }
        let first = ret.span();
        let last = ret
            .to_token_stream()
            .into_iter()
            .last()
            .map_or(first, |token| token.span());
        let p = self.private_at(first);
        let rule = respan(&self.rule_type(), first);
        let value = Ident::new("Value", last);
        quote_spanned!(first=> <#rule as #p::Rule<#ret>>::#value)
    }

    /// What every generated body starts with: the checks' fallbacks in scope, and for an
    /// `async fn` the check that async support is compiled in.
    fn prelude(&self) -> TokenStream {
        let p = &self.private;
        let mut prelude = quote! {
            #[allow(unused_imports)]
            use #p::{AsIs as _, NotAKey as _, ShareByClone as _, ShareNot as _};
        };
        if let Some(asyncness) = self.function.item.sig.asyncness {
            let p = self.private_at(asyncness.span);
            prelude.extend(quote_spanned!(asyncness.span=> #p::async_support::<()>();));
        }
        prelude
    }

    /// The cached function: the signature as written, a call of the region.
    fn main_fn(&self) -> TokenStream {
        let item = self.function.item;
        let (attrs, vis) = (&item.attrs, &item.vis);
        let sig = plain_signature(&item.sig);
        let (prelude, key) = (self.prelude(), self.key_and_region());
        let (owned, call) = self.create("try_get_with");
        let rule = self.rule();
        let unshare = self.sharing("unshare");
        quote! {
            #(#attrs)*
            #vis #sig {
                #prelude
                #key
                #owned
                #rule::join(#call, #unshare)
            }
        }
    }

    /// The user's `cfg`s and lint levels, which apply to every generated item.
    fn cfg_attrs(&self) -> Vec<&'a Attribute> {
        const SHARED: [&str; 8] = [
            "cfg",
            "cfg_attr",
            "allow",
            "expect",
            "warn",
            "deny",
            "forbid",
            "deprecated",
        ];
        self.function
            .item
            .attrs
            .iter()
            .filter(|a| SHARED.iter().any(|name| a.path().is_ident(name)))
            .collect()
    }
}

/// `tokens` with every span set to `span`, so that an error in generated code that wraps the
/// user's tokens points at them rather than at the attribute.
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(group) = &tree {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(&group.stream(), span));
                inner.set_span(span);
                tree = proc_macro2::TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// The signature with `mut` and `ref` dropped from argument bindings: the generated functions
/// only pass the arguments on.
fn plain_signature(sig: &Signature) -> Signature {
    let mut sig = sig.clone();
    for input in &mut sig.inputs {
        if let FnArg::Typed(typed) = input {
            if let Pat::Ident(pat) = &mut *typed.pat {
                pat.mutability = None;
                pat.by_ref = None;
            }
        }
    }
    sig
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    /// The options and values an attribute is written with, right and wrong.
    fn option() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "expire",
            "expire_with",
            "jitter",
            "key",
            "capacity",
            "background",
            "lock_timeout",
            "hard_timeout",
            "fail_safe_throttle",
            "max_stale",
            "stale_if_error",
            "refresh_ahead",
            "region",
            "namespace",
            "crate",
            "cache",
            "expiry",
            "ttl",
            "",
        ]);
        let value = prop::sample::select(vec![
            "",
            "= 60",
            "= 0",
            "= -1",
            "= 200ms",
            "= 1h30m",
            "= 5d",
            "= 1.5",
            "= 1.5f64",
            "= \"90s\"",
            "= \"0.2s\"",
            "= \"\"",
            "= \"80%\"",
            "= 0.8",
            "= never",
            "= true",
            "= day",
            "= (day, day)",
            "= ok",
            "= none",
            "= \"users\"",
            "= crate::X",
            "= ::dogpile",
            "= 10_000",
            "= 99999999999999999999999",
            "= [1]",
            "= {}",
        ]);
        (name, value).prop_map(|(name, value)| format!("{name} {value}"))
    }

    proptest! {
        /// Whatever options the attribute is given, the expansion is code or compile errors:
        /// it never panics, and a mistake never expands silently.
        #[test]
        fn any_options_expand_or_are_refused(options in prop::collection::vec(option(), 0..6)) {
            let args = options.join(", ");
            let Ok(args) = args.parse::<proc_macro2::TokenStream>() else {
                return Ok(());
            };
            let item: proc_macro2::TokenStream =
                "pub fn report(day: u32) -> u32 { day }".parse().unwrap();
            let out = super::dogpile(args, item).to_string();
            let unknown = options.iter().any(|o| {
                o.starts_with("expiry") || o.starts_with("ttl") || o.starts_with(' ')
            });
            if unknown {
                prop_assert!(out.contains("compile_error"), "{options:?} expanded: {out}");
            }
            if !out.contains("compile_error") {
                // Expanded: the function and its companions are there.
                prop_assert!(out.contains("fn report"));
                prop_assert!(out.contains("fn report_peek"));
            }
        }
    }
}
