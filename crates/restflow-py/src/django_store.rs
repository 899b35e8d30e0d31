//! A shared store over any Django cache alias (`CACHES`): LocMem, the
//! database cache, memcached, django-redis, Django's own Redis backend.
//!
//! The lifecycle is the engine's, as with Redis; this adapter only speaks
//! Django's cache API: `get_many` for a lookup (one round trip on backends
//! that batch it), `add` for locks, `incr` (or `add`) for generation
//! counters. Unlike Redis, a lock is released by reading it and deleting
//! it: two calls, so a lock that expired in between could be released for
//! its next holder (documented; keep `LOCK_TIMEOUT` well above the time a
//! computation takes).

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};
use restflow_cache::key;
use restflow_cache::shared::{Fetched, Generations, KeySet, SharedStore, StoreError};

/// A Django cache alias as a shared store.
pub struct DjangoStore {
    alias: String,
}

static CACHES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl DjangoStore {
    pub fn new(alias: String) -> Self {
        DjangoStore { alias }
    }

    /// The alias's cache object for the calling thread (Django keeps one
    /// per thread).
    fn cache<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        CACHES
            .import(py, "django.core.cache", "caches")?
            .get_item(&self.alias)
    }

    fn run<T>(
        &self,
        op: impl FnOnce(Python<'_>, Bound<'_, PyAny>) -> PyResult<T>,
    ) -> Result<T, StoreError> {
        Python::attach(|py| {
            let failed = |error: PyErr| {
                if crate::interrupt::is_interrupt(py, &error) {
                    // Not a failing store: the caller gets it back (see
                    // `crate::interrupt`).
                    crate::interrupt::park(error);
                    return StoreError::Interrupted;
                }
                StoreError::Unavailable(error.to_string())
            };
            let cache = self.cache(py).map_err(failed)?;
            op(py, cache).map_err(failed)
        })
    }
}

/// Django cache keys must suit memcached: short, no spaces or control
/// characters. Keys that do not are replaced by their digest.
fn safe(key: &str) -> String {
    if key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic()) {
        key.to_owned()
    } else {
        format!("restflow:h:{}", key::digest(key.as_bytes()))
    }
}

fn timeout(ttl: Option<Duration>) -> Option<f64> {
    ttl.map(|d| d.as_secs_f64().max(0.001))
}

fn counter(value: Option<Bound<'_, PyAny>>) -> PyResult<u64> {
    match value {
        None => Ok(0),
        Some(value) if value.is_none() => Ok(0),
        Some(value) => value.extract::<u64>(),
    }
}

impl SharedStore for DjangoStore {
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
        self.run(|_, cache| {
            let mut names = vec![
                safe(&keys.data),
                safe(&keys.scope),
                safe(&keys.version),
                safe(&keys.lock),
            ];
            if let Some(partition) = &keys.partition {
                names.push(safe(partition));
            }
            let found = cache.call_method1("get_many", (&names,))?;
            let found = found.cast::<PyDict>()?;
            let get = |name: &String| found.get_item(name);
            let payload = match get(&names[0])? {
                Some(value) if !value.is_none() => match value.cast::<PyBytes>() {
                    Ok(bytes) => Some(bytes.as_bytes().to_vec()),
                    // A foreign value under our key: a miss, like any bad payload.
                    Err(_) => Some(Vec::new()),
                },
                _ => None,
            };
            Ok(Fetched {
                payload,
                generations: Generations {
                    scope: counter(get(&names[1])?)?,
                    version: counter(get(&names[2])?)?,
                    partition: match names.get(4) {
                        Some(name) => counter(get(name)?)?,
                        None => 0,
                    },
                },
                locked: get(&names[3])?.is_some_and(|v| !v.is_none()),
            })
        })
    }

    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.run(|py, cache| {
            cache.call_method1("set", (safe(key), PyBytes::new(py, payload), timeout(ttl)))?;
            Ok(())
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.run(|_, cache| {
            let deleted = cache.call_method1("delete", (safe(key),))?;
            Ok(deleted.is_truthy().unwrap_or(false))
        })
    }

    fn bump(&self, key: &str) -> Result<u64, StoreError> {
        let key = safe(key);
        self.run(|_, cache| {
            for _ in 0..3 {
                match cache.call_method1("incr", (&key,)) {
                    Ok(value) => return value.extract::<u64>(),
                    // Missing: start it at 1, unless another process just did.
                    Err(_) => {
                        let none: Option<f64> = None;
                        if cache.call_method1("add", (&key, 1, none))?.is_truthy()? {
                            return Ok(1);
                        }
                    }
                }
            }
            Err(pyo3::exceptions::PyRuntimeError::new_err(
                "could not increment a generation counter",
            ))
        })
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.run(|_, cache| {
            cache
                .call_method1("add", (safe(key), token, timeout(Some(ttl))))?
                .is_truthy()
        })
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let key = safe(key);
        self.run(|_, cache| {
            let holder = cache.call_method1("get", (&key,))?;
            if holder.extract::<String>().is_ok_and(|h| h == token) {
                cache.call_method1("delete", (&key,))?;
            }
            Ok(())
        })
    }
}
