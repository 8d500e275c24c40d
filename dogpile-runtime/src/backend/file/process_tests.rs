//! Random interleavings over the table's decisions: threads of this process nest keys on a few
//! stripes while a stand-in for another process holds stripes, on a simulated OS. At every
//! step, no thread waits for a stripe its own process holds for a key it does not want, at most
//! one thread per stripe waits in the OS, and nestings without cycles always finish.

use proptest::prelude::*;

use super::{Next, State, Stripe, StripeId};

const KEYS: u64 = 8;

/// What one thread of this process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    /// Between two steps of its script.
    Ready,
    /// Waiting on the table for `key`.
    OnTable(u64),
    /// Waiting in the OS for the stripe of `key` (the table marked it locking for this thread).
    InOs(u64),
    /// Making the directory's files for the stripe of `key`, under the directory's exclusive
    /// lock, which waits for the other process's shared one.
    Creating(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Take(u64),
    Release(u64),
}

/// A thread that takes the keys of `chain` one inside the other, then releases them, for
/// `rounds` rounds.
#[derive(Debug)]
struct Thread {
    chain: Vec<u64>,
    rounds: usize,
    /// Past the takes of this round (all done, or one refused).
    releasing: bool,
    wait: bool,
    doing: Doing,
    held: Vec<u64>,
}

impl Thread {
    fn op(&self) -> Option<Op> {
        if self.rounds == 0 {
            return None;
        }
        match self.chain.get(self.held.len()) {
            Some(&key) if !self.releasing => Some(Op::Take(key)),
            _ => self.held.last().map(|&key| Op::Release(key)),
        }
    }

    fn taken(&mut self, key: u64) {
        self.held.push(key);
        self.doing = Doing::Ready;
        self.releasing = self.held.len() == self.chain.len();
    }

    fn released(&mut self, key: u64) {
        assert_eq!(self.held.pop(), Some(key));
        self.end_round_if_done();
    }

    /// Gives up the takes left in this round (one was refused); releases what it holds.
    fn abandon_round(&mut self) {
        self.doing = Doing::Ready;
        self.releasing = true;
        self.end_round_if_done();
    }

    fn end_round_if_done(&mut self) {
        if self.releasing && self.held.is_empty() {
            self.rounds -= 1;
            self.releasing = false;
        }
    }
}

/// Who holds each stripe in the (simulated) OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Free,
    Us,
    Other,
}

#[derive(Debug)]
struct Other {
    holds: Vec<(u32, u8)>,
    at: usize,
    /// The stripe held and the steps left to hold it.
    holding: Option<(u32, u8)>,
}

struct World {
    stripes: u32,
    table: State<u32>,
    owners: Vec<Owner>,
    /// The stripes' files are missing until someone makes them.
    missing: bool,
    threads: Vec<Thread>,
    other: Other,
}

fn id(stripes: u32, key: u64) -> StripeId {
    (std::path::Path::new("/locks").into(), stripe(stripes, key))
}

fn stripe(stripes: u32, key: u64) -> u32 {
    (key % u64::from(stripes)) as u32
}

impl World {
    fn stripe(&self, key: u64) -> u32 {
        stripe(self.stripes, key)
    }

    /// One step of thread `t`, if it can make one.
    fn step_thread(&mut self, t: usize) -> bool {
        let stripes = self.stripes;
        let thread = &self.threads[t];
        let Some(op) = thread.op() else {
            return false;
        };
        match (thread.doing, op) {
            (Doing::Ready, Op::Release(key)) => {
                let released = self.table.release(&id(stripes, key), key);
                let last = released.expect("a held key is released");
                if let Some(stripe) = last {
                    assert!(matches!(stripe, Stripe::Held { .. }));
                    let s = self.stripe(key) as usize;
                    assert_eq!(self.owners[s], Owner::Us);
                    self.owners[s] = Owner::Free;
                }
                self.threads[t].released(key);
                true
            }
            (Doing::Ready | Doing::OnTable(_), Op::Take(key)) => {
                let wait = thread.wait;
                let before = thread.doing;
                match self.table.next(&id(stripes, key), key, wait) {
                    Next::Taken => self.taken(t, key),
                    Next::Busy => false,
                    Next::Wait => {
                        self.threads[t].doing = Doing::OnTable(key);
                        before != Doing::OnTable(key)
                    }
                    Next::Lock => {
                        let s = self.stripe(key) as usize;
                        assert_ne!(
                            self.owners[s],
                            Owner::Us,
                            "told to lock a stripe its process holds"
                        );
                        self.threads[t].doing = Doing::InOs(key);
                        // A try: the OS answers at once, so it never stays there.
                        !wait || self.os(t, key)
                    }
                }
            }
            (Doing::InOs(key), _) => self.os(t, key),
            (Doing::Creating(key), _) => {
                // The exclusive lock waits for the other process's shared one.
                if self.other.holding.is_some() {
                    return false;
                }
                self.missing = false;
                self.table.created(&id(stripes, key));
                self.threads[t].doing = Doing::InOs(key);
                true
            }
            (doing, op) => unreachable!("{doing:?} at {op:?}"),
        }
    }

    /// The OS, for thread `t` locking the stripe of `key`.
    fn os(&mut self, t: usize, key: u64) -> bool {
        let (stripes, s) = (self.stripes, self.stripe(key) as usize);
        let wait = self.threads[t].wait;
        let id = id(stripes, key);
        if self.missing {
            if self.table.create(&id).is_err() {
                // Refused: other stripes of the directory are held here.
                let in_table = self.table.dirs.values().map(|d| d.stripes).sum::<usize>();
                assert!(in_table > 1, "refused while alone in the directory");
                self.table.locked(&id, key, None);
                self.threads[t].abandon_round();
                return true;
            }
            if wait {
                self.threads[t].doing = Doing::Creating(key);
                return true;
            }
            self.table.created(&id);
            if self.other.holding.is_some() {
                // A try does not wait for the directory's exclusive lock.
                return self.busy(t, key);
            }
            self.missing = false;
        }
        if self.owners[s] != Owner::Free {
            return !wait && self.busy(t, key);
        }
        self.owners[s] = Owner::Us;
        self.table.locked(&id, key, Some(s as u32));
        self.threads[t].taken(key);
        true
    }

    /// A try that found the stripe busy: no step made.
    fn busy(&mut self, t: usize, key: u64) -> bool {
        self.table.locked(&id(self.stripes, key), key, None);
        self.threads[t].doing = Doing::Ready;
        false
    }

    fn taken(&mut self, t: usize, key: u64) -> bool {
        self.threads[t].taken(key);
        true
    }

    /// One step of the other process.
    fn step_other(&mut self) -> bool {
        if let Some((s, left)) = self.other.holding {
            if left > 1 {
                self.other.holding = Some((s, left - 1));
            } else {
                self.owners[s as usize] = Owner::Free;
                self.other.holding = None;
            }
            return true;
        }
        let Some(&(s, steps)) = self.other.holds.get(self.other.at) else {
            return false;
        };
        let s = s % self.stripes;
        if self.missing {
            // It makes the files once this process holds no shared lock in the directory.
            if self.table.dirs.is_empty() {
                self.missing = false;
                return true;
            }
            return false;
        }
        if self.owners[s as usize] != Owner::Free {
            return false;
        }
        self.owners[s as usize] = Owner::Other;
        self.other.holding = Some((s, steps));
        self.other.at += 1;
        true
    }

    fn done(&self) -> bool {
        self.threads.iter().all(|t| t.rounds == 0) && self.other.holding.is_none()
    }

    /// What must hold between any two steps.
    fn check(&self) {
        let mut in_os = vec![0; self.stripes as usize];
        for thread in &self.threads {
            match thread.doing {
                Doing::InOs(key) => {
                    let s = self.stripe(key) as usize;
                    assert_ne!(
                        self.owners[s],
                        Owner::Us,
                        "a thread waits in the OS for a stripe its own process holds"
                    );
                    in_os[s] += 1;
                }
                Doing::OnTable(key) => {
                    // Woken by every change, it waits on only if the table says so; then only
                    // for its own key, or for a thread of its process that waits for another
                    // process (in the OS, or making the files).
                    let creating = self.table.dirs.values().any(|d| d.creating);
                    let s = self.stripe(key);
                    let asking = self.threads.iter().any(|t| match t.doing {
                        Doing::InOs(k) | Doing::Creating(k) => self.stripe(k) == s || creating,
                        _ => false,
                    });
                    match self.table.stripes.get(&id(self.stripes, key)) {
                        _ if creating => assert!(asking, "waits for files no one makes"),
                        Some(Stripe::Locking) => assert!(asking, "waits for no one"),
                        // For its own key, or taken when it wakes.
                        Some(Stripe::Held { .. }) | None => {}
                    }
                }
                Doing::Creating(_) => {
                    let dir = self.table.dirs.values().next().expect("the directory");
                    assert!(dir.creating && dir.stripes == 1);
                }
                Doing::Ready => {}
            }
        }
        assert!(
            in_os.iter().all(|&n| n <= 1),
            "two threads wait in the OS for one stripe"
        );
        for s in 0..self.stripes {
            let held = matches!(
                self.table.stripes.get(&id(self.stripes, u64::from(s))),
                Some(Stripe::Held { .. })
            );
            assert_eq!(held, self.owners[s as usize] == Owner::Us, "stripe {s}");
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    stripes: u32,
    /// Per thread: its nesting (keys in increasing order, so no cycle), and whether it waits.
    threads: Vec<(Vec<u64>, bool)>,
    rounds: usize,
    other: Vec<(u32, u8)>,
    missing: bool,
    schedule: Vec<u16>,
}

fn cases() -> impl Strategy<Value = Case> {
    let thread = (
        prop::collection::btree_set(0..KEYS, 1..=3).prop_map(|k| k.into_iter().collect()),
        prop::bool::weighted(0.8),
    );
    (
        1..=3u32,
        prop::collection::vec(thread, 2..=4),
        1..=3usize,
        prop::collection::vec((0..3u32, 1..4u8), 0..8),
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<u16>(), 0..400),
    )
        .prop_map(
            |(stripes, threads, rounds, other, missing, schedule)| Case {
                stripes,
                threads,
                rounds,
                other,
                missing,
                schedule,
            },
        )
}

fn run(case: &Case) {
    let threads = case
        .threads
        .iter()
        .map(|(chain, wait)| Thread {
            chain: chain.clone(),
            rounds: case.rounds,
            releasing: false,
            wait: *wait,
            doing: Doing::Ready,
            held: Vec::new(),
        })
        .collect();
    let mut world = World {
        stripes: case.stripes,
        table: State::new(),
        owners: vec![Owner::Free; case.stripes as usize],
        missing: case.missing,
        threads,
        other: Other {
            holds: case.other.clone(),
            at: 0,
            holding: None,
        },
    };
    let actors = world.threads.len() + 1;
    for step in 0.. {
        assert!(step < 100_000, "no end");
        if world.done() {
            break;
        }
        let first = usize::from(case.schedule.get(step).copied().unwrap_or(step as u16));
        let moved = (0..actors).map(|i| (first + i) % actors).any(|actor| {
            if actor == world.threads.len() {
                world.step_other()
            } else {
                world.step_thread(actor)
            }
        });
        // Polling threads (tries) make no step while the stripe is busy: only the others can.
        assert!(moved, "deadlock: {:?} / {:?}", world.threads, world.other);
        world.check();
    }
    assert!(world.table.stripes.is_empty() && world.table.dirs.is_empty());
    assert!(world.owners.iter().all(|&o| o == Owner::Free));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_thread_waits_for_a_stripe_its_process_holds_for_another_key(case in cases()) {
        run(&case);
    }
}

/// The nesting of the bug report, on the table alone: one thread holds `a` and asks for `c`,
/// the other holds `c` and asks for `d`, `a` and `d` share a stripe, which another process
/// holds while both ask for it.
#[test]
fn the_reported_nesting_finishes_in_every_order() {
    for schedule in 0..64u16 {
        run(&Case {
            stripes: 2,
            // a = 0, c = 1, d = 2: 0 and 2 on stripe 0.
            threads: vec![(vec![0, 1], true), (vec![1, 2], true)],
            rounds: 2,
            other: vec![(0, 3), (0, 2)],
            missing: false,
            schedule: (0..64u16)
                .map(|i| schedule.wrapping_mul(31).wrapping_add(i.wrapping_mul(17)) >> 2)
                .collect(),
        });
    }
}
