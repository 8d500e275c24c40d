use dogpile::dogpile;

struct Service {
    id: u32,
}

impl Service {
    #[dogpile(expire = 60, key = self.id, background)]
    fn name(&self) -> String {
        format!("service {}", self.id)
    }
}

fn main() {}
