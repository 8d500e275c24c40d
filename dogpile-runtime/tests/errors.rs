//! Error types: each link of a chain says one thing, the next link is its source, and no
//! message repeats another's.

use std::error::Error;
use std::io;

use dogpile_runtime::{BackendError, LockError, Region, RegionError};

/// Every message of the chain from `err`, outermost first.
fn chain(err: &(dyn Error + 'static)) -> Vec<String> {
    let mut messages = vec![err.to_string()];
    let mut next = err.source();
    while let Some(err) = next {
        messages.push(err.to_string());
        next = err.source();
    }
    messages
}

fn assert_no_repeats(messages: &[String]) {
    for (i, outer) in messages.iter().enumerate() {
        for inner in &messages[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "{outer:?} repeats its source {inner:?}"
            );
        }
    }
}

#[test]
fn a_creator_error_is_the_source_not_part_of_the_message() {
    let region: Region<u8, u8> = Region::builder().build().unwrap();
    let err = region
        .try_get_with(&1, || Err(io::Error::other("disk gone")))
        .unwrap_err();
    let messages = chain(&err);
    assert_eq!(messages, ["the creator failed", "disk gone"]);
    assert_no_repeats(&messages);
}

#[test]
fn a_backend_failure_chain_says_each_thing_once() {
    let backend = BackendError::with_source("cannot lock file", io::Error::other("disk gone"));
    let err: LockError<io::Error> = LockError::Mutex(backend);
    let messages = chain(&err);
    assert_eq!(
        messages,
        [
            "the dogpile mutex failed",
            "dogpile backend: cannot lock file",
            "disk gone"
        ]
    );
    assert_no_repeats(&messages);

    let err: RegionError<io::Error> = RegionError::Backend(BackendError::new("server down"));
    let messages = chain(&err);
    assert_eq!(
        messages,
        [
            "the region's store or mutex failed",
            "dogpile backend: server down"
        ]
    );
    assert_no_repeats(&messages);
}

#[test]
fn errors_display_whatever_the_creator_error_type() {
    /// A creator error with neither `Display` nor `Error`.
    #[derive(Debug)]
    struct Opaque;

    let err: LockError<Opaque> = LockError::Creator(Opaque);
    assert_eq!(err.to_string(), "the creator failed");
    let err: RegionError<Opaque> = RegionError::Creator(std::sync::Arc::new(Opaque));
    assert_eq!(err.to_string(), "the creator failed");
}
