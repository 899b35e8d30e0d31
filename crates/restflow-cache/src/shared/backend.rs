//! A shared store made from an embedder's settings, whole: the store its
//! URL names, the lifecycle over it, how its keys are named, and how its
//! values are serialized.
//!
//! Every embedder receives the same settings (the Python bindings from
//! `RESTFLOW["SHARED"]`), so they are checked, and turned into the engine's
//! types, once here: the bindings only pass them on and keep what comes
//! back. A store the engine cannot make itself (a Django cache, which calls
//! into Python) is made by the embedder's `foreign` when the URL names one.
//!
//! Invariant: settings are checked in the order they are documented
//! (serializer, signing key, URL, connection, lifecycle), so the first
//! error reported is the first setting to change.

use std::sync::Arc;

use super::cache::SharedCache;
use super::keyspace::KeySpace;
use super::payload::Signer;
use super::settings::{self, Serializer, StoreKind};
use super::store::SharedStore;
use crate::clock::Clock;

/// A shared store's settings, as an embedder receives them (seconds as
/// floats, names as text).
#[derive(Clone, Debug)]
pub struct BackendSettings<'a> {
    /// The store's URL: `redis://`, `rediss://`, `redis+sentinel://`,
    /// `redis+cluster://`, or `django[:alias]`.
    pub url: &'a str,
    /// The key every payload is signed with (not empty).
    pub signing_key: &'a [u8],
    /// What every key starts with (may be empty).
    pub key_prefix: &'a str,
    /// `"pickle"` or `"json"`.
    pub serializer: &'a str,
    /// Connections kept per server (Redis).
    pub pool_size: u32,
    /// Longest wait for a connection, in seconds (Redis).
    pub connect_timeout: f64,
    /// Longest wait for an answer, in seconds (Redis).
    pub read_timeout: f64,
    /// How long a read busy-waits before it sleeps, in seconds (Redis).
    pub read_spin: f64,
    /// Replicas that must acknowledge every invalidation (0: none waited
    /// for; Redis and Sentinel only, see
    /// [`super::RedisConfig::invalidation_replicas`]).
    pub invalidation_replicas: u32,
    /// How long a computation lock lives, in seconds.
    pub lock_timeout: f64,
    /// How long a process polls another's computation, in seconds; `None`:
    /// a second past `lock_timeout`.
    pub wait_timeout: Option<f64>,
    /// Skip a failing store and compute live, or report the failure.
    pub bypass_on_failure: bool,
    /// Entries of the near cache (0: none; Redis only).
    pub near_cache_size: usize,
    /// Whether calls use the near cache unless they say otherwise.
    pub near_cache_default: bool,
}

/// What [`BackendSettings::build`] made.
pub struct Backend<E> {
    /// The lifecycle over the store, naming keys as the settings say
    /// ([`SharedCache::keys`]).
    pub cache: SharedCache<Box<dyn SharedStore>, E>,
    /// How values are serialized.
    pub serializer: Serializer,
    /// Whether calls use the near cache unless they say otherwise: only
    /// when asked for and the store keeps one.
    pub near_default: bool,
}

impl BackendSettings<'_> {
    /// The store these settings describe, read with `clock`, or the error
    /// saying which setting to change. `foreign` makes the store of a
    /// Django cache alias, which the engine cannot make itself. Nothing is
    /// connected yet (connections are made on first use).
    pub fn build<E: Clone>(
        &self,
        clock: Arc<Clock>,
        foreign: impl FnOnce(&str) -> Box<dyn SharedStore>,
    ) -> Result<Backend<E>, String> {
        let serializer = Serializer::parse(self.serializer)?;
        settings::check_signing_key(self.signing_key)?;
        let kind = StoreKind::of(self.url)?;
        let store = match kind {
            StoreKind::Django(_) if self.invalidation_replicas > 0 => {
                return Err(settings::unreplicable(self.url, "a Django cache"))
            }
            StoreKind::Django(alias) => foreign(alias),
            _ => self.redis_store()?,
        };
        let options =
            settings::options(self.lock_timeout, self.wait_timeout, self.bypass_on_failure)?;
        let signer = Signer::new(self.signing_key);
        let keys = KeySpace::new(self.key_prefix, kind == StoreKind::Cluster);
        Ok(Backend {
            cache: SharedCache::new(store, signer, clock, kind.breaker(), options).with_keys(keys),
            serializer,
            near_default: self.near_cache_default && self.near_cache_size > 0,
        })
    }

    #[cfg(feature = "redis")]
    fn redis_store(&self) -> Result<Box<dyn SharedStore>, String> {
        settings::redis_store(&settings::RedisSettings {
            url: self.url,
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            read_spin: self.read_spin,
            invalidation_replicas: self.invalidation_replicas,
            near_cache_size: self.near_cache_size,
            key_prefix: self.key_prefix,
        })
    }

    #[cfg(not(feature = "redis"))]
    fn redis_store(&self) -> Result<Box<dyn SharedStore>, String> {
        Err(format!(
            "{:?} names a Redis store; restflow-cache was built without its \"redis\" feature",
            self.url
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::kv::{KvCache, KvStore, KvValue, KvWrite};
    use crate::shared::StoreError;
    use crate::timestamp::Timestamp;

    /// A key-value cache that holds nothing, standing in for a Django cache.
    struct Nothing;

    impl KvCache for Nothing {
        fn get_many(&self, names: &[String]) -> Result<Vec<KvValue>, StoreError> {
            Ok(names.iter().map(|_| KvValue::Missing).collect())
        }
        fn get(&self, _: &str) -> Result<KvValue, StoreError> {
            Ok(KvValue::Missing)
        }
        fn set(&self, _: &str, _: KvWrite<'_>, _: Option<f64>) -> Result<(), StoreError> {
            Ok(())
        }
        fn add(&self, _: &str, _: KvWrite<'_>, _: Option<f64>) -> Result<bool, StoreError> {
            Ok(true)
        }
        fn delete(&self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        fn touch(&self, _: &str, _: Option<f64>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn settings(url: &str) -> BackendSettings<'_> {
        BackendSettings {
            url,
            signing_key: b"secret",
            key_prefix: "app:",
            serializer: "json",
            pool_size: 2,
            connect_timeout: 0.5,
            read_timeout: 0.1,
            read_spin: 0.0,
            invalidation_replicas: 0,
            lock_timeout: 2.0,
            wait_timeout: None,
            bypass_on_failure: true,
            near_cache_size: 8,
            near_cache_default: true,
        }
    }

    fn build(settings: &BackendSettings<'_>) -> Result<Backend<()>, String> {
        let clock = Arc::new(Clock::frozen(Timestamp::EPOCH));
        settings.build(clock, |_| Box::new(KvStore(Nothing)))
    }

    #[test]
    fn a_django_alias_is_made_by_the_embedder_and_keeps_no_near_cache() {
        let mut asked = None;
        let clock = Arc::new(Clock::frozen(Timestamp::EPOCH));
        let backend: Backend<()> = settings("django:sessions")
            .build(clock, |alias| {
                asked = Some(alias.to_owned());
                Box::new(KvStore(Nothing))
            })
            .unwrap();
        assert_eq!(asked.as_deref(), Some("sessions"));
        assert_eq!(backend.serializer, Serializer::Json);
        assert_eq!(*backend.cache.keys(), KeySpace::new("app:", false));
        // Asked for, but a near cache only a Redis store keeps.
        assert!(backend.cache.store().near().is_none());
        assert!(backend.cache.bypasses_failures());
    }

    #[test]
    fn the_near_cache_is_the_default_only_when_asked_for_and_kept() {
        let url = "django";
        assert!(build(&settings(url)).unwrap().near_default);
        let unasked = BackendSettings {
            near_cache_default: false,
            ..settings(url)
        };
        assert!(!build(&unasked).unwrap().near_default);
        let none = BackendSettings {
            near_cache_size: 0,
            ..settings(url)
        };
        assert!(!build(&none).unwrap().near_default);
    }

    #[test]
    fn the_first_setting_to_change_is_reported() {
        let bad = BackendSettings {
            serializer: "yaml",
            signing_key: b"",
            ..settings("djangoz")
        };
        assert!(build(&bad).err().unwrap().starts_with("serializer must be"));
        let bad = BackendSettings {
            signing_key: b"",
            ..settings("djangoz")
        };
        assert_eq!(
            build(&bad).err().unwrap(),
            "a shared store needs a non-empty signing key"
        );
        let bad = build(&settings("djangoz")).err().unwrap();
        assert!(bad.starts_with("a Django backend is"), "{bad}");
        let bad = BackendSettings {
            lock_timeout: 0.0,
            ..settings("django")
        };
        assert!(build(&bad)
            .err()
            .unwrap()
            .starts_with("lock_timeout must be"));
        // A Django cache has no replicas restflow can wait for.
        let bad = BackendSettings {
            invalidation_replicas: 1,
            ..settings("django:sessions")
        };
        assert_eq!(
            build(&bad).err().unwrap(),
            "invalidation_replicas must be 0 for \"django:sessions\": restflow waits for \
             replicas only on Redis (redis://, rediss://, unix://, redis+sentinel://, \
             redis+cluster://), not on a Django cache"
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_cluster_url_names_its_keys_with_hash_tags_and_checks_its_connection() {
        let cluster = build(&settings("redis+cluster://127.0.0.1:1")).unwrap();
        assert_eq!(*cluster.cache.keys(), KeySpace::new("app:", true));
        // One breaker per slot: the store's own never opens.
        assert!(!cluster.cache.breaker_open());
        let single = build(&settings("redis://127.0.0.1:1/0")).unwrap();
        assert_eq!(*single.cache.keys(), KeySpace::new("app:", false));
        let bad = BackendSettings {
            read_timeout: 0.0,
            ..settings("redis://127.0.0.1:1/0")
        };
        assert!(build(&bad)
            .err()
            .unwrap()
            .starts_with("read_timeout must be"));
    }
}
