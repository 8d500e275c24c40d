use dogpile::dogpile;

#[dogpile(expire = 60, key = price)]
fn tax(price: f64) -> u64 {
    (price * 0.2) as u64
}

fn main() {}
