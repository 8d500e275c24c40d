//! A web service over a slow upstream: `GET /rate/{pair}` returns an exchange rate that the
//! upstream takes 50 ms to give and that stays fresh for 5 s. The handler calls a
//! `#[dogpile]` async fn, and says how each request was served in an `X-Cache` header.
//!
//! Run `cargo run --example web_service` (it serves until Ctrl-C), then try:
//!
//! ```text
//! curl -i localhost:3000/rate/EURUSD    # x-cache: created: this request called the upstream
//! curl -i localhost:3000/rate/EURUSD    # x-cache: fresh: at once, the same rate
//! sleep 5
//! curl -i localhost:3000/rate/EURUSD    # x-cache: stale: the previous rate at once, while
//!                                       # a background task calls the upstream
//! curl -i localhost:3000/rate/EURUSD    # x-cache: fresh: the new rate
//! curl localhost:3000/stats             # upstream calls and how requests were served
//! curl localhost:3000/metrics           # the same, and the upstream's time, for Prometheus
//! ```
//!
//! `/metrics` is what dogpile's `metrics` feature reports (requests by outcome, creator and
//! wait time, entries), in the Prometheus text format through `metrics-exporter-prometheus`:
//! the recorder is installed before the first call builds a function's region.
//!
//! `GET /currency/{code}` is the same without `background`: the request that finds the name
//! expired calls the upstream itself (`x-cache: created`) while the others get the previous
//! name at once.
//!
//! Twenty requests at once for a pair not cached yet make one upstream call: one request is
//! `created` and nineteen `waited` for it.
//!
//! ```text
//! for i in $(seq 20); do
//!     curl -s -o /dev/null -w '%header{x-cache}\n' localhost:3000/rate/GBPUSD &
//! done; wait
//! ```
//!
//! `cargo bench --bench web_load` compares this endpoint under load with moka's and cached's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dogpile::dogpile;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// The header that says how a request was served: fresh, stale, created, waited or direct.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

static UPSTREAM_CALLS: AtomicU64 = AtomicU64::new(0);

/// The slow upstream, another service in practice.
async fn fetch_rate(pair: &str) -> Bytes {
    let call = UPSTREAM_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rate = 1.08 + (call % 50) as f64 / 10_000.0;
    format!("{pair} {rate:.4} (upstream call #{call})\n").into()
}

/// The rate, cached per pair. `background`: the request that finds the rate expired gets the
/// previous one at once too, and the upstream is called in a spawned task. `capacity` bounds
/// the cache, since the key comes from the URL.
#[dogpile(expire = "5s", background, capacity = 1_000)]
async fn rate(pair: &str) -> Bytes {
    fetch_rate(pair).await
}

/// A currency's name, cached per code; without `background`, the caller that finds it expired
/// regenerates it in its own request.
#[dogpile(expire = "1h", capacity = 1_000)]
async fn currency_name(code: &str) -> Bytes {
    UPSTREAM_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let name = match code {
        "EUR" => "euro",
        "USD" => "US dollar",
        "JPY" => "yen",
        _ => "unknown currency",
    };
    format!("{code}: {name}\n").into()
}

async fn get_currency(Path(code): Path<String>) -> Response {
    let (body, served) = currency_name_served(&code).await;
    ([(X_CACHE, served.as_str())], body).into_response()
}

async fn get_rate(Path(pair): Path<String>) -> Response {
    if pair.len() != 6 || !pair.bytes().all(|b| b.is_ascii_uppercase()) {
        let help = "expected two currency codes, such as /rate/EURUSD\n";
        return (StatusCode::NOT_FOUND, help).into_response();
    }
    let (body, served) = rate_served(&pair).await;
    let text = "text/plain; charset=utf-8";
    ([(X_CACHE, served.as_str()), (CONTENT_TYPE, text)], body).into_response()
}

async fn get_stats() -> String {
    let calls = UPSTREAM_CALLS.load(Ordering::Relaxed);
    let stats = rate_statistics();
    format!(
        "upstream calls: {calls}\nrequests served fresh: {}, stale: {}, on a miss: {} \
         ({} of them waited for another)\n",
        stats.hits, stats.stale_hits, stats.misses, stats.waits,
    )
}

/// The Prometheus recorder, installed once, before any region is built: a region registers
/// its metrics with the recorder installed when it is built.
static PROMETHEUS: LazyLock<PrometheusHandle> = LazyLock::new(|| {
    PrometheusBuilder::new()
        // Histograms (`dogpile_*_duration_seconds`) as buckets, from 1 ms to 10 s.
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ],
        )
        .and_then(PrometheusBuilder::install_recorder)
        .expect("no other metrics recorder is installed")
});

async fn get_metrics() -> String {
    PROMETHEUS.render()
}

/// The service's routes.
fn app() -> Router {
    LazyLock::force(&PROMETHEUS);
    Router::new()
        .route("/rate/{pair}", get(get_rate))
        .route("/currency/{code}", get(get_currency))
        .route("/stats", get(get_stats))
        .route("/metrics", get(get_metrics))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // Port 3000, or any free port when it is taken.
    let listener = match TcpListener::bind("127.0.0.1:3000").await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    let addr = listener.local_addr()?;
    println!("serving on http://{addr} until Ctrl-C; try: curl -i http://{addr}/rate/EURUSD");
    axum::serve(listener, app())
        .with_graceful_shutdown(async {
            // An error here means no signal handler could be set: serve until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn x_cache(app: &Router, uri: &str) -> String {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()[X_CACHE].to_str().unwrap().to_owned()
    }

    /// The tests that call the cached functions run one at a time, so that each can tell what
    /// its requests counted.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// The value of the series `name` of `region` with `outcome` in a scrape of `/metrics`.
    async fn scraped(app: &Router, name: &str, region: &str, outcome: &str) -> f64 {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        let (region, outcome) = (format!("region=\"{region}\""), format!("{outcome}\""));
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .filter(|line| line.contains(&region) && line.contains(&outcome))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    #[tokio::test]
    async fn x_cache_says_created_then_fresh_then_stale_after_expiry() {
        let _serial = SERIAL.lock().await;
        let app = app();
        assert_eq!(x_cache(&app, "/rate/CHFJPY").await, "created");
        assert_eq!(x_cache(&app, "/rate/CHFJPY").await, "fresh");
        rate_soft_invalidate("CHFJPY").await.unwrap(); // as if its 5 s had passed
        assert_eq!(x_cache(&app, "/rate/CHFJPY").await, "stale");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while x_cache(&app, "/rate/CHFJPY").await != "fresh" {
            assert!(tokio::time::Instant::now() < deadline, "never regenerated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn without_background_the_request_that_finds_it_expired_regenerates_it() {
        let _serial = SERIAL.lock().await;
        let app = app();
        assert_eq!(x_cache(&app, "/currency/JPY").await, "created");
        assert_eq!(x_cache(&app, "/currency/JPY").await, "fresh");
        currency_name_soft_invalidate("JPY").await.unwrap(); // as if its hour had passed
        assert_eq!(x_cache(&app, "/currency/JPY").await, "created");
        assert_eq!(x_cache(&app, "/currency/JPY").await, "fresh");
    }

    /// `/metrics` counts the requests as their `x-cache` headers said, and times the upstream.
    #[tokio::test]
    async fn metrics_count_requests_by_how_they_were_served() {
        let _serial = SERIAL.lock().await;
        let app = app();
        let region = "web_service::rate";
        let requests = "dogpile_cache_requests_total";
        let count = |outcome: &'static str| {
            let app = app.clone();
            async move { scraped(&app, requests, region, &format!("outcome=\"{outcome}")).await }
        };
        let before = [
            count("created").await,
            count("fresh").await,
            count("stale").await,
        ];
        let runs = |app: Router| async move {
            let name = "dogpile_creator_duration_seconds_count";
            scraped(&app, name, region, "result=\"success").await
        };
        let runs_before = runs(app.clone()).await;

        assert_eq!(x_cache(&app, "/rate/NZDCAD").await, "created");
        assert_eq!(x_cache(&app, "/rate/NZDCAD").await, "fresh");
        assert_eq!(x_cache(&app, "/rate/NZDCAD").await, "fresh");
        rate_soft_invalidate("NZDCAD").await.unwrap();
        assert_eq!(x_cache(&app, "/rate/NZDCAD").await, "stale");
        // The background regeneration's run is timed too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs(app.clone()).await < runs_before + 2.0 {
            assert!(tokio::time::Instant::now() < deadline, "never regenerated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let after = [
            count("created").await,
            count("fresh").await,
            count("stale").await,
        ];
        let moved: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(moved, [1.0, 2.0, 1.0], "created, fresh, stale");
        // The background regeneration served no request: not counted as created.
        assert_eq!(runs(app.clone()).await, runs_before + 2.0);
    }

    #[tokio::test]
    async fn a_path_that_is_no_pair_is_not_found() {
        let request = Request::get("/rate/nope").body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
