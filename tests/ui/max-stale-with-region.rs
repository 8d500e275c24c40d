use dogpile::{dogpile, Region};
use std::sync::LazyLock;

static REPORTS: LazyLock<Region<(&'static str, u32), u32>> =
    LazyLock::new(|| Region::builder().build().unwrap());

#[dogpile(expire = 60, region = REPORTS, max_stale = "5m")]
fn report(day: u32) -> u32 {
    day
}

fn main() {}
