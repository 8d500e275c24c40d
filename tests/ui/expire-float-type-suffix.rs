use dogpile::dogpile;

#[dogpile(expire = 1.5f64)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
