use dogpile::dogpile;

#[dogpile(expire = 60, stale_if_error = 0s)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
