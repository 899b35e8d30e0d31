//! The engine counts what each call served in the function's [`Stats`]
//! (`*_counted` calls): the bindings only hand it the statistics. A frozen
//! clock makes time pass; no test here sleeps.

use std::sync::Arc;

use restflow_cache::{
    Cache, Clock, Computed, Counter, Engine, Lifetime, MemoryStore, Owner, Refresher, Span, Start,
    Stats, Status, Timestamp,
};

type TestEngine = Engine<u64, String, MemoryStore<u64>>;

fn engine() -> Arc<TestEngine> {
    let cache = Cache::new(
        MemoryStore::new(100),
        Clock::frozen(Timestamp::from_micros(1_800_000_000_000_000)),
    );
    Arc::new(Engine::new(cache, Refresher::new(1, 8)))
}

fn kept(value: u64) -> Result<Computed<u64>, String> {
    Ok(Computed {
        value,
        lifetime: Some(Lifetime::new(Span::from_secs(10), Span::from_secs(10))),
    })
}

fn counts(stats: &Stats, counters: &[Counter]) -> Vec<u64> {
    let snapshot = stats.snapshot();
    counters.iter().map(|c| snapshot.get(*c)).collect()
}

#[test]
fn a_resolved_call_counts_its_status_and_a_stale_claim() {
    let (engine, stats) = (engine(), Stats::new());
    let resolve = |compute: fn() -> Result<Computed<u64>, String>| {
        let lookup = engine.cache().lookup(b"k");
        engine.resolve_counted(b"k", lookup, None, &stats, compute, |w| w.wait())
    };
    assert_eq!(resolve(|| kept(1)).unwrap().status, Status::Miss);
    assert_eq!(resolve(|| kept(2)).unwrap().status, Status::Hit);
    engine.cache().clock().advance(Span::from_secs(15));
    let stale = resolve(|| kept(3)).unwrap();
    assert!(stale.status == Status::Stale && stale.refresh_claimed);
    let all = [
        Counter::Miss,
        Counter::Hit,
        Counter::Stale,
        Counter::BackgroundRefresh,
        Counter::StaleIfError,
    ];
    assert_eq!(counts(&stats, &all), [1, 1, 1, 1, 0]);
}

#[test]
fn a_failed_computation_answered_with_the_kept_value_counts_stale_if_error() {
    let (engine, stats) = (engine(), Stats::new());
    let lookup = engine.cache().lookup(b"k");
    let fail = || Err::<Computed<u64>, _>("down".to_owned());
    engine
        .resolve_counted(b"k", lookup, None, &stats, || kept(1), |w| w.wait())
        .unwrap();
    engine.cache().clock().advance(Span::from_secs(25)); // past the stale window
    let keep = Span::from_secs(60);
    let (lookup, fallback) = engine.cache().lookup_keeping(b"k", keep);
    let served = engine
        .resolve_counted(b"k", lookup, fallback, &stats, fail, |w| w.wait())
        .unwrap();
    assert_eq!((*served.entry.value(), served.status), (1, Status::Stale));
    let all = [Counter::Miss, Counter::Stale, Counter::StaleIfError];
    assert_eq!(counts(&stats, &all), [1, 1, 1]);
}

#[test]
fn a_lead_completed_by_its_own_caller_counts_the_computation_and_the_miss() {
    let (engine, stats) = (engine(), Stats::new());
    assert!(engine
        .found_counted(engine.cache().lookup(b"k"), &stats)
        .is_none());
    let Ok(Start::Lead(lead)) = engine.start(b"k", None, Owner::task(1), false) else {
        panic!("the first caller leads");
    };
    let served = lead.complete_counted(kept(4), &stats).unwrap();
    assert_eq!(served.status, Status::Miss);
    let Ok(Start::Lead(lead)) = engine.start(b"j", None, Owner::task(1), false) else {
        panic!("the first caller leads");
    };
    lead.abandon_counted(&stats);
    let hit = engine.found_counted(engine.cache().lookup(b"k"), &stats);
    assert_eq!(hit.map(|s| s.status), Some(Status::Hit));
    let refreshed = engine.refresh_counted(b"k", &stats, || kept(5)).unwrap();
    assert_eq!(refreshed.status, Status::Refresh);
    let all = [
        Counter::Computation,
        Counter::Error,
        Counter::Miss,
        Counter::Hit,
        Counter::Refresh,
    ];
    assert_eq!(counts(&stats, &all), [2, 0, 1, 1, 1]);
    assert_eq!(stats.snapshot().compute.count(), 2);
}
