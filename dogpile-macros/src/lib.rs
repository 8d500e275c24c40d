//! The `#[dogpile]` attribute. Use it through the [dogpile](https://docs.rs/dogpile) crate,
//! which documents it; this crate's expansion calls only `dogpile::__private`.
//!
//! One file per stage: `attr` parses the options, `ast` looks at the function, `valid` checks
//! what needs both, `expand` writes the output (or, on any error, the function unchanged plus
//! every error found).

mod ast;
mod attr;
mod duration;
mod errors;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Caches a function's values on a dogpile lock; see the `dogpile` crate's documentation.
#[proc_macro_attribute]
pub fn dogpile(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::dogpile(args.into(), item.into()).into()
}
