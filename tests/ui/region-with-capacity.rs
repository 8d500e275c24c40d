use dogpile::{dogpile, Region};
use std::sync::LazyLock;

static REPORTS: LazyLock<Region<u32, u32>> = LazyLock::new(|| Region::builder().build().unwrap());

#[dogpile(expire = 60, region = REPORTS, capacity = 100)]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
