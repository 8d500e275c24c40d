//! Parse: the attribute's options, each value checked where it is written.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, Path, Token, UnOp};

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
    pub region: Once<Expr>,
    pub krate: Once<Path>,
    pub cache: Once<CacheRule>,
}

pub const OPTIONS: &str = "expire, key, capacity, background, lock_timeout, region, crate, cache";

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
