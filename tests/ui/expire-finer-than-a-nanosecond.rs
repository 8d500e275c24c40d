use dogpile::dogpile;

#[dogpile(expire = "0.0000000001s")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
