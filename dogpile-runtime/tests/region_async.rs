//! The region from async code under tokio: bursts, stale serving without waiting, cancellation,
//! panics, current-thread runtimes, and sync and async callers sharing one creator.
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dogpile_runtime::clock::{ManualClock, Timestamp};
use dogpile_runtime::{Region, RegionError};
use tokio::time::{sleep, timeout, Instant};

/// Every test must end well within this.
const BOUND: Duration = Duration::from_secs(20);

fn manual() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000_000)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_on_a_missing_key_run_one_creator() {
    let region: Region<&str, u64> = Region::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (region, calls) = (region.clone(), calls.clone());
            tokio::spawn(async move {
                region
                    .to_async()
                    .get_with(&"k", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            })
        })
        .collect();
    timeout(BOUND, async {
        for task in tasks {
            assert_eq!(task.await.unwrap(), 42);
        }
    })
    .await
    .expect("the burst hung");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = region.statistics();
    assert_eq!(stats.misses, 1000);
    assert_eq!(stats.regenerations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_served_stale_without_waiting() {
    let clock = manual();
    let region: Region<u8, u64> = Region::builder()
        .expiry(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(Duration::from_secs(61));
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (region, calls) = (region.clone(), calls.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let mut created = false;
                let value = region
                    .to_async()
                    .get_with(&1, || async {
                        created = true;
                        calls.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(200)).await;
                        2
                    })
                    .await;
                (value, created, start.elapsed())
            })
        })
        .collect();
    let mut slowest_other = Duration::ZERO;
    for task in tasks {
        let (value, created, took) = timeout(BOUND, task).await.unwrap().unwrap();
        if created {
            assert_eq!(value, 2);
        } else {
            assert!(value == 1 || value == 2);
            slowest_other = slowest_other.max(took);
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        slowest_other < Duration::from_millis(5),
        "a task waited {slowest_other:?}"
    );
    assert!(region.statistics().stale_hits > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_creator_releases_the_key_and_stores_nothing() {
    let region: Region<u8, u64> = Region::builder().build().unwrap();
    let cancelled = timeout(
        Duration::from_millis(50),
        region.to_async().get_with(&1, || async {
            sleep(Duration::from_secs(3600)).await;
            1
        }),
    )
    .await;
    assert!(cancelled.is_err(), "the creator should have been cut off");
    assert_eq!(region.peek(&1), None);
    assert_eq!(region.mutexes_in_use(), 0);
    let next = timeout(BOUND, region.to_async().get_with(&1, || async { 2 }))
        .await
        .expect("the next caller hung on a mutex left behind");
    assert_eq!(next, 2);
    assert_eq!(
        region.statistics().panics,
        0,
        "a cancellation is not a panic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_becomes_the_creator_when_the_creator_is_cancelled() {
    let region: Region<u8, u64> = Region::builder().build().unwrap();
    let first = {
        let region = region.clone();
        tokio::spawn(async move {
            region
                .to_async()
                .get_with(&1, || async {
                    sleep(Duration::from_secs(3600)).await;
                    1
                })
                .await
        })
    };
    sleep(Duration::from_millis(30)).await;
    let second = {
        let region = region.clone();
        tokio::spawn(async move { region.to_async().get_with(&1, || async { 2 }).await })
    };
    sleep(Duration::from_millis(30)).await;
    first.abort();
    assert_eq!(timeout(BOUND, second).await.unwrap().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_creator_poisons_nothing() {
    let region: Region<u8, u64> = Region::builder().build().unwrap();
    let panicked = {
        let region = region.clone();
        tokio::spawn(async move {
            region
                .to_async()
                .get_with(&1, || async { panic!("creator failed") })
                .await
        })
    };
    assert!(panicked.await.unwrap_err().is_panic());
    assert_eq!(region.to_async().get_with(&1, || async { 3 }).await, 3);
    assert_eq!(region.statistics().panics, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_does_not_deadlock_while_the_creator_awaits() {
    let region: Region<u8, u64> = Region::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (region, calls) = (region.clone(), calls.clone());
            tokio::spawn(async move {
                region
                    .to_async()
                    .get_with(&1, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(20)).await;
                        7
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(timeout(BOUND, task).await.unwrap().unwrap(), 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_callers_share_one_creator() {
    let region: Region<u8, u64> = Region::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let creator_calls = calls.clone();
    let creating = {
        let region = region.clone();
        tokio::spawn(async move {
            region
                .to_async()
                .get_with(&1, || async {
                    creator_calls.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(100)).await;
                    5
                })
                .await
        })
    };
    sleep(Duration::from_millis(20)).await;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (region, calls) = (region.clone(), calls.clone());
            std::thread::spawn(move || {
                region.get_with(&1, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    6
                })
            })
        })
        .collect();
    assert_eq!(creating.await.unwrap(), 5);
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 5);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // And the other way round: a sync creator, async waiters.
    let region: Region<u8, u64> = Region::builder().build().unwrap();
    let sync_creator = {
        let region = region.clone();
        std::thread::spawn(move || {
            region.get_with(&1, || {
                std::thread::sleep(Duration::from_millis(100));
                8
            })
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let waited = timeout(BOUND, region.to_async().get_with(&1, || async { 9 }))
        .await
        .unwrap();
    assert_eq!(waited, 8);
    assert_eq!(sync_creator.join().unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_creator_asking_for_its_own_key_fails_instead_of_hanging() {
    let region: Region<u8, u64> = Region::builder().name("loops").build().unwrap();
    let inner = region.clone();
    let result = timeout(
        BOUND,
        region.to_async().try_get_with(&1, || async move {
            inner
                .to_async()
                .try_get_with(&1, || async { Ok::<_, String>(1) })
                .await
                .map_err(|e| e.to_string())
        }),
    )
    .await
    .expect("recursion hung");
    let Err(RegionError::Creator(message)) = result else {
        panic!("expected the recursion error")
    };
    assert!(message.contains("key 1"), "{message}");
    assert!(message.contains("loops"), "{message}");
}

/// A creator's marks follow its task, not its thread: one that awaits (and resumes on either
/// of two workers, among busy tasks) and then asks for its own key fails, every time; the
/// tasks polled on those threads meanwhile, waiting for the same keys, are not taken for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_that_awaits_then_asks_for_its_own_key_fails_wherever_it_resumes() {
    let region: Region<u8, u64> = Region::builder().name("moves").build().unwrap();
    let busy: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async {
                for _ in 0..2_000 {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let (mut creators, mut waiters) = (Vec::new(), Vec::new());
    for key in 0..20u8 {
        // The creator runs in a task of its own, which either worker may poll.
        let (outer, inner) = (region.clone(), region.clone());
        creators.push(tokio::spawn(async move {
            let outer = outer.to_async();
            let made = outer.try_get_with(&key, || async move {
                let before = std::thread::current().id();
                for _ in 0..3 {
                    sleep(Duration::from_millis(1)).await;
                    tokio::task::yield_now().await;
                }
                let after = std::thread::current().id();
                let asked = inner
                    .to_async()
                    .try_get_with(&key, || async { Ok::<_, String>(1) })
                    .await;
                Err::<u64, _>((before != after, asked.is_err()))
            });
            match made.await {
                Err(RegionError::Creator(outcome)) => *outcome,
                other => panic!("key {key}: the creator's error, not {other:?}"),
            }
        }));
        // Another task waiting for the key meanwhile: it waits, then makes the value itself.
        let region = region.clone();
        waiters.push(tokio::spawn(async move {
            sleep(Duration::from_millis(1)).await;
            region.to_async().get_with(&key, || async { 2 }).await
        }));
    }
    let mut moved = 0;
    for (key, creator) in creators.into_iter().enumerate() {
        let (resumed_elsewhere, refused) = timeout(BOUND, creator).await.expect("hung").unwrap();
        assert!(refused, "key {key}: a creator was let wait for its own key");
        moved += usize::from(resumed_elsewhere);
    }
    for waiter in waiters {
        assert_eq!(timeout(BOUND, waiter).await.unwrap().unwrap(), 2);
    }
    for task in busy {
        task.await.unwrap();
    }
    eprintln!("{moved} of 20 creators resumed on the other thread");
}

/// A creator asking for its own key through the other colour of call fails as it does through
/// its own: an async creator calling the blocking verb, and a blocking creator awaiting the
/// async one on a runtime of its own. Both waited on themselves for good before. Each runs on
/// a thread of its own, so that a wait on itself fails the test instead of hanging it.
#[test]
fn a_creator_asking_for_its_own_key_through_the_other_colour_fails() {
    fn within_bound<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sent.send(f());
        });
        received
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("{what} waited on itself"))
    }
    let region: Region<u8, u64> = Region::builder().name("colours").build().unwrap();

    let (outer, inner) = (region.clone(), region.clone());
    let made = within_bound("an async creator calling the blocking verb", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(outer.to_async().try_get_with(&1, || async move {
            inner
                .try_get_with(&1, || Ok::<_, String>(1))
                .map_err(|e| e.to_string())
        }))
    });
    let Err(RegionError::Creator(message)) = made else {
        panic!("expected the recursion error, got {made:?}")
    };
    assert!(message.contains("key 1"), "{message}");

    let (outer, inner) = (region.clone(), region.clone());
    let made = within_bound("a blocking creator awaiting the async verb", move || {
        outer.try_get_with(&2, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime
                .block_on(
                    inner
                        .to_async()
                        .try_get_with(&2, || async { Ok::<_, String>(2) }),
                )
                .map_err(|e| e.to_string())
        })
    });
    let Err(RegionError::Creator(message)) = made else {
        panic!("expected the recursion error, got {made:?}")
    };
    assert!(message.contains("key 2"), "{message}");
    assert_eq!(region.get_with(&1, || 7), 7);
    assert_eq!(region.mutexes_in_use(), 0);
}

/// Creators that call the next key, eight deep (past the four marks a task keeps without
/// allocating), the last asking for the sixth: an error, not a wait on itself; and the chain's
/// keys are all free again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_eight_keys_deep_asking_for_a_key_it_holds_fails_instead_of_hanging() {
    fn chain(
        region: Region<u8, u64>,
        key: u8,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send>> {
        Box::pin(async move {
            let inner = region.clone();
            region
                .to_async()
                .try_get_with(&key, || async move {
                    let next = if key == 7 { 5 } else { key + 1 };
                    chain(inner, next).await
                })
                .await
                .map_err(|e| match e {
                    // The inner creator's own message, passed up the chain.
                    RegionError::Creator(message) => (*message).clone(),
                    other => other.to_string(),
                })
        })
    }
    let region: Region<u8, u64> = Region::builder().name("chain").build().unwrap();
    let result = timeout(BOUND, chain(region.clone(), 0))
        .await
        .expect("a creator waited on its own key");
    let message = result.expect_err("the eighth creator asked for the sixth key");
    assert!(message.contains("key 5"), "{message}");
    assert_eq!(region.mutexes_in_use(), 0);
    // Nothing was stored, and every key can be made again.
    for key in 0..8u8 {
        let made = timeout(BOUND, region.to_async().get_with(&key, || async move { 7 }))
            .await
            .expect("a key stayed held");
        assert_eq!(made, 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_regeneration_is_a_spawned_task() {
    let clock = manual();
    let region: Region<u8, u64> = Region::builder()
        .expiry(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    region.insert(&1, 1).unwrap();
    clock.advance(Duration::from_secs(61));
    let start = Instant::now();
    let value = region
        .to_async()
        .background()
        .try_get_with(&1, || async {
            sleep(Duration::from_millis(100)).await;
            Ok::<_, ()>(2)
        })
        .await
        .unwrap();
    assert_eq!(value, 1, "the winner returns the stale value");
    assert!(start.elapsed() < Duration::from_millis(50));
    assert_eq!(region.statistics().stale_hits, 1);
    let deadline = Instant::now() + BOUND;
    while region.peek(&1) != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the spawned creator never stored"
        );
        sleep(Duration::from_millis(5)).await;
    }
    // The mutex was released when the spawned creator finished.
    let deadline = Instant::now() + BOUND;
    while region.mutexes_in_use() != 0 {
        assert!(Instant::now() < deadline, "the mutex stayed held");
        sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_past_the_lock_timeout_creates_the_value_itself() {
    let region: Region<u8, u64> = Region::builder()
        .lock_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let slow = {
        let region = region.clone();
        tokio::spawn(async move {
            region
                .to_async()
                .get_with(&1, || async {
                    sleep(Duration::from_secs(2)).await;
                    1
                })
                .await
        })
    };
    sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    assert_eq!(region.to_async().get_with(&1, || async { 2 }).await, 2);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(region.statistics().lock_timeouts, 1);
    slow.abort();
}

#[test]
fn the_async_calls_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let region: Region<String, Arc<str>> = Region::builder().build().unwrap();
    let key = "k".to_string();
    assert_send(
        &region
            .to_async()
            .get_with(&key, || async { Arc::from("v") }),
    );
    assert_send(
        &region
            .to_async()
            .try_get_with(&key, || async { Ok::<_, String>(Arc::from("v")) }),
    );
    assert_send(
        &region
            .to_async()
            .refresh(&key, || async { Ok::<_, String>(Arc::from("v")) }),
    );
}
