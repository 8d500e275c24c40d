use dogpile::dogpile;

#[dogpile(expire = 60)]
fn report(day: impl Into<u32>) -> u32 {
    day.into()
}

fn main() {}
