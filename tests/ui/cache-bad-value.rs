use dogpile::dogpile;

#[dogpile(expire = 60, cache = errors)]
fn report(day: u32) -> Result<u32, String> {
    Ok(day)
}

fn main() {}
