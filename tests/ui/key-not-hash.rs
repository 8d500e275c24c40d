use dogpile::dogpile;

/// Comparable, but not hashable.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sku(String);

#[dogpile(expire = 60)]
fn price(sku: Sku) -> u64 {
    sku.0.len() as u64
}

fn main() {}
