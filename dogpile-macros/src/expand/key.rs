//! The key: built from the arguments in scope, which it borrows and never consumes, checked
//! where the user wrote it, and in a region given with `region = ...` put after the function's
//! namespace.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Type;

use super::Expansion;
use crate::ast;
use crate::attr::Namespace;

impl Expansion<'_> {
    /// The key. In a region given with `region = ...`, the function's namespace comes first,
    /// so that functions sharing it never read each other's values.
    pub(super) fn key(&self) -> TokenStream {
        let key = self.own_key();
        if self.args.region.get().is_none() {
            return key;
        }
        // Spanned at `region = ...`: a region whose key type is not `(&str, K)` is reported
        // there.
        let span = self.args.region.span().unwrap_or_else(Span::call_site);
        let key = match self.args.namespace.get() {
            Some(Namespace::None) => key,
            Some(Namespace::Named(name)) => quote_spanned!(span=> (#name, #key)),
            None => {
                let name = self.function.name().to_string();
                quote_spanned!(span=> (::core::concat!(::core::module_path!(), "::", #name), #key))
            }
        };
        let path = self.args.region.get();
        let p = self.private_at(span);
        // The key first: the region's key type is not inferred into it before it is checked.
        quote_spanned!(span=> #p::key_for(#key, #p::given(&#path)))
    }

    /// The name a function given `region = ...` keeps its own statistics under: its
    /// namespace, or its path where it has none.
    pub(super) fn statistics_name(&self) -> TokenStream {
        match self.args.namespace.get() {
            Some(Namespace::Named(name)) => quote!(#name),
            Some(Namespace::None) | None => {
                let name = self.function.name().to_string();
                quote!(::core::concat!(::core::module_path!(), "::", #name))
            }
        }
    }

    /// The key the function names, or its arguments, each checked where it is written.
    fn own_key(&self) -> TokenStream {
        if let Some(key) = self.args.key.get() {
            let p = self.private_at(key.span());
            let key = self.owned(key);
            return quote_spanned!(key.span()=> #p::Key(#key).checked());
        }
        let parts: Vec<TokenStream> = self
            .function
            .args
            .iter()
            .map(|arg| {
                let p = self.private_at(arg.ty.span());
                let owned = self.owned_arg(arg, arg.ty.span());
                quote_spanned!(arg.ty.span()=> #p::Key(#owned).checked())
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
    /// element-wise; any other expression is made owned if it is a reference (`name.trim()`
    /// gives a `String`), and kept as it is otherwise.
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
            other => quote_spanned!(key.span()=> #p::Owned(#other).owned()),
        }
    }
}
