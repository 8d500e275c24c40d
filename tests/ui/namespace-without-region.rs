use dogpile::dogpile;

#[dogpile(expire = 60, namespace = "reports")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
