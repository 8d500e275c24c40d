use dogpile::dogpile;

#[dogpile(expire = 60, hard_timeout = "0s")]
fn report(day: u32) -> u32 {
    day
}

fn main() {
    let _ = report(1);
}
