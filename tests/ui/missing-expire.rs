use dogpile::dogpile;

#[dogpile(capacity = 10)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
