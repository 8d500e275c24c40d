use dogpile::dogpile;
use std::rc::Rc;

#[dogpile(expire = 60)]
fn report(day: u32) -> Rc<u32> {
    Rc::new(day)
}

fn main() {}
