//! The lifecycle of DESIGN.md §2 through the engine's public API, with a
//! frozen clock: no test here sleeps to make time pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use restflow_cache::{
    Cache, Clock, Computed, Engine, GetError, Lifetime, MemoryStore, Refresher, Span, Status,
    Store, Timestamp,
};

type TestEngine = Engine<u64, String, MemoryStore<u64>>;

const START: i64 = 1_800_000_000_000_000;

fn engine() -> Arc<TestEngine> {
    let cache = Cache::new(
        MemoryStore::new(1_000),
        Clock::frozen(Timestamp::from_micros(START)),
    );
    Arc::new(Engine::new(cache, Refresher::new(2, 64)))
}

fn lifetime(ttl: i64, stale: i64) -> Option<Lifetime> {
    Some(Lifetime::new(Span::from_secs(ttl), Span::from_secs(stale)))
}

fn get(engine: &TestEngine, key: &[u8], value: u64, calls: &AtomicUsize) -> (u64, Status) {
    let served = engine
        .get(
            key,
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(Computed {
                    value,
                    lifetime: lifetime(300, 60),
                })
            },
            |waiter| waiter.wait(),
        )
        .unwrap();
    (*served.entry.value(), served.status)
}

#[test]
fn fresh_then_stale_then_refreshed_then_expired() {
    let engine = engine();
    let calls = AtomicUsize::new(0);
    assert_eq!(get(&engine, b"k", 1, &calls), (1, Status::Miss));
    assert_eq!(get(&engine, b"k", 2, &calls), (1, Status::Hit));
    let first = engine.cache().peek(b"k").unwrap().0;
    assert_eq!(first.stamps().cached_at, Timestamp::from_micros(START));
    assert_eq!(
        first.stamps().fresh_until,
        Some(Timestamp::from_micros(START + 300_000_000))
    );

    // One microsecond before the ttl ends: still fresh.
    engine
        .cache()
        .clock()
        .advance(Span::from_micros(299_999_999));
    assert_eq!(get(&engine, b"k", 2, &calls), (1, Status::Hit));

    // At the ttl: stale, served at once, and one refresh claimed.
    engine.cache().clock().advance(Span::from_micros(1));
    let served = engine
        .get(
            b"k",
            || unreachable!("a stale read never computes inline"),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!((*served.entry.value(), served.status), (1, Status::Stale));
    assert!(served.refresh_claimed);
    let again = engine.get(b"k", || unreachable!(), |w| w.wait()).unwrap();
    assert!(!again.refresh_claimed, "only one reader refreshes");

    engine.schedule_refresh(b"k", served.entry.clone(), || {
        Ok(Computed {
            value: 2,
            lifetime: lifetime(300, 60),
        })
    });
    assert!(engine.refresher().wait_idle(Duration::from_secs(10)));
    assert_eq!(get(&engine, b"k", 3, &calls), (2, Status::Hit));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Past the refreshed entry's ttl and stale window: a miss.
    engine.cache().clock().advance(Span::from_secs(360));
    assert_eq!(get(&engine, b"k", 3, &calls), (3, Status::Miss));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_failed_refresh_keeps_the_stale_entry_and_frees_the_claim() {
    let engine = engine();
    let calls = AtomicUsize::new(0);
    get(&engine, b"k", 1, &calls);
    engine.cache().clock().advance(Span::from_secs(300));
    let served = engine.get(b"k", || unreachable!(), |w| w.wait()).unwrap();
    assert!(served.refresh_claimed);
    engine.schedule_refresh(b"k", served.entry.clone(), || {
        Err("backend down".to_string())
    });
    assert!(engine.refresher().wait_idle(Duration::from_secs(10)));
    let after = engine.get(b"k", || unreachable!(), |w| w.wait()).unwrap();
    assert_eq!((*after.entry.value(), after.status), (1, Status::Stale));
    assert!(after.refresh_claimed, "the next stale read may try again");
}

#[test]
fn exceptions_are_never_cached_and_reach_the_caller() {
    let engine = engine();
    let result = engine.get(b"k", || Err("boom".to_string()), |w| w.wait());
    assert_eq!(result.unwrap_err(), GetError::Compute("boom".to_string()));
    assert!(engine.cache().store().is_empty());
    let calls = AtomicUsize::new(0);
    assert_eq!(get(&engine, b"k", 5, &calls), (5, Status::Miss));
}

#[test]
fn a_value_the_policy_turns_away_is_served_but_not_stored() {
    let engine = engine();
    let served = engine
        .get(
            b"k",
            || {
                Ok(Computed {
                    value: 9,
                    lifetime: None,
                })
            },
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(
        (*served.entry.value(), served.status, served.stored),
        (9, Status::Miss, false)
    );
    assert!(engine.cache().store().is_empty());
}

#[test]
fn refresh_replaces_and_never_expiring_entries_stay_fresh() {
    let engine = engine();
    let forever = || {
        Ok(Computed {
            value: 1,
            lifetime: Some(Lifetime::FOREVER),
        })
    };
    engine.get(b"k", forever, |w| w.wait()).unwrap();
    engine
        .cache()
        .clock()
        .advance(Span::from_secs(10 * 365 * 24 * 3600));
    let hit = engine.get(b"k", || unreachable!(), |w| w.wait()).unwrap();
    assert_eq!(hit.status, Status::Hit);
    let refreshed = engine
        .refresh(b"k", || {
            Ok::<_, String>(Computed {
                value: 2,
                lifetime: lifetime(1, 0),
            })
        })
        .unwrap();
    assert_eq!(
        (*refreshed.entry.value(), refreshed.status),
        (2, Status::Refresh)
    );
    // A refresh whose value is turned away removes the old entry.
    engine
        .refresh(b"k", || {
            Ok::<_, String>(Computed {
                value: 3,
                lifetime: None,
            })
        })
        .unwrap();
    assert!(engine.cache().peek(b"k").is_none());
}

/// Returns once `followers` callers follow the computation of `key`: what
/// a leader waits for before it finishes, so none of them comes late.
fn every_other_caller_follows(engine: &TestEngine, key: &[u8], followers: usize) {
    while engine.waiters(key) < followers {
        thread::yield_now();
    }
}

#[test]
fn concurrent_misses_compute_once_and_share_the_value() {
    let engine = engine();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (engine, calls, barrier) = (engine.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let served = engine
                    .get(
                        b"cold",
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            every_other_caller_follows(&engine, b"cold", 31);
                            Ok(Computed {
                                value: 7,
                                lifetime: lifetime(300, 0),
                            })
                        },
                        |w| w.wait(),
                    )
                    .unwrap();
                (*served.entry.value(), served.status)
            })
        })
        .collect();
    for handle in handles {
        let (value, status) = handle.join().unwrap();
        assert_eq!(value, 7);
        // Followers report the leader's MISS.
        assert_eq!(status, Status::Miss);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn concurrent_misses_share_one_error() {
    let engine = engine();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (engine, calls, barrier) = (engine.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                engine
                    .get(
                        b"cold",
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            every_other_caller_follows(&engine, b"cold", 31);
                            Err::<Computed<u64>, _>("boom".to_string())
                        },
                        |w| w.wait(),
                    )
                    .map(|s| *s.entry.value())
            })
        })
        .collect();
    let errors = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|r| *r == Err(GetError::Compute("boom".to_string())))
        .count();
    // The leader fails only once the 31 others follow it: all share it.
    assert_eq!(errors, 32);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(engine.cache().store().is_empty());
}

#[test]
fn a_computation_that_needs_its_own_key_is_refused() {
    let engine = engine();
    let inner = engine.clone();
    let result = engine.get(
        b"k",
        || {
            let nested = inner.get(b"k", || unreachable!(), |w| w.wait());
            assert_eq!(nested.unwrap_err(), GetError::Recursive);
            Ok(Computed {
                value: 1,
                lifetime: lifetime(1, 0),
            })
        },
        |w| w.wait(),
    );
    assert_eq!(result.unwrap().status, Status::Miss);
}

#[test]
fn early_refresh_serves_a_hit_and_refreshes_with_the_measured_delta() {
    // Seeded draws and a beta so large every draw passes: the read is
    // exact whatever the seed.
    let cache = Cache::new(
        MemoryStore::new(1_000),
        Clock::frozen(Timestamp::from_micros(START)),
    )
    .with_dice(Arc::new(restflow_cache::Dice::seeded(7)));
    let engine: Arc<TestEngine> = Arc::new(Engine::new(cache, Refresher::new(1, 8)));
    let early = Lifetime::new(Span::from_secs(300), Span::ZERO)
        .refreshing_early(restflow_cache::Beta::new(1e9).unwrap());
    let compute = |value: u64| {
        let engine = Arc::clone(&engine);
        move || {
            // The computation takes 2 s on the engine's clock.
            engine.cache().clock().advance(Span::from_secs(2));
            Ok::<_, String>(Computed {
                value,
                lifetime: Some(early),
            })
        }
    };
    let first = engine.get(b"k", compute(1), |w| w.wait()).unwrap();
    assert_eq!(first.status, Status::Miss);
    let delta = first.entry.stamps().early.unwrap().delta;
    assert_eq!(delta, Span::from_secs(2));

    let hit = engine.get(b"k", compute(2), |w| w.wait()).unwrap();
    assert_eq!((*hit.entry.value(), hit.status), (1, Status::Hit));
    assert!(
        hit.refresh_claimed,
        "the draw passed: this reader refreshes"
    );
    // A second reader finds the claim taken: a plain hit.
    let again = engine.get(b"k", compute(3), |w| w.wait()).unwrap();
    assert_eq!((again.status, again.refresh_claimed), (Status::Hit, false));

    engine.schedule_refresh(b"k", Arc::clone(&hit.entry), compute(2));
    assert!(
        engine.refresher().wait_idle(Duration::from_secs(30)),
        "hang guard"
    );
    let (entry, _) = engine.cache().peek(b"k").unwrap();
    assert_eq!(*entry.value(), 2);
    assert_eq!(entry.stamps().early.unwrap().delta, Span::from_secs(2));
}

/// The lifecycle in steps, as a caller that cannot block drives it (an
/// event loop's task): a leader's token, a follower's callback, a
/// hand-over when the leader is dropped, and the waiter count.
#[test]
fn a_task_leads_in_steps_and_an_abandoned_flight_hands_over() {
    use restflow_cache::{follow, Owner, Start};

    let engine = engine();
    let Ok(Start::Lead(first)) = engine.start(b"k", None, Owner::task(1), false) else {
        panic!("the first caller leads")
    };
    let Ok(Start::Follow(waiter)) = engine.start(b"k", None, Owner::task(2), false) else {
        panic!("the second follows")
    };
    assert_eq!(engine.waiters(b"k"), 1);
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    let registered = waiter.on_finish(Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(registered.is_ok(), "the leader runs on");
    assert!(matches!(
        engine.start(b"k", None, Owner::task(1), false),
        Err(GetError::Recursive)
    ));

    drop(first); // its task was cancelled
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    assert!(follow(waiter.outcome().unwrap()).is_none(), "abandoned");
    drop(waiter);
    let Ok(Start::Lead(second)) = engine.start(b"k", None, Owner::task(2), true) else {
        panic!("the follower takes over")
    };
    let served = second
        .complete(Ok(Computed {
            value: 7,
            lifetime: lifetime(300, 60),
        }))
        .unwrap();
    assert_eq!((*served.entry.value(), served.status), (7, Status::Miss));
    // Another follower of the abandoned leader, waking after the takeover
    // stored: served what it waited for, as MISS.
    let Ok(Start::Served(late)) = engine.start(b"k", None, Owner::task(3), true) else {
        panic!("served what the takeover stored")
    };
    assert_eq!((*late.entry.value(), late.status), (7, Status::Miss));
    assert_eq!(engine.waiters(b"k"), 0);
}

#[test]
fn a_dropped_refresh_claim_is_given_back_and_a_completed_one_stores() {
    let engine = engine();
    let calls = AtomicUsize::new(0);
    get(&engine, b"k", 1, &calls);
    engine.cache().clock().advance(Span::from_secs(300));
    let claimed = || match engine.cache().lookup(b"k") {
        restflow_cache::Lookup::Stale { entry, refresh } => refresh.then_some(entry),
        _ => panic!("stale"),
    };
    let entry = claimed().expect("the first stale read claims");
    assert!(claimed().is_none(), "one claim at a time");
    drop(engine.claim_refresh(b"k", entry)); // the refresh was cancelled
    let entry = claimed().expect("given back: claimed again");
    let served = engine.claim_refresh(b"k", entry).complete(Computed {
        value: 2,
        lifetime: lifetime(300, 60),
    });
    assert_eq!(served.status, Status::Refresh);
    assert_eq!(get(&engine, b"k", 3, &calls), (2, Status::Hit));
}

#[test]
fn a_delete_fences_the_leader_under_way_its_followers_still_get_the_value() {
    use restflow_cache::{follow, Owner, Start};

    let engine = engine();
    let Ok(Start::Lead(lead)) = engine.start(b"k", None, Owner::task(1), false) else {
        panic!("the first caller leads")
    };
    let Ok(Start::Follow(waiter)) = engine.start(b"k", None, Owner::task(2), false) else {
        panic!("the second follows")
    };
    assert!(engine.delete(b"k").is_none(), "nothing stored yet");
    let served = lead
        .complete(Ok(Computed {
            value: 1,
            lifetime: lifetime(300, 60),
        }))
        .unwrap();
    assert_eq!((*served.entry.value(), served.status), (1, Status::Miss));
    assert!(!served.stored, "computed before the delete: not stored");
    let followed = follow(waiter.outcome().unwrap()).unwrap().unwrap();
    assert_eq!(
        (*followed.entry.value(), followed.status),
        (1, Status::Miss)
    );
    assert!(!followed.stored);
    drop(waiter);
    assert!(engine.cache().peek(b"k").is_none());
    assert_eq!(engine.fences().keys(), 0, "no computation under way");
    // The next caller computes again, and stores.
    let calls = AtomicUsize::new(0);
    assert_eq!(get(&engine, b"k", 2, &calls), (2, Status::Miss));
    assert_eq!(get(&engine, b"k", 3, &calls), (2, Status::Hit));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_delete_fences_a_refresh_under_way_but_not_one_claimed_after_it() {
    let engine = engine();
    let calls = AtomicUsize::new(0);
    get(&engine, b"k", 1, &calls);
    engine.cache().clock().advance(Span::from_secs(300));
    let claimed = || match engine.cache().lookup(b"k") {
        restflow_cache::Lookup::Stale { entry, refresh } => refresh.then_some(entry),
        _ => panic!("stale"),
    };
    let before = engine.claim_refresh(b"k", claimed().expect("claimed"));
    let forced = engine.begin_refresh(b"k");
    assert_eq!(*engine.delete(b"k").unwrap().value(), 1);
    let computed = |value| Computed {
        value,
        lifetime: lifetime(300, 60),
    };
    let served = before.complete(computed(2));
    assert_eq!((*served.entry.value(), served.stored), (2, false));
    let served = forced.complete(computed(3));
    assert_eq!((*served.entry.value(), served.stored), (3, false));
    assert!(engine.cache().peek(b"k").is_none(), "the delete stands");
    // A computation that began after the delete stores.
    assert_eq!(get(&engine, b"k", 4, &calls), (4, Status::Miss));
    engine.cache().clock().advance(Span::from_secs(300));
    let after = engine.claim_refresh(b"k", claimed().expect("claimed"));
    let served = after.complete(computed(5));
    assert!(served.stored);
    assert_eq!(get(&engine, b"k", 6, &calls), (5, Status::Hit));
}
