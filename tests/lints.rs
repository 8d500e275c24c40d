//! The expansion raises no lint in user code, pedantic clippy included (checked by the
//! `cargo clippy --all-targets` step of CI; `cargo test` checks the rustc half).
#![deny(warnings, missing_docs, clippy::all, clippy::pedantic)]

use std::sync::Arc;

use dogpile::dogpile;

/// A report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its day.
    pub day: u32,
}

/// A public cached function with a borrowed argument.
#[dogpile(expire = 3600)]
#[must_use]
pub fn report(day: u32, title: &str) -> Arc<Report> {
    let _ = title;
    Arc::new(Report { day })
}

/// A fallible one with an explicit key, a capacity and a lock timeout.
///
/// # Errors
///
/// Never, in fact.
#[dogpile(expire = "5m", key = sku, capacity = 100, lock_timeout = "2s")]
pub fn price(sku: &str, mut retries: u8) -> Result<u64, std::num::ParseIntError> {
    retries = retries.saturating_add(1);
    Ok(u64::from(retries) + sku.parse::<u64>()?)
}

#[dogpile(expire = never)]
fn config(on: bool) -> Option<Arc<str>> {
    on.then(|| Arc::from("on"))
}

#[dogpile(expire = 60, background)]
fn private_unused(name: &str) -> String {
    name.to_owned()
}

/// A service.
pub struct Service {
    id: u64,
}

impl Service {
    /// A method with an explicit key.
    #[dogpile(expire = 60, key = (self.id, n))]
    #[must_use]
    pub fn lookup(&self, n: u32) -> u64 {
        self.id + u64::from(n)
    }
}

#[test]
fn the_annotated_functions_work() {
    assert_eq!(report(1, "t").day, 1);
    assert_eq!(price("4", 0), Ok(5));
    assert_eq!(config(true).as_deref(), Some("on"));
    assert_eq!(Service { id: 1 }.lookup(1), 2);
}

/// An async one, with a borrowed argument outside the key.
///
/// # Errors
///
/// When the name is empty.
#[cfg(feature = "tokio")]
#[dogpile(expire = 60, key = id)]
pub async fn user(id: u64, name: &str) -> Result<String, std::fmt::Error> {
    if name.is_empty() {
        return Err(std::fmt::Error);
    }
    std::future::ready(()).await;
    Ok(format!("{id}: {name}"))
}

/// An async one with a borrowed argument in the default key, regenerated in the background.
#[cfg(feature = "tokio")]
#[dogpile(expire = 60, background)]
pub async fn greeting(name: &str) -> String {
    std::future::ready(()).await;
    format!("hello {name}")
}

/// The region two functions share.
pub static CATALOG: std::sync::LazyLock<dogpile::Region<(&'static str, u64), String>> =
    std::sync::LazyLock::new(|| dogpile::Region::builder().build().expect("a valid region"));

/// A function on a shared region, with a namespace and a key that borrows.
#[dogpile(expire = 60, region = CATALOG, namespace = "titles", key = id)]
#[must_use]
pub fn title(id: u64, lang: &str) -> String {
    format!("{id} in {}", lang.trim())
}

/// An async one on the same region, in the function's namespace.
#[cfg(feature = "tokio")]
#[dogpile(expire = 60, region = CATALOG)]
pub async fn summary(id: u64) -> String {
    std::future::ready(()).await;
    format!("summary {id}")
}
