//! Tasks waiting across expiries: 100 tasks each read one key every 10 ms for 1 s; the value
//! expires after 100 ms and takes 200 ms to make. Counts the calls that took over 5 ms (a task
//! kept waiting), the slowest call, and the creator runs, for dogpile (regenerating in the
//! caller, and in a spawned task with `background`) and moka's future cache (`get_with`, which
//! coalesces creators but makes every caller wait for the new value).
//!
//! `cargo bench --bench async_expiry` prints a markdown table: medians of 3 repetitions, the
//! contenders in rotating order, the value created before the measured second.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dogpile::Region;
use tokio::time::{sleep, Instant};

const TASKS: usize = 100;
const RUN: Duration = Duration::from_secs(1);
const EXPIRY: Duration = Duration::from_millis(100);
const CREATE: Duration = Duration::from_millis(200);
const REPS: usize = 3;

type Get = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = u64> + Send>> + Send + Sync>;

fn contender(name: &str, creations: Arc<AtomicUsize>) -> Get {
    let create = move || {
        let creations = creations.clone();
        async move {
            let n = creations.fetch_add(1, Ordering::SeqCst);
            sleep(CREATE).await;
            n as u64
        }
    };
    match name {
        "dogpile" | "dogpile background" => {
            let background = name.ends_with("background");
            let region: Region<u8, u64> = Region::builder().expiry(EXPIRY).build().unwrap();
            Arc::new(move || {
                let (region, create) = (region.clone(), create.clone());
                Box::pin(async move {
                    if background {
                        let made = move || async move { Ok::<_, ()>(create().await) };
                        region
                            .to_async()
                            .background()
                            .try_get_with(&0, made)
                            .await
                            .unwrap_or_default()
                    } else {
                        region.to_async().get_with(&0, create).await
                    }
                })
            })
        }
        "moka get_with" => {
            let cache: moka::future::Cache<u8, u64> =
                moka::future::Cache::builder().time_to_live(EXPIRY).build();
            Arc::new(move || {
                let (cache, create) = (cache.clone(), create.clone());
                Box::pin(async move { cache.get_with(0, create()).await })
            })
        }
        other => panic!("unknown contender {other}"),
    }
}

struct Outcome {
    calls: usize,
    over_5ms: usize,
    slowest: Duration,
    creations: usize,
}

async fn measure(name: &str) -> Outcome {
    let creations = Arc::new(AtomicUsize::new(0));
    let get = contender(name, creations.clone());
    get().await; // the first value, before the measured second
    let created_before = creations.load(Ordering::SeqCst);
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let get = get.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    get().await;
                    latencies.push(t.elapsed());
                    sleep(Duration::from_millis(10)).await;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Outcome {
        calls: latencies.len(),
        over_5ms: latencies
            .iter()
            .filter(|l| **l > Duration::from_millis(5))
            .count(),
        slowest: latencies.iter().copied().max().unwrap_or_default(),
        creations: creations.load(Ordering::SeqCst) - created_before,
    }
}

fn median<T: Copy + PartialOrd>(mut xs: Vec<T>) -> T {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let names = ["dogpile", "dogpile background", "moka get_with"];
    let mut results: Vec<Vec<Outcome>> = names.iter().map(|_| Vec::new()).collect();
    for rep in 0..REPS {
        for turn in 0..names.len() {
            let i = (turn + rep) % names.len();
            results[i].push(measure(names[i]).await);
        }
    }
    println!("| contender | calls | calls over 5 ms | share over 5 ms | slowest call ms | creator runs |");
    println!("|---|---|---|---|---|---|");
    for (name, outcomes) in names.iter().zip(&results) {
        let calls = median(outcomes.iter().map(|o| o.calls).collect());
        let over = median(outcomes.iter().map(|o| o.over_5ms).collect());
        let slowest = median(
            outcomes
                .iter()
                .map(|o| o.slowest.as_secs_f64() * 1e3)
                .collect(),
        );
        let creations = median(outcomes.iter().map(|o| o.creations).collect());
        println!(
            "| {name} | {calls} | {over} | {:.1}% | {slowest:.1} | {creations} |",
            100.0 * over as f64 / calls as f64
        );
    }
}
