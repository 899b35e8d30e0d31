//! A shared store over any Django cache alias (`CACHES`): LocMem, the
//! database cache, memcached, django-redis, Django's own Redis backend.
//!
//! The lifecycle is the engine's, as with Redis; this adapter only speaks
//! Django's cache API: `get_many` for a lookup (one round trip on backends
//! that batch it), `add` for locks and for starting generation counters
//! (epochs; see `restflow_cache::shared::SharedStore`), `delete` to retire
//! one. Unlike Redis, a lock is released by reading it and deleting it: two
//! calls, so a lock that expired in between could be released for its next
//! holder (documented; keep `LOCK_TIMEOUT` well above the time a
//! computation takes). Likewise an entry is written after its counters are
//! read, not atomically: an invalidation in between still wins, since the
//! entry then carries epochs no counter holds.

use std::time::Duration;

use crate::once::OnceValue;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use restflow_cache::key;
use restflow_cache::shared::{
    fresh_epoch, Fetched, Generations, KeySet, SharedStore, StoreError, EPOCH_LIMIT,
};

/// A Django cache alias as a shared store.
pub struct DjangoStore {
    alias: String,
}

static CACHES: OnceValue<Py<PyAny>> = OnceValue::new();

impl DjangoStore {
    pub fn new(alias: String) -> Self {
        DjangoStore { alias }
    }

    /// The alias's cache object for the calling thread (Django keeps one
    /// per thread).
    fn cache<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::once::import(&CACHES, py, "django.core.cache", "caches")?.get_item(&self.alias)
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

/// A counter as the cache holds it: an `int` epoch below `EPOCH_LIMIT`;
/// `None` when it is missing or anything else (garbage heals: the next
/// computation starts it again).
fn counter(value: Option<Bound<'_, PyAny>>) -> Option<u64> {
    let value = value?;
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return None;
    }
    value
        .cast::<pyo3::types::PyInt>()
        .ok()?
        .extract::<u64>()
        .ok()
        .filter(|epoch| *epoch < EPOCH_LIMIT)
}

/// The counters of `keys` as the cache names them: scope, version, then
/// the partition's (the only one that expires).
fn counter_names(keys: &KeySet) -> Vec<String> {
    let mut names = vec![safe(&keys.scope), safe(&keys.version)];
    names.extend(keys.partition.as_deref().map(safe));
    names
}

/// Generations from counters read in [`counter_names`] order.
fn generations_of(epochs: &[Option<u64>]) -> Option<Generations> {
    Some(Generations {
        scope: (*epochs.first()?)?,
        version: (*epochs.get(1)?)?,
        partition: match epochs.get(2) {
            Some(epoch) => (*epoch)?,
            None => 0,
        },
    })
}

impl DjangoStore {
    /// The epochs the counters `names` hold now (`get_many`: one round trip).
    fn epochs(&self, cache: &Bound<'_, PyAny>, names: &[String]) -> PyResult<Vec<Option<u64>>> {
        let found = cache.call_method1("get_many", (names,))?;
        let found = found.cast::<PyDict>()?;
        names
            .iter()
            .map(|name| Ok(counter(found.get_item(name)?)))
            .collect()
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
            let epochs = [&names[1], &names[2]]
                .into_iter()
                .chain(names.get(4))
                .map(|name| Ok(counter(get(name)?)))
                .collect::<PyResult<Vec<_>>>()?;
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
                generations: generations_of(&epochs),
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

    fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError> {
        let names = counter_names(keys);
        self.run(|_, cache| {
            let mut epochs = self.epochs(&cache, &names)?;
            for (at, (name, epoch)) in names.iter().zip(epochs.iter_mut()).enumerate() {
                if epoch.is_some() {
                    continue;
                }
                // Scope and version counters never expire; the partition's
                // lives `floor` unless an entry written under it extends it.
                let expiry = if at == 2 { timeout(Some(floor)) } else { None };
                let fresh = fresh_epoch();
                // Missing: start it, unless another process just did (then
                // read theirs). Garbage: `add` refuses, so replace it.
                if !cache
                    .call_method1("add", (name, fresh, expiry))?
                    .is_truthy()?
                {
                    *epoch = counter(Some(cache.call_method1("get", (name,))?));
                    if epoch.is_some() {
                        continue;
                    }
                    cache.call_method1("set", (name, fresh, expiry))?;
                }
                *epoch = Some(fresh);
            }
            generations_of(&epochs).ok_or_else(|| {
                pyo3::exceptions::PyRuntimeError::new_err("could not start a generation counter")
            })
        })
    }

    fn put_current(
        &self,
        keys: &KeySet,
        generations: Generations,
        payload: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let names = counter_names(keys);
        self.run(|py, cache| {
            if generations_of(&self.epochs(&cache, &names)?) != Some(generations) {
                return Ok(false);
            }
            let entry_timeout = timeout(ttl);
            cache.call_method1(
                "set",
                (safe(&keys.data), PyBytes::new(py, payload), entry_timeout),
            )?;
            // The partition counter lives as long as its newest entry.
            // (Django cannot read a timeout, so this may shorten it when a
            // callable ttl shrinks: older entries then become misses early.)
            if let Some(partition) = names.get(2) {
                cache.call_method1("touch", (partition, entry_timeout))?;
            }
            Ok(true)
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
