use dogpile::dogpile;

#[dogpile(expire = 60)]
unsafe extern "C" fn report(day: u32, ...) -> u32 {
    day
}

fn main() {}
