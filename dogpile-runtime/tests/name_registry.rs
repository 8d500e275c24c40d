//! `NameRegistry`: one shared object per identifier while held, and memory that follows the
//! live identifiers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use dogpile_runtime::lock::NameRegistry;

/// A port of the Python reference's `test_nameregistry`: 19 threads x 20 iterations over three
/// names; while a thread holds a name's object, a per-name baton records it, and any other holder
/// of that name must hold the very same object.
#[test]
fn concurrent_holders_of_a_name_share_one_object() {
    const THREADS: usize = 19;
    const ITERATIONS: usize = 20;
    let created = Arc::new(AtomicUsize::new(0));
    let registry = {
        let created = created.clone();
        Arc::new(NameRegistry::new(move |name: &String| {
            created.fetch_add(1, Ordering::SeqCst);
            name.clone()
        }))
    };
    // Per name: the address of the object being held and how many hold it.
    let batons: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (registry, batons, failures) = (registry.clone(), batons.clone(), failures.clone());
            thread::spawn(move || {
                let mut seed = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                for _ in 0..ITERATIONS {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let name = ["a", "b", "c"][(seed % 3) as usize];
                    let object = registry.get(name);
                    let address = Arc::as_ptr(&object) as usize;
                    {
                        let mut batons = batons.lock().unwrap();
                        let baton = batons.entry(name.to_string()).or_insert((address, 0));
                        if baton.1 > 0 && baton.0 != address {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                        *baton = (address, baton.1 + 1);
                    }
                    thread::sleep(Duration::from_micros(seed % 10_000));
                    {
                        let mut batons = batons.lock().unwrap();
                        let baton = batons.get_mut(name).unwrap();
                        baton.1 -= 1;
                    }
                    drop(object);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    let created = created.load(Ordering::SeqCst);
    assert!(
        created < THREADS * ITERATIONS,
        "{created} objects for {} gets: nothing was shared",
        THREADS * ITERATIONS
    );
    assert_eq!(registry.len(), 0);
}

#[test]
fn one_object_while_held_and_a_new_one_after() {
    let created = AtomicUsize::new(0);
    let registry = NameRegistry::new(|id: &String| {
        created.fetch_add(1, Ordering::SeqCst);
        format!("object {id}")
    });
    let a = registry.get("x");
    let b = registry.get(&"x".to_string());
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(*a, "object x");
    assert_eq!(created.load(Ordering::SeqCst), 1);
    drop((a, b));
    assert_eq!(registry.len(), 0);
    let c = registry.get("x");
    assert_eq!(
        created.load(Ordering::SeqCst),
        2,
        "a dropped object is made anew"
    );
    drop(c);
}

#[test]
fn memory_follows_the_live_identifiers() {
    let registry = NameRegistry::new(|id: &u64| *id);
    let kept: Vec<_> = (0..10u64).map(|id| registry.get(&id)).collect();
    for id in 10..100_000u64 {
        let object = registry.get(&id);
        assert_eq!(*object, id);
    }
    assert_eq!(registry.len(), kept.len());
    for (id, object) in kept.iter().enumerate() {
        assert!(Arc::ptr_eq(object, &registry.get(&(id as u64))));
    }
    drop(kept);
    assert!(registry.is_empty());
}

/// A burst of a million identifiers held at once, then all dropped: the dead entries must not
/// stay until someone calls `len()`. The documented bound: gone within `max(64, n / 4)` further
/// calls to `get` (here the one live identifier is fetched again and again).
#[test]
fn the_dead_entries_of_a_burst_go_away_with_further_gets() {
    const BURST: u64 = 1_000_000;
    let registry = NameRegistry::new(|id: &u64| *id);
    let burst: Vec<_> = (0..BURST).map(|id| registry.get(&id)).collect();
    assert_eq!(registry.entries(), BURST as usize, "all live while held");
    drop(burst);

    let kept = registry.get(&u64::MAX);
    let bound = (BURST as usize / 4).max(64);
    let mut gets = 0;
    while registry.entries() > 2 + 64 {
        assert!(
            gets <= bound,
            "{} entries for 1 live identifier after {gets} more gets",
            registry.entries()
        );
        drop(registry.get(&u64::MAX));
        gets += 1;
    }
    assert!(registry.entries() <= 2 + 64);
    assert_eq!(registry.len(), 1);
    drop(kept);
}

/// Objects given back with `release`, one identifier at a time (a cache's misses on distinct
/// keys), leave no entry behind: the registry never holds more than the one in use, with no
/// sweep. An object still held elsewhere, or given back under another identifier, keeps its
/// entry.
#[test]
fn released_objects_leave_no_entry_behind() {
    let registry = NameRegistry::new(|id: &u64| *id);
    for id in 0..10_000u64 {
        let object = registry.get(&id);
        assert_eq!(registry.entries(), 1, "only the one in use, at {id}");
        registry.release(&id, object);
        assert_eq!(registry.entries(), 0, "none after giving back {id}");
    }

    let (a, b) = (registry.get(&1), registry.get(&1));
    registry.release(&1, a);
    assert_eq!(registry.entries(), 1, "held by another caller: kept");
    let other = registry.get(&2);
    registry.release(&1, other);
    assert_eq!(
        registry.entries(),
        2,
        "another identifier's object removes nothing"
    );
    assert_eq!(
        registry.len(),
        1,
        "the object of 2 was dropped: swept as dead"
    );
    registry.release(&1, b);
    assert_eq!(registry.entries(), 0);
}

/// A registry that keeps spares hands a given-back object to the next new identifier, keeps at
/// most the number asked for, and never keeps one that someone else still holds or that an
/// entry can still reach (given back under another identifier).
#[test]
fn spares_are_reused_only_once_no_one_can_reach_them() {
    let made = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&made);
    let registry = NameRegistry::reusing(move |_: &u64| counted.fetch_add(1, Ordering::Relaxed), 2);

    // Misses of distinct keys, one at a time: one object made, handed on from key to key.
    for id in 0..1_000u64 {
        let object = registry.get(&id);
        registry.release(&id, object);
    }
    assert_eq!(made.load(Ordering::Relaxed), 1);

    // Five held at once, then given back: two kept, and only two new identifiers reuse.
    let held: Vec<_> = (0..5u64).map(|id| (id, registry.get(&id))).collect();
    assert_eq!(made.load(Ordering::Relaxed), 5);
    for (id, object) in held {
        registry.release(&id, object);
    }
    let again: Vec<_> = (10..13u64).map(|id| registry.get(&id)).collect();
    assert_eq!(
        made.load(Ordering::Relaxed),
        6,
        "two spares, then a new one"
    );
    assert!(!Arc::ptr_eq(&again[0], &again[1]) && !Arc::ptr_eq(&again[1], &again[2]));
    for (id, object) in (10..13u64).zip(again) {
        registry.release(&id, object);
    }

    // Still held by another caller: not a spare, the next identifier gets a different object.
    let (a, b) = (registry.get(&20), registry.get(&20));
    registry.release(&20, a);
    let other = registry.get(&21);
    assert!(
        !Arc::ptr_eq(&other, &b),
        "a held object is never handed out again"
    );
    registry.release(&21, other);

    // Given back under the wrong identifier: its own entry still reaches it, so it is not kept.
    let wrong = registry.get(&30);
    registry.release(&31, wrong);
    let same = registry.get(&30);
    let next = registry.get(&32);
    assert!(
        !Arc::ptr_eq(&same, &next),
        "an object an entry reaches is not reused"
    );
    registry.release(&20, b);
}

/// The owned identifiers of released entries are copied into by new ones: each new identifier
/// is found again under its own name, longer or shorter than the one whose buffer it took, and
/// never under the old one.
#[test]
fn identifiers_copied_into_released_ones_are_found_under_their_own_names() {
    // Objects that do not depend on their identifier, as a registry with spares requires.
    let registry = NameRegistry::reusing(|_: &String| AtomicUsize::new(0), 2);
    let names = ["a", "a much longer identifier", "bc", "", "bc/d", "a"];
    let mut previous: Option<&str> = None;
    for name in names {
        let object = registry.get(name);
        let again = registry.get(name);
        assert!(Arc::ptr_eq(&object, &again), "{name:?} found again");
        if let Some(old) = previous.filter(|old| *old != name) {
            let other = registry.get(old);
            assert!(!Arc::ptr_eq(&object, &other), "{old:?} is not {name:?}");
            registry.release(old, other);
        }
        registry.release(name, again);
        registry.release(name, object);
        assert_eq!(registry.entries(), 0, "{name:?} released");
        previous = Some(name);
    }
}
