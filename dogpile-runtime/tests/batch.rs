//! Many keys in one call: one creator call for the keys that need a value, the dogpile rules
//! per key, and no deadlock between batches over the same keys.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use dogpile_runtime::clock::{ManualClock, Timestamp};
use dogpile_runtime::{Region, RegionError};

const MINUTE: Duration = Duration::from_secs(60);

fn region(clock: &Arc<ManualClock>) -> Region<u32, String> {
    Region::builder()
        .expiry(MINUTE)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_nanos(
        1_700_000_000_000_000_000,
    )))
}

fn names(keys: &[u32]) -> Result<Vec<String>, Infallible> {
    Ok(keys.iter().map(|k| format!("new {k}")).collect())
}

#[test]
fn fresh_keys_are_served_and_the_rest_made_in_one_call() {
    let clock = clock();
    let region = region(&clock);
    region.insert(&1, "old 1".into()).unwrap();
    region.insert(&2, "old 2".into()).unwrap();
    clock.advance(MINUTE * 2);
    region.insert(&3, "fresh 3".into()).unwrap();
    let calls = AtomicUsize::new(0);
    let values = region
        .try_get_with_many(&[4, 3, 1, 2, 4], |keys| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2, 4], "expired and missing, each once");
            names(keys)
        })
        .unwrap();
    assert_eq!(values, ["new 4", "fresh 3", "new 1", "new 2", "new 4"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(region.peek(&1).as_deref(), Some("new 1"));
    let stats = region.statistics();
    assert_eq!((stats.hits, stats.misses, stats.regenerations), (1, 1, 3));
    // All fresh now: no creator call at all.
    let again = region
        .try_get_with_many(&[1, 2, 3, 4], |_| -> Result<Vec<String>, Infallible> {
            unreachable!()
        })
        .unwrap();
    assert_eq!(again, ["new 1", "new 2", "fresh 3", "new 4"]);
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn a_key_another_caller_is_creating_is_waited_for_not_created_again() {
    let region = region(&clock());
    let (started_tx, started) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let single = {
        let region = region.clone();
        thread::spawn(move || {
            region.get_with(&1, move || {
                started_tx.send(()).unwrap();
                finish_rx.recv().unwrap();
                "single 1".to_string()
            })
        })
    };
    started.recv().unwrap();
    let batch = {
        let region = region.clone();
        thread::spawn(move || {
            region.try_get_with_many(&[1, 2], |keys| {
                assert_eq!(keys, [2], "1 is being created elsewhere");
                names(keys)
            })
        })
    };
    thread::sleep(Duration::from_millis(50));
    finish.send(()).unwrap();
    assert_eq!(single.join().unwrap(), "single 1");
    assert_eq!(batch.join().unwrap().unwrap(), ["single 1", "new 2"]);
}

#[test]
fn an_expired_key_being_regenerated_elsewhere_is_served_stale() {
    let clock = clock();
    let region = region(&clock);
    region.insert(&1, "old 1".into()).unwrap();
    clock.advance(MINUTE * 2);
    let (started_tx, started) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let single = {
        let region = region.clone();
        thread::spawn(move || {
            region.get_with(&1, move || {
                started_tx.send(()).unwrap();
                finish_rx.recv().unwrap();
                "single 1".to_string()
            })
        })
    };
    started.recv().unwrap();
    let values = region.try_get_with_many(&[1, 2], names).unwrap();
    assert_eq!(values, ["old 1", "new 2"]);
    finish.send(()).unwrap();
    single.join().unwrap();
}

#[test]
fn batches_over_the_same_keys_in_any_order_never_deadlock() {
    // Were the batches to deadlock, the lock timeout would end the wait (and a key would be
    // created twice): the test is bounded, and fails.
    let region: Region<u32, String> = Region::builder()
        .lock_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let created = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(8));
    let batches: Vec<_> = (0..8u32)
        .map(|t| {
            let (region, created, barrier) = (region.clone(), created.clone(), barrier.clone());
            thread::spawn(move || {
                // Each thread asks for the same 20 keys in its own order.
                let mut keys: Vec<u32> = (0..20).collect();
                keys.rotate_left(t as usize * 3 % 20);
                if t % 2 == 1 {
                    keys.reverse();
                }
                barrier.wait();
                region
                    .try_get_with_many(&keys, |asked| {
                        created.lock().unwrap().extend_from_slice(asked);
                        thread::sleep(Duration::from_millis(5));
                        names(asked)
                    })
                    .unwrap()
                    .into_iter()
                    .zip(keys)
                    .for_each(|(value, key)| assert_eq!(value, format!("new {key}")));
            })
        })
        .collect();
    for batch in batches {
        batch.join().unwrap();
    }
    let mut created = created.lock().unwrap().clone();
    created.sort_unstable();
    assert_eq!(
        created,
        (0..20).collect::<Vec<_>>(),
        "each key created once"
    );
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn a_creator_returning_the_wrong_number_of_values_is_an_error() {
    let region = region(&clock());
    let err = region
        .try_get_with_many(&[1, 2], |_| Ok::<_, Infallible>(vec!["one".to_string()]))
        .unwrap_err();
    assert!(matches!(
        err,
        RegionError::Batch {
            asked: 2,
            returned: 1
        }
    ));
    assert!(region.is_empty(), "nothing stored");
    assert_eq!(region.mutexes_in_use(), 0);
}

#[test]
fn a_failing_creator_fails_the_batch_unless_stale_values_cover_it() {
    let clock = clock();
    let strict = region(&clock);
    let err = strict
        .try_get_with_many(&[1, 2], |_| Err::<Vec<String>, _>("down"))
        .unwrap_err();
    assert!(matches!(err, RegionError::Creator(e) if *e == "down"));
    assert_eq!(strict.mutexes_in_use(), 0);

    let lenient: Region<u32, String> = Region::builder()
        .expiry(MINUTE)
        .stale_if_error(MINUTE * 10)
        .clock(clock.clone())
        .build()
        .unwrap();
    lenient.insert(&1, "old 1".into()).unwrap();
    lenient.insert(&2, "old 2".into()).unwrap();
    clock.advance(MINUTE * 2);
    let values = lenient
        .try_get_with_many(&[1, 2], |_| Err::<Vec<String>, _>("down"))
        .unwrap();
    assert_eq!(values, ["old 1", "old 2"]);
    assert_eq!(lenient.statistics().stale_on_error, 2);
}

#[cfg(feature = "tokio")]
#[test]
fn async_batches_follow_the_same_rules() {
    let clock = clock();
    let region = region(&clock).to_async();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            region.insert(&1, "old 1".into()).await.unwrap();
            clock.advance(MINUTE * 2);
            let created = Arc::new(Mutex::new(Vec::new()));
            let tasks: Vec<_> = (0..8u32)
                .map(|t| {
                    let (region, created) = (region.clone(), created.clone());
                    tokio::spawn(async move {
                        let mut keys: Vec<u32> = (1..=10).collect();
                        keys.rotate_left(t as usize);
                        let values = region
                            .try_get_with_many(&keys, |asked| {
                                created.lock().unwrap().extend_from_slice(asked);
                                let values = names(asked);
                                async move {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                    values
                                }
                            })
                            .await
                            .unwrap();
                        for (value, key) in values.into_iter().zip(keys) {
                            assert!(
                                value == format!("new {key}") || value == "old 1",
                                "{key}: {value}"
                            );
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let mut created = created.lock().unwrap().clone();
            created.sort_unstable();
            assert_eq!(
                created,
                (1..=10).collect::<Vec<_>>(),
                "each key created once"
            );
        });
}
