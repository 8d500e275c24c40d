use dogpile::dogpile;

#[dogpile(expire = 60)]
fn report(day: u32, log: &mut Vec<u32>) -> u32 {
    log.push(day);
    day
}

fn main() {}
