//! A shared store's settings as an embedder receives them (names, URLs,
//! seconds as floats), checked and turned into the engine's types, and the
//! rate limit on warnings about a failing store.
//!
//! Errors are texts saying which setting to change and how; the embedder
//! raises them as its own errors.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::{Breaker, SharedOptions, StoreError};

/// How values are serialized, and the flag byte each payload's header
/// carries for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serializer {
    /// Python's pickle (flag 0).
    Pickle,
    /// JSON (flag 1).
    Json,
}

impl Serializer {
    /// The serializer named `name` (`"pickle"` or `"json"`).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "pickle" => Ok(Serializer::Pickle),
            "json" => Ok(Serializer::Json),
            other => Err(format!(
                "serializer must be \"pickle\" or \"json\", got {other:?}"
            )),
        }
    }

    /// The flag byte of its payloads.
    pub fn flag(self) -> u8 {
        match self {
            Serializer::Pickle => 0,
            Serializer::Json => 1,
        }
    }

    /// The serializer of a payload's flag byte.
    pub fn from_flag(flag: u8) -> Result<Self, String> {
        match flag {
            0 => Ok(Serializer::Pickle),
            1 => Ok(Serializer::Json),
            other => Err(format!(
                "unknown serializer flag {other} in a signed payload"
            )),
        }
    }
}

/// Checks a signing key: a shared store signs every payload with it.
pub fn check_signing_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("a shared store needs a non-empty signing key".to_owned());
    }
    Ok(())
}

/// `secs` as a duration, or the error saying `what` must be > 0.
pub fn positive_seconds(what: &str, secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!(
            "{what} must be a number of seconds > 0, got {secs}"
        ));
    }
    // A finite number can still be past what a Duration holds (1e30):
    // refused, never the panic of `Duration::from_secs_f64`.
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!(
            "{what} must be at most {} seconds, got {secs}",
            Duration::MAX.as_secs()
        )
    })
}

/// Which kind of store a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind<'a> {
    /// A Django cache alias (`django`, `django:<alias>`).
    Django(&'a str),
    /// A Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
    Cluster,
    /// Redis behind Sentinel (`redis+sentinel://`, `rediss+sentinel://`).
    Sentinel,
    /// One Redis server (anything else: the client checks the URL).
    Redis,
}

impl<'a> StoreKind<'a> {
    /// The kind of store `url` names.
    pub fn of(url: &'a str) -> Result<Self, String> {
        if let Some(alias) = url.strip_prefix("django") {
            return match alias {
                "" => Ok(StoreKind::Django("default")),
                _ => alias
                    .strip_prefix(':')
                    .map(StoreKind::Django)
                    .ok_or_else(|| {
                        format!("a Django backend is \"django\" or \"django:<alias>\", got {url:?}")
                    }),
            };
        }
        if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") {
            return Ok(StoreKind::Cluster);
        }
        if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
            return Ok(StoreKind::Sentinel);
        }
        Ok(StoreKind::Redis)
    }

    /// The circuit breaker for this store: three failures open it for a
    /// second. A cluster keeps a breaker per slot (one dead master must not
    /// skip the others), so this one never opens for it.
    pub fn breaker(self) -> Breaker {
        let threshold = match self {
            StoreKind::Cluster => u32::MAX,
            _ => 3,
        };
        Breaker::new(threshold, Duration::from_secs(1))
    }
}

/// A Redis connection's settings, in seconds.
#[cfg(feature = "redis")]
pub fn redis_config(
    url: &str,
    pool_size: u32,
    connect_timeout: f64,
    read_timeout: f64,
    read_spin: f64,
    invalidation_replicas: u32,
) -> Result<super::RedisConfig, String> {
    Ok(super::RedisConfig {
        url: url.to_owned(),
        pool_size,
        connect_timeout: positive_seconds("connect_timeout", connect_timeout)?,
        read_timeout: positive_seconds("read_timeout", read_timeout)?,
        read_spin: match read_spin {
            0.0 => Duration::ZERO,
            secs if secs > 0.0 => positive_seconds("read_spin", secs)?,
            _ => {
                return Err(format!(
                    "read_spin must be a number of seconds >= 0 (0: never busy-wait), got \
                     {read_spin}"
                ))
            }
        },
        invalidation_replicas,
    })
}

/// A Redis store's settings as an embedder receives them (seconds as
/// floats), for [`redis_store`].
#[cfg(feature = "redis")]
#[derive(Clone, Debug)]
pub struct RedisSettings<'a> {
    /// The store's URL (`redis://`, `rediss://`, `redis+sentinel://`,
    /// `redis+cluster://`, …).
    pub url: &'a str,
    /// Connections kept per server.
    pub pool_size: u32,
    /// Longest wait for a connection, in seconds.
    pub connect_timeout: f64,
    /// Longest wait for an answer, in seconds.
    pub read_timeout: f64,
    /// How long a read busy-waits for its answer before it sleeps, in
    /// seconds (0: never).
    pub read_spin: f64,
    /// Replicas that must acknowledge every delete (0: none waited for;
    /// see [`super::RedisConfig::invalidation_replicas`]).
    pub invalidation_replicas: u32,
    /// Entries of the near cache (0: none).
    pub near_cache_size: usize,
    /// The prefix of every key this store writes: a near cache tracks only
    /// these (every key of the server when it is empty).
    pub key_prefix: &'a str,
}

/// The Redis store (one server, Sentinel or Cluster, as `settings.url`
/// says) with its near cache, or the error saying which setting to
/// change. One constructor for every embedder, so the store each URL
/// names, and whether it keeps a near cache, is decided here once.
#[cfg(feature = "redis")]
pub fn redis_store(settings: &RedisSettings<'_>) -> Result<Box<dyn super::SharedStore>, String> {
    let config = redis_config(
        settings.url,
        settings.pool_size,
        settings.connect_timeout,
        settings.read_timeout,
        settings.read_spin,
        settings.invalidation_replicas,
    )?;
    let (size, prefix) = (settings.near_cache_size, settings.key_prefix);
    // Only this store's keys are tracked when they share a prefix; else
    // every key of the server is.
    let prefixes = || -> Vec<String> {
        (!prefix.is_empty())
            .then(|| prefix.to_owned())
            .into_iter()
            .collect()
    };
    // Every Redis store has `with_near_cache(size, prefixes)`.
    macro_rules! near {
        ($store:expr) => {{
            let store = $store.map_err(construction_error)?;
            Box::new(match size {
                0 => store,
                size => store.with_near_cache(size, prefixes()),
            })
        }};
    }
    Ok(match StoreKind::of(settings.url)? {
        StoreKind::Django(_) => {
            return Err(format!(
                "{:?} names a Django cache, not a Redis store",
                settings.url
            ))
        }
        StoreKind::Cluster => near!(super::ClusterStore::new(config)),
        StoreKind::Sentinel => near!(super::SentinelStore::new(config)),
        StoreKind::Redis => near!(super::RedisStore::new(config)),
    })
}

/// The refusal of `invalidation_replicas` > 0 for the store at `url`,
/// `what` (a store whose deletes restflow cannot follow by a `WAIT`).
pub fn unreplicable(url: &str, what: &str) -> String {
    format!(
        "invalidation_replicas must be 0 for {url:?}: restflow waits for replicas only on \
         Redis (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://), not on \
         {what}"
    )
}

/// What a store's constructor refused, said as a setting to change.
///
/// A constructor connects nothing, so what it refuses is its URL or an
/// option (reported as `Protocol`): that text alone, never
/// "store answered garbage", which would send the reader looking at a
/// server that was never asked.
#[cfg(feature = "redis")]
fn construction_error(error: StoreError) -> String {
    match error {
        StoreError::Protocol(why) => why,
        other => other.to_string(),
    }
}

/// The lifecycle's options: `wait_timeout` defaults to a second past the
/// lock's, so a follower outwaits a live computation.
pub fn options(
    lock_timeout: f64,
    wait_timeout: Option<f64>,
    bypass_on_failure: bool,
) -> Result<SharedOptions, String> {
    let lock_timeout = positive_seconds("lock_timeout", lock_timeout)?;
    Ok(SharedOptions {
        lock_timeout,
        wait_timeout: match wait_timeout {
            Some(secs) => positive_seconds("wait_timeout", secs)?,
            None => lock_timeout.saturating_add(Duration::from_secs(1)),
        },
        bypass_on_failure,
    })
}

/// Warnings about a failing store are logged at most this often.
const WARN_INTERVAL_MICROS: i64 = 60_000_000;

/// Says when a warning about a store may be logged: at most once a
/// minute, by one thread.
#[derive(Debug)]
pub struct WarnLimit {
    last: AtomicI64,
}

impl Default for WarnLimit {
    fn default() -> Self {
        WarnLimit {
            last: AtomicI64::new(i64::MIN / 2),
        }
    }
}

impl WarnLimit {
    /// Whether a warning may be logged at `now_micros`; if so, the next
    /// may be logged a minute later (one caller wins a race).
    pub fn allow(&self, now_micros: i64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        now_micros - last >= WARN_INTERVAL_MICROS
            && self
                .last
                .compare_exchange(last, now_micros, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// The warning about `error` from the store at `url`: one operation
/// refused, or the store failing (calls computed live until it answers).
pub fn warning(url: &str, error: &StoreError) -> String {
    match error {
        StoreError::Protocol(_) | StoreError::ReadOnly(_) | StoreError::Unreplicated(_) => format!(
            "restflow: cache store {url} refused an operation ({error}); that call is \
             computed live (BYPASS), other operations go on"
        ),
        _ => format!(
            "restflow: cache store {url} failed ({error}); calls are computed live (BYPASS) \
             until it answers again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_store() {
        assert_eq!(StoreKind::of("django"), Ok(StoreKind::Django("default")));
        assert_eq!(
            StoreKind::of("django:sessions"),
            Ok(StoreKind::Django("sessions"))
        );
        assert_eq!(
            StoreKind::of("djangoz").unwrap_err(),
            "a Django backend is \"django\" or \"django:<alias>\", got \"djangoz\""
        );
        assert_eq!(StoreKind::of("rediss+cluster://h"), Ok(StoreKind::Cluster));
        assert_eq!(StoreKind::of("redis+sentinel://h"), Ok(StoreKind::Sentinel));
        assert_eq!(StoreKind::of("redis://h:1/0"), Ok(StoreKind::Redis));
    }

    #[test]
    fn settings_are_checked_with_what_to_change() {
        assert_eq!(Serializer::parse("json").map(Serializer::flag), Ok(1));
        assert_eq!(Serializer::from_flag(0), Ok(Serializer::Pickle));
        assert!(Serializer::parse("yaml").unwrap_err().contains("\"yaml\""));
        assert!(Serializer::from_flag(7).is_err());
        assert!(check_signing_key(b"").is_err());
        assert_eq!(
            positive_seconds("lock_timeout", 0.0).unwrap_err(),
            "lock_timeout must be a number of seconds > 0, got 0"
        );
        assert_eq!(
            positive_seconds("lock_timeout", 1e30).unwrap_err(),
            format!(
                "lock_timeout must be at most {} seconds, got 1000000000000000000000000000000",
                u64::MAX
            )
        );
        assert!(options(1e30, None, true).is_err());
        let defaults = options(2.0, None, true).unwrap();
        assert_eq!(defaults.wait_timeout, Duration::from_secs(3));
        assert!(options(2.0, Some(f64::NAN), true).is_err());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn read_spin_may_be_zero_but_not_negative() {
        let spin = |s| redis_config("redis://h", 4, 0.5, 0.1, s, 0).map(|c| c.read_spin);
        assert_eq!(spin(0.0), Ok(Duration::ZERO));
        assert_eq!(spin(0.001), Ok(Duration::from_millis(1)));
        assert!(spin(-1.0).unwrap_err().starts_with("read_spin must be"));
        assert!(redis_config("redis://h", 4, 0.0, 0.1, 0.0, 0).is_err());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_store_is_made_from_its_url_with_its_near_cache() {
        let settings = |url, near_cache_size| RedisSettings {
            url,
            pool_size: 2,
            connect_timeout: 0.5,
            read_timeout: 0.1,
            read_spin: 0.0,
            invalidation_replicas: 0,
            near_cache_size,
            key_prefix: "app",
        };
        // Made without connecting (connections, and the near cache's
        // channel, are made on first use; none is made here).
        for url in ["redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/m"] {
            for near in [0, 8] {
                let store = redis_store(&settings(url, near));
                assert!(store.is_ok(), "{url} near={near}");
                assert!(store.unwrap().near_if_started().is_none());
            }
        }
        let bad_url = redis_store(&settings("redis://[::1", 0)).err().unwrap();
        assert!(!bad_url.is_empty());
        let refused = redis_store(&settings("django:default", 8)).err().unwrap();
        assert_eq!(
            refused,
            "\"django:default\" names a Django cache, not a Redis store"
        );
        // Every Redis store waits for replicas (a Django cache: backend.rs).
        for url in [
            "redis://127.0.0.1:1/0",
            "redis+sentinel://127.0.0.1:1/m",
            "redis+cluster://127.0.0.1:1",
        ] {
            let waiting = RedisSettings {
                invalidation_replicas: 2,
                ..settings(url, 8)
            };
            assert!(redis_store(&waiting).is_ok(), "{url}");
        }
        let bad = RedisSettings {
            read_timeout: 0.0,
            ..settings("redis://127.0.0.1:1/0", 0)
        };
        let bad = redis_store(&bad).err().unwrap();
        assert!(bad.starts_with("read_timeout must be"), "{bad}");
    }

    #[test]
    fn warnings_are_limited_to_one_a_minute() {
        let limit = WarnLimit::default();
        assert!(limit.allow(0));
        assert!(!limit.allow(WARN_INTERVAL_MICROS - 1));
        assert!(limit.allow(WARN_INTERVAL_MICROS));
        let text = warning("redis://h", &StoreError::ReadOnly("replica".into()));
        assert!(text.contains("refused an operation"), "{text}");
        let text = warning("redis://h", &StoreError::Timeout("slow".into()));
        assert!(text.contains("until it answers again"), "{text}");
    }
}
