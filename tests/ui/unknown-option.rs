use dogpile::dogpile;

#[dogpile(expire = 60, expiry = 30)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
