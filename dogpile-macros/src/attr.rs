//! Parse: the attribute's options, each value checked where it is written.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitFloat, LitInt, Path, Token, UnOp};

use crate::duration::{parse_duration, parse_seconds, Nanos, FORMS};
use crate::errors::Errors;

/// The options, as written.
#[derive(Default)]
pub struct Args {
    pub expire: Once<Expire>,
    /// `expire` was written, even if its value was refused.
    pub expire_written: bool,
    pub key: Once<Expr>,
    pub capacity: Once<usize>,
    pub background: Once<()>,
    pub lock_timeout: Once<Nanos>,
    pub hard_timeout: Once<Nanos>,
    pub fail_safe_throttle: Once<Nanos>,
    pub region: Once<Expr>,
    pub krate: Once<Path>,
    pub cache: Once<CacheRule>,
    pub max_stale: Once<Nanos>,
    pub stale_if_error: Once<Nanos>,
    /// A share of the lifetime, in millionths (`0.8` is 800,000).
    pub refresh_ahead: Once<u32>,
    pub namespace: Once<Namespace>,
    /// A share, in millionths, as `refresh_ahead`.
    pub jitter: Once<u32>,
    pub expire_with: Once<Expr>,
}

pub const OPTIONS: &str = "expire, expire_with, jitter, key, capacity, background, \
                           lock_timeout, hard_timeout, fail_safe_throttle, max_stale, \
                           stale_if_error, refresh_ahead, region, namespace, crate, cache";

/// `namespace = "..." | none`: what sets a function's keys apart in a region it shares.
pub enum Namespace {
    Named(String),
    None,
}

/// `expire = ...`.
pub enum Expire {
    Never,
    After(Nanos),
}

/// `cache = ok | some | all`: which returned values are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CacheRule {
    /// `Ok` of a `Result`.
    Ok,
    /// `Some` of an `Option`.
    Some,
    /// Every value.
    All,
}

/// An option that may be given once: its value and where its name was written.
pub struct Once<T> {
    pub value: Option<(Span, T)>,
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Once { value: None }
    }
}

impl<T> Once<T> {
    fn set(&mut self, meta: &ParseNestedMeta, value: T, errors: &mut Errors) {
        let span = meta.path.span();
        if self.value.is_some() {
            let name = path_name(&meta.path);
            errors.push(span, format!("`{name}` is given twice; give it once"));
        } else {
            self.value = Some((span, value));
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, value)| value)
    }

    pub fn span(&self) -> Option<Span> {
        self.value.as_ref().map(|(span, _)| *span)
    }
}

impl Args {
    /// One `name = value` or `name`. Errors in a value are collected and parsing goes on, so
    /// that every mistake in the attribute shows at once.
    pub fn parse(&mut self, meta: ParseNestedMeta, errors: &mut Errors) -> syn::Result<()> {
        let name = path_name(&meta.path);
        match name.as_str() {
            "expire" => {
                self.expire_written = true;
                let expr = value(&meta, &name)?;
                if let Some(expire) = expire(&expr, errors) {
                    self.expire.set(&meta, expire, errors);
                }
            }
            "key" => {
                let expr = value(&meta, &name)?;
                self.key.set(&meta, expr, errors);
            }
            "capacity" => {
                let expr = value(&meta, &name)?;
                if let Some(capacity) = capacity(&expr, errors) {
                    self.capacity.set(&meta, capacity, errors);
                }
            }
            "background" => {
                if meta.input.peek(Token![=]) {
                    let expr = value(&meta, &name)?;
                    errors.push(
                        expr.span(),
                        "`background` takes no value: write `background` alone",
                    );
                }
                self.background.set(&meta, (), errors);
            }
            "lock_timeout" => {
                let expr = value(&meta, &name)?;
                if let Some(Expire::After(nanos)) = duration(&expr, "lock_timeout", false, errors) {
                    self.lock_timeout.set(&meta, nanos, errors);
                }
            }
            "hard_timeout" => {
                let expr = value(&meta, &name)?;
                if let Some(Expire::After(nanos)) = duration(&expr, "hard_timeout", false, errors) {
                    self.hard_timeout.set(&meta, nanos, errors);
                }
            }
            "fail_safe_throttle" => {
                let expr = value(&meta, &name)?;
                let parsed = match &expr {
                    // Zero is meaningful here: share a failure with its waiters only.
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) if int.base10_digits() == "0" => Some(Expire::After(Nanos::ZERO)),
                    _ => duration(&expr, "fail_safe_throttle", false, errors),
                };
                if let Some(Expire::After(nanos)) = parsed {
                    self.fail_safe_throttle.set(&meta, nanos, errors);
                }
            }
            "max_stale" => {
                let expr = value(&meta, &name)?;
                let parsed = match &expr {
                    // Zero is meaningful here: serve no stale value at all.
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) if int.base10_digits() == "0" => Some(Expire::After(Nanos::ZERO)),
                    _ => duration(&expr, "max_stale", false, errors),
                };
                if let Some(Expire::After(nanos)) = parsed {
                    self.max_stale.set(&meta, nanos, errors);
                }
            }
            "stale_if_error" => {
                let expr = value(&meta, &name)?;
                if let Some(Expire::After(nanos)) = duration(&expr, "stale_if_error", false, errors)
                {
                    self.stale_if_error.set(&meta, nanos, errors);
                }
            }
            "refresh_ahead" => {
                let expr = share_value(&meta, &name, errors)?;
                if let Some(share) = expr.and_then(|expr| share(&expr, "refresh_ahead", errors)) {
                    self.refresh_ahead.set(&meta, share, errors);
                }
            }
            "jitter" => {
                let expr = share_value(&meta, &name, errors)?;
                if let Some(share) = expr.and_then(|expr| share(&expr, "jitter", errors)) {
                    self.jitter.set(&meta, share, errors);
                }
            }
            "expire_with" => {
                let expr = value(&meta, &name)?;
                self.expire_with.set(&meta, expr, errors);
            }
            "namespace" => {
                let expr = value(&meta, &name)?;
                let namespace = match &expr {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) if !s.value().is_empty() => Some(Namespace::Named(s.value())),
                    Expr::Path(p) if p.path.is_ident("none") => Some(Namespace::None),
                    _ => {
                        errors.push(
                            expr.span(),
                            "expected `namespace = \"name\"` (a non-empty string) or \
                             `namespace = none`",
                        );
                        None
                    }
                };
                if let Some(namespace) = namespace {
                    self.namespace.set(&meta, namespace, errors);
                }
            }
            "region" => {
                let expr = value(&meta, &name)?;
                self.region.set(&meta, expr, errors);
            }
            "crate" => {
                let path: Path = meta.value()?.parse()?;
                self.krate.set(&meta, path, errors);
            }
            "cache" => {
                let expr = value(&meta, &name)?;
                let rule = match &expr {
                    Expr::Path(p) if p.path.is_ident("ok") => Some(CacheRule::Ok),
                    Expr::Path(p) if p.path.is_ident("some") => Some(CacheRule::Some),
                    Expr::Path(p) if p.path.is_ident("all") => Some(CacheRule::All),
                    _ => {
                        errors.push(
                            expr.span(),
                            "expected `cache = ok` (store `Ok` values), `cache = some` (store \
                             `Some` values) or `cache = all` (store every value)",
                        );
                        None
                    }
                };
                if let Some(rule) = rule {
                    self.cache.set(&meta, rule, errors);
                }
            }
            _ => {
                errors.push(
                    meta.path.span(),
                    format!("unknown dogpile option `{name}`; the options are: {OPTIONS}"),
                );
                // Skip its value, if any, to go on with the next option.
                if meta.input.peek(Token![=]) {
                    let _: Expr = meta.value()?.parse()?;
                }
            }
        }
        Ok(())
    }
}

fn path_name(path: &Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

fn value(meta: &ParseNestedMeta, name: &str) -> syn::Result<Expr> {
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("`{name}` needs a value: `{name} = ...`")));
    }
    meta.value()?.parse()
}

/// The value of a share: an expression, or `None` for an unquoted percentage (`80%`), which is
/// no expression and is reported here with how to write it.
fn share_value(
    meta: &ParseNestedMeta,
    name: &str,
    errors: &mut Errors,
) -> syn::Result<Option<Expr>> {
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("`{name}` needs a value: `{name} = ...`")));
    }
    let input = meta.value()?;
    if (input.peek(LitInt) || input.peek(LitFloat)) && input.peek2(Token![%]) {
        let number: Lit = input.parse()?;
        let percent: Token![%] = input.parse()?;
        // Whatever follows the `%` belongs to the mistake too.
        if !input.is_empty() && !input.peek(Token![,]) {
            let _: Expr = input.parse()?;
        }
        let digits = match &number {
            Lit::Int(int) => int.base10_digits().to_owned(),
            Lit::Float(float) => float.base10_digits().to_owned(),
            _ => String::new(),
        };
        let share = if name == "jitter" { "0.1" } else { "0.8" };
        errors.add(syn::Error::new_spanned(
            quote::quote!(#number #percent),
            format!(
                "a percentage is written in quotes: `{name} = \"{digits}%\"`, or as a share \
                 of the lifetime: `{name} = {share}`"
            ),
        ));
        return Ok(None);
    }
    input.parse().map(Some)
}

fn expire(expr: &Expr, errors: &mut Errors) -> Option<Expire> {
    if let Expr::Path(p) = expr {
        if p.path.is_ident("never") {
            return Some(Expire::Never);
        }
    }
    duration(expr, "expire", true, errors)
}

/// A duration: seconds as a number (`3600`, `1.5`, `3600u64`), a number with units as a
/// literal (`250ms`, `1h30m`, `1.5s`) or a string (`"90s"`); never zero or negative. A literal's
/// suffix is read as its unit, never dropped.
fn duration(expr: &Expr, name: &str, never: bool, errors: &mut Errors) -> Option<Expire> {
    let or_never = if never { "; or `never`" } else { "" };
    let (span, parsed) = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => (int.span(), number(int.base10_digits(), int.suffix())),
        Expr::Lit(ExprLit {
            lit: Lit::Float(float),
            ..
        }) => (float.span(), number(float.base10_digits(), float.suffix())),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => (s.span(), parse_duration(&s.value())),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => {
            errors.push(expr.span(), format!("`{name}` cannot be negative"));
            return None;
        }
        _ => {
            errors.push(expr.span(), format!("expected `{name}` {FORMS}{or_never}"));
            return None;
        }
    };
    match parsed {
        Ok(nanos) if nanos.is_zero() => errors.push(
            span,
            format!("`{name}` must be longer than zero{}", never_hint(never)),
        ),
        Ok(nanos) => return Some(Expire::After(nanos)),
        Err(why) => errors.push(span, format!("bad `{name}` duration: {why}")),
    }
    None
}

/// A numeric literal's digits and suffix: no suffix or an integer type's means seconds; any
/// other suffix is the units (`200ms`, `1h30m`).
fn number(digits: &str, suffix: &str) -> Result<Nanos, String> {
    const INTEGER_TYPES: [&str; 12] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    ];
    if suffix.is_empty() || INTEGER_TYPES.contains(&suffix) {
        parse_seconds(digits)
    } else if suffix == "f32" || suffix == "f64" {
        Err(format!(
            "`{digits}{suffix}` is a float's type, not a unit; write seconds as `{digits}` or \
             with a unit, such as `{digits}s`"
        ))
    } else {
        parse_duration(&format!("{digits}{suffix}"))
    }
}

fn never_hint(never: bool) -> &'static str {
    if never {
        "; to keep values until invalidated, write `expire = never`"
    } else {
        ""
    }
}

/// A share of a lifetime: a number strictly between 0 and 1 (`0.8`), or a percentage string
/// (`"80%"`); in millionths.
fn share(expr: &Expr, name: &str, errors: &mut Errors) -> Option<u32> {
    let example = if name == "jitter" {
        "`0.1` or `\"10%\"` (up to a tenth shorter)"
    } else {
        "`0.8` or `\"80%\"` (refresh in its last fifth)"
    };
    let (span, millionths, written) = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) if f.suffix().is_empty() => (
            f.span(),
            millionths(f.base10_digits(), 1),
            f.base10_digits().to_owned(),
        ),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => (
            s.span(),
            s.value()
                .strip_suffix('%')
                .and_then(|percent| millionths(percent.trim(), 100)),
            s.value(),
        ),
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) if i.base10_digits() == "0" && i.suffix().is_empty() => {
            (i.span(), Some(0), "0".to_owned())
        }
        _ => (expr.span(), None, String::new()),
    };
    match millionths {
        Some(m) if m > 0 && m < 1_000_000 => Some(m),
        Some(0) if written.chars().any(|c| matches!(c, '1'..='9')) => {
            errors.push(
                span,
                format!(
                    "`{name}` is counted in millionths of the lifetime, and {written:?} is less \
                     than one: write a share such as {example}"
                ),
            );
            None
        }
        Some(0) => {
            let zero = if name == "jitter" {
                "`jitter` of zero shortens no lifetime: leave `jitter` out"
            } else {
                "`refresh_ahead` of zero would refresh a value as soon as it is made: leave \
                 `refresh_ahead` out"
            };
            errors.push(span, format!("{zero}, or write a share such as {example}"));
            None
        }
        _ => {
            errors.push(
                span,
                format!("expected `{name}` as a share of the lifetime between 0 and 1, such as {example}"),
            );
            None
        }
    }
}

/// `number / divisor` in millionths, if it is a plain decimal with at most six places.
fn millionths(number: &str, divisor: u64) -> Option<u32> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if fraction.len() > 6 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let scaled: u64 = format!("{whole}{fraction:0<6}").parse().ok()?;
    u32::try_from(scaled / divisor).ok()
}

fn capacity(expr: &Expr, errors: &mut Errors) -> Option<usize> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => match int.base10_parse::<usize>() {
            Ok(0) => errors.push(int.span(), "`capacity` must be at least 1"),
            Ok(n) => return Some(n),
            Err(err) => errors.push(int.span(), err.to_string()),
        },
        _ => errors.push(
            expr.span(),
            "expected `capacity` as a positive integer literal, such as `10_000`",
        ),
    }
    None
}
