use dogpile::dogpile;

#[dogpile(expire = 60)]
fn greeting(name: &str) -> &str {
    name.trim()
}

fn main() {}
