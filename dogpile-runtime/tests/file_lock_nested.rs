//! Nested creators on striped lock files, with real processes: a creator of one key that asks
//! for another key, in threads of one process whose keys share a lock file with keys other
//! processes hold, never waits for its own process.
//!
//! The nesting is the one that deadlocked: with 8 stripes and no lock timeout, `a`'s creator
//! asks for `c` and `c`'s creator asks for `d`, `a` and `d` share a stripe, and another process
//! holds a key of that stripe while both threads ask for it. Both threads used to wait in
//! `flock` on files of their own; once the stripe was free, one took it and waited for `c`
//! while the other held `c` and waited in `flock` behind its own process, forever.
//!
//! A child is this same binary run with `--exact child --nocapture` and its role in the
//! environment (see `support/children.rs`); the `child` test does nothing otherwise. Every wait
//! is bounded: a hung child is killed and fails the test.
#![cfg(unix)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::file::{FileLocks, FileMutex};
use dogpile_runtime::lock::RawMutex;
use dogpile_runtime::region::MemoryStore;
use dogpile_runtime::Region;

#[path = "support/children.rs"]
mod children;

const ROLE: &str = "DOGPILE_NESTED_ROLE";
const DIR: &str = "DOGPILE_NESTED_DIR";
/// Runs of the exact nesting, each with the other process holding the shared stripe.
const RUNS: usize = 100;
/// How long the threads of one run may take once the stripe is free (they need milliseconds).
const RUN_BOUND: Duration = Duration::from_secs(5);
/// How long each process of the crowd runs its threads.
const CROWD_RUN: Duration = Duration::from_millis(800);
/// How long any child may take.
const BOUND: Duration = Duration::from_secs(60);

type Nested = Region<u64, u64, MemoryStore<u64, u64>, FileMutex>;

fn spawn_child(role: &str, dir: &Path) -> Child {
    children::spawn_child(&[(ROLE, role), (DIR, &dir.display().to_string())])
}

/// Waits for a child to end, killing it (and failing) if it takes longer than `BOUND`.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("a child hung: {}", String::from_utf8_lossy(&output.stdout));
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Waits (bounded) until `path` exists, failing at once if `child` ends first.
fn wait_for_or_fail(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + BOUND;
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = String::new();
            if let Some(mut out) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
            }
            panic!(
                "the child ended ({status}) before {}: {stdout}",
                path.display()
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{} never appeared: the child hung", path.display());
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The value a child printed as `name=value`.
fn printed(stdout: &str, name: &str) -> String {
    stdout
        .split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("the child printed no {name}: {stdout}"))
        .to_string()
}

fn locks(dir: &Path, stripes: usize) -> FileLocks {
    FileLocks::builder(dir.join("locks"))
        .stripes(stripes)
        .build()
        .unwrap()
}

/// The stripe that `key` falls on, read from its lock file's name (`stripe-0003.lock`).
fn stripe_of(locks: &FileLocks, key: u64) -> u32 {
    let path = locks.mutex(&key).path().to_path_buf();
    let name = path.file_stem().unwrap().to_str().unwrap();
    name.trim_start_matches("stripe-").parse().unwrap()
}

/// `count` keys from `from` up that fall on `stripe`.
fn keys_on(locks: &FileLocks, stripe: u32, from: u64, count: usize) -> Vec<u64> {
    (from..)
        .filter(|&key| stripe_of(locks, key) == stripe)
        .take(count)
        .collect()
}

fn region(locks: FileLocks) -> Nested {
    Region::builder()
        .mutexes(move |key: &u64| locks.mutex(key))
        .build()
        .unwrap()
}

/// The keys of the exact nesting on 8 stripes: `a` and `d` on one stripe, `c` on another, and
/// `held`, the other process's key, on `a`'s stripe too.
#[derive(Clone, Copy)]
struct Exact {
    a: u64,
    c: u64,
    d: u64,
    held: u64,
}

impl Exact {
    fn new(locks: &FileLocks) -> Exact {
        let a = 1;
        let shared = stripe_of(locks, a);
        let c = (2..).find(|&k| stripe_of(locks, k) != shared).unwrap();
        let same = keys_on(locks, shared, 2, 2);
        Exact {
            a,
            c,
            d: same[0],
            held: same[1],
        }
    }
}

/// What a child process does, by its role; nothing when run as a normal test.
#[test]
fn child() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    match role.split(':').collect::<Vec<_>>().as_slice() {
        ["nester"] => nester(&dir),
        ["crowd", stripes, process] => {
            crowd(&dir, stripes.parse().unwrap(), process.parse().unwrap())
        }
        _ => panic!("unknown role {role}"),
    }
}

/// The process of the nesting threads: `RUNS` runs, each while the test process holds the
/// shared stripe until both threads wait for it.
fn nester(dir: &Path) {
    let locks = locks(dir, 8);
    let keys = Exact::new(&locks);
    let mut slowest = Duration::ZERO;
    for run in 0..RUNS {
        children::wait_for(&dir.join(format!("held-{run}")));
        let region = region(locks.clone());
        let (c_held, c_is_held) = mpsc::channel();
        let (done, finished) = mpsc::channel();
        // One thread holds `c` and, in its creator, asks for `d`, on the held stripe.
        {
            let (region, done) = (region.clone(), done.clone());
            thread::spawn(move || {
                let value = region.get_with(&keys.c, || {
                    c_held.send(()).unwrap();
                    region.get_with(&keys.d, || 4) - 1
                });
                done.send(value).unwrap();
            });
        }
        c_is_held
            .recv_timeout(RUN_BOUND)
            .expect("c was never taken");
        // The other asks for `a`, on the held stripe, and in its creator for `c`.
        {
            let region = region.clone();
            thread::spawn(move || {
                let value = region.get_with(&keys.a, || region.get_with(&keys.c, || 0) - 2);
                done.send(value).unwrap();
            });
        }
        // Let both reach the stripe, then let the test process free it.
        thread::sleep(Duration::from_millis(15));
        fs::write(dir.join(format!("waiting-{run}")), "").unwrap();
        let start = Instant::now();
        let mut values = Vec::new();
        for _ in 0..2 {
            match finished.recv_timeout(RUN_BOUND.saturating_sub(start.elapsed())) {
                Ok(value) => values.push(value),
                Err(_) => {
                    // Deadlocked threads cannot be stopped; the process ends with them.
                    println!("hung={run}");
                    std::process::exit(1);
                }
            }
        }
        slowest = slowest.max(start.elapsed());
        values.sort_unstable();
        assert_eq!(values, [1, 3], "run {run}");
        fs::write(dir.join(format!("done-{run}")), "").unwrap();
    }
    println!("slowest_ms={}", slowest.as_millis());
}

#[test]
fn nested_creators_on_a_shared_stripe_never_wait_for_their_own_process() {
    let dir = children::fresh_dir("nested-exact");
    let locks = locks(&dir, 8);
    let keys = Exact::new(&locks);
    let held = locks.mutex(&keys.held);
    let start = Instant::now();
    let mut nester = spawn_child("nester", &dir);
    for run in 0..RUNS {
        held.acquire().unwrap();
        fs::write(dir.join(format!("held-{run}")), "").unwrap();
        wait_for_or_fail(&dir.join(format!("waiting-{run}")), &mut nester);
        held.release().unwrap();
        wait_for_or_fail(&dir.join(format!("done-{run}")), &mut nester);
    }
    let output = finish(nester);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the nesting process failed: {stdout}"
    );
    println!(
        "{RUNS} of {RUNS} runs of the nesting finished in {:?} (the slowest run {} ms after \
         the stripe was freed)",
        start.elapsed(),
        printed(&stdout, "slowest_ms")
    );
    let _ = fs::remove_dir_all(&dir);
}

/// The keys one process of the crowd nests: `a` and `d` on one stripe and `c` on another where
/// the process has two stripes of its own; all three on one stripe otherwise. Nestings across
/// stripes in two processes can wait for each other (see `FileLocks::mutex`), so only one
/// process crosses any pair of stripes; every process's other threads take single keys of
/// every stripe, so the stripes the nesting asks for are often held by other processes.
fn crowd_keys(locks: &FileLocks, stripes: u32, process: u32) -> [u64; 3] {
    let from = u64::from(process) * 1_000_000;
    if 2 * process + 1 < stripes {
        let shared = keys_on(locks, 2 * process, from, 2);
        let other = keys_on(locks, 2 * process + 1, from, 1);
        [shared[0], other[0], shared[1]]
    } else {
        let keys = keys_on(locks, process % stripes, from, 3);
        [keys[0], keys[1], keys[2]]
    }
}

/// A process of the crowd: two threads nest as in the exact scenario (values never cached, so
/// every call takes its key's lock), two take single keys at random; for `CROWD_RUN`.
fn crowd(dir: &Path, stripes: usize, process: u32) {
    let locks = locks(dir, stripes);
    let [a, c, d] = crowd_keys(&locks, stripes as u32, process);
    let region = region(locks);
    let deadline = Instant::now() + CROWD_RUN;
    let (done, finished) = mpsc::channel::<(&str, u64)>();
    let nests: [(u64, u64); 2] = [(a, c), (c, d)];
    for (outer, inner) in nests {
        let (region, done) = (region.clone(), done.clone());
        thread::spawn(move || {
            let mut rounds = 0;
            while Instant::now() < deadline {
                region.optionally_get_with(&outer, || {
                    region.optionally_get_with(&inner, || None);
                    None
                });
                rounds += 1;
                // Callers come and go: a process whose threads hold keys of a stripe without
                // a pause keeps it from the other processes (see `FileLocks::mutex`).
                thread::sleep(Duration::from_micros(50));
            }
            done.send(("nested", rounds)).unwrap();
        });
    }
    for thread in 0..2u64 {
        let (region, done) = (region.clone(), done.clone());
        thread::spawn(move || {
            let mut singles = 0;
            let mut next = u64::from(process) * 7 + thread;
            while Instant::now() < deadline {
                next = next.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let key = 10_000_000 + (next >> 33) % 64;
                region.optionally_get_with(&key, || {
                    thread::sleep(Duration::from_micros(200));
                    None::<u64>
                });
                singles += 1;
                thread::sleep(Duration::from_micros(50));
            }
            done.send(("single", singles)).unwrap();
        });
    }
    drop(done);
    let (mut nested, mut singles) = (Vec::new(), 0);
    for _ in 0..4 {
        let left = (deadline + RUN_BOUND).saturating_duration_since(Instant::now());
        match finished.recv_timeout(left) {
            Ok(("nested", rounds)) => nested.push(rounds),
            Ok((_, rounds)) => singles += rounds,
            Err(_) => {
                println!("hung=yes");
                std::process::exit(1);
            }
        }
    }
    println!("nested={}", nested.iter().min().unwrap());
    println!("all_nested={}", nested.iter().sum::<u64>());
    println!("singles={singles}");
}

#[test]
fn four_processes_of_four_threads_nest_creators_on_1_2_and_8_stripes() {
    for stripes in [1, 2, 8] {
        let dir = children::fresh_dir(&format!("nested-crowd-{stripes}"));
        let start = Instant::now();
        let crowd: Vec<Child> = (0..4)
            .map(|process| spawn_child(&format!("crowd:{stripes}:{process}"), &dir))
            .collect();
        // Every child to its end before any verdict, so none is left writing to a closed pipe.
        let outputs: Vec<Output> = crowd.into_iter().map(finish).collect();
        let (mut fewest, mut all, mut singles) = (u64::MAX, 0, 0);
        for output in outputs {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "a process of the crowd on {stripes} stripes failed or hung: {stdout}"
            );
            fewest = fewest.min(printed(&stdout, "nested").parse().unwrap());
            all += printed(&stdout, "all_nested").parse::<u64>().unwrap();
            singles += printed(&stdout, "singles").parse::<u64>().unwrap();
        }
        println!(
            "{stripes} stripes: 4 processes x 4 threads done in {:?}: {all} nested rounds \
             (at least {fewest} by each nesting thread) beside {singles} single-key calls",
            start.elapsed()
        );
        // Each thread finished every round it began: none was left waiting.
        assert!(
            fewest >= 1 && all >= 100,
            "the nestings barely ran: {all} rounds"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
