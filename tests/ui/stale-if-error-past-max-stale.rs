use dogpile::dogpile;

#[dogpile(expire = 60, max_stale = "5m", stale_if_error = "1h")]
fn report(day: u32) -> Result<u32, String> {
    Ok(day)
}

fn main() {
    let _ = report(1);
}
