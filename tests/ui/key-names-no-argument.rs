use dogpile::dogpile;

const TODAY: u32 = 1;

#[dogpile(expire = 60, key = TODAY)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
