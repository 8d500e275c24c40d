use dogpile::{dogpile, Region};
use std::sync::LazyLock;

// A region given to a function holds `(namespace, key)` keys.
static REPORTS: LazyLock<Region<u32, u32>> = LazyLock::new(|| Region::builder().build().unwrap());

#[dogpile(expire = 60, region = REPORTS)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
