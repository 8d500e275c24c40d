//! Look: what the annotated function is, in the terms the expansion needs.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, Receiver, ReturnType, Type};

use crate::attr::CacheRule;
use crate::errors::Errors;

pub struct Function<'a> {
    pub item: &'a ItemFn,
    pub receiver: Option<&'a Receiver>,
    pub args: Vec<Arg<'a>>,
    /// A method or an associated function that names `Self`: its siblings are `Self::name`.
    pub in_impl: bool,
    pub ret: &'a Type,
    /// What the return type asks for when `cache` is not given.
    pub inferred_rule: CacheRule,
}

pub struct Arg<'a> {
    pub name: &'a Ident,
    pub ty: &'a Type,
}

impl<'a> Function<'a> {
    /// The function's parts; shape errors (const, extern, generic, ...) are collected.
    pub fn from_item(item: &'a ItemFn, errors: &mut Errors) -> Option<Self> {
        let sig = &item.sig;
        if let Some(token) = &sig.constness {
            errors.push(
                token.span(),
                "#[dogpile] cannot cache a `const fn`: its value is already computed at compile time",
            );
        }
        // A variadic function is `extern` too: one mistake, one error.
        if let (Some(abi), None) = (&sig.abi, &sig.variadic) {
            errors.push(
                abi.span(),
                "#[dogpile] cannot cache an `extern` function; wrap it in a Rust function and cache that",
            );
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(
                variadic.span(),
                "#[dogpile] cannot cache a variadic function",
            );
        }
        let generics = &sig.generics;
        if let Some(param) = generics
            .params
            .iter()
            .find(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
        {
            errors.push(
                param.span(),
                "#[dogpile] cannot cache a generic function: one static cache holds one key \
                 type and one value type; cache a non-generic function for each type instead",
            );
        }
        let mut receiver = None;
        let mut args = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r),
                FnArg::Typed(typed) => match &*typed.pat {
                    Pat::Ident(pat) if pat.subpat.is_none() => args.push(Arg {
                        name: &pat.ident,
                        ty: &typed.ty,
                    }),
                    other => errors.push(
                        other.span(),
                        "#[dogpile] needs each argument to be a plain name, such as `point: Point`; \
                         destructure it in the body",
                    ),
                },
            }
        }
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => &**ty,
            ReturnType::Default => {
                errors.push(
                    sig.ident.span(),
                    "a #[dogpile] function must return the value to cache",
                );
                return None;
            }
        };
        if let Type::ImplTrait(_) = ret {
            errors.push(
                ret.span(),
                "#[dogpile] cannot cache an `impl Trait` return type: name the type, or box it",
            );
        } else if borrows(ret.to_token_stream()) {
            errors.add(syn::Error::new_spanned(
                ret,
                "#[dogpile] cannot cache a borrowed value: every caller gets a clone of the \
                 cached value, which outlives the call; return an owned type, such as `String` \
                 for `&str` or `Arc<T>` for `&T`",
            ));
        }
        let in_impl = receiver.is_some() || mentions_self(sig.to_token_stream());
        Some(Function {
            item,
            receiver,
            args,
            in_impl,
            ret,
            inferred_rule: rule_of(ret),
        })
    }

    pub fn name(&self) -> &'a Ident {
        &self.item.sig.ident
    }
}

/// `Result<..>` → `Ok` only, `Option<..>` → `Some` only, anything else → every value. By the
/// last path segment, so `io::Result<T>` counts; `cache = ...` overrides it for other aliases.
fn rule_of(ty: &Type) -> CacheRule {
    let Type::Path(path) = ty else {
        return CacheRule::All;
    };
    let Some(last) = path.path.segments.last() else {
        return CacheRule::All;
    };
    let has_type_arg = matches!(
        &last.arguments,
        PathArguments::AngleBracketed(args)
            if args.args.iter().any(|a| matches!(a, GenericArgument::Type(_)))
    );
    match last.ident.to_string().as_str() {
        "Result" if has_type_arg => CacheRule::Ok,
        "Option" if has_type_arg => CacheRule::Some,
        _ => CacheRule::All,
    }
}

fn mentions_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => mentions_self(group.stream()),
        _ => false,
    })
}

/// Whether a type borrows: a reference or a lifetime other than `'static` in it (`&T`,
/// `&'a T`, `Cow<'_, T>`).
fn borrows(tokens: TokenStream) -> bool {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    trees.iter().enumerate().any(|(i, tree)| match tree {
        TokenTree::Punct(p) if p.as_char() == '&' => !is_static(&trees, i + 1),
        TokenTree::Punct(p) if p.as_char() == '\'' => !is_static(&trees, i),
        TokenTree::Group(group) => borrows(group.stream()),
        _ => false,
    })
}

/// Whether the tokens at `i` are `'static`.
fn is_static(trees: &[TokenTree], i: usize) -> bool {
    matches!(
        (trees.get(i), trees.get(i + 1)),
        (Some(TokenTree::Punct(p)), Some(TokenTree::Ident(name)))
            if p.as_char() == '\'' && name == "static"
    )
}

/// Whether `tokens` use any of `names` as an identifier.
pub fn uses_any(tokens: TokenStream, names: &[String]) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => names.iter().any(|n| ident == n),
        TokenTree::Group(group) => uses_any(group.stream(), names),
        _ => false,
    })
}

/// `&T` (not `&mut T`): the default key takes `T::to_owned()`.
pub fn is_shared_ref(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none())
}

pub fn is_mut_ref(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_some())
}

/// `impl Trait` anywhere in the type.
pub fn has_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            TokenTree::Ident(ident) => ident == "impl",
            TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}
