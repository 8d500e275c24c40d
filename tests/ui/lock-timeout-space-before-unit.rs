use dogpile::dogpile;

#[dogpile(expire = 60, lock_timeout = "2 s")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
