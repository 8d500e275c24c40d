use dogpile::dogpile;

#[dogpile(expire = "5 minutes")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
