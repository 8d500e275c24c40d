//! Write: the function routed through a region, and its companion items.
//!
//! ```text
//! // Input:
//! #[dogpile(expire = 60)]
//! pub fn report(day: u32) -> Report { body }
//!
//! // Output:
//! pub fn report(day: u32) -> Report {
//!     let key = __dogpile_key_report(&day);
//!     __private::get::<All, ..>(__dogpile_region_report().region(), &key, || report_uncached(day))
//! }
//! fn __dogpile_key_report(day: &u32) -> impl CacheKey { key(ToOwned::to_owned(day)) }
//! fn __dogpile_region_report() -> &'static Slot { static SLOT: Slot = ...; &SLOT }
//! pub fn report_uncached(day: u32) -> Report { body }
//! pub fn report_peek(day: u32) -> Option<Report> { Region::peek(region, &key) }  // and the rest
//! ```
//!
//! The key is built in one hidden function from references to the arguments, so it consumes
//! none of them and a mistake in it shows once.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ItemFn, Pat, Signature, Type};

mod companions;

use crate::ast::{self, Function};
use crate::attr::{Args, CacheRule, Expire, Namespace};
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

    /// `&Region<K, V, ..>` for this function, `V` named by `value`.
    fn region(&self, value: &TokenStream) -> TokenStream {
        let (sibling, slot) = (&self.sibling, self.slot_fn());
        match self.args.region.get() {
            Some(path) => {
                // A handle on the given region with this function's expiry, made once.
                let p = self.private_at(path.span());
                let expiry = self.expiry();
                let given_expire_with = self.given_expire_with();
                // The attribute has no error to return: a failing backend means a direct call.
                quote_spanned! {path.span()=>
                    #sibling #slot().get(|| {
                        #p::with_expiry(#p::given(&#path), #expiry)
                            .with_on_backend_error(#p::OnBackendError::CallDirectly)
                            .with_shared_failures(false)
                            #given_expire_with
                    })
                }
            }
            // The dispatcher's argument: the function named by `expire_with`, or `None`.
            None => quote!(#sibling #slot().region::<_, #value>(__dogpile_expire_with)),
        }
    }

    /// What answers `invalidate_all`, `soft_invalidate_all` and `statistics`.
    fn control(&self) -> TokenStream {
        match self.args.region.get() {
            // The handle the dispatcher made: its slot holds one type.
            Some(_) if self.is_async() => self.async_region(&self.value_type()),
            Some(_) => self.region(&self.value_type()),
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

    /// The cache rule as the `__private::Rule` marker type.
    fn rule_type(&self) -> TokenStream {
        let p = &self.private;
        match self.rule {
            CacheRule::All => quote!(#p::All),
            CacheRule::Ok => quote!(#p::OkOnly),
            CacheRule::Some => quote!(#p::SomeOnly),
        }
    }

    /// `Some(path as fn(&V) -> Duration)` for `expire_with = path`, `None` without: passed to
    /// the dispatcher, where the value type is a parameter.
    fn expire_with(&self, value: &TokenStream) -> TokenStream {
        let p = &self.private;
        match self.args.expire_with.get() {
            Some(path) => {
                let p_at = self.private_at(path.span());
                quote_spanned!(path.span()=> #p_at::expire_with::<#value>(#path))
            }
            None => quote!(#p::None),
        }
    }

    /// `.with_expire_with(path)` for a given region and `expire_with = path`.
    fn given_expire_with(&self) -> TokenStream {
        match self.args.expire_with.get() {
            Some(path) => {
                // Never refused: `expire_with` needs an `expire`, checked here, which the
                // handle was just given.
                let p = self.private_at(path.span());
                quote_spanned!(path.span()=> .with_expire_with(#path).unwrap_or_else(#p::refused))
            }
            None => TokenStream::new(),
        }
    }

    /// `&AsyncRegion<K, V, ..>` for this function, `V` named by `value`.
    fn async_region(&self, value: &TokenStream) -> TokenStream {
        let (sibling, slot) = (&self.sibling, self.slot_fn());
        match self.args.region.get() {
            Some(path) => {
                let p = self.private_at(path.span());
                let expiry = self.expiry();
                let given_expire_with = self.given_expire_with();
                quote_spanned! {path.span()=>
                    #sibling #slot().get(|| {
                        #p::with_expiry(#p::given(&#path), #expiry)
                            .with_on_backend_error(#p::OnBackendError::CallDirectly)
                            .with_shared_failures(false)
                            #given_expire_with
                            .to_async()
                    })
                }
            }
            None => quote!(#sibling #slot().async_region::<_, #value>(__dogpile_expire_with)),
        }
    }

    /// The key, from the arguments in scope, which it borrows and never consumes. In a region
    /// given with `region = ...`, the function's namespace comes first, so that functions
    /// sharing it never read each other's values.
    fn key(&self) -> TokenStream {
        let key = self.own_key();
        if self.args.region.get().is_none() {
            return key;
        }
        // Spanned at `region = ...`: a region whose key type is not `(&str, K)` is reported
        // there.
        let span = self.args.region.span().unwrap_or_else(Span::call_site);
        match self.args.namespace.get() {
            Some(Namespace::None) => key,
            Some(Namespace::Named(name)) => quote_spanned!(span=> (#name, #key)),
            None => {
                let name = self.function.name().to_string();
                quote_spanned!(span=> (::core::concat!(::core::module_path!(), "::", #name), #key))
            }
        }
    }

    /// The key the function names, or its arguments.
    fn own_key(&self) -> TokenStream {
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
                let p = self.private_at(arg.ty.span());
                let owned = self.owned_arg(arg, arg.ty.span());
                quote_spanned!(arg.ty.span()=> #p::key(#owned))
            })
            .collect();
        match parts.as_slice() {
            [] => quote!(()),
            [one] => one.clone(),
            many => quote!((#(#many),*)),
        }
    }

    /// An owned copy of an argument, leaving the argument to the body: `&T` through
    /// `ToOwned` (`&str` gives `String`), anything else through `Clone`.
    /// `span` is where a mistake in it is reported: the argument's type in the default key,
    /// the key expression in an explicit one.
    fn owned_arg(&self, arg: &ast::Arg, span: Span) -> TokenStream {
        let (name, ty) = (arg.name, arg.ty);
        let p = self.private_at(span);
        match ty {
            Type::Reference(r) if r.mutability.is_none() => {
                quote_spanned!(span=> #p::ToOwned::to_owned(#name))
            }
            Type::Reference(_) => quote_spanned!(span=> #p::ToOwned::to_owned(&*#name)),
            _ => quote_spanned!(span=> #p::Clone::clone(&#name)),
        }
    }

    /// An explicit key made owned from borrowed arguments: a bare argument is copied as in
    /// [`owned_arg`](Self::owned_arg), a field, index or dereference is cloned, a tuple
    /// element-wise; any other expression makes its own value, which the user makes owned.
    fn owned(&self, key: &syn::Expr) -> TokenStream {
        let p = self.private_at(key.span());
        match key {
            syn::Expr::Path(path) if path.qself.is_none() => {
                match self
                    .function
                    .args
                    .iter()
                    .find(|arg| path.path.is_ident(arg.name))
                {
                    Some(arg) => self.owned_arg(arg, key.span()),
                    None => key.to_token_stream(),
                }
            }
            syn::Expr::Field(_)
            | syn::Expr::Index(_)
            | syn::Expr::Unary(syn::ExprUnary {
                op: syn::UnOp::Deref(_),
                ..
            }) => quote_spanned!(key.span()=> #p::Clone::clone(&#key)),
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
        out.extend(self.dispatcher());
        out.extend(self.slot());
        out.extend(self.companions());
        out
    }

    fn is_async(&self) -> bool {
        self.function.item.sig.asyncness.is_some()
    }

    /// Regenerations may run off the caller's path (`background`, or `refresh_ahead`, which
    /// refreshes there): the body gets owned copies of the arguments it can take along.
    fn in_background(&self) -> bool {
        self.args.background.get().is_some() || self.args.refresh_ahead.get().is_some()
    }

    fn dispatcher_fn(&self) -> Ident {
        format_ident!(
            "__dogpile_call_{}",
            self.function.name(),
            span = Span::mixed_site()
        )
    }

    /// `__dogpile_call_name(self, a, b, op)`, awaited for an `async fn`; spanned at the return
    /// type, where the dispatcher's check of the cached value reports.
    pub(super) fn dispatch(&self, op: TokenStream) -> TokenStream {
        let (sibling, dispatcher) = (&self.sibling, self.dispatcher_fn());
        let receiver = self.function.receiver.map(|_| quote!(self,));
        let names = self.function.args.iter().map(|a| a.name);
        let span = self.function.ret.span();
        let sibling = respan(sibling, span);
        // Resolved as the dispatcher's own (hygienic) name, located at the return type.
        let dispatcher = Ident::new(&dispatcher.to_string(), Span::mixed_site().located_at(span));
        let (turbofish, expire_with) = if self.args.region.get().is_none() {
            let value = self.value_type();
            let expire_with = self.expire_with(&value);
            (quote!(::<#value, _>), quote!(#expire_with,))
        } else {
            (TokenStream::new(), TokenStream::new())
        };
        let mut call = quote_spanned!(span=>
            #sibling #dispatcher #turbofish(#receiver #(#names,)* #expire_with #op)
        );
        if self.function.item.sig.unsafety.is_some() {
            call = quote!(unsafe { #call });
        }
        if self.is_async() {
            call = quote!(#call.await);
        }
        call
    }

    /// The cached function: the signature as written, a call of the dispatcher to get.
    fn main_fn(&self) -> TokenStream {
        let item = self.function.item;
        let (attrs, vis) = (&item.attrs, &item.vis);
        let sig = plain_signature(&item.sig);
        // Spanned at the return type: a value that cannot be cached is reported there, once.
        let ret_span = self.function.ret.span();
        let p = self.private_at(ret_span);
        let rule = respan(&self.rule_type(), ret_span);
        let get = self.dispatch(quote_spanned!(ret_span=> #p::Get::<#rule>::NEW));
        quote! {
            #(#attrs)*
            #vis #sig {
                #get
            }
        }
    }

    /// One function that computes the key and the region once, for every operation: a mistake
    /// in the key shows one error, not one per companion. It takes the arguments by value,
    /// builds the key from references to them, and hands the operation the region, the key
    /// and the body as a closure over the arguments.
    fn dispatcher(&self) -> TokenStream {
        let p = &self.private;
        let sig = plain_signature(&self.function.item.sig);
        let params = sig.generics.params.iter();
        let where_clause = &sig.generics.where_clause;
        let unsafety = &sig.unsafety;
        let receiver = self.function.receiver.map(|r| quote!(#r,));
        let args = self.function.args.iter().map(|a| {
            let (name, ty) = (a.name, a.ty);
            quote!(#name: #ty)
        });
        let ret = self.function.ret;
        // The function's own region: the cached value is a type parameter of the dispatcher,
        // inferred from the operation and bounded there, so that a value that cannot be cached
        // is reported at the calls (spanned at the user's return type), never inside the
        // expansion. A given region fixes the value type itself.
        let own = self.args.region.get().is_none();
        let value_param = if own {
            format_ident!("__DogpileValue", span = Span::mixed_site()).to_token_stream()
        } else {
            self.value_type()
        };
        let key = self.key();
        let dispatcher = self.dispatcher_fn();
        let cfgs = self.cfg_attrs();
        let (prologue, body, run) = if self.in_background() {
            let (owned, call) = self.call_uncached_owned();
            let body = if self.is_async() {
                quote!(move || async move { #call.await })
            } else {
                quote!(move || #call)
            };
            (owned, body, quote!(run_background))
        } else {
            let call = self.call_uncached();
            (TokenStream::new(), quote!(move || #call), quote!(run))
        };
        let (asyncness, op_trait, handle, dot_await, support) = if self.is_async() {
            let span = self
                .function
                .item
                .sig
                .asyncness
                .map_or_else(Span::call_site, |a| a.span);
            let p_async = self.private_at(span);
            (
                quote!(async),
                quote!(#p::AsyncOp),
                self.async_region(&value_param),
                quote!(.await),
                quote_spanned!(span=> #p_async::async_support::<()>();),
            )
        } else {
            (
                TokenStream::new(),
                quote!(#p::Op),
                self.region(&value_param),
                TokenStream::new(),
                TokenStream::new(),
            )
        };
        let inline = (!self.is_async()).then(|| quote!(#[inline]));
        let op_type = format_ident!("__DogpileOp", span = Span::mixed_site());
        // A given region whose key type does not match is reported at `region = ...`.
        let key_arg = Ident::new(
            "__dogpile_key",
            Span::call_site().located_at(self.args.region.span().unwrap_or_else(Span::call_site)),
        );
        let expire_with_param = own.then(|| {
            let p = &self.private;
            quote!(__dogpile_expire_with: #p::ExpireWith<#value_param>,)
        });
        let value_bound = own.then(|| {
            let p = self.private_at(ret.span());
            quote_spanned!(ret.span()=> #value_param: #p::CacheValue,)
        });
        quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #inline
            #[allow(unused_variables, clippy::needless_pass_by_value, clippy::too_many_arguments)]
            #unsafety #asyncness fn #dispatcher<#(#params,)* #value_bound #op_type: #op_trait<#value_param, #ret>>(
                #receiver
                #(#args,)*
                #expire_with_param
                __dogpile_op: #op_type,
            ) -> #op_type::Output #where_clause {
                #support
                let __dogpile_key = #key;
                let __dogpile_region = #handle;
                #prologue
                #op_type::#run(__dogpile_op, __dogpile_region, #key_arg, #body) #dot_await
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
        let max_stale = match self.args.max_stale.get() {
            Some(nanos) => self.duration(*nanos),
            None => quote!(#p::None),
        };
        let stale_if_error = match self.args.stale_if_error.get() {
            Some(nanos) => self.duration(*nanos),
            None => quote!(#p::None),
        };
        let refresh_ahead = match self.args.refresh_ahead.get() {
            Some(millionths) => {
                let share = f64::from(*millionths) / 1e6;
                quote!(#p::Some(#share))
            }
            None => quote!(#p::None),
        };
        let jitter = match self.args.jitter.get() {
            Some(millionths) => {
                let share = f64::from(*millionths) / 1e6;
                quote!(#p::Some(#share))
            }
            None => quote!(#p::None),
        };
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
                    max_stale: #max_stale,
                    stale_if_error: #stale_if_error,
                    refresh_ahead: #refresh_ahead,
                    jitter: #jitter,
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
