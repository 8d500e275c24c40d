//! Async fresh hits on a Redis region against the floor: redis-rs's own `GET` on a multiplexed
//! connection, on the same server in the same run. Starts its own `redis-server` on a free
//! loopback port.
//!
//! `cargo bench --bench redis_hits --features redis,tokio`

use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::backend::redis::{Redis, RedisMutex, RedisStore};
use dogpile::region::AsyncRegion;
use dogpile::Region;

#[path = "../dogpile-runtime/tests/support/redis_server.rs"]
mod redis_server;

/// Hits per configuration, spread over the tasks.
const HITS: usize = 20_000;

struct Run {
    median: Duration,
    p99: Duration,
    per_second: f64,
}

/// `tasks` tasks, each running `op` HITS/tasks times in a row; every latency recorded.
async fn measure<F, Fut>(tasks: usize, op: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(HITS / tasks);
                for _ in 0..HITS / tasks {
                    let t = Instant::now();
                    op().await;
                    took.push(t.elapsed());
                }
                took
            })
        })
        .collect();
    let mut all = Vec::with_capacity(HITS);
    for handle in handles {
        all.extend(handle.await.expect("a task failed"));
    }
    let elapsed = start.elapsed();
    all.sort();
    Run {
        median: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let server = redis_server::Server::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let redis = Redis::open(&server.url()).expect("an address");
        let region: AsyncRegion<u64, u64, RedisStore<u64, u64>, RedisMutex> = Region::builder()
            .name("bench")
            .expiry(Duration::from_secs(3600))
            .store(redis.store("bench"))
            .mutexes(redis.mutexes("bench"))
            .build()
            .expect("a region")
            .to_async();
        assert_eq!(region.get_with(&1, || async { 42 }).await, 42);
        let client = redis::Client::open(server.url()).expect("an address");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("a connection");
        let mut set = connection.clone();
        redis::cmd("SET")
            .arg("floor")
            .arg(42u64)
            .query_async::<()>(&mut set)
            .await
            .expect("SET");

        println!("async fresh hits, {HITS} per row, 2 worker threads, one redis-server");
        println!(
            "| tasks | dogpile median / p99 | redis GET median / p99 | median ratio | dogpile hits/s | GET/s | throughput ratio |"
        );
        println!("|---|---|---|---|---|---|---|");
        for tasks in [1, 10, 100] {
            let floor = measure(tasks, {
                let connection = connection.clone();
                move || {
                    let mut c = connection.clone();
                    async move {
                        let v: u64 = redis::cmd("GET")
                            .arg("floor")
                            .query_async(&mut c)
                            .await
                            .expect("GET");
                        assert_eq!(v, 42);
                    }
                }
            })
            .await;
            let ours = measure(tasks, {
                let region = region.clone();
                move || {
                    let region = region.clone();
                    async move {
                        let v = region.get_with(&1, || async { unreachable!() }).await;
                        assert_eq!(v, 42);
                    }
                }
            })
            .await;
            println!(
                "| {tasks} | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2}× | {:.0} | {:.0} | {:.2}× |",
                micros(ours.median),
                micros(ours.p99),
                micros(floor.median),
                micros(floor.p99),
                micros(ours.median) / micros(floor.median),
                ours.per_second,
                floor.per_second,
                floor.per_second / ours.per_second,
            );
        }
    });
}
