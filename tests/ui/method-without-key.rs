use dogpile::dogpile;

struct Reports;

impl Reports {
    #[dogpile(expire = 60)]
    fn report(&self, day: u32) -> u32 {
        day
    }
}

fn main() {}
