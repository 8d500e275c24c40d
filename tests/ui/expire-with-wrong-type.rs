use dogpile::dogpile;
use std::time::Duration;

fn lifetime(_: &String) -> Duration {
    Duration::from_secs(5)
}

#[dogpile(expire = 60, expire_with = lifetime)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
