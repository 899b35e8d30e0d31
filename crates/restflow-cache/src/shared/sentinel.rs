//! The Redis Sentinel store: `redis+sentinel://` and `rediss+sentinel://`.
//!
//! A [`RedisStore`] on the master the sentinels name. When the master
//! cannot be reached, or answers that it is a replica now (`READONLY`, a
//! demoted master after a failover), the store forgets it and the next
//! call asks the sentinels again (`SENTINEL get-master-addr-by-name`), so
//! a failover is followed without a restart. Until a master answers, calls
//! fail as with a dead Redis (the caller's breaker turns them into
//! BYPASS, and its probe once a second is what finds the new master).
//!
//! The near cache (optional, [`SentinelStore::with_near_cache`]) follows
//! the master too: see `shared/sentinel_near.rs`.
//!
//! Invariant: `current` holds the store of the last master the sentinels
//! named, or nothing; it is per process (a forked child asks the sentinels
//! itself) and its lock is held only to clone or swap the `Arc`, never
//! across a round trip.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ::redis::{Client, Value};

#[cfg(unix)]
use super::follow::{started, Follows};
use super::near::NearCache;
use super::payload::Generations;
use super::redis::{sync_near, ForgetAfter, RedisConfig, RedisStore};
#[cfg(unix)]
use super::sentinel_near::SentinelNear;
use super::store::{Fetched, Holder, KeySet, SharedStore, StoreError, Written};
use crate::fork::PerProcess;

/// A `redis+sentinel://` URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Parts {
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// `user:password@` or empty: the master's (sentinels are asked
    /// without).
    credentials: String,
    sentinels: Vec<String>,
    service: String,
    /// `/db` or empty.
    db: String,
    /// `?query` or empty.
    query: String,
}

fn parse(url: &str) -> Result<Parts, StoreError> {
    let bad = |why: &str| {
        StoreError::Protocol(format!(
            "bad Redis Sentinel URL {url:?}: {why} (expected \
             redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/db][?options], \
             or rediss+sentinel:// for TLS)"
        ))
    };
    let parts = super::url::split(url, "sentinel").map_err(bad)?;
    let (service, db) = match parts.path.split_once('/') {
        Some((service, db)) if db.parse::<u32>().is_ok() => (service, format!("/{db}")),
        Some((service, "")) => (service, String::new()),
        None => (parts.path, String::new()),
        Some(_) => return Err(bad("the database must be a number")),
    };
    if service.is_empty() {
        return Err(bad("no service name"));
    }
    Ok(Parts {
        scheme: parts.scheme,
        credentials: parts.credentials,
        sentinels: parts.hosts.iter().map(|host| host.to_string()).collect(),
        service: service.to_owned(),
        db,
        query: parts.query,
    })
}

/// The master the sentinels named last (its URL), and the store on it.
pub(super) type Current = RwLock<Option<(String, Arc<RedisStore>)>>;

/// A store on the master a set of sentinels names.
pub struct SentinelStore {
    /// The master's settings; its URL is the `redis+sentinel://` one.
    config: RedisConfig,
    parts: Parts,
    current: PerProcess<Arc<Current>>,
    /// The near cache's capacity and tracked prefixes, when it keeps one.
    near_setting: Option<(usize, Vec<String>)>,
    #[cfg(unix)]
    near: PerProcess<Option<SentinelNear>>,
}

/// The master's `redis://` URL, from the first of `parts`' sentinels that
/// names it. When none does, the error gives every sentinel's reason, in
/// order: one sentinel down (refused) must not hide why the others were
/// not asked (a certificate not trusted, say). Its kind is the last
/// sentinel's.
pub(super) fn ask_sentinels(
    parts: &Parts,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<String, StoreError> {
    let mut reasons = Vec::with_capacity(parts.sentinels.len());
    // Whether the last sentinel answered something this client does not
    // understand (else it could not be asked, or knows no such master).
    let mut garbled = false;
    for sentinel in &parts.sentinels {
        let ask = || -> redis::RedisResult<Value> {
            let client = Client::open(format!("{}://{sentinel}", parts.scheme))?;
            let mut conn = client.get_connection_with_timeout(connect_timeout)?;
            conn.set_read_timeout(Some(read_timeout))?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&parts.service)
                .query(&mut conn)
        };
        garbled = false;
        let reason = match ask() {
            Ok(Value::Array(address)) => match address.as_slice() {
                [Value::BulkString(host), Value::BulkString(port)] => {
                    let host = String::from_utf8_lossy(host);
                    let port = String::from_utf8_lossy(port);
                    let Parts {
                        scheme,
                        credentials,
                        db,
                        query,
                        ..
                    } = parts;
                    return Ok(format!("{scheme}://{credentials}{host}:{port}{db}{query}"));
                }
                _ => {
                    garbled = true;
                    format!("{sentinel}: odd address")
                }
            },
            Ok(_) => format!("sentinel {sentinel} knows no master {:?}", parts.service),
            Err(error) => format!("{sentinel}: {error}"),
        };
        reasons.push(reason);
    }
    let why = format!("no sentinel named the master: {}", reasons.join("; "));
    Err(if garbled {
        StoreError::Protocol(why)
    } else {
        StoreError::Unavailable(why)
    })
}

impl SentinelStore {
    /// A store for `config`, whose URL is
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/<service>[/db][?query]`
    /// (or `rediss+sentinel://`): the sentinels, the monitored service's
    /// name, and the master's database, credentials and options; the rest
    /// of `config` applies to the master. Nothing is connected until the
    /// first command.
    pub fn new(config: RedisConfig) -> Result<Self, StoreError> {
        let parts = parse(&config.url)?;
        Ok(SentinelStore {
            config,
            parts,
            current: PerProcess::new(),
            near_setting: None,
            #[cfg(unix)]
            near: PerProcess::new(),
        })
    }

    /// Keeps a near cache of at most `capacity` entries in each process,
    /// coherent through the current master's invalidation messages for the
    /// keys that start with one of `prefixes` (every key when empty); on a
    /// failover it is emptied, and serves again once the channel to the new
    /// master is up (see `shared/sentinel_near.rs`). Only over plain TCP
    /// (`redis+sentinel://`): over TLS there is no near cache.
    pub fn with_near_cache(mut self, capacity: usize, prefixes: Vec<String>) -> Self {
        if self.parts.scheme == "redis" && cfg!(unix) {
            self.near_setting = Some((capacity, prefixes));
        }
        self
    }

    fn current(&self) -> &Arc<Current> {
        self.current.get_or_init(|| Arc::new(RwLock::new(None)))
    }

    /// This process's near cache and the thread that follows the master,
    /// started on first call.
    #[cfg(unix)]
    fn sentinel_near(&self) -> Option<&SentinelNear> {
        let (capacity, prefixes) = self.near_setting.as_ref()?;
        self.near
            .get_or_init(|| {
                let marker = format!(
                    "{}restflow:near-sync:{}:",
                    prefixes.first().map_or("", String::as_str),
                    std::process::id()
                );
                SentinelNear::start(
                    NearCache::new(*capacity, marker),
                    prefixes.clone(),
                    self.parts.clone(),
                    (self.config.connect_timeout, self.config.read_timeout),
                    Arc::clone(self.current()),
                )
            })
            .as_ref()
    }

    /// Forgets `keys` in this process's near cache when dropped (see
    /// [`ForgetAfter`]).
    fn forget_after<'a, const N: usize>(&'a self, keys: [&'a str; N]) -> ForgetAfter<'a, N> {
        ForgetAfter::new(self.near_if_started(), keys)
    }

    /// The current master's store, asking the sentinels when there is none.
    fn master(&self) -> Result<Arc<RedisStore>, StoreError> {
        let current = self.current();
        if let Some((_, store)) = &*current.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(Arc::clone(store));
        }
        let url = ask_sentinels(
            &self.parts,
            self.config.connect_timeout,
            self.config.read_timeout,
        )?;
        let store = Arc::new(
            RedisStore::new(RedisConfig {
                url: url.clone(),
                pool_size: self.config.pool_size,
                connect_timeout: self.config.connect_timeout,
                read_timeout: self.config.read_timeout,
                read_spin: self.config.read_spin,
                invalidation_replicas: self.config.invalidation_replicas,
            })?
            .reporting_closed_idle(),
        );
        *current.write().unwrap_or_else(PoisonError::into_inner) = Some((url, Arc::clone(&store)));
        Ok(store)
    }

    /// Runs `op` on the master; forgets a master that could not be reached
    /// or is a replica now, so the next call asks the sentinels again (and
    /// so does the near cache's thread, at once). Its failures name it
    /// (`master host:port: ...`): the URL names only the sentinels, and a
    /// master's fault (its certificate, say) is not theirs. A
    /// write a demoted master refused (`READONLY`) was not made: it is sent
    /// once more, at once, to the master the sentinels name now, so a lock
    /// or an invalidation is neither lost nor failed while the failover
    /// has already happened.
    fn run<T>(&self, op: impl Fn(&RedisStore) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self.run_once(&op) {
            Err(StoreError::ReadOnly(_)) => self.run_once(&op),
            answer => answer,
        }
    }

    fn run_once<T>(
        &self,
        op: impl FnOnce(&RedisStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let store = self.master()?;
        let answer = op(&store).map_err(|error| error.on(&format!("master {}", store.address())));
        if let Err(error) = &answer {
            let demoted = matches!(error, StoreError::ReadOnly(_));
            if error.is_connection_failure() || demoted {
                let mut current = self
                    .current()
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if current
                    .as_ref()
                    .is_some_and(|(_, s)| Arc::ptr_eq(s, &store))
                {
                    // Dropped outside the lock: it closes its connections.
                    let forgotten = current.take();
                    drop(current);
                    drop(forgotten);
                }
                #[cfg(unix)]
                if let Some(Some(near)) = self.near.get() {
                    near.prompt();
                }
            }
        }
        answer
    }
}

impl SharedStore for SentinelStore {
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
        self.run(|s| s.fetch(keys))
    }

    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let _forget = self.forget_after([key]);
        self.run(|s| s.put(key, payload, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let _forget = self.forget_after([key]);
        self.run(|s| s.delete(key))
    }

    /// On the master's one connection (one `WAIT` for them all, see
    /// [`RedisConfig::invalidation_replicas`]).
    fn delete_many(&self, keys: &[String]) -> Result<u64, StoreError> {
        let removed = self.run(|s| s.delete_many(keys));
        // After the deletes (made, or maybe made), as `forget_after` does.
        if let Some(near) = self.near_if_started() {
            near.invalidate(keys.iter().map(|key| key.as_bytes()));
        }
        removed
    }

    fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError> {
        let _forget = self.forget_after([keys.data.as_str(), &keys.lock, &keys.refresh]);
        self.run(|s| s.delete_entry(keys))
    }

    fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError> {
        self.run(|s| s.generations(keys, floor))
    }

    fn put_current(
        &self,
        keys: &KeySet,
        generations: Generations,
        payload: &[u8],
        ttl: Option<Duration>,
        holder: Option<Holder<'_>>,
    ) -> Result<Written, StoreError> {
        let _forget = self.forget_after([keys.data.as_str()]);
        self.run(|s| s.put_current(keys, generations, payload, ttl, holder))
    }

    fn fence(&self, keys: &KeySet, candidate: &str, ttl: Duration) -> Result<String, StoreError> {
        self.run(|s| s.fence(keys, candidate, ttl))
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.run(|s| s.try_lock(key, token, ttl))
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.run(|s| s.unlock(key, token))
    }

    fn near(&self) -> Option<&NearCache> {
        #[cfg(unix)]
        return self.sentinel_near().map(Follows::cache);
        #[cfg(not(unix))]
        None
    }

    fn near_if_started(&self) -> Option<&NearCache> {
        #[cfg(unix)]
        return started(&self.near);
        #[cfg(not(unix))]
        None
    }

    /// As on one server, on the current master: a sync key written there,
    /// its invalidation awaited on the channel to it.
    fn near_sync(&self, timeout: Duration) -> Result<bool, StoreError> {
        let Some(near) = self.near() else {
            return Ok(false);
        };
        sync_near(near, timeout, |key| self.put(key, b"1", Some(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_sentinels_service_and_database() {
        let parts = parse("redis+sentinel://u:p@a:1,b:2/main/3?protocol=resp3").unwrap();
        assert_eq!(
            parts,
            Parts {
                scheme: "redis",
                credentials: "u:p@".into(),
                sentinels: vec!["a:1".into(), "b:2".into()],
                service: "main".into(),
                db: "/3".into(),
                query: "?protocol=resp3".into(),
            }
        );
        assert_eq!(
            parse("rediss+sentinel://a:1/main").unwrap().scheme,
            "rediss"
        );
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel://a:1/main/x",
            "redis+sentinel://a:1,,b:2/main",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn when_no_sentinel_names_the_master_every_reason_is_given() {
        // Two ports nothing listens on: each refuses, and both say so.
        let closed: Vec<u16> = (0..2)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            })
            .collect();
        let url = format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/main",
            closed[0], closed[1]
        );
        let second = Duration::from_secs(1);
        let error = ask_sentinels(&parse(&url).unwrap(), second, second).unwrap_err();
        let refused = "Connection refused (os error 111)";
        assert_eq!(
            error,
            StoreError::Unavailable(format!(
                "no sentinel named the master: 127.0.0.1:{}: {refused}; 127.0.0.1:{}: {refused}",
                closed[0], closed[1]
            ))
        );
    }

    #[test]
    fn a_master_failure_names_the_master_and_keeps_its_kind() {
        // The kind decides what follows (a READONLY write is sent again, a
        // connection failure forgets the master): naming must not change it.
        let on = |error: StoreError| error.on("master 10.0.0.5:6379");
        assert_eq!(
            on(StoreError::ReadOnly("READONLY".into())),
            StoreError::ReadOnly("master 10.0.0.5:6379: READONLY".into())
        );
        assert_eq!(
            on(StoreError::Unavailable("reset".into())),
            StoreError::Unavailable("master 10.0.0.5:6379: reset".into())
        );
        assert_eq!(
            on(StoreError::Timeout("slow".into())),
            StoreError::Timeout("master 10.0.0.5:6379: slow".into())
        );
        assert_eq!(
            on(StoreError::Protocol("odd".into())),
            StoreError::Protocol("master 10.0.0.5:6379: odd".into())
        );
        assert_eq!(on(StoreError::Interrupted), StoreError::Interrupted);
        assert_eq!(on(StoreError::CircuitOpen), StoreError::CircuitOpen);
    }
}
