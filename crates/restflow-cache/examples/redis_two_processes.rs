//! One Redis-backed cache shared by two processes.
//!
//! The program is both processes: run without `--child`, it computes and
//! stores a value (MISS), then starts a second copy of itself with
//! `--child`, which is served that value from Redis (HIT) and invalidates
//! the function's entries; back in the first process, the next call is a
//! MISS again. Each process exits with an error if it sees anything else.
//!
//! ```text
//! cargo run -p restflow-cache --example redis_two_processes [REDIS_URL]
//! ```
//!
//! The URL comes from the first argument, else `RESTFLOW_REDIS_URL`, else
//! `redis://127.0.0.1:6379`. The example writes a handful of keys under
//! `restflow-example:` in that database.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use restflow_cache::shared::{
    Answer, Breaker, FunctionKeys, KeySet, KeySpace, Produced, RedisConfig, RedisStore,
    SharedCache, SharedOptions, Signer,
};
use restflow_cache::{Clock, Lifetime, Refresher, Span, Status};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Every key the example writes starts with this.
const NAMESPACE: &str = "restflow-example";

type Shared = SharedCache<RedisStore, String>;

/// Runs background refreshes (one thread, up to 64 queued).
static REFRESHER: Refresher = Refresher::new(1, 64);

/// The cache one process holds. Both processes must sign with the same
/// secret, or each refuses the other's entries (a real service reads it
/// from its configuration).
fn open(url: &str) -> Result<Arc<Shared>, String> {
    let store = RedisStore::new(RedisConfig {
        url: url.to_string(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        read_spin: Duration::ZERO,
        invalidation_replicas: 0,
    })
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(SharedCache::new(
        store,
        Signer::new(b"example secret shared by both processes"),
        Arc::new(Clock::system()),
        Breaker::new(5, Duration::from_secs(30)),
        SharedOptions {
            lock_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(10),
            // Report a store that fails instead of computing live: the
            // example is about what Redis holds.
            bypass_on_failure: false,
        },
    )))
}

/// How the example names its keys: everything under `NAMESPACE:` (on a
/// Redis Cluster, pass `true` and every key gets its slot's hash tag).
fn key_space() -> KeySpace {
    KeySpace::new(format!("{NAMESPACE}:"), false)
}

/// The function `get_user`, as the key space names it: its id, the
/// identity its entries are shared under, and the key constructor (and its
/// version) that keys it.
fn get_user_function() -> FunctionKeys {
    FunctionKeys::new("get_user", "get_user", "example", 1)
}

/// The Redis keys of `get_user(id)`: the entry, the generation counters it
/// is written under (retiring the function's counter invalidates every
/// entry of the function), and the locks of its computation and refresh.
fn user_keys(id: i64) -> KeySet {
    key_space().call(&get_user_function(), &format!("get_user:{id}"), None)
}

/// Serves `get_user(id)` from the shared cache, computing it in this
/// process on a miss: `(status, value)`.
fn get_user(cache: &Arc<Shared>, id: i64) -> Result<(Status, String), String> {
    // Counted, so the output shows which computation a value came from.
    static COMPUTATIONS: AtomicU32 = AtomicU32::new(0);
    let compute = move || {
        let n = COMPUTATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        let pid = std::process::id();
        let value = format!("user {id} (computation {n} in process {pid})");
        Ok(Produced {
            serialized: Some((0, value.clone().into_bytes())),
            value,
            lifetime: Lifetime::new(Span::from_secs(60), Span::from_secs(30)),
        })
    };
    // A stale read is served at once and its refresh runs on `REFRESHER`
    // (the engine takes and releases the refresh claim).
    let answer = cache
        .get_refreshing(&REFRESHER, &user_keys(id), Span::ZERO, compute)
        .map_err(|e| format!("{e:?}"))?;
    Ok(match answer {
        Answer::Stored { status, value, .. } => {
            (status, String::from_utf8(value).map_err(|e| e.to_string())?)
        }
        Answer::Computed { value, .. } => (Status::Miss, value),
        Answer::Bypassed { value, .. } => (Status::Bypass, value),
    })
}

/// Drops every entry of `get_user`, in every process.
fn invalidate_users(cache: &Arc<Shared>) -> Result<(), String> {
    let counters = key_space().function_counters(&get_user_function());
    cache.retire(&counters).map_err(|e| e.to_string())
}

/// Serves `get_user(7)`, prints what came back, and fails unless it is
/// `expected`.
fn expect(cache: &Arc<Shared>, role: &str, expected: Status) -> Result<String, String> {
    let (status, value) = get_user(cache, 7)?;
    println!("{role}: {} {value:?}", status.as_str());
    if status != expected {
        return Err(format!("{role} expected {}", expected.as_str()));
    }
    Ok(value)
}

fn first_process(url: &str) -> Result<(), String> {
    let cache = open(url)?;
    // Start from nothing, whatever an earlier run left behind.
    invalidate_users(&cache)?;
    let stored = expect(&cache, "first process", Status::Miss)?;

    let child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--child", url])
        .output()
        .map_err(|e| format!("cannot start the second process: {e}"))?;
    print!("{}", String::from_utf8_lossy(&child.stdout));
    eprint!("{}", String::from_utf8_lossy(&child.stderr));
    if !child.status.success() {
        return Err(format!("the second process failed: {}", child.status));
    }
    let served = String::from_utf8_lossy(&child.stdout);
    if !served.contains(&format!("{stored:?}")) {
        return Err("the second process was not served the first one's value".into());
    }

    let role = "first process, after the invalidation";
    let recomputed = expect(&cache, role, Status::Miss)?;
    if recomputed == stored {
        return Err("the value was not computed again".into());
    }
    Ok(())
}

fn second_process(url: &str) -> Result<(), String> {
    let cache = open(url)?;
    expect(&cache, "second process", Status::Hit)?;
    invalidate_users(&cache)?;
    println!("second process: invalidated get_user");
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let child = args.first().is_some_and(|a| a == "--child");
    if child {
        args.remove(0);
    }
    let url = args
        .first()
        .cloned()
        .or_else(|| std::env::var("RESTFLOW_REDIS_URL").ok())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let outcome = if child {
        second_process(&url)
    } else {
        first_process(&url)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
