//! Cached functions on a store shared between processes (Redis).
//!
//! Conversion and delegation, as everywhere in these bindings: values are
//! serialized here (pickle or JSON, by Python, under the engine's codec
//! [`Policy`]), keys are the key strings the wrapper renders, and the
//! settings, key space, invalidations, lifecycle, locks, signatures,
//! faults and the function's statistics of what it did are
//! `restflow_cache::shared`'s. Every round trip runs with
//! the GIL released; the user's function runs attached, on the calling
//! thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::once::{Attached, OnceValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use restflow_cache::key::KeyWriter;
use restflow_cache::shared::count_near_hit;
use restflow_cache::shared::settings::{self, Serializer};
use restflow_cache::shared::{
    BackendSettings, Begin, HotCache, KeySet, NearMode, Policy, Produced, RefreshClaim, Refusal,
    Serializes, Served, SharedCache, SharedError, SharedLead, SharedStore, Skipped, StoreError,
};
use restflow_cache::{Computed, Freshness, Stamps, Status};

use crate::core::{Call, Core, Layout, OwnedCall};
use crate::interrupt::{self, is_interrupt};
use crate::runtime::{hooks, log_error, SharedErr, RUNTIME};
use crate::stored::Stored;

pyo3::create_exception!(
    _engine,
    CacheBackendError,
    pyo3::exceptions::PyException,
    "A shared cache store failed (unreachable, timed out, or answered garbage) and \
     FAILURE_MODE is \"raise\"."
);

/// The store is chosen at run time (Redis or a Django cache); one dynamic
/// call per round trip costs nothing next to the round trip.
pub type PyShared = SharedCache<Box<dyn SharedStore>, SharedErr>;

/// A computed value as the engine carries it: shared, so that the callers
/// of a key in this process can all be handed the one value their leader
/// computed, without the GIL (a `Py` is only cloned attached).
type Value = Arc<Py<PyAny>>;

/// The value out of an answer, for this caller.
fn own(py: Python<'_>, value: Value) -> Py<PyAny> {
    Arc::try_unwrap(value).unwrap_or_else(|shared| shared.clone_ref(py))
}

/// The values of one function (`core`) as `backend` stores them, for the
/// engine's [`Policy`] (what it skips, and that it is reported). Each call
/// attaches to Python (the engine calls it detached, between round trips).
struct PyCodec<'a> {
    backend: &'a SharedBackend,
    core: &'a Core,
}

impl Serializes<Value> for PyCodec<'_> {
    type Error = SharedErr;

    fn serialize(&self, value: &Value) -> Result<(u8, Vec<u8>), Refusal<SharedErr>> {
        let serializer = self.backend.serializer;
        Python::attach(|py| {
            let value = value.bind(py);
            if serializer == Serializer::Json {
                crate::json_value::check(value).map_err(Refusal::Unfaithful)?;
            }
            let dumped = dump(py, serializer, value).map_err(|error| {
                if is_interrupt(py, &error) {
                    // The call ends with it, whatever the engine does.
                    interrupt::park(error.clone_ref(py));
                }
                Refusal::Raised(Arc::new(error))
            });
            Ok((serializer.flag(), dumped?))
        })
    }

    fn deserialize(&self, flags: u8, bytes: &[u8]) -> Result<Value, SharedErr> {
        Python::attach(|py| load(py, flags, bytes).map(Arc::new).map_err(Arc::new))
    }

    fn is_fatal(&self, error: &SharedErr) -> bool {
        Python::attach(|py| is_interrupt(py, error))
    }

    fn report(&self, skipped: Skipped<SharedErr>) {
        // A JSON refusal once per function (the engine decides).
        if !skipped.to_tell(&self.core.json_refusal_logged) {
            return;
        }
        let message = skipped.message(&self.core.function_id);
        // Moved in: the error is dropped attached.
        Python::attach(move |py| match skipped {
            Skipped::Unstored(Refusal::Raised(error)) | Skipped::Unreadable(error) => {
                log_error(py, &message, &error)
            }
            Skipped::Unstored(Refusal::Unfaithful(_)) => {
                let Ok(hooks) = hooks(py) else { return };
                if let Err(failure) = hooks.logger.call_method1(py, "error", (message,)) {
                    failure.write_unraisable(py, None);
                }
            }
        })
    }
}

/// A Redis store with its signing key, key prefix and serializer.
#[pyclass(module = "restflow._engine", name = "SharedBackend", frozen)]
pub struct SharedBackend {
    pub cache: Arc<PyShared>,
    /// Whether calls use the near cache unless their decorator says
    /// otherwise (`NEAR_CACHE`); the store keeps one only when
    /// `near_cache_size` > 0.
    near_default: bool,
    /// Deserialized copies of near-cache entries by in-process call key,
    /// so a near hit costs what a memory hit costs (see
    /// `restflow_cache::shared::hot`); with a near cache only. Used only
    /// attached (its values are Python objects; see its invariants).
    hot: Option<HotCache<Py<PyAny>>>,
    serializer: Serializer,
    url: String,
    read_timeout: f64,
}

struct Codecs {
    pickle_dumps: Py<PyAny>,
    pickle_loads: Py<PyAny>,
    json_dumps: Py<PyAny>,
    json_loads: Py<PyAny>,
}

static CODECS: OnceValue<Codecs> = OnceValue::new();

fn codecs(py: Python<'_>) -> PyResult<&Codecs> {
    CODECS.get_or_try_init(py, || {
        let pickle = py.import("pickle")?;
        let json = py.import("json")?;
        Ok(Codecs {
            pickle_dumps: pickle.getattr("dumps")?.unbind(),
            pickle_loads: pickle.getattr("loads")?.unbind(),
            json_dumps: json.getattr("dumps")?.unbind(),
            json_loads: json.getattr("loads")?.unbind(),
        })
    })
}

fn seconds(what: &str, secs: f64) -> PyResult<Duration> {
    settings::positive_seconds(what, secs).map_err(PyValueError::new_err)
}

impl SharedBackend {
    /// Whether `core`'s calls use the near cache.
    pub(crate) fn uses_near(&self, core: &Core) -> bool {
        core.near_cache.unwrap_or(self.near_default)
    }

    /// A HIT from the hot layer for the call key `key`: the near cache's
    /// entry, already deserialized, while nothing can have changed it.
    ///
    /// Safe on the vectorcall path (PyO3 unaware that the thread is
    /// attached): it drops no `Py`, unless the copy was evicted meanwhile.
    #[inline]
    pub(crate) fn hot_served(&self, py: Python<'_>, key: &[u8]) -> Option<SharedServed> {
        let hit = self.cache.hot_hit(self.hot.as_ref()?, key)?;
        let served = SharedServed {
            value: hit.value().value.clone_ref(py),
            status: Status::Hit,
            stamps: Some(*hit.stamps()),
        };
        if let Some(last) = Arc::into_inner(hit) {
            drop_attached(last);
        }
        Some(served)
    }

    /// Whether the event loop may fetch for this backend itself (plain
    /// Redis, and the circuit breaker closed).
    pub(crate) fn loop_fetches(&self) -> bool {
        self.url.starts_with("redis://") && !self.cache.breaker_open()
    }

    /// How `core`'s values are stored in this backend, for the engine.
    fn codec<'a>(&'a self, core: &'a Core) -> Policy<PyCodec<'a>> {
        Policy(PyCodec {
            backend: self,
            core,
        })
    }
}

/// `value` serialized by `serializer`.
fn dump(py: Python<'_>, serializer: Serializer, value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let codecs = codecs(py)?;
    if serializer == Serializer::Json {
        let text: String = codecs.json_dumps.bind(py).call1((value,))?.extract()?;
        return Ok(text.into_bytes());
    }
    let bytes = codecs.pickle_dumps.bind(py).call1((value, 5))?;
    let bytes = bytes.cast::<PyBytes>().map_err(PyErr::from)?;
    Ok(bytes.as_bytes().to_vec())
}

/// A value [`dump`] stored with the serializer `flags` says.
fn load(py: Python<'_>, flags: u8, bytes: &[u8]) -> PyResult<Py<PyAny>> {
    let codecs = codecs(py)?;
    let loads = match Serializer::from_flag(flags).map_err(PyValueError::new_err)? {
        Serializer::Pickle => &codecs.pickle_loads,
        Serializer::Json => &codecs.json_loads,
    };
    Ok(loads.bind(py).call1((PyBytes::new(py, bytes),))?.unbind())
}

#[pymethods]
impl SharedBackend {
    /// A Redis backend; made by `restflow.caching` from its settings.
    #[new]
    #[pyo3(signature = (
        url, *, signing_key, key_prefix = String::new(), serializer = "pickle",
        pool_size = 16, connect_timeout = 0.5, read_timeout = 0.1, read_spin = 0.0,
        invalidation_replicas = 0, lock_timeout = 10.0, wait_timeout = None, bypass_on_failure = true,
        near_cache_size = 0, near_cache_default = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: String,
        signing_key: &[u8],
        key_prefix: String,
        serializer: &str,
        pool_size: u32,
        connect_timeout: f64,
        read_timeout: f64,
        read_spin: f64,
        invalidation_replicas: u32,
        lock_timeout: f64,
        wait_timeout: Option<f64>,
        bypass_on_failure: bool,
        near_cache_size: usize,
        near_cache_default: bool,
    ) -> PyResult<Self> {
        let settings = BackendSettings {
            url: &url,
            signing_key,
            key_prefix: &key_prefix,
            serializer,
            pool_size,
            connect_timeout,
            read_timeout,
            read_spin,
            invalidation_replicas,
            lock_timeout,
            wait_timeout,
            bypass_on_failure,
            near_cache_size,
            near_cache_default,
        };
        // The engine makes every Redis store; only a Django cache, which
        // calls into Python, is made here.
        let django = |alias: &str| -> Box<dyn SharedStore> {
            Box::new(crate::django_store::DjangoCache::store(alias.to_owned()))
        };
        let clock = RUNTIME.engine.cache().shared_clock();
        let built = settings
            .build(clock, django)
            .map_err(PyValueError::new_err)?;
        let cache = built
            .cache
            // One source of early-refresh draws for every store, which tests seed.
            .with_dice(Arc::clone(RUNTIME.engine.cache().dice()))
            .with_warnings(url.clone(), Box::new(log_warning))
            // A lock whose unlock a stalled store left unanswered is given
            // back on the refresh workers (so `wait_for_refreshes` waits
            // for it too), its store calls detached as on every path.
            .with_give_backs(|job| {
                RUNTIME
                    .engine
                    .refresher()
                    .try_spawn(Box::new(move || Python::attach(|py| py.detach(job))))
            });
        Ok(SharedBackend {
            cache: Arc::new(cache),
            near_default: built.near_default,
            // As bounded as the near cache it copies.
            hot: (near_cache_size > 0).then(|| HotCache::new(near_cache_size)),
            serializer: built.serializer,
            url,
            read_timeout,
        })
    }

    /// The store's URL.
    #[getter]
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Payloads refused so far (tampered, foreign, unknown version).
    #[getter]
    fn rejected(&self) -> u64 {
        self.cache.stats().rejected.load(Ordering::Relaxed)
    }

    /// Store calls that failed so far.
    #[getter]
    fn failures(&self) -> u64 {
        self.cache.stats().failures.load(Ordering::Relaxed)
    }

    /// The store's own statistics: `store_errors`, `breaker_trips`,
    /// `lock_waits`, and the `lookup` histogram (one fetch round trip per
    /// lookup); since the last `reset_stats`, or since the start with
    /// `totals=True`.
    #[pyo3(signature = (totals=false))]
    fn stats<'py>(&self, py: Python<'py>, totals: bool) -> PyResult<Bound<'py, PyDict>> {
        crate::stats::read(py, &self.cache.stats().store, totals)
    }

    /// Facts about the server for `manage.py restflow_cache check`
    /// (`redis_version`, `maxmemory_policy`, …; none for a Django cache),
    /// read in one round trip through the circuit breaker. Raises
    /// `CacheBackendError` when the store cannot be reached.
    fn server_info(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        reported(py, self, |cache| cache.call(|s| s.server_info()))
    }

    /// Starts the store's statistics over (totals keep counting).
    fn reset_stats(&self) {
        self.cache.stats().store.reset();
    }

    /// The value and HIT metadata in a Redis answer the event loop read for
    /// the entry `key`, when it holds a fresh entry that checks out; `None`
    /// otherwise (the caller then asks the engine).
    fn fresh_hit<'py>(
        &self,
        py: Python<'py>,
        answer: &crate::loop_io::RedisAnswer,
        key: &str,
    ) -> PyResult<Option<(Py<PyAny>, Bound<'py, PyDict>)>> {
        let Ok(fetched) = restflow_cache::shared::fetched_from(answer.value.clone()) else {
            return Ok(None);
        };
        let Some((flags, bytes, stamps)) = self.cache.fresh_in(key, &fetched) else {
            return Ok(None);
        };
        let value = match load(py, flags, &bytes) {
            Ok(value) => value,
            Err(error) if is_interrupt(py, &error) => return Err(error),
            Err(_) => return Ok(None),
        };
        let served = SharedServed {
            value,
            status: Status::Hit,
            stamps: Some(stamps),
        };
        Ok(Some(
            crate::wrapper::Reply::Shared(served).with_metadata(py)?,
        ))
    }

    /// This process's near cache counters: `hits`, `misses`,
    /// `invalidations`, `flushes`, `entries` (held now) and `live` (whether
    /// its invalidation channel is up); `None` when the store keeps no near
    /// cache or this process has not used it yet.
    fn near_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        // Only if this process has started it (this does not start it).
        let Some(near) = self.cache.store().near_if_started() else {
            return Ok(None);
        };
        let stats = PyDict::new(py);
        for (name, count) in near.report() {
            stats.set_item(name, count)?;
        }
        stats.set_item("live", near.is_live())?;
        Ok(Some(stats))
    }

    /// Waits, at most `timeout` seconds, until every change the store made
    /// before this call has reached this process's near cache (starting it
    /// if need be). Whether it did; `False` when the store keeps none.
    #[pyo3(signature = (timeout = 5.0))]
    fn near_sync(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds("timeout", timeout)?;
        reported(py, self, |cache| cache.call(|s| s.near_sync(timeout)))
    }

    /// Longest wait for an answer, in seconds.
    #[getter]
    fn read_timeout(&self) -> f64 {
        self.read_timeout
    }

    /// Drops, in every process, the entries the key constructor `owner`
    /// made under versions below `version` (one counter per version).
    fn drop_versions_below(&self, py: Python<'_>, owner: &str, version: u32) -> PyResult<()> {
        // On a cluster the engine reaches the functions of `owner` this
        // process knows.
        let scopes = &crate::runtime::RUNTIME.scopes;
        reported(py, self, |c| {
            c.drop_known_versions_below(scopes, owner, version)
        })
    }
}

/// Logs a warning about the store (the engine says what, and when: at
/// most once a minute).
fn log_warning(message: String) {
    Python::attach(|py| {
        if let Ok(hooks) = hooks(py) {
            let _ = hooks.logger.call_method1(py, "warning", (message,));
        }
    })
}

/// Drops a hot copy evicted while it was being served: its value is a
/// Python object, dropped with PyO3 told the thread is attached (see
/// [`crate::vectorcall::attached`]).
#[cold]
#[inline(never)]
fn drop_attached<T>(last: T) {
    crate::vectorcall::attached(|| drop(last));
}

/// What a call on a shared store serves.
pub(crate) struct SharedServed {
    pub value: Py<PyAny>,
    pub status: Status,
    pub stamps: Option<Stamps>,
}

/// One call of a function on a shared store, as each of its steps needs
/// it: the store, the function, the call's in-process key (under which a
/// near entry's copy is kept hot) and its keys in the store, rendered once.
pub(crate) struct OnStore<'a> {
    handle: &'a SharedBackend,
    core: &'a Core,
    key: KeyWriter,
    keys: KeySet,
}

impl SharedBackend {
    /// The call `call` of `core` on this store.
    pub(crate) fn on<'a>(&'a self, core: &'a Core, call: &Call<'_>) -> PyResult<OnStore<'a>> {
        let mut key = KeyWriter::new();
        let layout = core.write_key(&mut key, call)?;
        self.on_key(core, key, &layout)
    }

    /// The call whose in-process key `key` holds, laid out as `layout`.
    fn on_key<'a>(
        &'a self,
        core: &'a Core,
        key: KeyWriter,
        layout: &Layout,
    ) -> PyResult<OnStore<'a>> {
        let (function_id, partition, suffix) = core.key_parts(&key, layout)?;
        let parts = (function_id, partition.as_str(), suffix.as_str());
        let (namespace, partitioned) = (&core.namespace, core.partitioned());
        let keys = self.cache.keys();
        let keys = keys.call_of(&core.keys, namespace, parts, partitioned);
        Ok(OnStore {
            handle: self,
            core,
            key,
            keys,
        })
    }
}

impl OnStore<'_> {
    /// What the engine served, for Python: a near entry's value kept hot
    /// under the call's in-process key, and the refresh this read claimed
    /// (to run, then finish). The engine warned about a store failure.
    fn answered(
        &self,
        py: Python<'_>,
        served: Served<Value>,
    ) -> (SharedServed, Option<RefreshClaim>) {
        if let Some(hot) = &self.handle.hot {
            // Attached: what it evicts is a Python object, dropped here.
            hot.keep(self.key.as_bytes(), &served, |value| value.clone_ref(py));
        }
        own_served(py, served)
    }

    /// A fresh hit from the near cache, deserialized, counted by the
    /// engine (timed from `started`, when given) and kept in the hot layer;
    /// `None` when it has none (or it no longer deserializes: the store
    /// decides). Attached: no round trip.
    fn near_served(
        &self,
        py: Python<'_>,
        started: Option<Instant>,
    ) -> PyResult<Option<SharedServed>> {
        let codec = self.handle.codec(self.core);
        let decode = |flags, bytes: &[u8]| codec.decode_quietly(flags, bytes);
        let (cache, stats) = (&self.handle.cache, &self.core.stats);
        match cache.near_counted(&self.keys, stats, started, decode) {
            Ok(served) => Ok(served.map(|served| self.answered(py, served).0)),
            Err(interrupt) => Err(interrupt.clone_ref(py)),
        }
    }

    /// Everything of a call that blocks, for a caller that computes the
    /// value itself (the async layer, on a worker thread): the engine's
    /// [`SharedCache::begin`], counted as [`get`] counts, its claim held by
    /// the task `task`. The near cache and the hot layer were looked up
    /// already ([`near_hit`]).
    pub(crate) fn begin(&self, py: Python<'_>, task: restflow_cache::Owner) -> PyResult<Begun> {
        let (handle, core) = (self.handle, self.core);
        let mode = NearMode::past_lookup(handle.uses_near(core));
        let (window, codec) = (core.stale_if_error_window(), handle.codec(core));
        let begun = detached(py, core, || {
            let lookup = (mode, window);
            handle
                .cache
                .begin_counted(task, &self.keys, lookup, &core.stats, &codec)
        })?;
        Ok(match begun {
            Begin::Lead(claim) => Begun::Lead(SharedLead::compute(claim)),
            Begin::Served(served) => {
                let (served, claim) = self.answered(py, served);
                let refresh = claim.map(|claim| SharedLead::refresh(&handle.cache, claim));
                Begun::Served(served, refresh)
            }
        })
    }

    /// The claim of a forced recompute (REFRESH) of the call, for a caller
    /// that computes the value itself (on a worker thread: a round trip).
    pub(crate) fn begin_refresh(&self, py: Python<'_>) -> PyResult<PyLead> {
        let window = self.core.stale_if_error_window();
        let begun = || self.handle.cache.begin_refresh(&self.keys, window);
        Ok(SharedLead::compute(detached(py, self.core, begun)?))
    }

    /// The packed lookup of the call, for the event loop to send itself,
    /// and the entry's key (which its answer is checked against).
    pub(crate) fn fetch_command(self) -> (Vec<u8>, String) {
        (
            restflow_cache::shared::fetch_command(&self.keys),
            self.keys.data,
        )
    }

    /// How many callers of this process follow the computation of the
    /// call's entry now (`Steps.waiters` on a shared store).
    pub(crate) fn waiters(&self) -> usize {
        self.handle.cache.waiters(&self.keys.data)
    }
}

/// A claim an async caller computes for and then ends ([`finish`]):
/// the engine's one lead type for a miss, a forced refresh and a stale
/// entry's background refresh.
pub(crate) type PyLead = SharedLead<Box<dyn SharedStore>, SharedErr>;

/// What [`OnStore::begin`] found: a served call (with the refresh it
/// claimed), or the claim to compute it.
pub(crate) enum Begun {
    Served(SharedServed, Option<PyLead>),
    Lead(PyLead),
}

/// What the engine served, for this caller, and the refresh it claimed.
fn own_served(py: Python<'_>, served: Served<Value>) -> (SharedServed, Option<RefreshClaim>) {
    let (status, stamps) = (served.status, served.stamps);
    let value = own(py, served.value);
    (
        SharedServed {
            value,
            status,
            stamps,
        },
        served.refresh,
    )
}

/// Runs the function (as a background refresh when `background`: see
/// `Core::compute_for_engine_as`) and serializes what is to be stored (see
/// [`produced`]).
fn produce(
    py: Python<'_>,
    core: &Core,
    backend: &SharedBackend,
    call: &OwnedCall,
    background: bool,
) -> Result<Produced<Value>, SharedErr> {
    let computed = core.compute_for_engine_as(py, &call.bind(py), background)?;
    produced(py, &backend.codec(core), computed)
}

/// A computed value as the engine stores it: serialized when it is to be
/// stored ([`Produced::encoded`], under the codec [`Policy`]). Attached: on
/// an error the value is dropped here.
fn produced(
    py: Python<'_>,
    codec: &Policy<PyCodec<'_>>,
    computed: Computed<Stored>,
) -> Result<Produced<Value>, SharedErr> {
    let computed = Computed {
        value: Arc::new(computed.value.value().clone_ref(py)),
        lifetime: computed.lifetime,
    };
    Produced::encoded(codec, computed)
}

/// Runs `run` (the engine's round trips, and its calls back into
/// Python, which attach) with the GIL released; then raises an interrupt
/// parked meanwhile, or what the engine answered as the Python error.
fn detached<T: Send>(
    py: Python<'_>,
    core: &Core,
    run: impl FnOnce() -> Result<T, SharedError<SharedErr>> + Send,
) -> PyResult<T> {
    let done = py.detach(run);
    interrupt::raise_parked()?;
    done.map_err(|error| raise(py, error, &core.function_id))
}

/// The Python error of what the engine answered: as the memory store's
/// lifecycle raises it, or `CacheBackendError` for a store that failed.
fn raise(py: Python<'_>, error: SharedError<SharedErr>, function_id: &str) -> PyErr {
    match error.into_get() {
        Ok(error) => crate::wrapper::raise(py, error, function_id),
        Err(store) => CacheBackendError::new_err(store.to_string()),
    }
}

/// HIT, MISS, STALE (refreshing once across processes) or BYPASS, counted
/// in the function's statistics (by the engine, past the near cache). A
/// call served from the store without computing (HIT, STALE) is timed as a
/// lookup: the round trip and the deserialization, what the caller waited
/// for.
pub(crate) fn get(
    py: Python<'_>,
    core: &Arc<Core>,
    backend: &Py<SharedBackend>,
    call: &Call<'_>,
) -> PyResult<SharedServed> {
    let handle = backend.get();
    let mut w = KeyWriter::new();
    let layout = core.write_key(&mut w, call)?;
    let near = handle.uses_near(core);
    // A hot hit first: as a memory hit, counted and not timed.
    if near {
        if let Some(served) = handle.hot_served(py, w.as_bytes()) {
            count_near_hit(&core.stats);
            return Ok(served);
        }
    }
    let started = Instant::now();
    let on = handle.on_key(core, w, &layout)?;
    // A near hit next: no round trip, so no need to release the GIL (the
    // near cache's lock is never held across a wait) or to own the call
    // for a computation.
    if near {
        if let Some(served) = on.near_served(py, Some(started))? {
            return Ok(served);
        }
    }
    let owned = OwnedCall::new(call);
    let (window, codec) = (core.stale_if_error_window(), handle.codec(core));
    let served = detached(py, core, || {
        handle.cache.serve_counted(
            &on.keys,
            (NearMode::past_lookup(near), window),
            &core.stats,
            &codec,
            || Python::attach(|py| produce(py, core, handle, &owned, false)),
        )
    })?;
    let (served, claim) = on.answered(py, served);
    if let Some(claim) = claim {
        // A call the value may not answer does not refresh it (see
        // `Core::serves`): its claim is given back by a job that computes
        // nothing, off this thread (a round trip), and the entry stays.
        let refreshes = core.refreshes(py, &served.value, call);
        schedule_refresh(py, core, backend, claim, refreshes.then_some(owned));
    }
    Ok(served)
}

/// Ends a lead of [`OnStore::begin`] or [`OnStore::begin_refresh`] (or a
/// background refresh one claimed) with what its caller computed (`Err`:
/// the computation raised), on a worker thread (round trips), as the
/// engine's [`SharedLead::finish_counted`] decides: a miss stored, or the
/// value kept for stale-if-error (STALE), or the error raised; a forced
/// refresh answered REFRESH; a background refresh's value stored under the
/// generations the stale entry was read under (REFRESH), or its claim
/// given back when it failed (`None`).
pub(crate) fn finish(
    py: Python<'_>,
    core: &Core,
    backend: &Py<SharedBackend>,
    lead: PyLead,
    computed: Result<Computed<Stored>, SharedErr>,
) -> PyResult<Option<SharedServed>> {
    let codec = backend.get().codec(core);
    let produced = computed.and_then(|computed| produced(py, &codec, computed));
    // The error's last reference is dropped here, attached, not in the
    // detached closure (whose drop of a `Py` would go through PyO3's
    // reference pool; see `flight::ReleasedAttached`).
    let error = produced.as_ref().err().map(Arc::clone);
    let served = detached(py, core, || {
        lead.finish_counted(produced, &codec, &core.stats)
    });
    drop(error);
    // Nothing is kept hot: what a lead ends did not come from the near cache.
    Ok(served?.map(|served| own_served(py, served).0))
}

/// Queues the refresh this process claimed with `call`; the engine
/// releases the claim (a lock in the store) when it ends, however it ends.
/// Without a call the job computes nothing (`Refreshed::Nothing`): the
/// claim is given back and the stale entry stays.
fn schedule_refresh(
    py: Python<'_>,
    core: &Arc<Core>,
    backend: &Py<SharedBackend>,
    claim: RefreshClaim,
    call: Option<OwnedCall>,
) {
    let (job_core, job_backend) = (Arc::clone(core), backend.clone_ref(py));
    // The engine times the computation (an early refresh's delta) and
    // stores what it produced.
    // Every closure here moves what it holds into its `Python::attach`, so
    // those Python objects are dropped attached: the job runs detached, and
    // a `Py` dropped detached goes through pyo3's reference pool, whose lock
    // a fork at that instant would leave held in the child (seen as a hung
    // child in tests/fork_worker.py: a child's first decref waited on it).
    let compute = move || {
        Python::attach(move |py| {
            let (core, handle) = (&job_core, job_backend.get());
            let Some(call) = call else {
                return restflow_cache::shared::Refreshed::Nothing;
            };
            match produce(py, core, handle, &call, true) {
                Ok(produced) => produced.into_refreshed(),
                Err(error) => {
                    core.log_refresh_failure(py, &error);
                    restflow_cache::shared::Refreshed::Nothing
                }
            }
        })
    };
    // The engine warned about a store that failed to take the value.
    let finished = |_: Result<(), StoreError>| {
        // No caller to hand an interrupt to on the refresh thread: the
        // refresh just ends (and must not leave it for the next job).
        Python::attach(|_| drop(interrupt::take()));
    };
    // Refresh jobs run attached (see `runtime`); the store calls of this
    // one run detached, as on every other path.
    let spawn = |job: restflow_cache::Job| {
        RUNTIME
            .engine
            .refresher()
            .try_spawn(Box::new(move || Python::attach(|py| py.detach(job))))
            .map_err(|refused| {
                // The queue is full: its Python objects are freed now,
                // attached, rather than deferred to the next attach.
                Python::attach(|_| drop(refused));
                Box::new(|| {}) as restflow_cache::Job
            })
    };
    let handle = backend.get();
    py.detach(|| handle.cache.spawn_refresh(spawn, claim, compute, finished));
}

/// The cached value (fresh or stale) and its instants, without computing.
pub(crate) fn peek(
    py: Python<'_>,
    core: &Core,
    backend: &Py<SharedBackend>,
    call: &Call<'_>,
) -> PyResult<Option<(Py<PyAny>, Stamps, Freshness)>> {
    let (handle, on) = (backend.get(), backend.get().on(core, call)?);
    let codec = handle.codec(core);
    // Attached throughout: an error it does not hand on is dropped there.
    let decode = |flags, bytes: &[u8]| Python::attach(|_| codec.decode_quietly(flags, bytes));
    // A failing store is skipped (or reported) by the engine.
    let peeked = detached(py, core, || handle.cache.peek_decoded(&on.keys, decode))?;
    Ok(peeked.map(|(value, stamps, freshness)| (own(py, value), stamps, freshness)))
}

/// Recomputes and overwrites (REFRESH).
pub(crate) fn refresh(
    py: Python<'_>,
    core: &Arc<Core>,
    backend: &Py<SharedBackend>,
    call: &Call<'_>,
) -> PyResult<SharedServed> {
    let (handle, on) = (backend.get(), backend.get().on(core, call)?);
    let owned = OwnedCall::new(call);
    let window = core.stale_if_error_window();
    let served = detached(py, core, || {
        handle.cache.refresh_served(&on.keys, window, || {
            Python::attach(|py| produce(py, core, handle, &owned, false))
        })
    })?;
    Ok(on.answered(py, served).0)
}

/// A fresh hit from the backend's near cache, without a round trip (for
/// the event loop); `None` when the call does not use it or it has none.
pub(crate) fn near_hit(
    py: Python<'_>,
    core: &Core,
    backend: &Py<SharedBackend>,
    call: &Call<'_>,
) -> PyResult<Option<SharedServed>> {
    let handle = backend.get();
    if !handle.uses_near(core) {
        return Ok(None);
    }
    let mut w = KeyWriter::new();
    let layout = core.write_key(&mut w, call)?;
    if let Some(served) = handle.hot_served(py, w.as_bytes()) {
        count_near_hit(&core.stats);
        return Ok(Some(served));
    }
    // A near miss is counted by the call that goes on to the store.
    handle.on_key(core, w, &layout)?.near_served(py, None)
}

/// Runs a store operation the caller asked for by name (an invalidation,
/// `server_info`, `near_sync`), reporting a failure as `CacheBackendError`:
/// an invalidation that did not happen must not pass silently.
fn reported<T: Send>(
    py: Python<'_>,
    handle: &SharedBackend,
    run: impl FnOnce(&PyShared) -> Result<T, StoreError> + Send,
) -> PyResult<T> {
    let done = py.detach(|| run(&handle.cache));
    interrupt::raise_parked()?;
    done.map_err(|e| CacheBackendError::new_err(e.to_string()))
}

/// Drops one entry, fencing the computations of it under way in every
/// process: none stores the value it computed before the delete.
pub(crate) fn delete(
    py: Python<'_>,
    core: &Core,
    backend: &Py<SharedBackend>,
    call: &Call<'_>,
) -> PyResult<bool> {
    let on = backend.get().on(core, call)?;
    reported(py, on.handle, |cache| cache.delete_fencing(&on.keys))
}

/// Drops every entry of the function, in every process.
pub(crate) fn invalidate_all(
    py: Python<'_>,
    core: &Core,
    backend: &Py<SharedBackend>,
) -> PyResult<()> {
    reported(py, backend.get(), |cache| cache.drop_function(&core.keys))
}

/// Drops the partitions of a partial call, in every process.
pub(crate) fn delete_by_prefix(
    py: Python<'_>,
    core: &Core,
    backend: &Py<SharedBackend>,
    call: &Call<'_>,
    bound: bool,
) -> PyResult<()> {
    if !core.partitioned() {
        return invalidate_all(py, core, backend);
    }
    let parts = core.partition_texts(call, bound)?;
    let parts = parts.iter().map(|(id, text)| (id.as_str(), text.as_str()));
    reported(py, backend.get(), |cache| {
        cache.drop_partitions(&core.keys, parts)
    })
}
