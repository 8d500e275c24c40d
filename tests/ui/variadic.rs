use dogpile::dogpile;

#[dogpile(expire = 60)]
unsafe extern "C" fn report(day: u32, _: ...) -> u32 {
    day
}

fn main() {}
