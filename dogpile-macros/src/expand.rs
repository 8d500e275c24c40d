//! Write: the function routed through a region, and its companion items.
//!
//! ```text
//! // Input:
//! #[dogpile(expire = 60)]
//! pub fn report(day: u32) -> Report { body }
//!
//! // Output:
//! pub fn report(day: u32) -> Report {
//!     let key = key(Clone::clone(&day));
//!     let region = __dogpile_region_report().region();
//!     Region::get_or_create(region, &key, || report_uncached(day))
//! }
//! fn __dogpile_region_report() -> &'static Slot { static SLOT: Slot = ...; &SLOT }
//! pub fn report_uncached(day: u32) -> Report { body }
//! pub fn report_invalidate(day: u32) { ... }   // and the other companions
//! ```

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ItemFn, Pat, Signature};

mod bodies;
mod companions;

use crate::ast::{self, Function};
use crate::attr::{Args, CacheRule, Expire};
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

    fn companion(&self, suffix: &str) -> Ident {
        let name = self.function.name();
        format_ident!("{}_{}", name, suffix, span = name.span())
    }

    fn slot_fn(&self) -> Ident {
        format_ident!(
            "__dogpile_region_{}",
            self.function.name(),
            span = Span::mixed_site()
        )
    }

    /// The private module's path, spanned at the user's tokens that a check is about.
    fn private_at(&self, span: Span) -> TokenStream {
        respan(&self.private, span)
    }

    /// The cached value's type.
    fn value_type(&self) -> TokenStream {
        let ret = self.function.ret;
        let p = self.private_at(ret.span());
        match self.rule {
            CacheRule::All => quote!(#ret),
            CacheRule::Ok => quote_spanned!(ret.span()=> <#ret as #p::Fallible>::Ok),
            CacheRule::Some => quote_spanned!(ret.span()=> <#ret as #p::Optional>::Some),
        }
    }

    /// `&Region<K, V, ..>` for this function.
    fn region(&self) -> TokenStream {
        let (sibling, slot) = (&self.sibling, self.slot_fn());
        match self.args.region.get() {
            Some(path) => {
                // A handle on the given region with this function's expiry, made once.
                let p = self.private_at(path.span());
                let expiry = self.expiry();
                // The attribute has no error to return: a failing backend means a direct call.
                quote_spanned! {path.span()=>
                    #sibling #slot().get(|| {
                        #p::given(&#path)
                            .with_expiry(#expiry)
                            .with_on_backend_error(#p::OnBackendError::CallDirectly)
                    })
                }
            }
            None => {
                let value = self.value_type();
                quote!(#sibling #slot().region::<_, #value>())
            }
        }
    }

    /// What answers `invalidate_all`, `soft_invalidate_all` and `statistics`.
    fn control(&self) -> TokenStream {
        match self.args.region.get() {
            Some(_) => self.region(),
            None => {
                let (sibling, slot) = (&self.sibling, self.slot_fn());
                quote!(#sibling #slot())
            }
        }
    }

    fn duration(&self, nanos: crate::duration::Nanos) -> TokenStream {
        let p = &self.private;
        let (secs, nanos) = nanos.secs_nanos();
        quote!(#p::Some(#p::Duration::new(#secs, #nanos)))
    }

    fn expiry(&self) -> TokenStream {
        let p = &self.private;
        match self.args.expire.get() {
            Some(Expire::After(nanos)) => self.duration(*nanos),
            Some(Expire::Never) | None => quote!(#p::None),
        }
    }

    /// The key, from the arguments in scope.
    fn key(&self) -> TokenStream {
        if let Some(key) = self.args.key.get() {
            let p = self.private_at(key.span());
            let key = self.owned(key);
            return quote_spanned!(key.span()=> #p::key(#key));
        }
        let parts: Vec<TokenStream> = self
            .function
            .args
            .iter()
            .map(|arg| {
                let (name, ty) = (arg.name, arg.ty);
                let p = self.private_at(ty.span());
                if ast::is_shared_ref(ty) {
                    quote_spanned!(ty.span()=> #p::key(#p::ToOwned::to_owned(#name)))
                } else {
                    quote_spanned!(ty.span()=> #p::key(#p::Clone::clone(&#name)))
                }
            })
            .collect();
        match parts.as_slice() {
            [] => quote!(()),
            [one] => one.clone(),
            many => quote!((#(#many),*)),
        }
    }

    /// An explicit key with its borrowed arguments owned: a bare argument of type `&T` (alone
    /// or in a tuple) becomes `T::to_owned()`, as in the default key. Other expressions are
    /// the user's to make owned.
    fn owned(&self, key: &syn::Expr) -> TokenStream {
        match key {
            syn::Expr::Path(path) if path.qself.is_none() => {
                let borrowed = self
                    .function
                    .args
                    .iter()
                    .find(|arg| path.path.is_ident(arg.name) && ast::is_shared_ref(arg.ty));
                match borrowed {
                    Some(arg) => {
                        let (p, name) = (self.private_at(key.span()), arg.name);
                        quote_spanned!(key.span()=> #p::ToOwned::to_owned(#name))
                    }
                    None => key.to_token_stream(),
                }
            }
            syn::Expr::Tuple(tuple) => {
                let elems = tuple.elems.iter().map(|e| self.owned(e));
                quote_spanned!(key.span()=> (#(#elems,)*))
            }
            syn::Expr::Paren(paren) => self.owned(&paren.expr),
            other => other.to_token_stream(),
        }
    }

    /// `name_uncached(self, a, b)`, the original body with these arguments.
    fn call_uncached(&self) -> TokenStream {
        let (sibling, uncached) = (&self.sibling, self.companion("uncached"));
        let receiver = self.function.receiver.map(|_| quote!(self,));
        let names = self.function.args.iter().map(|a| a.name);
        let call = quote!(#sibling #uncached(#receiver #(#names),*));
        if self.function.item.sig.unsafety.is_some() {
            quote!(unsafe { #call })
        } else {
            call
        }
    }

    /// Owned copies of the arguments, moved into a background creator, and the call on them.
    fn call_uncached_owned(&self) -> (TokenStream, TokenStream) {
        let mut owned = TokenStream::new();
        let mut passed = Vec::new();
        if let Some(receiver) = self.function.receiver {
            if ast::is_shared_ref(&receiver.ty) {
                // Spanned at `&self`: "Self is not Clone" points there.
                let span = receiver.span();
                let p = self.private_at(span);
                owned.extend(
                    quote_spanned!(span=> let __dogpile_self = #p::ToOwned::to_owned(self);),
                );
                passed.push(quote_spanned!(span=> #p::Borrow::borrow(&__dogpile_self)));
            } else {
                owned.extend(quote!(let __dogpile_self = self;));
                passed.push(quote!(__dogpile_self));
            }
        }
        for arg in &self.function.args {
            let (name, ty) = (arg.name, arg.ty);
            if ast::is_shared_ref(ty) {
                let p = self.private_at(ty.span());
                owned.extend(quote_spanned!(ty.span()=> let #name = #p::ToOwned::to_owned(#name);));
                passed.push(quote_spanned!(ty.span()=> #p::Borrow::borrow(&#name)));
            } else {
                passed.push(quote!(#name));
            }
        }
        let (sibling, uncached) = (&self.sibling, self.companion("uncached"));
        let mut call = quote!(#sibling #uncached(#(#passed),*));
        if self.function.item.sig.unsafety.is_some() {
            call = quote!(unsafe { #call });
        }
        (owned, call)
    }

    fn write(&self) -> TokenStream {
        let mut out = self.main_fn();
        out.extend(self.dispatch_fn());
        if self.is_async() {
            out.extend(self.async_dispatch_fn());
        }
        out.extend(self.slot());
        out.extend(self.companions());
        out
    }

    fn dispatch_ident(&self) -> Ident {
        format_ident!(
            "__dogpile_call_{}",
            self.function.name(),
            span = Span::mixed_site()
        )
    }

    fn is_async(&self) -> bool {
        self.function.item.sig.asyncness.is_some()
    }

    fn async_dispatch_ident(&self) -> Ident {
        format_ident!(
            "__dogpile_call_async_{}",
            self.function.name(),
            span = Span::mixed_site()
        )
    }

    /// `__dogpile_call_async_name(self, Op::X, a, b).await`: `Get` and `Refresh` of an `async fn`.
    fn dispatch_async(&self, op: &str) -> TokenStream {
        let call = self.call_dispatcher(&self.async_dispatch_ident(), op);
        quote!(#call.await)
    }

    /// `__dogpile_call_name(self, Op::X, a, b)`.
    fn dispatch(&self, op: &str) -> TokenStream {
        self.call_dispatcher(&self.dispatch_ident(), op)
    }

    fn call_dispatcher(&self, dispatcher: &Ident, op: &str) -> TokenStream {
        let p = &self.private;
        let sibling = &self.sibling;
        let op = Ident::new(op, Span::call_site());
        let receiver = self.function.receiver.map(|_| quote!(self,));
        let names = self.function.args.iter().map(|a| a.name);
        let call = quote!(#sibling #dispatcher(#receiver #p::Op::#op, #(#names),*));
        if self.function.item.sig.unsafety.is_some() {
            quote!(unsafe { #call })
        } else {
            call
        }
    }

    /// The cached function: the signature as written, a call of the dispatcher.
    fn main_fn(&self) -> TokenStream {
        let item = self.function.item;
        let p = &self.private;
        let (attrs, vis) = (&item.attrs, &item.vis);
        let sig = plain_signature(&item.sig);
        let dispatch = if self.is_async() {
            self.dispatch_async("Get")
        } else {
            self.dispatch("Get")
        };
        quote! {
            #(#attrs)*
            #vis #sig {
                #p::Outcome::value(#dispatch)
            }
        }
    }

    /// Every keyed operation in one function, so that the key expression and the region are
    /// written (and checked) once: a mistake in the key shows one error, not one per companion.
    /// Inlined into each caller, where the operation is a constant.
    fn dispatch_fn(&self) -> TokenStream {
        let p = &self.private;
        let ret = self.function.ret;
        let value = self.value_type();
        let check_value = {
            let p = self.private_at(ret.span());
            quote_spanned!(ret.span()=> #p::value::<#value>();)
        };
        let (get, refresh) = if self.is_async() {
            // An `async fn` gets and refreshes through its async dispatcher.
            (quote!(#p::wrong_op()), quote!(#p::wrong_op()))
        } else {
            (self.get_body(), self.refresh_body())
        };
        let arms = quote! {
            #p::Op::Get => #p::Outcome::Value({ #get }),
            #p::Op::Refresh => #p::Outcome::Value({ #refresh }),
            #p::Op::Peek => #p::Outcome::Peeked(#p::Region::peek(__dogpile_region, &__dogpile_key)),
            #p::Op::Invalidate => {
                #p::Region::invalidate(__dogpile_region, &__dogpile_key);
                #p::Outcome::Done
            }
            #p::Op::SoftInvalidate => {
                #p::Region::soft_invalidate(__dogpile_region, &__dogpile_key);
                #p::Outcome::Done
            }
        };
        self.dispatcher(&self.dispatch_ident(), false, check_value, arms)
    }

    /// `Get` and `Refresh` of an `async fn`. The key and region are written here a second time;
    /// an error in them shows once all the same (the compiler merges identical reports).
    fn async_dispatch_fn(&self) -> TokenStream {
        let p = &self.private;
        let support = {
            let span = self
                .function
                .item
                .sig
                .asyncness
                .map_or_else(Span::call_site, |a| a.span);
            let p = self.private_at(span);
            quote_spanned!(span=> #p::async_support::<()>();)
        };
        let get = self.get_async_body();
        let refresh = self.refresh_async_body();
        let arms = quote! {
            #p::Op::Get => #p::Outcome::Value({ #get }),
            #p::Op::Refresh => #p::Outcome::Value({ #refresh }),
            _ => #p::wrong_op(),
        };
        self.dispatcher(&self.async_dispatch_ident(), true, support, arms)
    }

    /// A dispatcher: the function's arguments after an operation, its key and region, then
    /// `arms` matched on the operation.
    fn dispatcher(
        &self,
        ident: &Ident,
        is_async: bool,
        prologue: TokenStream,
        arms: TokenStream,
    ) -> TokenStream {
        let p = &self.private;
        let sig = plain_signature(&self.function.item.sig);
        let generics = &sig.generics;
        let where_clause = &sig.generics.where_clause;
        let unsafety = &sig.unsafety;
        let asyncness = is_async.then(|| quote!(async));
        let inline = (!is_async).then(|| quote!(#[inline]));
        let receiver = self.function.receiver.map(|r| quote!(#r,));
        let args = self.function.args.iter().map(|a| {
            let (name, ty) = (a.name, a.ty);
            quote!(#name: #ty)
        });
        let ret = self.function.ret;
        let value = self.value_type();
        let key = self.key();
        let region = self.region();
        let cfgs = self.cfg_attrs();
        quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #inline
            #[allow(unused_variables, clippy::needless_pass_by_value, clippy::too_many_arguments)]
            #unsafety #asyncness fn #ident #generics(
                #receiver
                __dogpile_op: #p::Op,
                #(#args),*
            ) -> #p::Outcome<#ret, #value> #where_clause {
                #prologue
                let __dogpile_key = #key;
                let __dogpile_region = #region;
                match __dogpile_op {
                    #arms
                }
            }
        }
    }

    fn slot(&self) -> TokenStream {
        let p = &self.private;
        let slot = self.slot_fn();
        let cfgs = self.cfg_attrs();
        if self.args.region.get().is_some() {
            return quote! {
                #(#cfgs)*
                #[doc(hidden)]
                #[inline]
                fn #slot() -> &'static #p::Derived {
                    static SLOT: #p::Derived = #p::Derived::new();
                    &SLOT
                }
            };
        }
        let name = self.function.name().to_string();
        let expiry = self.expiry();
        let lock_timeout = match self.args.lock_timeout.get() {
            Some(nanos) => self.duration(*nanos),
            None => quote!(#p::None),
        };
        let capacity = match self.args.capacity.get() {
            Some(n) => quote!(#p::Some(#n)),
            None => quote!(#p::None),
        };
        let background = self.args.background.get().is_some();
        quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #[inline]
            fn #slot() -> &'static #p::Slot {
                static SLOT: #p::Slot = #p::Slot::new(#p::Config {
                    name: ::core::concat!(::core::module_path!(), "::", #name),
                    expiry: #expiry,
                    capacity: #capacity,
                    lock_timeout: #lock_timeout,
                    background: #background,
                });
                &SLOT
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
