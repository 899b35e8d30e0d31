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
fn the_kept_value_answers_every_failing_read_inside_its_window() {
    // Each read's lead re-checks the key after joining its flight; that
    // check once removed the expired entry it found, so the second failing
    // read inside the stale-if-error window raised instead of STALE.
    let engine = engine();
    engine.get(b"k", || kept(1), |w| w.wait()).unwrap();
    engine.cache().clock().advance(Span::from_secs(25)); // past the stale window
    let keep = Span::from_secs(60);
    for read in 0..3 {
        let (lookup, fallback) = engine.cache().lookup_keeping(b"k", keep);
        let fail = || Err::<Computed<u64>, _>("down".to_owned());
        let served = engine
            .resolve(b"k", lookup, fallback, fail, |w| w.wait())
            .unwrap_or_else(|error| panic!("read {read}: {error:?}"));
        assert_eq!((*served.entry.value(), served.status), (1, Status::Stale));
    }
    // Past the window the entry is gone, and the error reaches the caller.
    engine.cache().clock().advance(Span::from_secs(60));
    let (lookup, fallback) = engine.cache().lookup_keeping(b"k", keep);
    assert!(fallback.is_none());
    let fail = || Err::<Computed<u64>, _>("down".to_owned());
    let failed = engine.resolve(b"k", lookup, None, fail, |w| w.wait());
    assert!(failed.is_err());
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

#[test]
fn a_resolved_call_that_claims_a_refresh_queues_it_and_the_refresh_stores() {
    let (engine, stats) = (engine(), Stats::new());
    let made = std::sync::atomic::AtomicUsize::new(0);
    let resolve = |value: u64| {
        let lookup = engine.cache().lookup(b"k");
        let refresh = |_: &u64| {
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(move || kept(value))
        };
        let compute = || kept(value);
        engine.resolve_refreshing(b"k", lookup, None, &stats, compute, |w| w.wait(), refresh)
    };
    assert_eq!(resolve(1).unwrap().status, Status::Miss);
    assert_eq!(resolve(2).unwrap().status, Status::Hit);
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 0);
    engine.cache().clock().advance(Span::from_secs(15));
    let stale = resolve(3).unwrap();
    assert_eq!((*stale.entry.value(), stale.status), (1, Status::Stale));
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(engine
        .refresher()
        .wait_idle(std::time::Duration::from_secs(30)));
    let hit = resolve(4).unwrap();
    assert_eq!((*hit.entry.value(), hit.status), (3, Status::Hit));
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_declined_refresh_gives_its_claim_back_and_leaves_the_entry() {
    let (engine, stats) = (engine(), Stats::new());
    let resolve = |value: u64, decline: bool| {
        let lookup = engine.cache().lookup(b"k");
        let refresh = |found: &u64| {
            assert_eq!(
                *found, 1,
                "the refresh is offered the claimed entry's value"
            );
            (!decline).then_some(move || kept(value))
        };
        let compute = || kept(value);
        engine.resolve_refreshing(b"k", lookup, None, &stats, compute, |w| w.wait(), refresh)
    };
    assert_eq!(resolve(1, false).unwrap().status, Status::Miss);
    engine.cache().clock().advance(Span::from_secs(15));
    let declined = resolve(2, true).unwrap();
    assert!(declined.status == Status::Stale && declined.refresh_claimed);
    assert!(engine
        .refresher()
        .wait_idle(std::time::Duration::from_secs(30)));
    // Nothing ran, the entry is the one stored, and its claim is free: the
    // next stale read claims it and refreshes.
    let again = resolve(3, false).unwrap();
    assert_eq!((*again.entry.value(), again.status), (1, Status::Stale));
    assert!(again.refresh_claimed);
    assert!(engine
        .refresher()
        .wait_idle(std::time::Duration::from_secs(30)));
    let hit = resolve(4, false).unwrap();
    assert_eq!((*hit.entry.value(), hit.status), (3, Status::Hit));
}

#[test]
fn a_step_lookup_counts_what_it_found_and_hands_out_the_refresh_it_drew() {
    let (engine, stats) = (engine(), Stats::new());
    let window = Span::from_secs(100);
    assert!(engine.found_claiming(b"k", window, &stats).is_none());
    engine.refresh(b"k", || kept(1)).unwrap();
    let (hit, claim) = engine.found_claiming(b"k", window, &stats).unwrap();
    assert!(hit.status == Status::Hit && claim.is_none());
    engine.cache().clock().advance(Span::from_secs(15));
    let (stale, claim) = engine.found_claiming(b"k", window, &stats).unwrap();
    assert_eq!(stale.status, Status::Stale);
    let claim = claim.expect("the first stale read claims the refresh");
    let (_, none) = engine.found_claiming(b"k", window, &stats).unwrap();
    assert!(none.is_none(), "one claim at a time");
    drop(claim); // given back
    let (_, claim) = engine.found_claiming(b"k", window, &stats).unwrap();
    let refreshed = claim.expect("claimed again").complete(kept(2).unwrap());
    assert_eq!(refreshed.status, Status::Refresh);
    let (hit, _) = engine.found_claiming(b"k", window, &stats).unwrap();
    assert_eq!((*hit.entry.value(), hit.status), (2, Status::Hit));
    let all = [Counter::Hit, Counter::Stale, Counter::BackgroundRefresh];
    assert_eq!(counts(&stats, &all), [2, 3, 2]);
    // Expired past its stale window but within the kept window: a miss
    // that leaves the entry for a failing computation to fall back on.
    engine.cache().clock().advance(Span::from_secs(25));
    assert!(engine.found_claiming(b"k", window, &stats).is_none());
    let role = engine
        .join_counted(b"k", window, Owner::task(1), false, &stats)
        .unwrap();
    let restflow_cache::Role::Lead(lead) = role else {
        panic!("the first caller leads")
    };
    let fallback = lead.complete(Err("down".to_owned())).unwrap();
    assert_eq!(
        (*fallback.entry.value(), fallback.status),
        (2, Status::Stale)
    );
}

#[test]
fn a_joined_follower_is_counted_and_a_peek_serves_without_claiming() {
    let (engine, stats) = (engine(), Stats::new());
    assert!(engine.peek_served(b"k").is_none());
    let lead = engine
        .join_counted(b"k", Span::ZERO, Owner::task(1), false, &stats)
        .unwrap();
    let follow = engine
        .join_counted(b"k", Span::ZERO, Owner::task(2), false, &stats)
        .unwrap();
    assert!(lead.is_leader() && !follow.is_leader());
    assert_eq!(counts(&stats, &[Counter::SingleFlightWait]), [1]);
    let again = engine.join_counted(b"k", Span::ZERO, Owner::task(1), false, &stats);
    assert!(matches!(again, Err(restflow_cache::GetError::Recursive)));
    let restflow_cache::Role::Lead(lead) = lead else {
        unreachable!()
    };
    lead.complete(kept(5)).unwrap();
    let peeked = engine.peek_served(b"k").unwrap();
    assert_eq!((*peeked.entry.value(), peeked.status), (5, Status::Hit));
    engine.cache().clock().advance(Span::from_secs(15));
    let peeked = engine.peek_served(b"k").unwrap();
    assert!(peeked.status == Status::Stale && !peeked.refresh_claimed);
    // A peek claims nothing: the next read still draws the refresh.
    assert!(engine
        .found_claiming(b"k", Span::ZERO, &stats)
        .unwrap()
        .1
        .is_some());
    // Joined after a leader stored: served, as a follower of an abandoned
    // leader would be.
    engine.refresh(b"j", || kept(6)).unwrap();
    let done = engine
        .join_counted(b"j", Span::ZERO, Owner::task(3), true, &stats)
        .unwrap();
    assert!(matches!(
        done,
        restflow_cache::Role::Done((_, true, Status::Miss))
    ));
    assert_eq!(
        restflow_cache::GetError::<String>::recursion_message("app.f"),
        "app.f() called itself with the same arguments while computing them; \
         the inner call would wait on the outer one forever"
    );
}

#[test]
fn only_a_stored_hit_reports_the_same_every_time() {
    let (engine, stats) = (engine(), Stats::new());
    let window = Span::ZERO;
    let miss = engine.refresh(b"k", || kept(1)).unwrap();
    assert!(miss.reported().is_some() && !miss.report_is_fixed());
    let (hit, _) = engine.found_claiming(b"k", window, &stats).unwrap();
    assert!(hit.report_is_fixed());
    assert_eq!(hit.reported().map(|e| *e.value()), Some(1));
    let unstored = Computed {
        value: 2,
        lifetime: None,
    };
    let refused = engine.refresh(b"j", || Ok::<_, String>(unstored)).unwrap();
    assert!(refused.reported().is_none() && !refused.report_is_fixed());
    let bare = restflow_cache::Served::new(refused.entry, Status::Hit, false);
    assert!(bare.reported().is_none() && !bare.report_is_fixed());
    engine.cache().clock().advance(Span::from_secs(15));
    let (stale, _) = engine.found_claiming(b"k", window, &stats).unwrap();
    assert!(stale.reported().is_some() && !stale.report_is_fixed());
}
