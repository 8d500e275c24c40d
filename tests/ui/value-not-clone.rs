use dogpile::dogpile;

/// Shareable between threads, but not cloneable.
struct Report {
    day: u32,
}

#[dogpile(expire = 60)]
async fn report(day: u32) -> Report {
    Report { day }
}

fn main() {}
