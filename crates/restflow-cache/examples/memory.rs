//! The engine over the in-process memory store, in a plain program.
//!
//! Walks one key through its lifecycle on a frozen clock (so the output is
//! the same on every run): MISS, then HIT; STALE once the clock passes the
//! TTL, with one background refresh; HIT on the refreshed value; and a MISS
//! again after the scope is invalidated.
//!
//! Run with `cargo run -p restflow-cache --example memory`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use restflow_cache::key::KeyWriter;
use restflow_cache::{
    Cache, Clock, Computed, Engine, Lifetime, MemoryStore, Refresher, Scope, Scopes, Served, Span,
    Timestamp,
};

/// The values cached are strings; the computation cannot fail here, so its
/// error type is `String` only to show where one would go.
type UserEngine = Engine<String, String, MemoryStore<String>>;

/// The key of `get_user(id)`: the scope's word first, so that bumping the
/// scope's generation makes every key built before the bump unreachable.
fn user_key(scope: &Scope<()>, id: i64) -> Vec<u8> {
    let mut key = KeyWriter::new();
    key.write_prefix_word(scope.key_word());
    key.write_int(id);
    key.as_bytes().to_vec()
}

/// What the cached function computes, counting its calls so the output
/// shows when it ran.
fn compute_user(calls: &AtomicU32, id: i64) -> Result<Computed<String>, String> {
    let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Computed {
        value: format!("user {id} (computed by call {call})"),
        // Fresh for 60 s, then served stale for 30 s while it refreshes.
        lifetime: Some(Lifetime::new(Span::from_secs(60), Span::from_secs(30))),
    })
}

/// Serves `get_user(id)` through the engine: the stale path schedules the
/// background refresh this caller claimed.
fn get_user(
    engine: &Arc<UserEngine>,
    scope: &Scope<()>,
    calls: &Arc<AtomicU32>,
    id: i64,
) -> Served<String> {
    let key = user_key(scope, id);
    let served = engine
        .get(&key, || compute_user(calls, id), |waiter| waiter.wait())
        .expect("get_user never fails");
    if served.refresh_claimed {
        let calls = Arc::clone(calls);
        let entry = Arc::clone(&served.entry);
        engine.schedule_refresh(&key, entry, move || compute_user(&calls, id));
    }
    served
}

fn show(step: &str, served: &Served<String>) {
    println!(
        "{step}: {} {:?}",
        served.status.as_str(),
        served.entry.value()
    );
}

fn main() {
    let clock = Arc::new(Clock::frozen(Timestamp::from_micros(1_700_000_000_000_000)));
    let cache = Cache::new(MemoryStore::new(10_000), Arc::clone(&clock));
    let engine = Arc::new(UserEngine::new(cache, Refresher::new(1, 64)));
    let scopes = Scopes::<()>::new();
    let users = scopes.intern("example.get_user", ());
    let calls = Arc::new(AtomicU32::new(0));

    show("first call", &get_user(&engine, &users, &calls, 7));
    show("second call", &get_user(&engine, &users, &calls, 7));

    clock.advance(Span::from_secs(70));
    show("70 s later", &get_user(&engine, &users, &calls, 7));
    // The refresh runs on the refresher's thread; wait for it to finish.
    assert!(engine.refresher().wait_idle(Duration::from_secs(5)));
    show("after the refresh", &get_user(&engine, &users, &calls, 7));

    users.bump();
    show("after invalidation", &get_user(&engine, &users, &calls, 7));
}
