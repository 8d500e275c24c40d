use dogpile::dogpile;

#[dogpile(expire = 60)]
fn report(day: u32) {
    println!("{day}");
}

fn main() {}
