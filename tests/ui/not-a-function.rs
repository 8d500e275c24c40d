use dogpile::dogpile;

#[dogpile(expire = 60)]
struct Report {
    day: u32,
}

fn main() {}
