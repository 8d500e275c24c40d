use dogpile::dogpile;

#[dogpile(expire = 5d)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
