//! How the region is called: its verbs, and the creator that runs the body.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::Expansion;

impl Expansion<'_> {
    /// `.await` after a region's verb in an `async fn`, at the return type as the verb: the
    /// future's own bounds on the value type are reported there.
    fn dot_await(&self) -> TokenStream {
        if self.is_async() {
            let span = self.function.ret.span();
            quote_spanned!(span=> .await)
        } else {
            TokenStream::new()
        }
    }
    /// `&__dogpile_key`.
    pub(super) fn key_ref(&self) -> TokenStream {
        quote!(&__dogpile_key)
    }
    /// `<Region<_, _, _, _>>::verb(region, args)`, on `.background()` if asked, awaited in an
    /// `async fn`. Called by its path with the types left to inference, and spanned at the
    /// return type: a value type that cannot be cached is then reported by the hidden region
    /// function's bound alone, once, rather than by each verb as a method without its bounds.
    pub(super) fn call(&self, verb: &str, background: bool, args: &TokenStream) -> TokenStream {
        let span = self.function.ret.span();
        let p = self.private_at(span);
        let region = Ident::new("__dogpile_region", span);
        let (handle, on_background) = if self.is_async() {
            (
                quote_spanned!(span=> #p::AsyncRegion<_, _, _, _>),
                quote_spanned!(span=> #p::AsyncBackground<'_, _, _, _, _>),
            )
        } else {
            (
                quote_spanned!(span=> #p::Region<_, _, _, _>),
                quote_spanned!(span=> #p::Background<'_, _, _, _, _>),
            )
        };
        let verb = Ident::new(verb, span);
        let dot_await = self.dot_await();
        if background {
            quote_spanned! {span=>
                <#on_background>::#verb(&<#handle>::background(#region), #args) #dot_await
            }
        } else {
            quote_spanned!(span=> <#handle>::#verb(#region, #args) #dot_await)
        }
    }
    /// The creator handed to the region: the body on the arguments, its return split by the
    /// cache rule. With `owned`, the arguments are owned copies made by the statements
    /// returned first, so that the creator can move to the background.
    pub(super) fn creator(&self, owned: bool) -> (TokenStream, TokenStream) {
        let rule = self.rule();
        let (prologue, call) = if owned {
            self.call_uncached_owned()
        } else {
            (TokenStream::new(), self.call_uncached())
        };
        let creator = if self.is_async() {
            quote!(move || async move { #rule::split(#call.await) })
        } else {
            quote!(move || #rule::split(#call))
        };
        (prologue, creator)
    }
    /// The call of a creating verb, on `.background()` when regenerations run there; the
    /// owned copies' statements first.
    pub(super) fn create(&self, verb: &str) -> (TokenStream, TokenStream) {
        let (prologue, creator) = self.creator(self.in_background());
        let key = self.key_ref();
        let call = self.call(verb, self.in_background(), &quote!(#key, #creator));
        (prologue, call)
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
            if crate::ast::is_shared_ref(&receiver.ty) {
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
            if crate::ast::is_shared_ref(ty) {
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
}
