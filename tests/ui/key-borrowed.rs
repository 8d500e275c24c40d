use dogpile::dogpile;

// `name.trim()` would do: a reference is made owned. A type that borrows is not.
#[dogpile(expire = 60, key = name.split_once(' '))]
fn greet(name: &str, loud: bool) -> String {
    if loud { name.to_uppercase() } else { name.to_owned() }
}

fn main() {}
