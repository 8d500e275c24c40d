use dogpile::dogpile;

#[dogpile(expire = true)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
