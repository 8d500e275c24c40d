//! Check: mistakes that need both the options and the function to see.

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;

use crate::ast::{self, Function};
use crate::attr::Args;
use crate::errors::Errors;

pub fn check(args: &Args, function: &Function, errors: &mut Errors) {
    if !args.expire_written {
        errors.push(
            Span::call_site(),
            "#[dogpile] needs `expire`: seconds (`expire = 3600`), a duration (`expire = \"5m\"`), \
             or `expire = never` to keep values until invalidated",
        );
    }

    let names: Vec<String> = function
        .receiver
        .map(|_| "self".to_string())
        .into_iter()
        .chain(function.args.iter().map(|a| a.name.to_string()))
        .collect();
    match args.key.get() {
        Some(key) => {
            if names.is_empty() {
                errors.push(
                    key.span(),
                    "this function has no arguments, so it caches one value: remove `key`",
                );
            } else if !ast::uses_any(key.to_token_stream(), &names) {
                errors.push(
                    key.span(),
                    format!(
                        "the key uses none of the arguments ({}), so every call would share one \
                         value; build it from the arguments",
                        names.join(", ")
                    ),
                );
            }
        }
        None => {
            if let Some(receiver) = function.receiver {
                errors.push(
                    receiver.span(),
                    "a method needs an explicit key, such as `key = (self.id, arg)`: \
                     #[dogpile] cannot know which part of `self` identifies the value",
                );
            }
            for arg in &function.args {
                if ast::is_mut_ref(arg.ty) {
                    errors.push(
                        arg.ty.span(),
                        "a `&mut` argument cannot be part of the default key; give `key = ...` \
                         without it",
                    );
                } else if ast::has_impl_trait(arg.ty) {
                    errors.push(
                        arg.ty.span(),
                        "an `impl Trait` argument cannot be part of the default key; give \
                         `key = ...` without it",
                    );
                }
            }
        }
    }

    if let Some(crate::attr::Expire::Never) = args.expire.get() {
        let shortening = [
            ("expire_with", args.expire_with.span()),
            ("jitter", args.jitter.span()),
            ("refresh_ahead", args.refresh_ahead.span()),
            ("max_stale", args.max_stale.span()),
            ("stale_if_error", args.stale_if_error.span()),
        ];
        for (name, span) in shortening {
            if let Some(span) = span {
                errors.push(
                    span,
                    format!(
                        "`{name}` works on a value's lifetime, and `expire = never` gives it \
                         none: give `expire` the longest a value may live"
                    ),
                );
            }
        }
    }

    if let (Some(window), Some(most), Some(span)) = (
        args.stale_if_error.get(),
        args.max_stale.get(),
        args.stale_if_error.span(),
    ) {
        if window > most {
            errors.push(
                span,
                "`stale_if_error` is longer than `max_stale`: a value too stale to serve cannot \
                 stand in for a failure; make `max_stale` at least as long",
            );
        }
    }

    // `refresh_ahead` regenerates in the background too, with owned arguments.
    if args.background.get().is_some() || args.refresh_ahead.get().is_some() {
        if let Some(receiver) = function.receiver {
            if receiver.mutability.is_some() && receiver.reference.is_some() {
                errors.push(
                    receiver.span(),
                    "`background` regenerates on another thread and needs owned arguments; \
                     `&mut self` cannot be sent there",
                );
            }
        }
        for arg in function.args.iter().filter(|a| ast::is_mut_ref(a.ty)) {
            errors.push(
                arg.ty.span(),
                "`background` regenerates on another thread and needs owned arguments; a \
                 `&mut` argument cannot be sent there",
            );
        }
    }

    if args.region.get().is_some() {
        let own = [
            ("capacity", args.capacity.span()),
            ("background", args.background.span()),
            ("lock_timeout", args.lock_timeout.span()),
            ("hard_timeout", args.hard_timeout.span()),
            ("fail_safe_throttle", args.fail_safe_throttle.span()),
            ("max_stale", args.max_stale.span()),
            ("stale_if_error", args.stale_if_error.span()),
            ("refresh_ahead", args.refresh_ahead.span()),
            ("jitter", args.jitter.span()),
        ];
        for (name, span) in own {
            if let Some(span) = span {
                errors.push(
                    span,
                    format!(
                        "`{name}` configures the function's own region; with `region = ...`, \
                         configure it on that region"
                    ),
                );
            }
        }
    } else if let Some(span) = args.namespace.span() {
        errors.push(
            span,
            "`namespace` sets a function's keys apart in a region it shares, given with \
             `region = ...`; the function's own region holds only its values",
        );
    }
}
