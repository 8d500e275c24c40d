use dogpile::dogpile;

#[dogpile(expire = "5 days")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
