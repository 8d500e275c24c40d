use dogpile::dogpile;

#[dogpile(expire = 60, jitter = "0.00001%")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
