use dogpile::dogpile;

#[dogpile(expire = 60)]
fn report<T: Clone>(day: T) -> T {
    day
}

fn main() {}
