//! A region is read by a borrowed form of its key (a `&str` for a `String` key), as moka's
//! `get_with_by_ref` and `HashMap::get` do: a hit allocates nothing, a miss makes the owned key
//! once. Every keyed verb takes it, blocking and async. One test binary of its own: it counts
//! the process's allocations, one test at a time.

use std::alloc::System;
use std::sync::{Arc, Mutex, MutexGuard};

use dogpile_runtime::region::Served;
use dogpile_runtime::Region;
use stats_alloc::{Region as Allocations, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Held by each test for its whole run: the counts are the process's, so a test running beside
/// another would count its allocations too.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A miss by a `String` key in a full bounded region makes the owned key once from the `&str`,
/// the store its two copies (the policy's, and the map's entry with its key), and the key's
/// mutex's registry none: it copies the key into the buffer of one it let go (five allocations
/// a miss before it did).
#[test]
fn a_miss_by_a_string_key_allocates_four_times_in_a_full_store() {
    let _alone = alone();
    let region: Region<String, u64> = Region::builder().capacity(1_000).build().unwrap();
    let keys: Vec<String> = (0..20_000u64).map(|k| format!("user/{k:08}")).collect();
    for key in &keys[..10_000] {
        region.get_with(key.as_str(), || 1);
    }
    let misses = allocations_in(|| {
        for (n, key) in keys[10_000..].iter().enumerate() {
            assert_eq!(region.get_with(key.as_str(), || n as u64), n as u64);
        }
    });
    let per_miss = misses as f64 / 10_000.0;
    // The map's own upkeep (its reclamation batches) and the registry's fresh copy of every
    // 65th key (a buffer is handed on at most 64 times) add a few hundredths.
    assert!(per_miss < 4.2, "{per_miss:.2} allocations a miss");
    // Every key kept is found under its own name.
    assert_eq!(region.peek(keys[19_999].as_str()), Some(9_999));
    assert_eq!(region.peek(keys[5].as_str()), None);
}

/// A 10 MB key does not leave its buffer behind for the short keys after it: the registry hands
/// an identifier's buffer on at most 64 times, and the store copies no key into an evicted
/// one's buffer, so once the long key is evicted, its memory is given back.
#[test]
fn a_long_key_leaves_no_buffer_behind_for_the_short_keys_after_it() {
    let _alone = alone();
    let region: Region<String, u64> = Region::builder().capacity(100).build().unwrap();
    for n in 0..1_000u64 {
        region.get_with(format!("warm/{n:08}").as_str(), || n);
    }
    let long = "k".repeat(10 << 20);
    let counted = Allocations::new(GLOBAL);
    assert_eq!(region.get_with(long.as_str(), || 7), 7);
    for n in 0..1_000u64 {
        region.get_with(format!("user/{n:08}").as_str(), || n);
    }
    assert_eq!(region.peek(long.as_str()), None, "evicted");
    // Evicted entries are freed by the next eviction after a tick of the coarse clock.
    std::thread::sleep(std::time::Duration::from_millis(50));
    region.get_with("one more", || 0);
    let change = counted.change();
    let kept = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    assert!(kept < 1 << 20, "{kept} bytes kept after the long key left");
}

fn allocations_in(f: impl FnOnce()) -> usize {
    let counted = Allocations::new(GLOBAL);
    f();
    counted.change().allocations
}

/// The fewest allocations of three runs of `f`. The counts are the process's, and the test
/// harness's own thread allocates beside a test now and then (it spawns the thread of the next
/// test, waiting for [`alone`], while this one runs: three allocations, seen once in CI); an
/// allocation of `f`'s own is in every run.
fn fewest_allocations_in(mut f: impl FnMut()) -> usize {
    (0..3).map(|_| allocations_in(&mut f)).min().unwrap_or(0)
}

#[test]
fn a_string_keyed_region_is_read_with_a_str_and_a_hit_allocates_nothing() {
    let _alone = alone();
    let region: Region<String, Arc<str>> = Region::builder().build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let from_async = region.to_async();

    // A miss by `&str`: the owned key is made to store the value.
    assert_eq!(&*region.get_with("eur/usd", || Arc::from("1.08")), "1.08");
    assert_eq!(region.peek("eur/usd").as_deref(), Some("1.08"));
    // Warm the thread's counters and the map's guard before counting.
    region.get_with("eur/usd", || unreachable!());
    runtime.block_on(from_async.get_with("eur/usd", || async { unreachable!() }));

    let hits = fewest_allocations_in(|| {
        for _ in 0..1000 {
            assert_eq!(&*region.get_with("eur/usd", || unreachable!()), "1.08");
            let (value, served) = region
                .try_get_with_served("eur/usd", || Err::<Arc<str>, ()>(()))
                .unwrap();
            assert_eq!((&*value, served), ("1.08", Served::Fresh));
        }
    });
    assert_eq!(hits, 0, "blocking hits allocated");
    let async_hits = fewest_allocations_in(|| {
        runtime.block_on(async {
            for _ in 0..1000 {
                let value = from_async
                    .get_with("eur/usd", || async { unreachable!() })
                    .await;
                assert_eq!(&*value, "1.08");
            }
        })
    });
    // The runtime's `block_on` allocates once to enter; the hits, nothing.
    assert!(async_hits <= 2, "async hits allocated {async_hits} times");

    // Every keyed verb takes the borrowed form.
    region.insert("gbp/usd", Arc::from("1.27")).unwrap();
    assert_eq!(
        region
            .refresh("gbp/usd", || Ok::<_, ()>(Arc::from("1.28")))
            .unwrap()
            .as_ref(),
        "1.28"
    );
    assert_eq!(
        region.optionally_get_with("gbp/usd", || None).as_deref(),
        Some("1.28")
    );
    assert_eq!(
        region
            .background()
            .get_with("gbp/usd", || Arc::from("x"))
            .as_ref(),
        "1.28"
    );
    runtime.block_on(async {
        from_async
            .insert("chf/usd", Arc::from("1.13"))
            .await
            .unwrap();
        assert_eq!(from_async.peek("chf/usd").await.as_deref(), Some("1.13"));
        let value = from_async
            .background()
            .get_with("chf/usd", || async { Arc::from("x") })
            .await;
        assert_eq!(&*value, "1.13");
        from_async.soft_invalidate("chf/usd").await.unwrap();
        from_async.invalidate("chf/usd").await.unwrap();
        assert_eq!(from_async.peek("chf/usd").await, None);
    });
}
