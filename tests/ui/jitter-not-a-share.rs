use dogpile::dogpile;

#[dogpile(expire = 60, jitter = "150%")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
