use dogpile::dogpile;

#[dogpile(expire = 60, lock_timeout = 2sec)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
