use dogpile::dogpile;
use std::time::Duration;

fn lifetime(_: &u32) -> Duration {
    Duration::from_secs(5)
}

#[dogpile(expire = never, expire_with = lifetime)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
