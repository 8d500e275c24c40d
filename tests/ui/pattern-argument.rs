use dogpile::dogpile;

#[dogpile(expire = 60)]
fn area((width, height): (u32, u32)) -> u32 {
    width * height
}

fn main() {}
