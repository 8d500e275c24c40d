use dogpile::dogpile;

#[dogpile(expire = 60, key = name.trim())]
fn greet(name: &str, loud: bool) -> String {
    if loud { name.to_uppercase() } else { name.to_owned() }
}

fn main() {}
