//! One HTTP endpoint under load, cached five ways: an axum handler returns a value that the
//! upstream takes 50 ms to make and that expires after 1 s, so each run crosses about three
//! expiries. The contenders:
//!
//! - `dogpile`: `#[dogpile(expire = 1s)] async fn`: at each expiry, one request regenerates
//!   (and waits the 50 ms) while the others get the previous value at once;
//! - `dogpile background`: the same with `background`: the regeneration runs in a spawned task,
//!   so no request waits for the upstream after the first;
//! - `moka get_with`: moka's `future::Cache::get_with` with `time_to_live(1s)`: one upstream
//!   call per expiry, and every request that comes meanwhile waits for it;
//! - `cached`: `#[cached(ttl_millis = 1000)] async fn`, the attribute's defaults otherwise: no
//!   coalescing, so every request in the 50 ms after an expiry calls the upstream;
//! - `cached by_key`: the same with `sync_writes = "by_key"`, cached's per-key lock: one
//!   upstream call per expiry, the others waiting for it.
//!
//! An in-process load generator (hyper's HTTP/1 client) keeps 20, then 200, connections busy,
//! each sending its next request when the previous answer is read, for a few seconds; server
//! and client share one tokio runtime with two worker threads, on loopback. Each run uses a key
//! of its own, created by one request before the clock starts, and the contenders run in
//! rotating order.
//!
//! The load is closed-loop: a connection held up at an expiry sends nothing else meanwhile, so
//! a 50 ms wait of every connection is 20 (or 200) slow requests among a few hundred thousand,
//! below the p99. The column "requests over 25 ms" counts them: the requests that waited for an
//! upstream call.
//!
//! `cargo bench --bench web_load` prints a markdown table of medians over the repetitions.
//! `WEB_LOAD_SECS` (default 3.5) and `WEB_LOAD_REPS` (default 3) change the run length and
//! count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header::{HeaderName, HOST};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use cached::macros::cached;
use dogpile::dogpile;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, Instant};

const UPSTREAM: Duration = Duration::from_millis(50);
const EXPIRE_MS: u64 = 1000;
const CONNECTIONS: [usize; 2] = [20, 200];
/// A request slower than this (half the upstream's time, in µs) was held up by an upstream call.
const HELD_UP_US: u32 = 25_000;

/// Each contender's name in the table and its route.
const CONTENDERS: [(&str, &str); 5] = [
    ("dogpile", "dogpile"),
    ("dogpile background", "dogpile-background"),
    ("moka get_with", "moka"),
    ("cached", "cached"),
    ("cached by_key", "cached-by-key"),
];

static UPSTREAM_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The slow upstream.
async fn upstream(run: u32) -> Bytes {
    let call = UPSTREAM_CALLS.fetch_add(1, Ordering::Relaxed);
    sleep(UPSTREAM).await;
    format!("run {run}, upstream call {call}\n").into()
}

#[dogpile(expire = 1s)]
async fn dogpile_value(run: u32) -> Bytes {
    upstream(run).await
}

#[dogpile(expire = 1s, background)]
async fn dogpile_background_value(run: u32) -> Bytes {
    upstream(run).await
}

static MOKA: LazyLock<moka::future::Cache<u32, Bytes>> = LazyLock::new(|| {
    moka::future::Cache::builder()
        .time_to_live(Duration::from_millis(EXPIRE_MS))
        .build()
});

#[cached(ttl_millis = 1000)]
async fn cached_value(run: u32) -> Bytes {
    upstream(run).await
}

#[cached(ttl_millis = 1000, sync_writes = "by_key")]
async fn cached_by_key_value(run: u32) -> Bytes {
    upstream(run).await
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn app() -> Router {
    async fn dogpile(Path(run): Path<u32>) -> Response {
        let (body, served) = dogpile_value_served(run).await;
        ([(X_CACHE, served.as_str())], body).into_response()
    }
    async fn dogpile_background(Path(run): Path<u32>) -> Response {
        let (body, served) = dogpile_background_value_served(run).await;
        ([(X_CACHE, served.as_str())], body).into_response()
    }
    async fn moka(Path(run): Path<u32>) -> Bytes {
        MOKA.get_with(run, upstream(run)).await
    }
    async fn cached(Path(run): Path<u32>) -> Bytes {
        cached_value(run).await
    }
    async fn cached_by_key(Path(run): Path<u32>) -> Bytes {
        cached_by_key_value(run).await
    }
    Router::new()
        .route("/dogpile/{run}", get(dogpile))
        .route("/dogpile-background/{run}", get(dogpile_background))
        .route("/moka/{run}", get(moka))
        .route("/cached/{run}", get(cached))
        .route("/cached-by-key/{run}", get(cached_by_key))
}

/// One connection sending requests back to back until `until` (one at least): each request's
/// latency in µs.
async fn connection(addr: SocketAddr, path: String, until: Instant) -> Vec<u32> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    loop {
        sender.ready().await.expect("connection closed");
        let request = Request::get(path.as_str())
            .header(HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let start = Instant::now();
        let response = sender.send_request(request).await.expect("a response");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.into_body().collect().await.expect("a body");
        latencies.push(start.elapsed().as_micros().try_into().unwrap_or(u32::MAX));
        if Instant::now() >= until {
            return latencies;
        }
    }
}

struct Outcome {
    per_second: f64,
    upstream_calls: usize,
    /// Requests that took over half the upstream's time: held up by an upstream call.
    held_up: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn measure(addr: SocketAddr, path: String, connections: usize, run: Duration) -> Outcome {
    // The first value, before the clock starts.
    connection(addr, path.clone(), Instant::now()).await;
    let calls_before = UPSTREAM_CALLS.load(Ordering::Relaxed);
    let start = Instant::now();
    let until = start + run;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(addr, path.clone(), until)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a connection panicked"));
    }
    let elapsed = start.elapsed();
    let upstream_calls = UPSTREAM_CALLS.load(Ordering::Relaxed) - calls_before;
    latencies.sort_unstable();
    let held_up = latencies.len() - latencies.partition_point(|&us| us < HELD_UP_US);
    let at = |share: f64| {
        let i = ((latencies.len() as f64 * share) as usize).min(latencies.len() - 1);
        Duration::from_micros(latencies[i].into())
    };
    Outcome {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        upstream_calls,
        held_up,
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn median<T: Copy + PartialOrd>(mut xs: Vec<T>) -> T {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
        Err(_) => default,
    }
}

fn main() {
    let run = Duration::from_secs_f64(env_or("WEB_LOAD_SECS", 3.5));
    let reps: usize = env_or("WEB_LOAD_REPS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app()).await });

        println!(
            "GET over HTTP/1 on loopback, {:.1} s a run, value expires after {EXPIRE_MS} ms, \
             upstream takes {} ms; medians of {reps} runs\n",
            run.as_secs_f64(),
            UPSTREAM.as_millis(),
        );
        let mut key = 0;
        let mut rows = Vec::new();
        for connections in CONNECTIONS {
            let mut outcomes: Vec<Vec<Outcome>> = CONTENDERS.iter().map(|_| Vec::new()).collect();
            for rep in 0..reps {
                for i in 0..CONTENDERS.len() {
                    let c = (rep + i) % CONTENDERS.len();
                    let (name, route) = CONTENDERS[c];
                    key += 1;
                    let outcome = measure(addr, format!("/{route}/{key}"), connections, run).await;
                    eprintln!(
                        "{name:>18} {connections:>3} connections, run {}: {:>7.0} req/s, \
                         {:>4} upstream calls, {:>5} held up, p50 {:>6.2} ms, p99 {:>6.2} ms, \
                         max {:>6.2} ms",
                        rep + 1,
                        outcome.per_second,
                        outcome.upstream_calls,
                        outcome.held_up,
                        ms(outcome.p50),
                        ms(outcome.p99),
                        ms(outcome.max),
                    );
                    outcomes[c].push(outcome);
                    sleep(Duration::from_millis(200)).await; // let the connections close
                }
            }
            for ((name, _), runs) in CONTENDERS.iter().zip(outcomes) {
                rows.push(format!(
                    "| {name} | {connections} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} |",
                    median(runs.iter().map(|o| o.per_second).collect()),
                    median(runs.iter().map(|o| o.upstream_calls).collect()),
                    median(runs.iter().map(|o| o.held_up).collect()),
                    ms(median(runs.iter().map(|o| o.p50).collect())),
                    ms(median(runs.iter().map(|o| o.p99).collect())),
                    ms(median(runs.iter().map(|o| o.max).collect())),
                ));
            }
        }
        println!(
            "| contender | connections | requests/s | upstream calls | requests over 25 ms \
             | p50 ms | p99 ms | max ms |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
