//! What a service does with a `#[dogpile]` function compiles and runs: an `async fn` with a
//! borrowed argument (`&str`, `&T`, `&self`), with and without `background`, on its own region
//! or on a shared one (default namespace, a named one, none), and its `_served` companion, are
//! each spawned with `tokio::spawn` and mounted as an axum handler; blocking ones are called
//! from `spawn_blocking`. A future that is not `Send` for every lifetime of its arguments is a
//! compile error here, not in the service.
#![cfg(feature = "tokio")]

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use dogpile::region::Served;
use dogpile::{dogpile, Region};
use http_body_util::BodyExt;
use tower::ServiceExt;

const BOUND: Duration = Duration::from_secs(20);

/// A request's parameters, passed by reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Quote {
    pair: String,
    amount: u64,
}

/// A service with a tenant, whose methods are cached.
#[derive(Clone)]
struct Rates {
    tenant: u32,
}

/// The region functions share: the keys are `(namespace, key)`.
static CATALOG: LazyLock<Region<(&'static str, u64), String>> =
    LazyLock::new(|| Region::builder().capacity(1_000).build().unwrap());

/// A region with bare keys, for `namespace = none`.
static NAMES: LazyLock<Region<String, String>> =
    LazyLock::new(|| Region::builder().build().unwrap());

// ---- async ----------------------------------------------------------------------------------

#[dogpile(expire = "5s")]
async fn rate(pair: &str) -> String {
    tokio::task::yield_now().await; // the future holds the borrow across an await
    format!("{pair} 1.08")
}

#[dogpile(expire = "5s", background)]
async fn rate_in_background(pair: &str) -> String {
    tokio::task::yield_now().await;
    format!("{pair} 1.09")
}

#[dogpile(expire = "5s", key = (quote.pair.clone(), quote.amount))]
async fn converted(quote: &Quote) -> Result<u64, String> {
    tokio::task::yield_now().await;
    Ok(quote.amount * 2)
}

#[dogpile(expire = "5s", background)]
async fn converted_in_background(quote: &Quote) -> Option<u64> {
    tokio::task::yield_now().await;
    Some(quote.amount * 3)
}

impl Rates {
    #[dogpile(expire = "5s", key = (self.tenant, pair))]
    async fn rate(&self, pair: &str) -> String {
        tokio::task::yield_now().await;
        format!("{pair} for {}", self.tenant)
    }

    #[dogpile(expire = "5s", key = (self.tenant, pair), background)]
    async fn rate_in_background(&self, pair: &str) -> String {
        tokio::task::yield_now().await;
        format!("{pair} for {} in background", self.tenant)
    }
}

/// Two functions on one shared region with the default namespaces.
#[dogpile(expire = "5s", region = CATALOG)]
async fn product_name(id: u64) -> String {
    tokio::task::yield_now().await;
    format!("name {id}")
}

#[dogpile(expire = "5s", region = CATALOG)]
async fn product_description(id: u64) -> String {
    tokio::task::yield_now().await;
    format!("description {id}")
}

#[dogpile(expire = "5s", region = CATALOG, namespace = "labels", key = quote.amount)]
async fn label(quote: &Quote) -> String {
    tokio::task::yield_now().await;
    format!("label {}", quote.pair)
}

#[dogpile(expire = "5s", region = NAMES, namespace = none)]
async fn nickname(name: &str) -> String {
    tokio::task::yield_now().await;
    format!("nick {name}")
}

fn quote() -> Quote {
    Quote {
        pair: "EURUSD".to_owned(),
        amount: 7,
    }
}

/// Spawns `future` on a runtime of its own and gives its output: `tokio::spawn` needs the
/// future to be `Send + 'static`.
fn spawned<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(BOUND, tokio::spawn(future))
            .await
            .expect("the task ended")
            .expect("the task did not panic")
    })
}

#[test]
fn async_fns_with_borrowed_arguments_are_spawned() {
    // The borrow is made inside the task: the future borrows the task's own value.
    let (value, served) = spawned(async {
        let pair = String::from("GBPUSD");
        let first = rate(&pair).await;
        let (again, served) = rate_served(&pair).await;
        assert_eq!(first, again);
        (first, served)
    });
    assert_eq!((value.as_str(), served), ("GBPUSD 1.08", Served::Fresh));

    assert_eq!(spawned(rate("CHFJPY")), "CHFJPY 1.08");
    assert_eq!(spawned(rate_served("CHFJPY")).1, Served::Fresh);
    assert_eq!(spawned(rate_in_background("CHFJPY")), "CHFJPY 1.09");
    assert_eq!(
        spawned(rate_in_background_served("CHFJPY")).1,
        Served::Fresh
    );
    assert_eq!(spawned(async { converted(&quote()).await }), Ok(14));
    assert_eq!(
        spawned(async { converted_served(&quote()).await }).0,
        Ok(14)
    );
    assert_eq!(
        spawned(async { converted_in_background(&quote()).await }),
        Some(21)
    );
    assert_eq!(
        spawned(async { converted_in_background_served(&quote()).await }).0,
        Some(21)
    );
    let rates = Rates { tenant: 3 };
    assert_eq!(
        spawned({
            let rates = rates.clone();
            async move { rates.rate("EURUSD").await }
        }),
        "EURUSD for 3"
    );
    assert_eq!(
        spawned({
            let rates = rates.clone();
            async move { rates.rate_served("EURUSD").await.1 }
        }),
        Served::Fresh
    );
    assert_eq!(
        spawned({
            let rates = rates.clone();
            async move { rates.rate_in_background("EURUSD").await }
        }),
        "EURUSD for 3 in background"
    );
    assert_eq!(
        spawned(async move { rates.rate_in_background_served("EURUSD").await.1 }),
        Served::Fresh
    );
}

#[test]
fn async_fns_sharing_a_region_are_spawned() {
    assert_eq!(spawned(product_name(1)), "name 1");
    assert_eq!(spawned(product_description(1)), "description 1");
    assert_eq!(spawned(product_name_served(1)).1, Served::Fresh);
    assert_eq!(spawned(product_description_served(1)).1, Served::Fresh);
    assert_eq!(spawned(async { label(&quote()).await }), "label EURUSD");
    assert_eq!(
        spawned(async { label_served(&quote()).await }).1,
        Served::Fresh
    );
    assert_eq!(spawned(nickname("ann")), "nick ann");
    assert_eq!(spawned(nickname_served("ann")).1, Served::Fresh);
    // Each function's values under its own namespace.
    let path = concat!(module_path!(), "::product_description");
    assert_eq!(CATALOG.peek(&(path, 1)).as_deref(), Some("description 1"));
    assert_eq!(
        CATALOG.peek(&("labels", 7)).as_deref(),
        Some("label EURUSD")
    );
    assert_eq!(NAMES.peek(&"ann".to_owned()).as_deref(), Some("nick ann"));
}

// ---- the same, mounted as axum handlers -----------------------------------------------------

async fn get_rate(Path(pair): Path<String>) -> String {
    rate(&pair).await
}

async fn get_rate_served(Path(pair): Path<String>) -> String {
    let (rate, served) = rate_served(&pair).await;
    format!("{rate} ({})", served.as_str())
}

async fn get_rate_in_background(Path(pair): Path<String>) -> String {
    let (served, _) = rate_in_background_served(&pair).await;
    rate_in_background(&pair).await + " / " + &served
}

async fn get_converted(Path(amount): Path<u64>) -> String {
    let quote = Quote {
        pair: "EURUSD".to_owned(),
        amount,
    };
    let (served, _) = converted_served(&quote).await;
    let background = converted_in_background(&quote).await;
    let (background_served, _) = converted_in_background_served(&quote).await;
    format!(
        "{} {} {}",
        converted(&quote).await.unwrap() + served.unwrap(),
        background.unwrap(),
        background_served.unwrap()
    )
}

async fn get_tenant_rate(State(rates): State<Rates>, Path(pair): Path<String>) -> String {
    let (_, _) = rates.rate_served(&pair).await;
    let (_, _) = rates.rate_in_background_served(&pair).await;
    format!(
        "{} / {}",
        rates.rate(&pair).await,
        rates.rate_in_background(&pair).await
    )
}

async fn get_product(Path(id): Path<u64>) -> String {
    let (name, _) = product_name_served(id).await;
    let (description, _) = product_description_served(id).await;
    format!("{name}: {description}")
}

async fn get_product_name(Path(id): Path<u64>) -> String {
    product_name(id).await + " / " + &product_description(id).await
}

async fn get_label(Path(pair): Path<String>) -> String {
    let quote = Quote { pair, amount: 1 };
    let (served, _) = label_served(&quote).await;
    label(&quote).await + " / " + &served
}

async fn get_nickname(Path(name): Path<String>) -> String {
    let (served, _) = nickname_served(&name).await;
    nickname(&name).await + " / " + &served
}

fn app() -> Router {
    Router::new()
        .route("/rate/{pair}", get(get_rate))
        .route("/rate-served/{pair}", get(get_rate_served))
        .route("/rate-background/{pair}", get(get_rate_in_background))
        .route("/converted/{amount}", get(get_converted))
        .route("/tenant/{pair}", get(get_tenant_rate))
        .route("/product/{id}", get(get_product))
        .route("/product-name/{id}", get(get_product_name))
        .route("/label/{pair}", get(get_label))
        .route("/nickname/{name}", get(get_nickname))
        .with_state(Rates { tenant: 9 })
}

#[test]
fn async_fns_are_axum_handlers() {
    let body = |uri: &'static str| async move {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        assert_eq!(body("/rate/AUDUSD").await, "AUDUSD 1.08");
        assert_eq!(body("/rate-served/AUDNZD").await, "AUDNZD 1.08 (created)");
        assert_eq!(body("/rate-served/AUDNZD").await, "AUDNZD 1.08 (fresh)");
        assert_eq!(
            body("/rate-background/AUDCAD").await,
            "AUDCAD 1.09 / AUDCAD 1.09"
        );
        assert_eq!(body("/converted/5").await, "20 15 15");
        assert_eq!(
            body("/tenant/USDJPY").await,
            "USDJPY for 9 / USDJPY for 9 in background"
        );
        assert_eq!(body("/product/2").await, "name 2: description 2");
        assert_eq!(body("/product-name/2").await, "name 2 / description 2");
        assert_eq!(body("/label/NZDUSD").await, "label NZDUSD / label NZDUSD");
        assert_eq!(body("/nickname/bo").await, "nick bo / nick bo");
    });
}

// ---- blocking functions from `spawn_blocking` -----------------------------------------------

#[dogpile(expire = "5s")]
fn blocking_rate(pair: &str) -> String {
    format!("{pair} 2.0")
}

#[dogpile(expire = "5s", background)]
fn blocking_rate_in_background(pair: &str) -> String {
    format!("{pair} 2.1")
}

#[dogpile(expire = "5s")]
fn blocking_converted(quote: &Quote) -> Result<u64, String> {
    Ok(quote.amount * 4)
}

#[dogpile(expire = "5s", background)]
fn blocking_converted_in_background(quote: &Quote) -> Option<u64> {
    Some(quote.amount * 5)
}

impl Rates {
    #[dogpile(expire = "5s", key = (self.tenant, pair))]
    fn blocking_rate(&self, pair: &str) -> String {
        format!("{pair} blocking for {}", self.tenant)
    }

    #[dogpile(expire = "5s", key = (self.tenant, pair), background)]
    fn blocking_rate_in_background(&self, pair: &str) -> String {
        format!("{pair} blocking for {} in background", self.tenant)
    }
}

#[dogpile(expire = "5s", region = CATALOG)]
fn blocking_product_name(id: u64) -> String {
    format!("blocking name {id}")
}

#[dogpile(expire = "5s", region = CATALOG, namespace = "blocking labels", key = quote.amount)]
fn blocking_label(quote: &Quote) -> String {
    format!("blocking label {}", quote.pair)
}

#[dogpile(expire = "5s", region = NAMES, namespace = none)]
fn blocking_nickname(name: &str) -> String {
    format!("blocking nick {name}")
}

#[test]
fn blocking_fns_with_borrowed_arguments_run_in_spawn_blocking() {
    let answers = spawned(async {
        let blocking = tokio::task::spawn_blocking(|| {
            let pair = String::from("EURCHF");
            let quote = quote();
            let rates = Rates { tenant: 4 };
            vec![
                blocking_rate(&pair),
                format!("{:?}", blocking_rate_served(&pair).1),
                blocking_rate_in_background(&pair),
                format!("{:?}", blocking_rate_in_background_served(&pair).1),
                format!("{:?}", blocking_converted(&quote)),
                format!("{:?}", blocking_converted_served(&quote)),
                format!("{:?}", blocking_converted_in_background(&quote)),
                format!("{:?}", blocking_converted_in_background_served(&quote)),
                rates.blocking_rate(&pair),
                format!("{:?}", rates.blocking_rate_served(&pair).1),
                rates.blocking_rate_in_background(&pair),
                format!("{:?}", rates.blocking_rate_in_background_served(&pair).1),
                blocking_product_name(3),
                format!("{:?}", blocking_product_name_served(3).1),
                blocking_label(&quote),
                format!("{:?}", blocking_label_served(&quote).1),
                blocking_nickname(&pair),
                format!("{:?}", blocking_nickname_served(&pair).1),
            ]
        });
        blocking.await.unwrap()
    });
    assert_eq!(
        answers,
        [
            "EURCHF 2.0",
            "Fresh",
            "EURCHF 2.1",
            "Fresh",
            "Ok(28)",
            "(Ok(28), Fresh)",
            "Some(35)",
            "(Some(35), Fresh)",
            "EURCHF blocking for 4",
            "Fresh",
            "EURCHF blocking for 4 in background",
            "Fresh",
            "blocking name 3",
            "Fresh",
            "blocking label EURUSD",
            "Fresh",
            "blocking nick EURCHF",
            "Fresh",
        ]
    );
}
