//! The engine used alone from Rust, at its edges: a panicking or
//! recursive computation, extreme lifetimes and clocks, empty and huge
//! keys, tiny stores and queues, an engine dropped or a key invalidated
//! while its refresh runs. Hang guards only time out; nothing sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use restflow_cache::{
    Cache, Clock, Computed, Engine, GetError, Lifetime, MemoryStore, Refresher, Served, Span,
    Status, Store, Timestamp,
};

type TestEngine = Engine<u64, String, MemoryStore<u64>>;

fn engine_with(capacity: u64, threads: usize, queue: usize) -> Arc<TestEngine> {
    let cache = Cache::new(MemoryStore::new(capacity), Clock::frozen(Timestamp::EPOCH));
    Arc::new(Engine::new(cache, Refresher::new(threads, queue)))
}

fn ok(value: u64, lifetime: Option<Lifetime>) -> Result<Computed<u64>, String> {
    Ok(Computed { value, lifetime })
}

fn life(ttl: Span, stale: Span) -> Option<Lifetime> {
    Some(Lifetime::new(ttl, stale))
}

/// Key `k` computed (1, ttl 1 s, stale window 60 s), then read again 2 s
/// later: its STALE answer.
fn stale_entry(engine: &TestEngine) -> Served<u64> {
    let life = life(Span::from_secs(1), Span::from_secs(60));
    let s = engine.get(b"k", || ok(1, life), |w| w.wait()).unwrap();
    assert_eq!(s.status, Status::Miss);
    engine.cache().clock().advance(Span::from_secs(2));
    let s = engine.get(b"k", || unreachable!(), |w| w.wait()).unwrap();
    assert_eq!(s.status, Status::Stale);
    s
}

#[test]
fn leader_panic_followers_recover() {
    let engine = engine_with(100, 1, 4);
    let n = 4;
    let leading = Arc::new(Barrier::new(2));
    let (tx, rx) = mpsc::channel();
    let leader = {
        let (engine, leading) = (Arc::clone(&engine), Arc::clone(&leading));
        thread::spawn(move || {
            let _ = engine.get(
                b"k",
                || {
                    leading.wait();
                    while engine.waiters(b"k") < 4 {
                        thread::yield_now();
                    }
                    panic!("user compute panics")
                },
                |w| w.wait(),
            );
        })
    };
    leading.wait();
    let computes = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let (engine, tx, computes) = (Arc::clone(&engine), tx.clone(), Arc::clone(&computes));
        thread::spawn(move || {
            let s = engine
                .get(
                    b"k",
                    || {
                        computes.fetch_add(1, Ordering::SeqCst);
                        ok(7, life(Span::from_secs(10), Span::ZERO))
                    },
                    |w| w.wait(),
                )
                .unwrap();
            tx.send((*s.entry.value(), s.status)).unwrap();
        });
    }
    assert!(leader.join().is_err());
    for _ in 0..n {
        let (v, st) = rx.recv_timeout(Duration::from_secs(30)).expect("hang");
        assert_eq!((v, st), (7, Status::Miss));
    }
    assert_eq!(computes.load(Ordering::SeqCst), 1);
    assert_eq!(engine.flights().in_flight(), 0);
}

#[test]
fn recursion_is_refused() {
    let engine = engine_with(100, 1, 4);
    let inner = Arc::clone(&engine);
    let r = engine.get(
        b"k",
        || match inner.get(b"k", || ok(1, None), |w| w.wait()) {
            Err(GetError::Recursive) => Err("rec".to_string()),
            other => panic!("{:?}", other.map(|s| s.status)),
        },
        |w| w.wait(),
    );
    assert_eq!(r.unwrap_err(), GetError::Compute("rec".to_string()));
    assert_eq!(engine.flights().in_flight(), 0);
}

#[test]
fn extreme_ttls() {
    let engine = engine_with(100, 1, 4);
    let clock = engine.cache().clock();
    // Duration::MAX
    let max = Span::from(Duration::MAX);
    let s = engine
        .get(b"max", || ok(1, life(max, max)), |w| w.wait())
        .unwrap();
    assert_eq!(s.status, Status::Miss);
    let s = engine.get(b"max", || ok(2, None), |w| w.wait()).unwrap();
    assert_eq!(s.status, Status::Hit);
    // ttl 0 never fresh
    let s = engine
        .get(
            b"zero",
            || ok(1, life(Span::ZERO, Span::ZERO)),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(s.status, Status::Miss);
    let s = engine
        .get(
            b"zero",
            || ok(2, life(Span::ZERO, Span::ZERO)),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Miss, 2));
    // ttl 0 with stale window: stale at once
    let s = engine
        .get(
            b"zs",
            || ok(1, life(Span::ZERO, Span::from_secs(5))),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(s.status, Status::Miss);
    let s = engine.get(b"zs", || ok(2, None), |w| w.wait()).unwrap();
    assert_eq!(s.status, Status::Stale);
    // clock to the end of time
    clock.freeze(Timestamp::from_micros(i64::MAX));
    let s = engine
        .get(b"max", || ok(3, life(max, max)), |w| w.wait())
        .unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Miss, 3));
    let s = engine
        .get(b"max", || ok(4, life(max, max)), |w| w.wait())
        .unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Miss, 4));
    clock.advance(Span::from(Duration::MAX));
    clock.freeze(Timestamp::from_micros(i64::MIN));
    let s = engine
        .get(
            b"min",
            || ok(5, life(Span::from_secs(1), Span::ZERO)),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(s.status, Status::Miss);
    let s = engine.get(b"min", || ok(6, None), |w| w.wait()).unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Hit, 5));
    clock.freeze(Timestamp::from_micros(i64::MIN + 1));
    let s = engine.get(b"min", || ok(6, None), |w| w.wait()).unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Hit, 5));
}

#[test]
fn empty_and_huge_keys() {
    let engine = engine_with(100, 1, 4);
    let s = engine
        .get(
            b"",
            || ok(1, life(Span::from_secs(9), Span::ZERO)),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(s.status, Status::Miss);
    let s = engine.get(b"", || ok(2, None), |w| w.wait()).unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Hit, 1));
    let huge = vec![7u8; 16 << 20];
    let s = engine
        .get(
            &huge,
            || ok(3, life(Span::from_secs(9), Span::ZERO)),
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(s.status, Status::Miss);
    let s = engine.get(&huge, || ok(4, None), |w| w.wait()).unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Hit, 3));
}

#[test]
fn capacity_zero_and_one() {
    for cap in [0, 1] {
        let engine = engine_with(cap, 1, 4);
        for k in 0..50u64 {
            let key = k.to_be_bytes();
            let s = engine
                .get(
                    &key,
                    || ok(k, life(Span::from_secs(9), Span::ZERO)),
                    |w| w.wait(),
                )
                .unwrap();
            assert_eq!((s.status, *s.entry.value()), (Status::Miss, k));
            assert!(engine.cache().store().len() <= 1);
            let s = engine.get(&key, || ok(99, None), |w| w.wait()).unwrap();
            assert_eq!(
                (s.status, *s.entry.value()),
                (Status::Hit, k),
                "cap {cap} key {k}"
            );
        }
    }
}

/// A refresher without a queue turned its first refresh away (no worker
/// had reached its `recv` yet): the entry stayed stale.
#[test]
fn refresher_zero_capacity_runs_first_refresh() {
    let engine = engine_with(100, 1, 0);
    let s = stale_entry(&engine);
    assert!(s.refresh_claimed);
    engine.schedule_refresh(b"k", Arc::clone(&s.entry), || {
        ok(2, life(Span::from_secs(100), Span::ZERO))
    });
    assert!(engine.refresher().wait_idle(Duration::from_secs(30)));
    let s = engine.get(b"k", || unreachable!(), |w| w.wait()).unwrap();
    assert_eq!((s.status, *s.entry.value()), (Status::Hit, 2));
}

#[test]
fn drop_engine_while_refresh_runs() {
    let engine = engine_with(100, 1, 4);
    let s = stale_entry(&engine);
    let (started, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (a, b) = (Arc::clone(&started), Arc::clone(&release));
    let (tx, rx) = mpsc::channel();
    engine.schedule_refresh(b"k", Arc::clone(&s.entry), move || {
        a.wait();
        b.wait();
        tx.send(()).unwrap();
        ok(2, life(Span::from_secs(100), Span::ZERO))
    });
    started.wait();
    drop(s);
    drop(engine);
    release.wait();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
}

#[test]
fn invalidate_during_refresh() {
    let engine = engine_with(100, 1, 4);
    let s = stale_entry(&engine);
    let claim = engine.claim_refresh(b"k", Arc::clone(&s.entry));
    drop(engine.cache().remove(b"k"));
    let served = claim.complete(Computed {
        value: 2,
        lifetime: life(Span::from_secs(100), Span::ZERO),
    });
    assert_eq!(served.status, Status::Refresh);
}

#[test]
fn many_threads_one_key() {
    let engine = engine_with(100, 1, 4);
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let computes = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (engine, barrier, computes) = (
                Arc::clone(&engine),
                Arc::clone(&barrier),
                Arc::clone(&computes),
            );
            thread::spawn(move || {
                barrier.wait();
                let s = engine
                    .get(
                        b"k",
                        || {
                            computes.fetch_add(1, Ordering::SeqCst);
                            // Ends once every other caller follows it.
                            while engine.waiters(b"k") < n - 1 {
                                thread::yield_now();
                            }
                            ok(5, life(Span::from_secs(9), Span::ZERO))
                        },
                        |w| w.wait(),
                    )
                    .unwrap();
                (*s.entry.value(), s.status)
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), (5, Status::Miss));
    }
    assert_eq!(computes.load(Ordering::SeqCst), 1);
}

#[test]
fn many_threads_mixing_reads_refreshes_removals_and_time() {
    let engine = engine_with(4, 2, 1);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n as u64)
        .map(|t| {
            let (engine, barrier) = (Arc::clone(&engine), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let mut x = t * 7919 + 1;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = x % 8;
                    let key = k.to_be_bytes();
                    match (x >> 8) % 10 {
                        0 => {
                            engine.cache().clock().advance(Span::from_micros(300_000));
                        }
                        1 => {
                            drop(engine.cache().remove(&key));
                        }
                        2 => {
                            let s = engine
                                .refresh(&key, || {
                                    ok(k * 100, life(Span::from_secs(1), Span::from_secs(1)))
                                })
                                .unwrap();
                            assert_eq!(*s.entry.value(), k * 100);
                        }
                        _ => {
                            let s = engine
                                .get(
                                    &key,
                                    || ok(k * 100, life(Span::from_secs(1), Span::from_secs(1))),
                                    |w| w.wait(),
                                )
                                .unwrap();
                            assert_eq!(*s.entry.value(), k * 100);
                            if s.refresh_claimed {
                                engine.schedule_refresh(&key, Arc::clone(&s.entry), move || {
                                    ok(k * 100, life(Span::from_secs(1), Span::from_secs(1)))
                                });
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert!(engine.refresher().wait_idle(Duration::from_secs(30)));
    assert_eq!(engine.flights().in_flight(), 0);
    assert_eq!(engine.flights().total_waiters(), 0);
}
