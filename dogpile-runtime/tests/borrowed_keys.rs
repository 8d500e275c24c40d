//! A region is read by a borrowed form of its key (a `&str` for a `String` key), as moka's
//! `get_with_by_ref` and `HashMap::get` do: a hit allocates nothing, a miss makes the owned key
//! once. Every keyed verb takes it, blocking and async. One test binary of its own: it counts
//! the process's allocations.

use std::alloc::System;
use std::sync::Arc;

use dogpile_runtime::region::Served;
use dogpile_runtime::Region;
use stats_alloc::{Region as Allocations, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations_in(f: impl FnOnce()) -> usize {
    let counted = Allocations::new(GLOBAL);
    f();
    counted.change().allocations
}

#[test]
fn a_string_keyed_region_is_read_with_a_str_and_a_hit_allocates_nothing() {
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

    let hits = allocations_in(|| {
        for _ in 0..1000 {
            assert_eq!(&*region.get_with("eur/usd", || unreachable!()), "1.08");
            let (value, served) = region
                .try_get_with_served("eur/usd", || Err::<Arc<str>, ()>(()))
                .unwrap();
            assert_eq!((&*value, served), ("1.08", Served::Fresh));
        }
    });
    assert_eq!(hits, 0, "blocking hits allocated");
    let async_hits = allocations_in(|| {
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
