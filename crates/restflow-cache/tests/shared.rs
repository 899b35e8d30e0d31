//! The shared-store lifecycle against an in-memory fake store, with a
//! frozen clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use restflow_cache::shared::{
    fresh_epoch, parse_epoch, Answer, Breaker, Fetched, Generations, Holder, KeySet, NearCache,
    NearMode, Produced, Refreshed, SharedCache, SharedError, SharedOptions, SharedStore, Signer,
    StoreError, Undecodable, Written,
};
use restflow_cache::{Clock, Counter, Freshness, Lifetime, Span, Status, Timestamp};

#[derive(Default)]
struct FakeStore {
    values: Mutex<HashMap<String, Vec<u8>>>,
    down: AtomicBool,
    /// Writes answered with an error, as Redis does under `noeviction`.
    refuse_writes: AtomicBool,
    calls: AtomicUsize,
    /// Runs once, at the next attempt to take a refresh lock, before the
    /// store looks at the lock: another process's turn between a caller's
    /// fetch and its claim.
    before_refresh_claim: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The near cache it keeps coherent, when a test gives it one.
    near: Option<NearCache>,
    /// Runs once, in the next fetch, after its answer was read: what
    /// happens while a read is in flight.
    during_fetch: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Runs once, after the next delete: another process's turn between a
    /// caller's delete and its next read.
    after_delete: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FakeStore {
    fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("down".into()))
        } else {
            Ok(())
        }
    }
    fn write(&self) -> Result<(), StoreError> {
        self.check()?;
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Protocol("OOM command not allowed".into()));
        }
        Ok(())
    }
}

/// A counter as the store holds it: `None` when missing or garbage.
fn counter(values: &HashMap<String, Vec<u8>>, key: &str) -> Option<u64> {
    values.get(key).and_then(|v| parse_epoch(v))
}

fn counter_names(keys: &KeySet) -> Vec<&str> {
    let mut names = vec![keys.scope.as_str(), keys.version.as_str()];
    names.extend(keys.partition.as_deref());
    names
}

fn current(values: &HashMap<String, Vec<u8>>, keys: &KeySet) -> Option<Generations> {
    Some(Generations {
        scope: counter(values, &keys.scope)?,
        partition: match &keys.partition {
            Some(key) => counter(values, key)?,
            None => 0,
        },
        version: counter(values, &keys.version)?,
    })
}

impl SharedStore for FakeStore {
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
        self.check()?;
        let values = self.values.lock();
        let fetched = Fetched {
            payload: values.get(&keys.data).cloned(),
            generations: current(&values, keys),
            locked: values.contains_key(&keys.lock),
        };
        drop(values);
        let hook = self.during_fetch.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        Ok(fetched)
    }
    fn near(&self) -> Option<&NearCache> {
        self.near.as_ref()
    }
    fn put(&self, key: &str, payload: &[u8], _ttl: Option<Duration>) -> Result<(), StoreError> {
        self.write()?;
        self.values.lock().insert(key.into(), payload.to_vec());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.check()?;
        let existed = self.values.lock().remove(key).is_some();
        let hook = self.after_delete.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        Ok(existed)
    }
    /// As on Redis: the claims held are marked, not freed; the fence goes.
    fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError> {
        self.write()?;
        let mut values = self.values.lock();
        let existed = values.remove(&keys.data).is_some();
        values.remove(&keys.fence());
        for claim in [&keys.lock, &keys.refresh] {
            if let Some(holder) = values.get_mut(claim.as_str()) {
                if !holder.starts_with(b"deleted:") {
                    holder.splice(0..0, b"deleted:".iter().copied());
                }
            }
        }
        Ok(existed)
    }
    fn generations(&self, keys: &KeySet, _floor: Duration) -> Result<Generations, StoreError> {
        self.check()?;
        let mut values = self.values.lock();
        for name in counter_names(keys) {
            if counter(&values, name).is_none() {
                // Starting a counter is a write.
                self.write()?;
                values.insert(name.into(), fresh_epoch().to_string().into_bytes());
            }
        }
        Ok(current(&values, keys).expect("every counter started"))
    }
    fn put_current(
        &self,
        keys: &KeySet,
        generations: Generations,
        payload: &[u8],
        _ttl: Option<Duration>,
        holder: Option<Holder<'_>>,
    ) -> Result<Written, StoreError> {
        self.write()?;
        let mut values = self.values.lock();
        if current(&values, keys) != Some(generations) {
            return Ok(Written::Refused);
        }
        let refused = match holder {
            Some(Holder::Claim(claim, token)) => {
                let marked = format!("deleted:{token}");
                values.get(claim).map(Vec::as_slice) == Some(marked.as_bytes())
            }
            Some(Holder::Fence(fence, token)) => {
                values.get(fence).map(Vec::as_slice) != Some(token.as_bytes())
            }
            None => false,
        };
        if refused {
            return Ok(Written::Refused);
        }
        values.insert(keys.data.clone(), payload.to_vec());
        Ok(Written::Stored)
    }
    fn fence(&self, keys: &KeySet, candidate: &str, _ttl: Duration) -> Result<String, StoreError> {
        self.write()?;
        let mut values = self.values.lock();
        let held = values
            .entry(keys.fence())
            .or_insert_with(|| candidate.as_bytes().to_vec());
        Ok(String::from_utf8_lossy(held).into_owned())
    }
    fn try_lock(&self, key: &str, token: &str, _ttl: Duration) -> Result<bool, StoreError> {
        if key.starts_with("refresh:") {
            let hook = self.before_refresh_claim.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.write()?;
        let mut values = self.values.lock();
        if values.contains_key(key) {
            return Ok(false);
        }
        values.insert(key.into(), token.as_bytes().to_vec());
        Ok(true)
    }
    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut values = self.values.lock();
        let marked = format!("deleted:{token}");
        let held = values.get(key).map(Vec::as_slice);
        if held == Some(token.as_bytes()) || held == Some(marked.as_bytes()) {
            values.remove(key);
        }
        Ok(())
    }
}

fn keys() -> KeySet {
    KeySet {
        data: "ns::f::::x=i1".into(),
        scope: "gen:f".into(),
        partition: None,
        version: "vgen:c".into(),
        lock: "lock:f1".into(),
        refresh: "refresh:f1".into(),
    }
}

fn cache(
    bypass: bool,
) -> (
    Arc<FakeStore>,
    SharedCache<Arc<FakeStore>, String>,
    Arc<Clock>,
) {
    let store = Arc::new(FakeStore::default());
    let clock = Arc::new(Clock::frozen(Timestamp::from_micros(1_800_000_000_000_000)));
    let cache = another_process(&store, &clock, bypass);
    (store, cache, clock)
}

/// A second cache over the same store and clock: another process.
fn another_process(
    store: &Arc<FakeStore>,
    clock: &Arc<Clock>,
    bypass: bool,
) -> SharedCache<Arc<FakeStore>, String> {
    SharedCache::new(
        Arc::clone(store),
        Signer::new(b"key"),
        Arc::clone(clock),
        Breaker::new(3, Duration::from_secs(60)),
        SharedOptions {
            lock_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_millis(200),
            bypass_on_failure: bypass,
        },
    )
}

fn produce(value: &str) -> Result<Produced<String>, String> {
    Ok(Produced {
        value: value.to_string(),
        serialized: Some((0, value.as_bytes().to_vec())),
        lifetime: Lifetime::new(Span::from_secs(10), Span::from_secs(5)),
    })
}

fn status<T>(answer: &Answer<T>) -> Status {
    match answer {
        Answer::Stored { status, .. } => *status,
        Answer::Computed { .. } => Status::Miss,
        Answer::Bypassed { .. } => Status::Bypass,
    }
}

fn get(cache: &SharedCache<Arc<FakeStore>, String>, value: &str) -> Answer<String> {
    cache
        .get(&keys(), Span::ZERO, || produce(value), |w| w.wait())
        .unwrap()
}

#[test]
fn miss_then_hit_then_stale_with_one_refresh_claim() {
    let (store, cache, clock) = cache(true);
    assert_eq!(status(&get(&cache, "v1")), Status::Miss);
    match get(&cache, "unused") {
        Answer::Stored { status, value, .. } => {
            assert_eq!((status, value.as_slice()), (Status::Hit, b"v1".as_slice()))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !store.values.lock().contains_key("lock:f1"),
        "the lock is released"
    );
    clock.advance(Span::from_secs(10));
    let first = get(&cache, "unused");
    let second = get(&cache, "unused");
    let Answer::Stored {
        status: Status::Stale,
        refresh_token: Some(token),
        generations,
        ..
    } = first
    else {
        panic!("the first stale read claims the refresh: {first:?}")
    };
    assert!(matches!(
        second,
        Answer::Stored {
            status: Status::Stale,
            refresh_token: None,
            ..
        }
    ));
    cache
        .finish_refresh(
            &keys(),
            &token,
            Span::ZERO,
            generations,
            Refreshed::Store(
                0,
                b"v2".to_vec(),
                Lifetime::new(Span::from_secs(10), Span::ZERO),
            ),
        )
        .unwrap();
    assert!(matches!(
        get(&cache, "unused"),
        Answer::Stored {
            status: Status::Hit,
            ..
        }
    ));
    clock.advance(Span::from_secs(10));
    assert_eq!(status(&get(&cache, "v3")), Status::Miss);
}

#[test]
fn a_stale_read_overtaken_by_a_whole_refresh_does_not_refresh_again() {
    let (store, cache, clock) = cache(true);
    get(&cache, "v1");
    clock.advance(Span::from_secs(10));
    // Between this caller's fetch of the stale entry and its claim, another
    // process claims the refresh, stores "v2" and frees the refresh lock.
    let other = Arc::new(another_process(&store, &clock, true));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let (other_in_hook, refreshes_in_hook) = (Arc::clone(&other), Arc::clone(&refreshes));
    *store.before_refresh_claim.lock() = Some(Box::new(move || {
        let Answer::Stored {
            refresh_token: Some(token),
            generations,
            ..
        } = get(&other_in_hook, "unused")
        else {
            panic!("the other process claims the refresh")
        };
        refreshes_in_hook.fetch_add(1, Ordering::SeqCst);
        // With a stale window, so the next stale period can be claimed.
        let v2 = Refreshed::Store(0, b"v2".to_vec(), produce("v2").unwrap().lifetime);
        other_in_hook
            .finish_refresh(&keys(), &token, Span::ZERO, generations, v2)
            .unwrap();
    }));
    let overtaken = get(&cache, "unused");
    assert!(
        matches!(
            &overtaken,
            Answer::Stored {
                status: Status::Stale,
                refresh_token: None,
                ..
            }
        ),
        "the entry it read was refreshed already: no second refresh: {overtaken:?}"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "the refresh lock is free"
    );
    assert_eq!(value_of(&get(&cache, "unused")), (Status::Hit, "v2".into()));
    // The next stale period is claimed as before.
    clock.advance(Span::from_secs(10));
    assert!(matches!(
        get(&cache, "unused"),
        Answer::Stored {
            status: Status::Stale,
            refresh_token: Some(_),
            ..
        }
    ));
}

#[test]
fn a_bumped_generation_makes_the_entry_a_miss() {
    let (store, cache, _) = cache(true);
    get(&cache, "v1");
    store.delete("gen:f").unwrap();
    match get(&cache, "v2") {
        Answer::Computed { value, .. } => assert_eq!(value, "v2"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tampered_or_foreign_payload_is_a_counted_miss() {
    let (store, cache, _) = cache(true);
    get(&cache, "v1");
    store.values.lock().get_mut("ns::f::::x=i1").unwrap()[60] ^= 1;
    assert_eq!(status(&get(&cache, "v2")), Status::Miss);
    store.values.lock().insert(
        "ns::f::::x=i1".into(),
        b"cos\nsystem\n(S'echo'\ntR.".to_vec(),
    );
    assert_eq!(status(&get(&cache, "v3")), Status::Miss);
    assert_eq!(cache.stats().rejected.load(Ordering::SeqCst), 2);
}

#[test]
fn a_failing_store_is_bypassed_or_reported_and_the_breaker_opens() {
    let (store, cache, _) = cache(true);
    store.down.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(status(&get(&cache, "live")), Status::Bypass);
    }
    // Three failures opened the breaker: the last calls never reached the store.
    assert_eq!(store.calls.load(Ordering::SeqCst), 3);
    let counted = cache.stats().store.snapshot();
    assert_eq!(counted.get(Counter::StoreError), 3);
    assert_eq!(counted.get(Counter::BreakerTrip), 1, "opened once");
    assert_eq!(counted.lookup.count(), 0, "only answered lookups are timed");
    let (store, strict, _) = cache_strict();
    store.down.store(true, Ordering::SeqCst);
    let error = strict
        .get(&keys(), Span::ZERO, || produce("x"), |w| w.wait())
        .unwrap_err();
    assert!(matches!(
        error,
        SharedError::Store(StoreError::Unavailable(_))
    ));
}

fn cache_strict() -> (
    Arc<FakeStore>,
    SharedCache<Arc<FakeStore>, String>,
    Arc<Clock>,
) {
    cache(false)
}

#[test]
fn stale_if_error_serves_the_old_value_when_the_recompute_fails() {
    let (_, cache, clock) = cache(true);
    get(&cache, "old");
    clock.advance(Span::from_secs(20)); // past ttl 10 + stale 5
    let failing = || Err::<Produced<String>, _>("backend down".to_string());
    let served = cache
        .get(&keys(), Span::from_secs(60), failing, |w| w.wait())
        .unwrap();
    match served {
        Answer::Stored { status, value, .. } => {
            assert_eq!(
                (status, value.as_slice()),
                (Status::Stale, b"old".as_slice())
            )
        }
        other => panic!("{other:?}"),
    }
    let error = cache
        .get(&keys(), Span::ZERO, failing, |w| w.wait())
        .unwrap_err();
    assert_eq!(error, SharedError::Compute("backend down".into()));
}

#[test]
fn another_holder_of_the_lock_is_waited_for_then_given_up_on() {
    let (store, cache, _) = cache(true);
    store
        .try_lock("lock:f1", "someone-else", Duration::from_secs(5))
        .unwrap();
    // Nobody writes the entry: after wait_timeout the value is computed here
    // and not stored over the holder's.
    match get(&cache, "mine") {
        Answer::Computed { value, stamps } => {
            assert_eq!(value, "mine");
            assert!(stamps.is_none());
        }
        other => panic!("{other:?}"),
    }
    let counted = cache.stats().store.snapshot();
    assert_eq!(
        counted.get(Counter::LockWait),
        1,
        "one wait, however many polls"
    );
    assert_eq!(counted.lookup.count(), 1, "the lookup's first fetch");
}

fn refreshed(value: &str) -> Refreshed {
    Refreshed::Store(
        0,
        value.as_bytes().to_vec(),
        Lifetime::new(Span::from_secs(10), Span::ZERO),
    )
}

fn value_of(answer: &Answer<String>) -> (Status, String) {
    match answer {
        Answer::Stored { status, value, .. } => {
            (*status, String::from_utf8(value.clone()).unwrap())
        }
        Answer::Computed { value, .. } => (Status::Miss, value.clone()),
        Answer::Bypassed { value, .. } => (Status::Bypass, value.clone()),
    }
}

/// Stores "v1", lets it go stale and claims its refresh: the claim's
/// token and the generations the stale entry was read under.
fn claim_refresh(
    cache: &SharedCache<Arc<FakeStore>, String>,
    clock: &Clock,
) -> (String, Generations) {
    get(cache, "v1");
    clock.advance(Span::from_secs(10));
    match get(cache, "unused") {
        Answer::Stored {
            refresh_token: Some(token),
            generations,
            ..
        } => (token, generations),
        other => panic!("the stale read claims the refresh: {other:?}"),
    }
}

#[test]
fn an_invalidation_during_a_background_refresh_is_kept() {
    let (store, cache, clock) = cache(true);
    let (token, generations) = claim_refresh(&cache, &clock);
    // The refresh computes; meanwhile the function is invalidated, and
    // another caller computes and stores the current value.
    store.delete("gen:f").unwrap();
    assert_eq!(value_of(&get(&cache, "v3")), (Status::Miss, "v3".into()));
    cache
        .finish_refresh(&keys(), &token, Span::ZERO, generations, refreshed("v2"))
        .unwrap();
    // The refresh's value (older than the invalidation) went nowhere.
    assert_eq!(value_of(&get(&cache, "unused")), (Status::Hit, "v3".into()));
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "the claim is released"
    );
}

#[test]
fn a_refresh_whose_value_is_not_to_be_stored_drops_the_stale_entry() {
    // As a forced refresh does, and as the memory store does: a stale
    // value the refresh superseded is not served any longer. (A refresh
    // that computed nothing keeps it: see
    // a_refresh_that_outlived_its_lock_leaves_the_next_holders_lock_alone.)
    let (store, cache, clock) = cache(true);
    let (token, generations) = claim_refresh(&cache, &clock);
    cache
        .finish_refresh(
            &keys(),
            &token,
            Span::ZERO,
            generations,
            Refreshed::Unstored,
        )
        .unwrap();
    assert!(!store.values.lock().contains_key(&keys().data));
    assert!(!store.values.lock().contains_key("refresh:f1"));
    assert_eq!(value_of(&get(&cache, "v2")), (Status::Miss, "v2".into()));
}

#[test]
fn a_refresh_that_outlived_its_lock_leaves_the_next_holders_lock_alone() {
    let (store, cache, clock) = cache(true);
    let (token, generations) = claim_refresh(&cache, &clock);
    // The lock expired while the refresh ran, and another process took it.
    store
        .values
        .lock()
        .insert("refresh:f1".into(), b"next-holder".to_vec());
    cache
        .finish_refresh(&keys(), &token, Span::ZERO, generations, Refreshed::Nothing)
        .unwrap();
    assert_eq!(
        store.values.lock().get("refresh:f1").map(Vec::as_slice),
        Some(b"next-holder".as_slice())
    );
}

#[test]
fn a_lost_counter_retires_its_entries_and_never_revives_older_ones() {
    let (store, cache, _) = cache(true);
    get(&cache, "v1");
    let retired = store.values.lock()["ns::f::::x=i1"].clone();
    store.delete("gen:f").unwrap(); // invalidate_all
    assert_eq!(value_of(&get(&cache, "v2")), (Status::Miss, "v2".into()));
    // The counter is evicted; the retired entry is put back, as if it had
    // never been overwritten.
    store.delete("gen:f").unwrap();
    store.values.lock().insert("ns::f::::x=i1".into(), retired);
    assert_eq!(value_of(&get(&cache, "v3")), (Status::Miss, "v3".into()));
    assert_eq!(value_of(&get(&cache, "v4")), (Status::Hit, "v3".into()));
}

#[test]
fn retiring_counters_drops_their_entries_and_retiring_none_asks_nothing() {
    let (store, cache, _) = cache(true);
    get(&cache, "v1");
    cache.retire(&["gen:f".to_owned()]).unwrap();
    assert_eq!(value_of(&get(&cache, "v2")), (Status::Miss, "v2".into()));
    // A partial call naming no partition: nothing to drop, even with the
    // store down and its circuit breaker open.
    store.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let failed = cache.retire(&["gen:f".to_owned()]);
        assert_eq!(failed, Err(StoreError::Unavailable("down".into())));
    }
    assert!(cache.breaker_open());
    assert_eq!(cache.retire(&[]), Ok(()));
}

#[test]
fn a_corrupt_counter_heals_at_the_next_computation() {
    for garbage in ["abc", "-1", "100000000000000000000", "007", ""] {
        let (store, cache, _) = cache(true);
        get(&cache, "v1");
        store
            .values
            .lock()
            .insert("vgen:c".into(), garbage.as_bytes().to_vec());
        assert_eq!(
            value_of(&get(&cache, "v2")),
            (Status::Miss, "v2".into()),
            "{garbage:?}"
        );
        assert_eq!(value_of(&get(&cache, "v3")), (Status::Hit, "v2".into()));
        assert_eq!(cache.stats().failures.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn an_entry_copied_onto_another_key_is_a_miss() {
    let (store, cache, _) = cache(true);
    get(&cache, "user one's");
    let mut other = keys();
    other.data = "ns::f::::x=i2".into();
    let copied = store.values.lock()["ns::f::::x=i1"].clone();
    store.values.lock().insert(other.data.clone(), copied);
    let answer = cache
        .get(&other, Span::ZERO, || produce("user two's"), |w| w.wait())
        .unwrap();
    assert_eq!(value_of(&answer), (Status::Miss, "user two's".into()));
    assert_eq!(cache.stats().rejected.load(Ordering::SeqCst), 1);
}

#[test]
fn epochs_are_canonical_numbers_below_the_limit() {
    for _ in 0..1000 {
        let epoch = fresh_epoch();
        assert_eq!(parse_epoch(epoch.to_string().as_bytes()), Some(epoch));
    }
    assert_eq!(parse_epoch(b"0"), Some(0));
    assert_eq!(
        parse_epoch(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
    for garbage in [
        &b"10000000000000000000"[..],
        b"-1",
        b"007",
        b"",
        b"1e3",
        b" 1",
    ] {
        assert_eq!(parse_epoch(garbage), None, "{garbage:?}");
    }
}

#[test]
fn a_value_an_invalidation_overtakes_is_served_but_not_stored() {
    // A miss and a forced refresh whose computation sees the function
    // invalidated: the value is served, and nothing lands in the store.
    let (store, cache, _) = cache(true);
    let invalidating = |value: &'static str| {
        let store = Arc::clone(&store);
        move || {
            store.delete("gen:f").unwrap();
            produce(value)
        }
    };
    let answer = cache
        .get(&keys(), Span::ZERO, invalidating("v1"), |w| w.wait())
        .unwrap();
    assert!(matches!(answer, Answer::Computed { stamps: None, .. }));
    assert!(!store.values.lock().contains_key("ns::f::::x=i1"));
    get(&cache, "v2");
    let answer = cache
        .refresh(&keys(), Span::ZERO, invalidating("v3"))
        .unwrap();
    assert!(matches!(answer, Answer::Computed { stamps: None, .. }));
    assert_eq!(value_of(&get(&cache, "v4")), (Status::Miss, "v4".into()));
}

#[test]
fn followers_share_a_value_that_is_not_stored() {
    let (store, cache, _) = cache(true);
    let computations = AtomicUsize::new(0);
    let (joined, follower_waits) = std::sync::mpsc::channel::<()>();
    let not_stored = |value: &str| {
        computations.fetch_add(1, Ordering::SeqCst);
        Ok(Produced {
            value: value.to_string(),
            serialized: None,
            lifetime: Lifetime::new(Span::from_secs(10), Span::ZERO),
        })
    };
    let (cache, store, not_stored) = (&cache, &store, &not_stored);
    let (leader, follower) = std::thread::scope(|s| {
        let leader = s.spawn(move || {
            let compute = || {
                // Computes only once the follower waits on this flight.
                follower_waits.recv().unwrap();
                not_stored("leader's")
            };
            cache
                .get(&keys(), Span::ZERO, compute, |w| w.wait())
                .unwrap()
        });
        let follower = s.spawn(move || {
            // Joins after the leader (the store's lock is its sign).
            while !store.values.lock().contains_key("lock:f1") {
                std::thread::yield_now();
            }
            let wait = |w: &restflow_cache::Waiter<_, _>| {
                joined.send(()).unwrap();
                w.wait()
            };
            cache
                .get(&keys(), Span::ZERO, || not_stored("follower's"), wait)
                .unwrap()
        });
        (leader.join().unwrap(), follower.join().unwrap())
    });
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    for answer in [leader, follower] {
        match answer {
            Answer::Computed { value, stamps } => {
                assert_eq!((value.as_str(), stamps), ("leader's", None))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn refused_writes_fail_their_operation_only_and_reads_go_on() {
    let (store, cache, _) = cache(true);
    get(&cache, "v1");
    store.refuse_writes.store(true, Ordering::SeqCst);
    let other = KeySet {
        data: "ns::f::::x=i2".into(),
        ..keys()
    };
    for _ in 0..5 {
        assert!(cache.call(|s| s.put(&other.data, b"x", None)).is_err());
    }
    for _ in 0..5 {
        let answer = cache
            .get(&other, Span::ZERO, || produce("v2"), |w| w.wait())
            .unwrap();
        assert_eq!(status(&answer), Status::Bypass);
    }
    assert!(!cache.breaker_open());
    assert_eq!(status(&get(&cache, "unused")), Status::Hit);
}

#[test]
fn an_early_refresh_is_claimed_once_across_processes_and_times_its_computation() {
    let (store, cache, clock) = cache(true);
    let beta = restflow_cache::Beta::new(1e9).unwrap(); // every draw passes
    let early = Lifetime::new(Span::from_secs(10), Span::ZERO).refreshing_early(beta);
    let produce_early = |value: &str| {
        // The computation takes 1 s on the shared clock.
        clock.advance(Span::from_secs(1));
        Ok::<_, String>(Produced {
            value: value.to_string(),
            serialized: Some((0, value.as_bytes().to_vec())),
            lifetime: early,
        })
    };
    let read = |cache: &SharedCache<Arc<FakeStore>, String>| {
        cache
            .get(
                &keys(),
                Span::ZERO,
                || produce_early("unused"),
                |w| w.wait(),
            )
            .unwrap()
    };
    let stored = cache
        .get(&keys(), Span::ZERO, || produce_early("v1"), |w| w.wait())
        .unwrap();
    let Answer::Computed {
        stamps: Some(stamps),
        ..
    } = stored
    else {
        panic!("{stored:?}")
    };
    assert_eq!(stamps.early.unwrap().delta, Span::from_secs(1));

    // A fresh read in each of two processes: one claims the early refresh
    // (and is served a hit), the other finds the refresh lock taken.
    let other = another_process(&store, &clock, true);
    let (first, second) = (read(&cache), read(&other));
    let Answer::Stored {
        status: Status::Hit,
        refresh_token: Some(token),
        generations,
        ..
    } = first
    else {
        panic!("the first fresh read claims the early refresh: {first:?}")
    };
    assert!(matches!(
        second,
        Answer::Stored {
            status: Status::Hit,
            refresh_token: None,
            ..
        }
    ));
    // The refresh is timed too: its entry carries the new delta.
    cache
        .run_refresh(&keys(), &token, Span::ZERO, generations, || {
            clock.advance(Span::from_secs(3));
            Refreshed::Store(0, b"v2".to_vec(), early)
        })
        .unwrap();
    let (_, value, stamps, _) = other.peek(&keys()).unwrap().unwrap();
    assert_eq!(value, b"v2");
    assert_eq!(stamps.early.unwrap().delta, Span::from_secs(3));
}

/// A cache whose store keeps a live near cache.
fn near_cache() -> (
    Arc<FakeStore>,
    SharedCache<Arc<FakeStore>, String>,
    Arc<Clock>,
) {
    let near = NearCache::new(100, "sync:".into());
    near.set_live(true);
    let store = Arc::new(FakeStore {
        near: Some(near),
        ..FakeStore::default()
    });
    let clock = Arc::new(Clock::frozen(Timestamp::from_micros(1_800_000_000_000_000)));
    let cache = another_process(&store, &clock, true);
    (store, cache, clock)
}

fn near_of(store: &FakeStore) -> &NearCache {
    store.near.as_ref().expect("a near cache")
}

fn calls(store: &FakeStore) -> usize {
    store.calls.load(Ordering::SeqCst)
}

#[test]
fn a_fresh_read_is_kept_near_and_served_without_the_store() {
    let (store, cache, _clock) = near_cache();
    assert_eq!(status(&get(&cache, "v1")), Status::Miss);
    let from_store = get(&cache, "unused");
    let before = calls(&store);
    let from_near = get(&cache, "unused");
    assert_eq!(calls(&store), before, "no round trip");
    let (
        Answer::Stored {
            status,
            value,
            stamps,
            ..
        },
        Answer::Stored {
            stamps: stored_stamps,
            ..
        },
    ) = (&from_near, &from_store)
    else {
        panic!("{from_near:?} {from_store:?}")
    };
    assert_eq!((*status, value.as_slice()), (Status::Hit, b"v1".as_slice()));
    assert_eq!(stamps, stored_stamps, "the stored instants");
    assert_eq!(near_of(&store).counts().hits, 1);
}

#[test]
fn a_read_in_flight_while_its_key_changes_is_not_kept_near() {
    let (store, cache, _clock) = near_cache();
    get(&cache, "v1");
    let during = Arc::clone(&store);
    *store.during_fetch.lock() = Some(Box::new(move || {
        // Another process replaces the entry after this read was answered,
        // and its invalidation arrives before the answer is kept.
        near_of(&during).invalidate([keys().data.as_bytes()]);
    }));
    assert_eq!(status(&get(&cache, "unused")), Status::Hit);
    let before = calls(&store);
    get(&cache, "unused");
    assert!(calls(&store) > before, "read from the store again");
}

#[test]
fn an_invalidated_counter_retires_near_entries() {
    let (store, cache, _clock) = near_cache();
    get(&cache, "v1");
    get(&cache, "unused");
    store.values.lock().remove(&keys().scope);
    near_of(&store).invalidate([keys().scope.as_bytes()]);
    assert_eq!(status(&get(&cache, "v2")), Status::Miss);
}

#[test]
fn a_stale_near_entry_goes_through_the_store_and_claims_the_refresh() {
    let (store, cache, clock) = near_cache();
    get(&cache, "v1");
    get(&cache, "unused");
    clock.advance(Span::from_secs(10));
    let before = calls(&store);
    let answer = get(&cache, "unused");
    assert!(calls(&store) > before, "asked the store");
    assert!(
        matches!(
            answer,
            Answer::Stored {
                status: Status::Stale,
                refresh_token: Some(_),
                ..
            }
        ),
        "{answer:?}"
    );
}

#[test]
fn near_mode_off_neither_serves_nor_keeps() {
    let (store, cache, _clock) = near_cache();
    get(&cache, "v1");
    for _ in 0..2 {
        let before = calls(&store);
        let answer = cache
            .get_near(
                &keys(),
                NearMode::Off,
                Span::ZERO,
                || produce("x"),
                |w| w.wait(),
            )
            .unwrap();
        assert_eq!(status(&answer), Status::Hit);
        assert!(calls(&store) > before);
    }
    assert!(near_of(&store).is_empty());
}

// --- Refreshes the engine drives (shared::background) ---------------------

use restflow_cache::shared::RefreshClaim;
use restflow_cache::Refresher;

fn refreshing(
    cache: &Arc<SharedCache<Arc<FakeStore>, String>>,
    refresher: &Refresher,
    value: &'static str,
) -> (Status, String) {
    let answer = cache
        .get_refreshing(refresher, &keys(), Span::ZERO, move || produce(value))
        .unwrap();
    value_of(&answer)
}

#[test]
fn get_refreshing_refreshes_a_stale_entry_in_the_background_and_releases_the_claim() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    let refresher = Refresher::new(1, 8);
    assert_eq!(
        refreshing(&cache, &refresher, "v1"),
        (Status::Miss, "v1".into())
    );
    clock.advance(Span::from_secs(10));
    // Stale: served at once, and the refresh runs on the refresher.
    assert_eq!(
        refreshing(&cache, &refresher, "v2"),
        (Status::Stale, "v1".into())
    );
    assert!(refresher.wait_idle(Duration::from_secs(10)));
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "the claim is released"
    );
    assert_eq!(
        refreshing(&cache, &refresher, "v3"),
        (Status::Hit, "v2".into())
    );
}

#[test]
fn a_failed_background_refresh_keeps_the_stale_value_and_releases_the_claim() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    let refresher = Refresher::new(1, 8);
    refreshing(&cache, &refresher, "v1");
    clock.advance(Span::from_secs(10));
    let answer = cache
        .get_refreshing(&refresher, &keys(), Span::ZERO, || Err("down".to_string()))
        .unwrap();
    assert_eq!(value_of(&answer), (Status::Stale, "v1".into()));
    assert!(refresher.wait_idle(Duration::from_secs(10)));
    assert!(!store.values.lock().contains_key("refresh:f1"));
    // The next stale read claims (and runs) the refresh again.
    assert_eq!(
        refreshing(&cache, &refresher, "v2"),
        (Status::Stale, "v1".into())
    );
    assert!(refresher.wait_idle(Duration::from_secs(10)));
    assert_eq!(
        refreshing(&cache, &refresher, "v3"),
        (Status::Hit, "v2".into())
    );
}

#[test]
fn a_refresh_the_full_queue_refuses_gives_its_claim_back_at_once() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    // One worker, held by a job; one queue slot, taken by another.
    let refresher = Refresher::new(1, 1);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    refresher
        .try_spawn(Box::new(move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }))
        .unwrap_or_else(|_| panic!("the first job is taken"));
    started_rx.recv().unwrap();
    refresher
        .try_spawn(Box::new(|| {}))
        .unwrap_or_else(|_| panic!("the queue has one slot"));
    let (token, generations) = claim_refresh(&cache, &clock);
    assert!(store.values.lock().contains_key("refresh:f1"));
    let claim = RefreshClaim {
        keys: keys(),
        token,
        keep: Span::ZERO,
        generations,
    };
    let (finished_tx, finished_rx) = std::sync::mpsc::channel();
    let queued = cache.spawn_refresh(
        |job| refresher.try_spawn(job),
        claim,
        || refreshed("never"),
        move |outcome| finished_tx.send(outcome).unwrap(),
    );
    assert!(!queued);
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "given back"
    );
    assert!(finished_rx.try_recv().is_err(), "the refused job never ran");
    release_tx.send(()).unwrap();
    assert!(refresher.wait_idle(Duration::from_secs(10)));
    // Nothing was stored: the entry is still v1, and the next stale read
    // claims the refresh again.
    assert!(matches!(
        get(&cache, "unused"),
        Answer::Stored {
            status: Status::Stale,
            refresh_token: Some(_),
            ..
        }
    ));
}

/// Decodes a test payload: a value written as "bad..." no longer decodes
/// (its class moved, say), one written as "fatal" stops the caller.
fn decode(flags: u8, bytes: &[u8]) -> Result<String, Undecodable<String>> {
    match (flags, bytes) {
        (_, b"fatal") => Err(Undecodable::Fatal("interrupted".into())),
        (_, bad) if bad.starts_with(b"bad") => Err(Undecodable::Unreadable),
        (0, good) => Ok(String::from_utf8(good.to_vec()).unwrap()),
        (other, _) => panic!("unexpected flags {other}"),
    }
}

/// [`SharedCache::serve`] with `compute` and [`decode`], counting the
/// computations and decodings: `(answer, computations, decodings)`.
fn serve(
    cache: &SharedCache<Arc<FakeStore>, String>,
    value: &str,
) -> (
    Result<restflow_cache::shared::Served<String>, SharedError<String>>,
    usize,
    usize,
) {
    let (mut computed, mut decoded) = (0, 0);
    let served = cache.serve(
        &keys(),
        NearMode::Off,
        Span::ZERO,
        || {
            computed += 1;
            produce(value)
        },
        |flags, bytes| {
            decoded += 1;
            decode(flags, bytes)
        },
        |w| w.wait(),
    );
    (served, computed, decoded)
}

/// The value of the entry `cache` reads now, if any (signed, not decoded).
fn stored_value(cache: &SharedCache<Arc<FakeStore>, String>) -> Option<Vec<u8>> {
    cache.peek(&keys()).unwrap().map(|(_, value, _, _)| value)
}

#[test]
fn an_entry_that_no_longer_decodes_is_dropped_and_recomputed_as_a_miss() {
    let (_store, cache, _) = cache(true);
    get(&cache, "bad: stored by an older release");
    let (served, computed, decoded) = serve(&cache, "v2");
    let served = served.unwrap();
    assert_eq!((served.status, served.value.as_str()), (Status::Miss, "v2"));
    assert!(served.stamps.is_some(), "the new value is stored");
    assert_eq!((computed, decoded), (1, 1));
    assert_eq!(stored_value(&cache).as_deref(), Some(b"v2".as_slice()));
    let (again, computed, _) = serve(&cache, "unused");
    let again = again.unwrap();
    assert_eq!(
        (again.status, again.value.as_str(), computed),
        (Status::Hit, "v2", 0)
    );
}

#[test]
fn entries_that_do_not_decode_twice_are_computed_live_as_bypass() {
    let (store, cache, clock) = cache(true);
    get(&cache, "bad1");
    // Between this caller's delete and its next read, another process
    // stores another entry that does not decode either.
    let (other_store, other_clock) = (Arc::clone(&store), Arc::clone(&clock));
    *store.after_delete.lock() = Some(Box::new(move || {
        get(&another_process(&other_store, &other_clock, true), "bad2");
    }));
    let (served, computed, decoded) = serve(&cache, "live");
    let served = served.unwrap();
    assert_eq!(
        (served.status, served.value.as_str(), served.stamps),
        (Status::Bypass, "live", None)
    );
    assert!(served.bypassed.is_none(), "the store did not fail");
    assert_eq!((computed, decoded), (1, 2));
    assert_eq!(stored_value(&cache), None, "both entries are dropped");
}

#[test]
fn a_fatal_decode_error_reaches_the_caller_and_nothing_is_deleted() {
    let (_store, cache, _) = cache(true);
    get(&cache, "fatal");
    let (served, computed, decoded) = serve(&cache, "unused");
    assert_eq!(
        served.unwrap_err(),
        SharedError::Decode("interrupted".to_string())
    );
    assert_eq!((computed, decoded), (0, 1));
    assert_eq!(stored_value(&cache).as_deref(), Some(b"fatal".as_slice()));
}

#[test]
fn a_stale_entry_that_no_longer_decodes_gives_its_refresh_claim_back() {
    let (store, cache, clock) = cache(true);
    get(&cache, "bad");
    clock.advance(Span::from_secs(10));
    let (served, computed, _) = serve(&cache, "v2");
    let served = served.unwrap();
    assert_eq!(
        (served.status, served.value.as_str(), computed),
        (Status::Miss, "v2", 1)
    );
    assert!(served.refresh.is_none());
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "the claim read with the entry is released"
    );
}

#[test]
fn a_stale_read_hands_its_refresh_claim_back_decoded() {
    let (_store, cache, clock) = cache(true);
    get(&cache, "v1");
    clock.advance(Span::from_secs(10));
    let (served, computed, _) = serve(&cache, "unused");
    let served = served.unwrap();
    assert_eq!(
        (served.status, served.value.as_str(), computed),
        (Status::Stale, "v1", 0)
    );
    let claim = served.refresh.expect("the stale read claims the refresh");
    assert_eq!(claim.keys.data, keys().data);
    cache
        .finish_refresh(
            &claim.keys,
            &claim.token,
            claim.keep,
            claim.generations,
            refreshed("v2"),
        )
        .unwrap();
    let (again, _, _) = serve(&cache, "unused");
    assert_eq!(again.unwrap().value, "v2");
}

#[test]
fn a_peek_skips_an_entry_that_does_not_decode_and_leaves_it() {
    let (store, cache, _) = cache(true);
    get(&cache, "bad");
    assert_eq!(cache.peek_decoded(&keys(), decode), Ok(None));
    assert_eq!(stored_value(&cache).as_deref(), Some(b"bad".as_slice()));
    store.values.lock().clear();
    get(&cache, "fatal");
    assert_eq!(
        cache.peek_decoded(&keys(), decode).map(|_| ()),
        Err(SharedError::Decode("interrupted".to_string()))
    );
    store.values.lock().clear();
    get(&cache, "v1");
    let (value, _, freshness) = cache.peek_decoded(&keys(), decode).unwrap().unwrap();
    assert_eq!((value.as_str(), freshness), ("v1", Freshness::Fresh));
}

// -- the lifecycle in steps (`SharedCache::begin`), for callers that
// compute the value themselves (an event loop's task) --------------------

/// [`SharedCache::begin`] on `cache` (shared, as an async embedder holds it).
fn begin(
    cache: &Arc<SharedCache<Arc<FakeStore>, String>>,
    keep: Span,
) -> restflow_cache::shared::Begin<'static, String, Arc<FakeStore>, String> {
    cache
        .begin(a_task(), &keys(), NearMode::Off, keep, decode, |w| w.wait())
        .unwrap()
}

/// A task of an event loop on this thread, unlike every other.
fn a_task() -> restflow_cache::Owner {
    static TASKS: AtomicUsize = AtomicUsize::new(0);
    restflow_cache::Owner::task(TASKS.fetch_add(1, Ordering::Relaxed) as u64)
}

fn claim_of(
    begun: restflow_cache::shared::Begin<'static, String, Arc<FakeStore>, String>,
) -> restflow_cache::shared::OwnedClaim<Arc<FakeStore>, String> {
    match begun {
        restflow_cache::shared::Begin::Lead(claim) => claim,
        restflow_cache::shared::Begin::Served(served) => panic!("served {:?}", served.status),
    }
}

#[test]
fn a_lead_finished_from_another_thread_stores_and_later_callers_hit() {
    let (store, cache, _) = cache(true);
    let cache = Arc::new(cache);
    let claim = claim_of(begin(&cache, Span::ZERO));
    assert!(claim.stores());
    assert!(
        store.values.lock().contains_key("lock:f1"),
        "the lead holds the lock"
    );
    let served = std::thread::spawn(move || claim.finish_served(produce("v1").unwrap()))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!((served.status, served.value.as_str()), (Status::Miss, "v1"));
    assert!(!store.values.lock().contains_key("lock:f1"), "freed");
    match begin(&cache, Span::ZERO) {
        restflow_cache::shared::Begin::Served(hit) => {
            assert_eq!((hit.status, hit.value.as_str()), (Status::Hit, "v1"))
        }
        restflow_cache::shared::Begin::Lead(_) => panic!("stored: a hit"),
    }
}

#[test]
fn a_dropped_claim_frees_the_lock_at_once_for_another_process() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    let other = Arc::new(another_process(&store, &clock, true));
    let claim = claim_of(begin(&cache, Span::ZERO));
    drop(claim); // the task computing it was cancelled
    assert!(!store.values.lock().contains_key("lock:f1"));
    // The other process takes the lock without polling.
    let theirs = claim_of(begin(&other, Span::ZERO));
    assert!(theirs.stores(), "it holds the lock, not a wait past it");
    assert_eq!(other.stats().store.snapshot().get(Counter::LockWait), 0);
    let served = theirs.finish_served(produce("theirs").unwrap()).unwrap();
    assert_eq!(served.status, Status::Miss);
    assert_eq!(stored_value(&cache).as_deref(), Some(b"theirs".as_slice()));
}

#[test]
fn a_failed_claim_with_a_kept_value_answers_stale_and_frees_the_lock() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    get(&cache, "old");
    clock.advance(Span::from_secs(20)); // past ttl 10 + stale 5
    let claim = claim_of(begin(&cache, Span::from_secs(60)));
    let served = claim.fail_served("down".to_string(), decode).unwrap();
    assert_eq!(
        (served.status, served.value.as_str()),
        (Status::Stale, "old")
    );
    assert!(!store.values.lock().contains_key("lock:f1"));
    // Without a kept value, the error.
    let claim = claim_of(begin(&cache, Span::ZERO));
    let failed = claim.fail_served("down".to_string(), decode).unwrap_err();
    assert_eq!(failed, SharedError::Compute("down".into()));
}

#[test]
fn a_refresh_claim_is_finished_from_another_thread() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    get(&cache, "v1");
    clock.advance(Span::from_secs(10));
    let served = match begin(&cache, Span::ZERO) {
        restflow_cache::shared::Begin::Served(served) => served,
        restflow_cache::shared::Begin::Lead(_) => panic!("a stale entry is served"),
    };
    assert_eq!(
        (served.status, served.value.as_str()),
        (Status::Stale, "v1")
    );
    let claim = served.refresh.expect("the stale read claims the refresh");
    let finisher = Arc::clone(&cache);
    std::thread::spawn(move || {
        finisher
            .finish_refresh(
                &claim.keys,
                &claim.token,
                claim.keep,
                claim.generations,
                refreshed("v2"),
            )
            .unwrap()
    })
    .join()
    .unwrap();
    assert!(!store.values.lock().contains_key("refresh:f1"), "released");
    assert_eq!(stored_value(&cache).as_deref(), Some(b"v2".as_slice()));
}

#[test]
fn a_forced_refresh_claim_stores_under_the_generations_read_at_begin() {
    let (_, cache, _) = cache(true);
    let cache = Arc::new(cache);
    get(&cache, "v1");
    let claim = cache.begin_refresh(&keys(), Span::ZERO).unwrap();
    let answer = claim.finish(produce("v2").unwrap()).unwrap();
    assert_eq!(value_of(&answer), (Status::Miss, "v2".to_string()));
    assert_eq!(stored_value(&cache).as_deref(), Some(b"v2".as_slice()));
}

#[test]
fn a_thread_that_began_a_held_claim_follows_it_when_it_begins_the_key_again() {
    // An async embedder's worker thread began the claim; an event loop's
    // task holds it. The same worker beginning the key again (another
    // task's call) must follow the claim, not be refused as recursive.
    let (_, cache, _) = cache(true);
    let cache = Arc::new(cache);
    let held = std::sync::Mutex::new(Some(claim_of(begin(&cache, Span::ZERO))));
    let again = cache
        .begin(
            a_task(),
            &keys(),
            NearMode::Off,
            Span::ZERO,
            decode,
            |waiter| {
                // The holder gives up (its task was cancelled): this caller leads.
                drop(held.lock().unwrap().take());
                waiter.wait()
            },
        )
        .map(claim_of);
    assert!(again.expect("follows, then leads").stores());
}

/// The test payloads' [`decode`] as a codec; values are stored as UTF-8.
struct TestCodec;

impl restflow_cache::shared::Codec<String> for TestCodec {
    type Error = String;
    fn encode(&self, value: &String) -> Result<Option<(u8, Vec<u8>)>, String> {
        Ok(Some((0, value.as_bytes().to_vec())))
    }
    fn decode(&self, flags: u8, bytes: &[u8]) -> Result<String, Undecodable<String>> {
        decode(flags, bytes)
    }
}

/// [`SharedCache::serve_counted`] of `keys()` with `stats`: the value
/// computed is `value`, or the error `Err(value)` when it starts with "!".
fn serve_counted(
    cache: &SharedCache<Arc<FakeStore>, String>,
    (mode, keep): (NearMode, Span),
    stats: &Arc<restflow_cache::Stats>,
    value: &str,
) -> Result<restflow_cache::shared::Served<String>, SharedError<String>> {
    cache.serve_counted(&keys(), (mode, keep), stats, &TestCodec, || {
        match value.strip_prefix('!') {
            Some(error) => Err(error.to_owned()),
            None => produce(value),
        }
    })
}

/// The non-zero counters of `stats`, by name, and how many lookups it timed.
fn counted(stats: &restflow_cache::Stats) -> (Vec<(&'static str, u64)>, u64) {
    let snapshot = stats.snapshot();
    let counts = Counter::ALL
        .into_iter()
        .map(|c| (c.as_str(), snapshot.get(c)))
        .filter(|(_, n)| *n > 0)
        .collect();
    (counts, snapshot.lookup.count())
}

#[test]
fn a_counted_serve_counts_each_status_its_refresh_and_times_reads_served_without_computing() {
    let (_store, cache, clock) = cache(true);
    let stats = Arc::new(restflow_cache::Stats::new());
    let off = (NearMode::Off, Span::ZERO);
    let miss = serve_counted(&cache, off, &stats, "v1").unwrap();
    assert_eq!(miss.status, Status::Miss);
    // A computation is not timed as a lookup.
    assert_eq!(counted(&stats), (vec![("miss", 1)], 0));
    let hit = serve_counted(&cache, off, &stats, "unused").unwrap();
    assert_eq!((hit.status, hit.value.as_str()), (Status::Hit, "v1"));
    assert_eq!(counted(&stats), (vec![("hit", 1), ("miss", 1)], 1));
    clock.advance(Span::from_secs(12)); // stale: ttl 10, stale 5
    let stale = serve_counted(&cache, off, &stats, "unused").unwrap();
    assert_eq!(stale.status, Status::Stale);
    assert!(stale.refresh.is_some(), "the read claimed the refresh");
    let expected = vec![
        ("hit", 1),
        ("miss", 1),
        ("stale", 1),
        ("background_refreshes", 1),
    ];
    assert_eq!(counted(&stats), (expected, 2));
}

/// How many near copies of `stats`'s function invalidations dropped.
fn near_invalidations(stats: &restflow_cache::Stats) -> u64 {
    stats.snapshot().get(Counter::NearInvalidation)
}

#[test]
fn a_near_copy_dropped_by_an_invalidation_is_counted_for_its_function_once() {
    // `near_invalidations` was never incremented: it read 0 whatever the
    // near cache dropped.
    let (store, cache, _clock) = near_cache();
    let near = near_of(&store);
    let (f, g) = (
        Arc::new(restflow_cache::Stats::new()),
        Arc::new(restflow_cache::Stats::new()),
    );
    let fill = (NearMode::Fill, Span::ZERO);
    let other = KeySet {
        data: "ns::g::::x=i1".into(),
        scope: "gen:g".into(),
        ..keys()
    };
    let keep_g = || {
        cache
            .serve_counted(&other, fill, &g, &TestCodec, || produce("g1"))
            .unwrap()
    };
    serve_counted(&cache, fill, &f, "v1").unwrap(); // a miss: stored
    serve_counted(&cache, fill, &f, "unused").unwrap(); // read: kept near
    keep_g();
    keep_g();
    assert_eq!(near.len(), 2);
    // The store reports f's key: its copy is dropped, credited to f alone.
    near.invalidate([keys().data.as_bytes()]);
    assert_eq!((near_invalidations(&f), near_invalidations(&g)), (1, 0));
    // Reported again (a write's own forget, then its message): nothing
    // held any more, nothing counted.
    near.invalidate([keys().data.as_bytes()]);
    assert_eq!(near_invalidations(&f), 1);
    // f's counter: its copy (kept again) is dropped; g's stays.
    serve_counted(&cache, fill, &f, "unused").unwrap();
    near.invalidate([keys().scope.as_bytes()]);
    assert_eq!((near_invalidations(&f), near_invalidations(&g)), (2, 0));
    assert_eq!(near.len(), 1, "dropped at once, not left to eviction");
    // The version counter both were read under: g's copy goes; f's, gone
    // already, is not counted twice.
    near.invalidate([keys().version.as_bytes(), b"unrelated".as_slice()]);
    assert_eq!((near_invalidations(&f), near_invalidations(&g)), (2, 1));
    assert!(near.is_empty());
    // Kept by the async layer's steps too; a flush is no invalidation.
    serve_counted(&cache, fill, &f, "unused").unwrap();
    let begun = Arc::new(cache)
        .begin_counted(a_task(), &other, fill, &g, &TestCodec)
        .unwrap();
    assert!(matches!(begun, restflow_cache::shared::Begin::Served(_)));
    assert_eq!(near.len(), 2);
    near.flush();
    assert_eq!((near_invalidations(&f), near_invalidations(&g)), (2, 1));
    // The store-level count is of the names reported, held or not.
    assert_eq!(near.counts().invalidations, 5);
}

#[test]
fn a_counted_stale_after_its_own_failed_computation_is_stale_if_error_and_untimed() {
    let (_store, cache, clock) = cache_strict();
    let stats = Arc::new(restflow_cache::Stats::new());
    get(&cache, "old");
    clock.advance(Span::from_secs(20)); // past ttl 10 + stale 5
    let keep = (NearMode::Off, Span::from_secs(60));
    let served = serve_counted(&cache, keep, &stats, "!down").unwrap();
    assert_eq!(
        (served.status, served.value.as_str()),
        (Status::Stale, "old")
    );
    let expected = vec![("stale", 1), ("stale_if_error", 1)];
    assert_eq!(counted(&stats), (expected, 0));
    // A failure with nothing kept is the caller's error, not counted here.
    let failed = serve_counted(&cache, (NearMode::Off, Span::ZERO), &stats, "!down");
    assert_eq!(failed.unwrap_err(), SharedError::Compute("down".into()));
    assert_eq!(counted(&stats).0.len(), 2);
}

#[test]
fn a_counted_claim_counts_a_forced_recompute_as_refresh_and_a_fill_as_a_near_miss() {
    let (_store, cache, _) = cache(true);
    let cache = Arc::new(cache);
    let stats = Arc::new(restflow_cache::Stats::new());
    let forced = cache.begin_refresh(&keys(), Span::ZERO).unwrap();
    let served = forced
        .finish_counted(produce("v1"), &TestCodec, &stats)
        .unwrap();
    assert_eq!(served.status, Status::Refresh);
    assert_eq!(counted(&stats), (vec![("refresh", 1)], 0));
    // The caller looked in the near cache first and missed: a near miss.
    let fill = (NearMode::Fill, Span::ZERO);
    let begun = cache
        .begin_counted(a_task(), &keys(), fill, &stats, &TestCodec)
        .unwrap();
    let restflow_cache::shared::Begin::Served(hit) = begun else {
        panic!("stored: a hit")
    };
    assert_eq!(hit.status, Status::Hit);
    let expected = vec![("hit", 1), ("refresh", 1), ("near_misses", 1)];
    assert_eq!(counted(&stats), (expected, 1));
    // A lead is counted when it is finished, as a MISS.
    cache.delete(&keys()).unwrap();
    let begun = cache
        .begin_counted(a_task(), &keys(), fill, &stats, &TestCodec)
        .unwrap();
    assert_eq!(counted(&stats).0[2], ("near_misses", 2));
    let served = claim_of(begun)
        .finish_counted(produce("v2"), &TestCodec, &stats)
        .unwrap();
    assert_eq!(served.status, Status::Miss);
    assert_eq!(counted(&stats).0[1], ("miss", 1));
}

#[test]
fn a_counted_wait_on_another_caller_of_this_process_is_counted() {
    let (_store, cache, _) = cache(true);
    let cache = Arc::new(cache);
    let stats = Arc::new(restflow_cache::Stats::new());
    let off = (NearMode::Off, Span::ZERO);
    let claim = claim_of(
        cache
            .begin_counted(a_task(), &keys(), off, &stats, &TestCodec)
            .unwrap(),
    );
    let follower = {
        let (cache, stats) = (Arc::clone(&cache), Arc::clone(&stats));
        std::thread::spawn(move || serve_counted(&cache, off, &stats, "unused"))
    };
    // The follower counts its wait as it joins; finish once it has.
    let guard = std::time::Instant::now() + Duration::from_secs(60);
    while cache.waiters(&keys().data) == 0 {
        assert!(
            std::time::Instant::now() < guard,
            "the follower never joined"
        );
        std::thread::yield_now();
    }
    claim
        .finish_counted(produce("v1"), &TestCodec, &stats)
        .unwrap();
    let served = follower.join().unwrap().unwrap();
    assert_eq!((served.status, served.value.as_str()), (Status::Miss, "v1"));
    let expected = vec![("miss", 2), ("single_flight_waits", 1)];
    assert_eq!(counted(&stats), (expected, 0));
}

#[test]
fn a_served_refresh_overwrites_as_refresh_bypasses_a_failed_store_and_keeps_no_fallback() {
    let (store, cache, clock) = cache(true);
    get(&cache, "old");
    let served = cache
        .refresh_served(&keys(), Span::ZERO, || produce("new"))
        .unwrap();
    assert_eq!(
        (served.status, served.value.as_str()),
        (Status::Refresh, "new")
    );
    assert!(served.stamps.is_some(), "stored");
    assert_eq!(stored_value(&cache).as_deref(), Some(b"new".as_slice()));
    // A failed recompute is the caller's error, even with a value kept.
    clock.advance(Span::from_secs(20));
    let failed = cache.refresh_served(&keys(), Span::from_secs(60), || {
        Err::<Produced<String>, _>("down".to_string())
    });
    assert_eq!(failed.unwrap_err(), SharedError::Compute("down".into()));
    store.down.store(true, Ordering::SeqCst);
    let bypassed = cache
        .refresh_served(&keys(), Span::ZERO, || produce("live"))
        .unwrap();
    assert_eq!(
        (bypassed.status, bypassed.value.as_str()),
        (Status::Bypass, "live")
    );
    assert!(
        bypassed.bypassed.is_some(),
        "with the store's error to warn about"
    );
}

/// What a cache logged: its warnings, in order.
type Logged = Arc<Mutex<Vec<String>>>;

/// `cache`, logging its warnings about the store `redis://h` in the list
/// returned with it.
fn warning(
    cache: SharedCache<Arc<FakeStore>, String>,
) -> (SharedCache<Arc<FakeStore>, String>, Logged) {
    let logged = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logged);
    let log = Box::new(move |message| sink.lock().push(message));
    (cache.with_warnings("redis://h".into(), log), logged)
}

#[test]
fn a_store_failure_served_as_bypass_is_warned_about_at_most_once_a_minute() {
    let (store, cache, _) = cache(true);
    let (cache, logged) = warning(cache);
    let stats = Arc::new(restflow_cache::Stats::new());
    let off = (NearMode::Off, Span::ZERO);
    // The write of a value computed under the lock is refused: BYPASS.
    store.refuse_writes.store(true, Ordering::SeqCst);
    let served = serve_counted(&cache, off, &stats, "v1").unwrap();
    assert_eq!(served.status, Status::Bypass);
    // Then the store goes down: BYPASS again, within the same minute.
    store.down.store(true, Ordering::SeqCst);
    let served = serve_counted(&cache, off, &stats, "v2").unwrap();
    assert_eq!(served.status, Status::Bypass);
    let logged = logged.lock().clone();
    assert_eq!(logged.len(), 1, "one warning a minute: {logged:?}");
    assert!(
        logged[0].starts_with("restflow: cache store redis://h refused an operation"),
        "{logged:?}"
    );
}

#[test]
fn a_peek_past_a_failing_store_is_absent_and_warned_about_unless_asked_to_raise() {
    let (store, cache, _) = cache(true);
    let (cache, logged) = warning(cache);
    store.down.store(true, Ordering::SeqCst);
    assert_eq!(cache.peek_decoded(&keys(), decode), Ok(None));
    assert_eq!(logged.lock().len(), 1, "warned about");
    let (store, strict, _) = cache_strict();
    store.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        strict.peek_decoded(&keys(), decode),
        Err(SharedError::Store(StoreError::Unavailable(_)))
    ));
}

#[test]
fn a_blocking_call_on_the_thread_of_the_task_holding_the_claim_is_refused_not_blocked() {
    // An event loop's task holds the claim (its owner made on this thread,
    // the loop's), begun on a worker thread. A blocking call of the key on
    // the loop's thread would block the task it waits for, forever: it is
    // refused. A call on any other thread follows the claim.
    let (_, cache, _) = cache(true);
    let cache = Arc::new(cache);
    let owner = a_task();
    let claim = std::thread::scope(|s| {
        s.spawn(|| {
            cache.begin(owner, &keys(), NearMode::Off, Span::ZERO, decode, |w| {
                w.wait()
            })
        })
        .join()
        .unwrap()
    });
    let claim = claim_of(claim.unwrap());
    let mine = cache.get(&keys(), Span::ZERO, || produce("mine"), |w| w.wait());
    assert_eq!(mine.map(|a| status(&a)), Err(SharedError::Recursive));
    let follower = std::thread::spawn({
        let cache = Arc::clone(&cache);
        move || cache.get(&keys(), Span::ZERO, || produce("theirs"), |w| w.wait())
    });
    while cache.waiters(&keys().data) == 0 {
        std::thread::yield_now(); // until the follower waits on the claim
    }
    claim.finish_served(produce("v1").unwrap()).unwrap();
    let followed = follower.join().unwrap().unwrap();
    assert_eq!(value_of(&followed), (Status::Miss, "v1".to_string()));
}

#[test]
fn a_counted_near_read_serves_a_fresh_entry_as_a_hit_kept_for_a_hot_copy() {
    let (store, cache, clock) = near_cache();
    let stats = Arc::new(restflow_cache::Stats::new());
    let near = |started| cache.near_counted(&keys(), &stats, started, decode);
    assert!(near(None).unwrap().is_none(), "holds nothing yet");
    get(&cache, "v1");
    get(&cache, "unused"); // read from the store, kept near
    let (epoch, before) = (near_of(&store).epoch(), calls(&store));
    let served = near(Some(std::time::Instant::now())).unwrap().unwrap();
    assert_eq!(calls(&store), before, "no round trip");
    assert_eq!(
        (served.status, served.value.as_str(), served.kept),
        (Status::Hit, "v1", Some(epoch))
    );
    assert!(served.stamps.is_some() && served.refresh.is_none());
    assert_eq!(near(None).unwrap().unwrap().value, "v1");
    let hits = vec![("hit", 2), ("near_hits", 2)];
    assert_eq!(counted(&stats), (hits.clone(), 1), "only the first timed");
    // An entry that does not decode is left to the read of the store, and
    // not counted; a fatal error is the caller's.
    let unreadable = |_: u8, _: &[u8]| Err::<String, _>(Undecodable::Unreadable);
    let none = cache.near_counted(&keys(), &stats, None, unreadable);
    assert!(none.unwrap().is_none());
    let fatal = |_: u8, _: &[u8]| Err::<String, _>(Undecodable::Fatal("stop".into()));
    let fatal = cache.near_counted(&keys(), &stats, None, fatal);
    assert_eq!(fatal.err().as_deref(), Some("stop"));
    // Stale: not served near (its refresh is claimed through the store).
    clock.advance(Span::from_secs(10));
    assert!(near(None).unwrap().is_none());
    assert_eq!(counted(&stats), (hits, 1));
}

#[test]
fn the_key_space_drops_a_function_its_partitions_and_its_older_versions() {
    use restflow_cache::shared::{FunctionKeys, KeySpace};
    let (_store, cache, _) = cache(true);
    let cache = cache.with_keys(KeySpace::new("p:", false));
    let (v1, v2) = (
        FunctionKeys::new("app.f", "app.f", "app.Key", 1),
        FunctionKeys::new("app.f", "app.f", "app.Key", 2),
    );
    let keys = |f: &FunctionKeys, tenant: &str| {
        let suffix = format!("v{}", if f == &v1 { 1 } else { 2 });
        let parts = ("app.f", tenant, suffix.as_str());
        cache.keys().call_of(f, "ns", parts, true)
    };
    let serve = |keys: &KeySet, value: &str| {
        let answer = cache.get(keys, Span::ZERO, || produce(value), |w| w.wait());
        status(&answer.unwrap())
    };
    let (t7, t8, old) = (keys(&v2, "t=7"), keys(&v2, "t=8"), keys(&v1, "t=8"));
    for keys in [&t7, &t8, &old] {
        assert_eq!(serve(keys, "a"), Status::Miss);
        assert_eq!(serve(keys, "b"), Status::Hit);
    }
    cache.drop_partitions(&v2, [("app.f", "t=7")]).unwrap();
    assert_eq!(
        (serve(&t7, "c"), serve(&t8, "c")),
        (Status::Miss, Status::Hit)
    );
    assert_eq!(serve(&old, "c"), Status::Hit);
    // Version 2's owner drops what version 1 wrote, not its own.
    cache.drop_versions_below("app.Key", 2, ["app.f"]).unwrap();
    assert_eq!(
        (serve(&old, "d"), serve(&t7, "d")),
        (Status::Miss, Status::Hit)
    );
    cache.drop_function(&v2).unwrap();
    assert_eq!(
        (serve(&t7, "e"), serve(&t8, "e")),
        (Status::Miss, Status::Miss)
    );
}

#[test]
fn a_delete_reports_an_entry_only_of_the_current_generations() {
    use restflow_cache::shared::{FunctionKeys, KeySpace};
    let (_store, cache, _) = cache(true);
    let cache = cache.with_keys(KeySpace::new("p:", false));
    let f = FunctionKeys::new("app.f", "app.f", "app.Key", 1);
    let keys = |tenant: &str| cache.keys().call_of(&f, "ns", ("app.f", tenant, "x"), true);
    let serve = |keys: &KeySet| {
        let answer = cache.get(keys, Span::ZERO, || produce("v"), |w| w.wait());
        status(&answer.unwrap())
    };
    let (t7, t8) = (keys("t=7"), keys("t=8"));
    assert_eq!((serve(&t7), serve(&t8)), (Status::Miss, Status::Miss));
    // Retired by invalidations: their bytes are still under their keys,
    // but no read finds them, so a delete finds no entry.
    cache.drop_partitions(&f, [("app.f", "t=7")]).unwrap();
    assert!(!cache.delete_fencing(&t7).unwrap());
    assert_eq!(serve(&t8), Status::Hit);
    cache.drop_function(&f).unwrap();
    assert!(!cache.delete_fencing(&t8).unwrap());
    // A current entry is reported, once.
    assert_eq!(serve(&t8), Status::Miss);
    assert!(cache.delete_fencing(&t8).unwrap());
    assert!(!cache.delete_fencing(&t8).unwrap());
}

#[test]
fn a_shared_error_is_raised_as_the_memory_stores_and_a_store_failure_apart() {
    use restflow_cache::GetError;
    let error = |e: &str| e.to_owned();
    let compute = SharedError::Compute(error("failed")).into_get();
    assert_eq!(compute, Ok(GetError::Compute(error("failed"))));
    // A fatal decoding error is the caller's own, as it is.
    let decode = SharedError::Decode(error("interrupted")).into_get();
    assert_eq!(decode, Ok(GetError::Compute(error("interrupted"))));
    let recursive = SharedError::<String>::Recursive.into_get();
    assert_eq!(recursive, Ok(GetError::Recursive));
    let store = SharedError::<String>::Store(StoreError::CircuitOpen).into_get();
    assert_eq!(store, Err(StoreError::CircuitOpen));
}

#[test]
fn a_call_past_its_near_lookup_keeps_what_it_reads_only_when_it_uses_the_near_cache() {
    assert_eq!(NearMode::past_lookup(true), NearMode::Fill);
    assert_eq!(NearMode::past_lookup(false), NearMode::Off);
}

#[test]
fn a_value_stored_by_another_process_just_before_the_lock_is_taken_is_not_computed_again() {
    // This process reads a miss while another process computes under the
    // lock; the other stores its value and frees the lock before this one
    // tries it. The lock is then this caller's, but the value is there: it
    // is served (MISS, as a waiter's), not computed a second time (it was,
    // twice in one cross-process test run under load).
    let (store, cache, clock) = cache(true);
    let other = Arc::new(another_process(&store, &clock, true));
    let theirs = claim_of(begin(&other, Span::ZERO));
    let finished = Mutex::new(Some(theirs));
    *store.during_fetch.lock() = Some(Box::new(move || {
        let claim = finished.lock().take().expect("runs once");
        claim.finish_served(produce("theirs").unwrap()).unwrap();
    }));
    let computed = AtomicBool::new(false);
    let answer = cache
        .get(
            &keys(),
            Span::ZERO,
            || {
                computed.store(true, Ordering::SeqCst);
                produce("mine")
            },
            |w| w.wait(),
        )
        .unwrap();
    assert_eq!(value_of(&answer), (Status::Miss, "theirs".to_string()));
    assert!(!computed.load(Ordering::SeqCst), "computed a second time");
    assert!(!store.values.lock().contains_key("lock:f1"), "lock freed");
}

/// The background refresh a stale counted read of "v1" claimed, as the
/// one lead type an embedder holds.
fn refresh_lead(
    cache: &Arc<SharedCache<Arc<FakeStore>, String>>,
    clock: &Clock,
    stats: &Arc<restflow_cache::Stats>,
) -> restflow_cache::shared::SharedLead<Arc<FakeStore>, String> {
    get(cache, "v1");
    clock.advance(Span::from_secs(12)); // stale: ttl 10, stale 5
    let stale = serve_counted(cache, (NearMode::Off, Span::ZERO), stats, "unused").unwrap();
    assert_eq!(stale.status, Status::Stale);
    let claim = stale.refresh.expect("the stale read claims the refresh");
    restflow_cache::shared::SharedLead::refresh(cache, claim)
}

#[test]
fn a_background_refresh_lead_stores_its_value_as_refresh_counts_nothing_and_frees_the_claim() {
    let (store, cache, clock) = cache(true);
    let (cache, stats) = (Arc::new(cache), Arc::new(restflow_cache::Stats::new()));
    let lead = refresh_lead(&cache, &clock, &stats);
    assert!(lead.is_background());
    assert!(store.values.lock().contains_key("refresh:f1"), "claimed");
    let before = counted(&stats);
    let served = lead
        .finish_counted(produce("v2"), &TestCodec, &stats)
        .unwrap()
        .expect("a refresh answers its value");
    assert_eq!(
        (served.status, served.value.as_str(), served.stamps),
        (Status::Refresh, "v2", None)
    );
    assert_eq!(counted(&stats), before, "the read that claimed it counted");
    assert_eq!(stored_value(&cache).as_deref(), Some(b"v2".as_slice()));
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "given back"
    );
}

#[test]
fn a_failed_or_dropped_background_refresh_lead_gives_the_claim_back_and_the_stale_value_stays() {
    let (store, cache, clock) = cache(true);
    let (cache, stats) = (Arc::new(cache), Arc::new(restflow_cache::Stats::new()));
    let lead = refresh_lead(&cache, &clock, &stats);
    let failed = lead.finish_counted(Err("down".to_owned()), &TestCodec, &stats);
    assert!(matches!(failed, Ok(None)), "answers nothing");
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "given back"
    );
    assert_eq!(stored_value(&cache).as_deref(), Some(b"v1".as_slice()));
    // Claimed again by the next read, then dropped unfinished (a
    // cancelled task): given back too.
    let again = serve_counted(&cache, (NearMode::Off, Span::ZERO), &stats, "unused").unwrap();
    let claim = again.refresh.expect("claimed again at once");
    drop(restflow_cache::shared::SharedLead::refresh(&cache, claim));
    assert!(
        !store.values.lock().contains_key("refresh:f1"),
        "given back"
    );
    assert_eq!(stored_value(&cache).as_deref(), Some(b"v1".as_slice()));
}

#[test]
fn a_computation_lead_answers_as_its_claim_and_frees_the_lock_when_dropped() {
    let (store, cache, _) = cache(true);
    let (cache, stats) = (Arc::new(cache), Arc::new(restflow_cache::Stats::new()));
    let off = (NearMode::Off, Span::ZERO);
    let begin = || cache.begin_counted(a_task(), &keys(), off, &stats, &TestCodec);
    let lead = restflow_cache::shared::SharedLead::compute(claim_of(begin().unwrap()));
    assert!(!lead.is_background());
    assert!(store.values.lock().contains_key("lock:f1"), "locked");
    drop(lead);
    assert!(!store.values.lock().contains_key("lock:f1"), "freed");
    let lead = restflow_cache::shared::SharedLead::compute(claim_of(begin().unwrap()));
    let served = lead
        .finish_counted(produce("v1"), &TestCodec, &stats)
        .unwrap()
        .expect("a miss answers");
    assert_eq!((served.status, served.value.as_str()), (Status::Miss, "v1"));
    assert_eq!(counted(&stats).0, vec![("miss", 1)]);
    assert!(!store.values.lock().contains_key("lock:f1"), "freed");
}

#[test]
fn a_cluster_drops_older_versions_through_the_functions_this_process_knows() {
    use restflow_cache::shared::{FunctionKeys, KeySpace};
    use restflow_cache::{ScopeLabels, Scopes};
    let (_store, cache, _) = cache(true);
    let cache = cache.with_keys(KeySpace::new("p:", true));
    let function = |id: &str, version| FunctionKeys::new(id, id, "app.Key", version);
    let keys = |f: &FunctionKeys, id: &str| cache.keys().call_of(f, "ns", (id, "", "x"), false);
    let serve = |keys: &KeySet| status(&get_keys(&cache, keys));
    // Version 1 of the functions f (live here) and g (not known here).
    let (f, g) = (
        keys(&function("app.f", 1), "app.f"),
        keys(&function("app.g", 1), "app.g"),
    );
    for keys in [&f, &g] {
        assert_eq!(serve(keys), Status::Miss);
        assert_eq!(serve(keys), Status::Hit);
    }
    let scopes = Scopes::new();
    let labels = |id: &str, owner: &str| ScopeLabels {
        owner: owner.into(),
        version: 2,
        function_id: id.into(),
    };
    let _live = [
        scopes.intern("app.f", labels("app.f", "app.Key")),
        scopes.intern("app.h", labels("app.h", "app.Other")),
    ];
    cache
        .drop_known_versions_below(&scopes, "app.Key", 2)
        .unwrap();
    // f's shards were reached through its scope; g's were not.
    assert_eq!((serve(&f), serve(&g)), (Status::Miss, Status::Hit));
}

fn get_keys(cache: &SharedCache<Arc<FakeStore>, String>, keys: &KeySet) -> Answer<String> {
    cache
        .get(keys, Span::ZERO, || produce("v"), |w| w.wait())
        .unwrap()
}

#[test]
fn a_delete_fences_the_lock_and_refresh_holders_of_the_entry() {
    let (store, cache, clock) = cache(true);
    let cache = Arc::new(cache);
    let other = another_process(&store, &clock, true);
    // A leader computes; another process deletes the entry meanwhile.
    let claim = claim_of(begin(&cache, Span::ZERO));
    assert!(
        !other.delete_fencing(&keys()).unwrap(),
        "nothing stored yet"
    );
    assert!(
        store.values.lock().contains_key("lock:f1"),
        "the lock stays held (marked) until its holder frees it"
    );
    let served = claim.finish_served(produce("old").unwrap()).unwrap();
    assert_eq!(
        (served.status, served.value.as_str()),
        (Status::Miss, "old")
    );
    assert_eq!(
        served.stamps, None,
        "computed before the delete: not stored"
    );
    assert!(!store.values.lock().contains_key("lock:f1"), "freed");
    assert_eq!(stored_value(&cache), None);
    assert_eq!(status(&get(&cache, "new")), Status::Miss);
    assert_eq!(stored_value(&cache).as_deref(), Some(b"new".as_slice()));

    // A background refresh is claimed; the entry is deleted before it ends.
    clock.advance(Span::from_secs(10));
    let Answer::Stored {
        status: Status::Stale,
        refresh_token: Some(token),
        generations,
        ..
    } = get(&cache, "unused")
    else {
        panic!("the stale read claims the refresh")
    };
    assert!(other.delete_fencing(&keys()).unwrap());
    let refreshed = Refreshed::Store(0, b"refreshed".to_vec(), produce("x").unwrap().lifetime);
    cache
        .finish_refresh(&keys(), &token, Span::ZERO, generations, refreshed)
        .unwrap();
    assert_eq!(stored_value(&cache), None, "the delete stands");
    assert!(!store.values.lock().contains_key("refresh:f1"), "freed");
    // A plain delete (an undecodable entry dropped) fences nothing.
    let claim = claim_of(begin(&cache, Span::ZERO));
    other.delete(&keys()).unwrap();
    let served = claim.finish_served(produce("kept").unwrap()).unwrap();
    assert!(served.stamps.is_some());
    assert_eq!(stored_value(&cache).as_deref(), Some(b"kept".as_slice()));
}

#[test]
fn a_delete_fences_the_forced_refreshes_of_the_entry() {
    let (store, cache, clock) = cache(true);
    let other = another_process(&store, &clock, true);
    assert_eq!(status(&get(&cache, "old")), Status::Miss);
    // Two forced refreshes compute; another process deletes the entry
    // while they do: neither stores what it computed from the old data.
    let answer = cache
        .refresh(&keys(), Span::ZERO, || {
            let inner = other
                .refresh(&keys(), Span::ZERO, || {
                    assert!(other.delete_fencing(&keys()).unwrap());
                    produce("inner")
                })
                .unwrap();
            assert!(
                matches!(&inner, Answer::Computed { value, stamps: None } if value == "inner"),
                "served, not stored"
            );
            produce("outer")
        })
        .unwrap();
    assert!(
        matches!(&answer, Answer::Computed { value, stamps: None } if value == "outer"),
        "served, not stored"
    );
    assert_eq!(stored_value(&cache), None, "the delete stands");
    // A refresh that starts after the delete stores, as always.
    let answer = cache
        .refresh(&keys(), Span::ZERO, || produce("new"))
        .unwrap();
    assert!(matches!(
        &answer,
        Answer::Computed {
            stamps: Some(_),
            ..
        }
    ));
    assert_eq!(stored_value(&cache).as_deref(), Some(b"new".as_slice()));
}

/// Jobs queued, to run when a test says.
type Jobs = Arc<Mutex<Vec<restflow_cache::Job>>>;

/// A cache whose give-backs are queued in `jobs`, to run when a test says.
fn giving_back(
    cache: SharedCache<Arc<FakeStore>, String>,
) -> (Arc<SharedCache<Arc<FakeStore>, String>>, Jobs) {
    let jobs: Jobs = Arc::default();
    let queue = Arc::clone(&jobs);
    let cache = cache.with_give_backs(move |job| {
        queue.lock().push(job);
        Ok(())
    });
    (Arc::new(cache), jobs)
}

#[test]
fn an_unlock_the_store_left_unanswered_is_given_back_once_it_answers() {
    let (store, cache, _) = cache(true);
    let (cache, jobs) = giving_back(cache);
    let claim = claim_of(begin(&cache, Span::ZERO));
    // The store stalls while the value is computed: the write and the
    // unlock fail, and the give-back is queued.
    store.down.store(true, Ordering::SeqCst);
    let served = claim.finish_served(produce("v").unwrap()).unwrap();
    assert_eq!(served.status, Status::Bypass);
    assert!(store.values.lock().contains_key("lock:f1"));
    let job = jobs.lock().pop().expect("a give-back queued");
    // It answers again: the job frees the lock (it was retrying meanwhile).
    let calls = store.calls.load(Ordering::SeqCst);
    let up = Arc::clone(&store);
    let answering = std::thread::spawn(move || {
        while up.calls.load(Ordering::SeqCst) < calls + 2 {
            std::thread::yield_now();
        }
        up.down.store(false, Ordering::SeqCst);
    });
    job();
    answering.join().unwrap();
    assert!(!store.values.lock().contains_key("lock:f1"), "given back");
    assert!(jobs.lock().is_empty());
}

#[test]
fn a_give_back_never_frees_another_holders_lock() {
    let (store, cache, _) = cache(true);
    let (cache, jobs) = giving_back(cache);
    let claim = claim_of(begin(&cache, Span::ZERO));
    store.down.store(true, Ordering::SeqCst);
    claim.finish_served(produce("v").unwrap()).unwrap();
    let job = jobs.lock().pop().expect("a give-back queued");
    store.down.store(false, Ordering::SeqCst);
    // The lock expired meanwhile, and another process took it.
    store
        .values
        .lock()
        .insert("lock:f1".into(), b"another".to_vec());
    job();
    assert_eq!(
        store.values.lock().get("lock:f1").map(Vec::as_slice),
        Some(b"another".as_slice())
    );
}

#[test]
fn a_give_back_stops_at_the_locks_expiry() {
    let store = Arc::new(FakeStore::default());
    let clock = Arc::new(Clock::frozen(Timestamp::from_micros(1_800_000_000_000_000)));
    let cache = SharedCache::new(
        Arc::clone(&store),
        Signer::new(b"key"),
        clock,
        Breaker::new(3, Duration::from_secs(60)),
        SharedOptions {
            // Expired by the time its holder finishes.
            lock_timeout: Duration::ZERO,
            wait_timeout: Duration::from_millis(200),
            bypass_on_failure: true,
        },
    );
    let (cache, jobs) = giving_back(cache);
    let claim = claim_of(begin(&cache, Span::ZERO));
    store.down.store(true, Ordering::SeqCst);
    claim.finish_served(produce("v").unwrap()).unwrap();
    let job = jobs.lock().pop().expect("a give-back queued");
    let calls = store.calls.load(Ordering::SeqCst);
    job();
    assert_eq!(store.calls.load(Ordering::SeqCst), calls, "nothing asked");
}
