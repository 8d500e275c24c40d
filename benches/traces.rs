//! Hit ratios on real block traces and on synthetic shapes, for dogpile's bounded store beside
//! moka, quick_cache and a plain LRU, each replayed single-threaded through its get-or-create.
//!
//! ```sh
//! cargo bench --bench traces -- /path/to/traces       # or DOGPILE_TRACES=/path/to/traces
//! cargo bench --bench traces -- DIR --traces P2,P6 --sizes 32768 --only dogpile,lru --reps 3
//! ```
//!
//! The directory holds ARC-format traces (`NAME.lis`, or `NAME.lis.zst`, read through `zstd -dc`):
//! the block traces of Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache"
//! (FAST 2003), published under `arc/` in the `moka-rs/cache-trace` repository. Each line is
//! `start count _ _`, the requests for the pages `start .. start + count`. Without a directory
//! the real traces are skipped and only the synthetic ones run:
//!
//! - `recency`: sessions, records written and read back: a quarter of the requests make a new
//!   key, the others ask for a key made a while ago (its age in keys exponential, mean 4,000), so
//!   whether a key comes back depends only on how recently it was made;
//! - `loop`: half the requests scan 50,000 keys round and round, half are Zipf(0.9) over
//!   1,000,000 keys;
//! - `shift`: Zipf(0.9) over 100,000 keys whose popular keys all change every 500,000 requests.
//!
//! Each trace runs at five sizes (the ARC paper's where it gives them), each contender on a fresh
//! cache, contenders in rotating order; a figure is the median of `--reps` runs (1 by default:
//! the hit ratios barely move between runs, the times do). The values are the keys (`u64`), so
//! the time is the cache's own; a miss's value costs nothing to make. Results also go to
//! `target/bench/traces.md`.
//!
//! `--only policy` replays the traces through the bounded store's policy alone (its source files
//! included here by path, with a plain map for the hit counters readers raise): the hit ratios
//! of `dogpile` to within a few hundredths of a point (0.2 at most in the runs of 2026-12-05:
//! the store seeds its hashes at random) in about a quarter of the time, to tune the policy
//! with. Its times are not a cache's. The policy is deterministic for a hash seed, so its
//! `--reps N` replay it with seeds 1 to N, and the figure is the median over the seeds: a rule
//! that wins with one seed can lose points with another (`--only policy --reps 5`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cached::{Cached, LruCache};
use dogpile::Region;

#[path = "compare/zipf.rs"]
mod zipf;
use zipf::{SplitMix, Zipf};

const HOUR: Duration = Duration::from_secs(3600);

/// What runs unless `--only` says otherwise.
const CONTENDERS: [&str; 4] = ["dogpile", "moka", "quick_cache", "lru"];

/// Everything `--only` may name, in the tables' column order.
const ALL: [&str; 5] = ["dogpile", "policy", "moka", "quick_cache", "lru"];

// The bounded store's policy, without the store: `--only policy`. Its files name their siblings
// as `super::...`, which here is this file.
#[allow(dead_code, unused_imports)]
#[path = "../dogpile-runtime/src/region/store/ghosts.rs"]
mod ghosts;
#[allow(dead_code, unused_imports)]
#[path = "../dogpile-runtime/src/region/store/nodes.rs"]
mod nodes;
#[allow(dead_code, unused_imports)]
#[path = "../dogpile-runtime/src/region/store/policy.rs"]
mod policy;
#[allow(dead_code, unused_imports)]
#[path = "../dogpile-runtime/src/region/store/shadow.rs"]
mod shadow;
#[allow(dead_code, unused_imports)]
#[path = "../dogpile-runtime/src/region/store/sketch.rs"]
mod sketch;

/// A cache as the trace sees it: get-or-create, one thread.
trait Cache {
    fn get_with(&self, key: u64, create: &dyn Fn() -> u64) -> u64;

    /// Values made again because they had expired: none unless the run was disturbed (the
    /// values live an hour; a step back of the wall clock expires those stamped before it).
    fn expired_remade(&self) -> u64 {
        0
    }
}

impl Cache for Region<u64, u64> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> u64) -> u64 {
        Region::get_with(self, &key, create)
    }

    fn expired_remade(&self) -> u64 {
        // One thread: every creator run follows a miss, unless what it replaced had expired.
        let stats = self.statistics();
        stats.regenerations.saturating_sub(stats.misses)
    }
}

impl Cache for moka::sync::Cache<u64, u64> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> u64) -> u64 {
        moka::sync::Cache::get_with(self, key, create)
    }
}

impl Cache for quick_cache::sync::Cache<u64, u64> {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> u64) -> u64 {
        self.get_or_insert_with(&key, || Ok::<_, ()>(create()))
            .unwrap_or_else(|()| unreachable!())
    }
}

/// The store's policy alone, on a plain map of hit counters and nodes: a hit raises its key's
/// counter (up to the cap readers stop at), a miss is inserted and evicts as the store does.
struct PolicyOnly {
    policy: RefCell<policy::Policy<u64, foldhash::fast::FixedState>>,
    residents: Residents,
    evicted: RefCell<Vec<u64>>,
}

/// Each resident key's hit counter and node: the map the store's simulations keep.
type Residents = shadow::Keys;

impl PolicyOnly {
    /// The policy for `capacity` keys, its hashes seeded with `seed`.
    fn new(capacity: usize, seed: u64) -> Self {
        PolicyOnly {
            policy: RefCell::new(policy::Policy::new(
                capacity as u64,
                false,
                foldhash::fast::FixedState::with_seed(seed),
            )),
            residents: Residents::default(),
            evicted: RefCell::new(Vec::new()),
        }
    }
}

impl Cache for PolicyOnly {
    fn get_with(&self, key: u64, create: &dyn Fn() -> u64) -> u64 {
        if let Some(entry) = self.residents.0.borrow_mut().get_mut(&key) {
            entry.0 = (entry.0 + 1).min(policy::HITS_MAX);
            let mut policy = self.policy.borrow_mut();
            let hash = policy.hash(&key);
            if policy.samples(hash) {
                policy.replay(hash);
            }
            return key;
        }
        let mut policy = self.policy.borrow_mut();
        let (node, _) = policy.insert(key, 1);
        self.residents.0.borrow_mut().insert(key, (0, node));
        let mut evicted = self.evicted.borrow_mut();
        policy.evict(&self.residents, |gone| evicted.push(gone));
        for gone in evicted.drain(..) {
            self.residents.0.borrow_mut().remove(&gone);
        }
        create()
    }
}

/// A strict LRU (cached's `LruCache`) behind a mutex, checked, then filled.
struct Lru(Mutex<LruCache<u64, u64>>);

impl Cache for Lru {
    #[inline]
    fn get_with(&self, key: u64, create: &dyn Fn() -> u64) -> u64 {
        if let Some(v) = self.0.lock().unwrap().cache_get(&key) {
            return *v;
        }
        let v = create();
        self.0.lock().unwrap().cache_set(key, v);
        v
    }
}

/// A fresh `name` of `capacity` keys for repetition `rep` (the policy alone is seeded with
/// `rep + 1`: it is deterministic for a seed, so its repetitions vary the seed).
fn cache(name: &str, capacity: usize, rep: u64) -> Box<dyn Cache> {
    match name {
        "dogpile" => Box::new(
            Region::<u64, u64>::builder()
                .expiry(HOUR)
                .capacity(capacity)
                .build()
                .expect("a valid region"),
        ),
        "moka" => Box::new(
            moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .build(),
        ),
        "quick_cache" => Box::new(quick_cache::sync::Cache::new(capacity)),
        "policy" => Box::new(PolicyOnly::new(capacity, rep + 1)),
        "lru" => Box::new(Lru(Mutex::new(
            LruCache::builder()
                .max_size(capacity)
                .build()
                .expect("a valid LRU size"),
        ))),
        other => panic!("unknown contender {other} (dogpile, policy, moka, quick_cache, lru)"),
    }
}

/// Replays `keys` through a fresh cache, for repetition `rep`: the hit ratio and the ns per
/// access.
fn replay(name: &str, capacity: usize, keys: &[u64], rep: u64) -> (f64, f64) {
    let cache = cache(name, capacity, rep);
    let misses = Cell::new(0u64);
    let start = Instant::now();
    for &key in keys {
        black_box(cache.get_with(key, &|| {
            misses.set(misses.get() + 1);
            key
        }));
    }
    let elapsed = start.elapsed();
    let requests = keys.len() as f64;
    let expired = cache.expired_remade();
    if expired > 0 {
        eprintln!(
            "warning: {name} at {capacity}: {expired} values expired during the run and were made \
             again (did the wall clock step?): its hit ratio is lower than the policy's"
        );
    }
    (
        1.0 - misses.get() as f64 / requests,
        elapsed.as_nanos() as f64 / requests,
    )
}

// ---- the traces -----------------------------------------------------------------------------

/// A trace: its name, its five sizes, and the ARC paper's hit ratios (%) for LRU and ARC at the
/// sizes it gives them.
struct Trace {
    name: String,
    sizes: Vec<usize>,
    keys: Vec<u64>,
}

const P_SIZES: [usize; 5] = [16_384, 32_768, 65_536, 131_072, 262_144];
const OLTP_SIZES: [usize; 5] = [1_000, 2_000, 5_000, 10_000, 15_000];

/// The ARC paper's figures (Megiddo and Modha 2003, tables IV, VI and VII): (trace, size, LRU %,
/// ARC %).
const PAPER: [(&str, usize, f64, f64); 17] = [
    ("OLTP", 1_000, 32.83, 38.93),
    ("OLTP", 2_000, 42.47, 46.08),
    ("OLTP", 5_000, 53.65, 55.25),
    ("OLTP", 10_000, 60.70, 61.87),
    ("OLTP", 15_000, 64.63, 65.40),
    ("P1", 32_768, 16.55, 28.26),
    ("P2", 32_768, 18.47, 27.38),
    ("P3", 32_768, 3.57, 17.12),
    ("P4", 32_768, 5.24, 11.24),
    ("P5", 32_768, 6.73, 14.27),
    ("P6", 32_768, 4.24, 23.84),
    ("P7", 32_768, 3.45, 13.77),
    ("P12", 16_384, 7.09, 10.12),
    ("P12", 32_768, 8.93, 15.94),
    ("P12", 65_536, 14.43, 26.09),
    ("P12", 131_072, 29.21, 38.68),
    ("P12", 262_144, 49.11, 53.47),
];

fn paper(trace: &str, size: usize) -> Option<(f64, f64)> {
    PAPER
        .iter()
        .find(|(t, s, _, _)| *t == trace && *s == size)
        .map(|&(_, _, lru, arc)| (lru, arc))
}

/// The requests of an ARC-format trace: each line's pages, one request per page.
fn read_arc(path: &Path) -> std::io::Result<Vec<u64>> {
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "zst") {
        let child = Command::new("zstd")
            .args(["-dc", "--"])
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()?;
        Box::new(child.stdout.expect("a piped stdout"))
    } else {
        Box::new(std::fs::File::open(path)?)
    };
    let mut keys = Vec::new();
    for line in BufReader::with_capacity(1 << 20, reader).lines() {
        let line = line?;
        let mut fields = line.split_ascii_whitespace();
        let (Some(start), Some(count)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else {
            continue;
        };
        keys.extend(start..start + count);
    }
    Ok(keys)
}

/// The ARC traces in `dir`, by name (`P2.lis` or `P2.lis.zst` is `P2`), in name order.
fn arc_traces(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!(
            "no trace directory at {}: real traces skipped",
            dir.display()
        );
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?;
            let name = file
                .strip_suffix(".lis")
                .or_else(|| file.strip_suffix(".lis.zst"))?;
            Some((name.to_string(), path.clone()))
        })
        .collect();
    found.sort_by_key(|a| natural(&a.0));
    found.dedup_by(|a, b| a.0 == b.0); // `.lis` and `.lis.zst` of one trace: one of them
    found
}

/// P2 before P12.
fn natural(name: &str) -> (String, u64) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = &name[..name.len() - digits.len()];
    (prefix.to_string(), digits.parse().unwrap_or(0))
}

fn sizes_of(name: &str) -> Vec<usize> {
    match name {
        "OLTP" => OLTP_SIZES.to_vec(),
        _ => P_SIZES.to_vec(),
    }
}

fn recency() -> Trace {
    const REQUESTS: usize = 4_000_000;
    const MEAN_AGE: f64 = 4_000.0;
    let mut rng = SplitMix(0x5E55_1011);
    let mut made = 1u64;
    let keys = (0..REQUESTS)
        .map(|_| {
            if rng.unit() < 0.25 {
                made += 1;
                made
            } else {
                let age = (-MEAN_AGE * (1.0 - rng.unit()).ln()) as u64;
                made.saturating_sub(age)
            }
        })
        .collect();
    Trace {
        name: "recency".into(),
        sizes: vec![1_000, 2_000, 4_000, 8_000, 16_000],
        keys,
    }
}

fn looping() -> Trace {
    const REQUESTS: u64 = 4_000_000;
    const LOOP: u64 = 50_000;
    let zipf = Zipf::new(1_000_000, 0.9);
    let mut rng = SplitMix(0x100B);
    let mut at = 0;
    let keys = (0..REQUESTS)
        .map(|i| {
            if i % 2 == 0 {
                at = (at + 1) % LOOP;
                (1 << 40) | at
            } else {
                zipf.sample(&mut rng).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            }
        })
        .collect();
    Trace {
        name: "loop".into(),
        sizes: vec![10_000, 25_000, 40_000, 50_000, 75_000],
        keys,
    }
}

fn shift() -> Trace {
    const REQUESTS: u64 = 4_000_000;
    const PHASE: u64 = 500_000;
    let zipf = Zipf::new(100_000, 0.9);
    let mut rng = SplitMix(0x5417);
    let keys = (0..REQUESTS)
        .map(|i| {
            let phase = i / PHASE;
            (zipf.sample(&mut rng) + phase * 1_000_000).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
        .collect();
    Trace {
        name: "shift".into(),
        sizes: vec![1_000, 2_500, 5_000, 10_000, 20_000],
        keys,
    }
}

// ---- the run --------------------------------------------------------------------------------

struct Options {
    dir: Option<PathBuf>,
    only: Vec<String>,
    traces: Option<Vec<String>>,
    sizes: Option<Vec<usize>>,
    reps: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let list = |flag: &str| value(flag).map(|v| v.split(',').map(str::to_string).collect());
    // The first argument that is neither a flag nor a flag's value (cargo adds `--bench`).
    let mut dir = None;
    let mut skip = false;
    for arg in &args {
        if skip {
            skip = false;
        } else if matches!(arg.as_str(), "--only" | "--traces" | "--sizes" | "--reps") {
            skip = true;
        } else if !arg.starts_with("--") {
            dir = Some(PathBuf::from(arg));
            break;
        }
    }
    let dir = dir.or_else(|| std::env::var_os("DOGPILE_TRACES").map(PathBuf::from));
    Options {
        dir,
        only: list("--only").unwrap_or_else(|| CONTENDERS.iter().map(|c| c.to_string()).collect()),
        traces: list("--traces"),
        sizes: list("--sizes").map(|s: Vec<String>| {
            s.iter()
                .map(|n| n.parse().expect("--sizes: numbers"))
                .collect()
        }),
        reps: value("--reps").map_or(1, |r| r.parse().expect("--reps: a number")),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let options = options();
    let wanted = |name: &str| {
        options
            .traces
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t.eq_ignore_ascii_case(name)))
    };
    let mut traces: Vec<Box<dyn FnOnce() -> Trace>> = Vec::new();
    match &options.dir {
        Some(dir) => {
            for (name, path) in arc_traces(dir) {
                if wanted(&name) {
                    traces.push(Box::new(move || Trace {
                        sizes: sizes_of(&name),
                        keys: read_arc(&path)
                            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
                        name,
                    }));
                }
            }
        }
        None => eprintln!(
            "no trace directory (an argument or DOGPILE_TRACES): real traces skipped, \
             synthetic ones only"
        ),
    }
    for (name, make) in [
        ("recency", recency as fn() -> Trace),
        ("loop", looping),
        ("shift", shift),
    ] {
        if wanted(name) {
            traces.push(Box::new(make));
        }
    }

    let names: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|c| options.only.iter().any(|o| o == c))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Hit ratio (%) and ns per access, single thread, get-or-create; median of {} run(s).\n",
        options.reps
    );
    for make in traces {
        let trace = make();
        let sizes = options.sizes.clone().unwrap_or(trace.sizes.clone());
        eprintln!("{}: {} requests", trace.name, trace.keys.len());
        let mut header = format!("| {} | ARC (paper) | LRU (paper) |", trace.name);
        let mut rule = String::from("|---:|---:|---:|");
        for n in &names {
            let _ = write!(header, " {n} |");
            rule.push_str("---:|");
        }
        for n in &names {
            let _ = write!(header, " {n} ns |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for &size in &sizes {
            let mut figures: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
            for rep in 0..options.reps {
                for turn in 0..names.len() {
                    let name = names[(turn + rep) % names.len()];
                    let (ratio, ns) = replay(name, size, &trace.keys, rep as u64);
                    let entry = figures.entry(name).or_default();
                    entry.0.push(ratio);
                    entry.1.push(ns);
                }
            }
            let (lru, arc) = paper(&trace.name, size).map_or(("-".into(), "-".into()), |(l, a)| {
                (format!("{l:.2}"), format!("{a:.2}"))
            });
            let mut row = format!("| {size} | {arc} | {lru} |");
            for n in &names {
                let _ = write!(row, " {:.2} |", 100.0 * median(figures[n].0.clone()));
            }
            for n in &names {
                let _ = write!(row, " {:.0} |", median(figures[n].1.clone()));
            }
            let _ = writeln!(out, "{row}");
            eprintln!("{row}");
        }
        let _ = writeln!(out);
    }
    print!("{out}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("traces.md"), &out);
}
