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
//! Invariant: `current` holds the store of the last master the sentinels
//! named, or nothing; it is per process (a forked child asks the sentinels
//! itself) and its lock is held only to clone or swap the `Arc`, never
//! across a round trip.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ::redis::{Client, Value};

use super::payload::Generations;
use super::redis::{RedisConfig, RedisStore};
use super::store::{Fetched, KeySet, SharedStore, StoreError};
use crate::fork::PerProcess;

/// A `redis+sentinel://` URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
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

/// A store on the master a set of sentinels names.
pub struct SentinelStore {
    /// The master's settings; its URL is the `redis+sentinel://` one.
    config: RedisConfig,
    parts: Parts,
    current: PerProcess<RwLock<Option<Arc<RedisStore>>>>,
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
        })
    }

    fn current(&self) -> &RwLock<Option<Arc<RedisStore>>> {
        self.current.get_or_init(|| RwLock::new(None))
    }

    /// The master's `redis://` URL, from the first sentinel that names it.
    fn ask_sentinels(&self) -> Result<String, StoreError> {
        let mut last = StoreError::Unavailable("no sentinel answered".into());
        for sentinel in &self.parts.sentinels {
            let ask = || -> redis::RedisResult<Value> {
                let client = Client::open(format!("{}://{sentinel}", self.parts.scheme))?;
                let mut conn = client.get_connection_with_timeout(self.config.connect_timeout)?;
                conn.set_read_timeout(Some(self.config.read_timeout))?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.parts.service)
                    .query(&mut conn)
            };
            match ask() {
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
                        } = &self.parts;
                        return Ok(format!("{scheme}://{credentials}{host}:{port}{db}{query}"));
                    }
                    _ => last = StoreError::Protocol(format!("{sentinel}: odd address")),
                },
                Ok(_) => {
                    last = StoreError::Unavailable(format!(
                        "sentinel {sentinel} knows no master {:?}",
                        self.parts.service
                    ))
                }
                Err(error) => last = StoreError::Unavailable(format!("{sentinel}: {error}")),
            }
        }
        Err(last)
    }

    /// The current master's store, asking the sentinels when there is none.
    fn master(&self) -> Result<Arc<RedisStore>, StoreError> {
        let current = self.current();
        if let Some(store) = &*current.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(Arc::clone(store));
        }
        let url = self.ask_sentinels()?;
        let store = Arc::new(RedisStore::new(RedisConfig {
            url,
            pool_size: self.config.pool_size,
            connect_timeout: self.config.connect_timeout,
            read_timeout: self.config.read_timeout,
            read_spin: self.config.read_spin,
        })?);
        *current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&store));
        Ok(store)
    }

    /// Runs `op` on the master; forgets a master that could not be reached
    /// or is a replica now, so the next call asks the sentinels again. A
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
        let answer = op(&store);
        if let Err(error) = &answer {
            let demoted = matches!(error, StoreError::ReadOnly(_));
            if error.is_connection_failure() || demoted {
                let mut current = self
                    .current()
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &store)) {
                    // Dropped outside the lock: it closes its connections.
                    let forgotten = current.take();
                    drop(current);
                    drop(forgotten);
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
        self.run(|s| s.put(key, payload, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.run(|s| s.delete(key))
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
    ) -> Result<bool, StoreError> {
        self.run(|s| s.put_current(keys, generations, payload, ttl))
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.run(|s| s.try_lock(key, token, ttl))
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.run(|s| s.unlock(key, token))
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
}
