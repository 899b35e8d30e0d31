//! A shared store over any Django cache alias (`CACHES`): LocMem, the
//! database cache, memcached, django-redis, Django's own Redis backend.
//!
//! The store's logic (which keys, `add` for locks and counters, how a lock
//! is released) is the engine's [`restflow_cache::shared::kv`]; this
//! adapter only makes Django's cache API calls and converts their values.

use crate::once::OnceValue;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyString};
use restflow_cache::shared::{KvCache, KvStore, KvValue, KvWrite, StoreError, LONGEST_NAME};
use std::sync::atomic::{AtomicUsize, Ordering};

/// memcached's longest key, in bytes (Django's `MEMCACHE_MAX_KEY_LENGTH`).
const MEMCACHED_KEY: usize = 250;

/// A Django cache alias, as the engine's key-value cache.
pub struct DjangoCache {
    alias: String,
    /// [`KvCache::longest_name`], learnt from the alias at first use; 0
    /// until then (an atomic, not a once-cell: nothing here may block a
    /// forked child, and working it out twice is harmless).
    longest: AtomicUsize,
}

static CACHES: OnceValue<Py<PyAny>> = OnceValue::new();

/// `restflow.caching.django_errors.classify`: what an error of a Django
/// cache says.
static CLASSIFY: OnceValue<Py<PyAny>> = OnceValue::new();

/// What an error of a Django cache says (see
/// `restflow.caching.django_errors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Raised {
    /// The cache answered: that one operation failed, the cache is up.
    Answer,
    /// The connection was closed before the answer (memcached restarted
    /// since it was opened): the client opens a new one at its next call.
    Closed,
    /// Anything else: the cache could not be reached.
    Failure,
}

fn classify(py: Python<'_>, error: &PyErr) -> Raised {
    let said = crate::once::import(&CLASSIFY, py, "restflow.caching.django_errors", "classify")
        .and_then(|classify| classify.call1((error.value(py),))?.extract::<String>());
    match said.as_deref() {
        Ok("answer") => Raised::Answer,
        Ok("closed") => Raised::Closed,
        _ => Raised::Failure,
    }
}

/// `error` as a store error: [`StoreError::Protocol`] when the cache
/// answered it (memcached refusing an item over its size limit: that one
/// write fails, the breaker does not count it), else
/// [`StoreError::Unavailable`] (a Django backend does not say more).
fn store_error(py: Python<'_>, error: &PyErr) -> StoreError {
    if classify(py, error) == Raised::Answer {
        StoreError::Protocol(error.to_string())
    } else {
        StoreError::Unavailable(error.to_string())
    }
}

impl DjangoCache {
    /// The shared store over the cache alias `alias`.
    pub fn store(alias: String) -> KvStore<DjangoCache> {
        KvStore(DjangoCache {
            alias,
            longest: AtomicUsize::new(0),
        })
    }

    /// The alias's cache object for the calling thread (Django keeps one
    /// per thread).
    fn cache<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::once::import(&CACHES, py, "django.core.cache", "caches")?.get_item(&self.alias)
    }

    /// Runs `op` on the alias's cache. An operation whose connection turns
    /// out closed (memcached restarted while it sat idle) is made once
    /// more, on the new connection the client opens: not a failure, as for
    /// Redis. Only once: a server that is down fails the second try too.
    fn run<T>(
        &self,
        op: impl Fn(Python<'_>, Bound<'_, PyAny>) -> PyResult<T>,
    ) -> Result<T, StoreError> {
        Python::attach(|py| {
            let failed = |error: PyErr| {
                if crate::interrupt::is_interrupt(py, &error) {
                    // Not a failing store: the caller gets it back (see
                    // `crate::interrupt`).
                    crate::interrupt::park(error);
                    return StoreError::Interrupted;
                }
                store_error(py, &error)
            };
            let cache = self.cache(py).map_err(failed)?;
            match op(py, cache.clone()) {
                Err(error) if classify(py, &error) == Raised::Closed => {
                    op(py, cache).map_err(failed)
                }
                done => done.map_err(failed),
            }
        })
    }
}

/// A cached Python value as the store sees it.
fn value(found: Option<Bound<'_, PyAny>>) -> KvValue {
    let Some(found) = found.filter(|v| !v.is_none()) else {
        return KvValue::Missing;
    };
    if let Ok(bytes) = found.cast::<PyBytes>() {
        return KvValue::Bytes(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = found.cast::<PyString>() {
        return text
            .to_str()
            .map_or(KvValue::Other, |t| KvValue::Text(t.to_owned()));
    }
    if found.is_instance_of::<PyBool>() {
        return KvValue::Other;
    }
    match found.cast::<PyInt>().map(|n| n.extract::<u64>()) {
        Ok(Ok(n)) => KvValue::Int(n),
        _ => KvValue::Other,
    }
}

/// A value to write, as Python.
fn written<'py>(py: Python<'py>, value: KvWrite<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        KvWrite::Bytes(bytes) => PyBytes::new(py, bytes).into_any(),
        KvWrite::Int(n) => n.into_pyobject(py)?.into_any(),
        KvWrite::Text(text) => PyString::new(py, text).into_any(),
    })
}

impl KvCache for DjangoCache {
    fn get_many(&self, names: &[String]) -> Result<Vec<KvValue>, StoreError> {
        self.run(|_, cache| {
            let found = cache.call_method1("get_many", (names,))?;
            let found = found.cast::<PyDict>()?;
            names
                .iter()
                .map(|name| Ok(value(found.get_item(name)?)))
                .collect()
        })
    }

    fn get(&self, name: &str) -> Result<KvValue, StoreError> {
        self.run(|_, cache| Ok(value(Some(cache.call_method1("get", (name,))?))))
    }

    fn set(&self, name: &str, v: KvWrite<'_>, timeout: Option<f64>) -> Result<(), StoreError> {
        self.run(|py, cache| {
            cache.call_method1("set", (name, written(py, v)?, timeout))?;
            Ok(())
        })
    }

    fn add(&self, name: &str, v: KvWrite<'_>, timeout: Option<f64>) -> Result<bool, StoreError> {
        self.run(|py, cache| {
            cache
                .call_method1("add", (name, written(py, v)?, timeout))?
                .is_truthy()
        })
    }

    fn delete(&self, name: &str) -> Result<bool, StoreError> {
        self.run(|_, cache| {
            let deleted = cache.call_method1("delete", (name,))?;
            Ok(deleted.is_truthy().unwrap_or(false))
        })
    }

    /// What fits in memcached's 250 bytes after the prefix the alias puts
    /// before every key (`KEY_PREFIX:VERSION:`, what `make_key("")` adds),
    /// at most [`LONGEST_NAME`]. A long `KEY_PREFIX` made keys of 190 to
    /// 200 bytes too long for memcached: Django refused them, and every
    /// call for them was computed live. (Every Django cache warns about
    /// keys over 250 bytes, so this applies to all of them.)
    fn longest_name(&self) -> usize {
        let known = self.longest.load(Ordering::Relaxed);
        if known != 0 {
            return known;
        }
        let prefix = Python::attach(|py| {
            let made = self
                .cache(py)
                .and_then(|cache| cache.call_method1("make_key", ("",))?.extract::<String>());
            made.map_err(|error| {
                if crate::interrupt::is_interrupt(py, &error) {
                    crate::interrupt::park(error); // the caller gets it back
                    return true;
                }
                false
            })
        });
        let longest = match prefix {
            Ok(prefix) => MEMCACHED_KEY
                .saturating_sub(prefix.len())
                .clamp(1, LONGEST_NAME),
            // Interrupted: this call ends with it; learn it next time.
            Err(true) => return LONGEST_NAME,
            // A cache whose `make_key` fails or is not text: the default.
            Err(false) => LONGEST_NAME,
        };
        self.longest.store(longest, Ordering::Relaxed);
        longest
    }

    fn touch(&self, name: &str, timeout: Option<f64>) -> Result<(), StoreError> {
        self.run(|_, cache| {
            cache.call_method1("touch", (name, timeout))?;
            Ok(())
        })
    }
}
