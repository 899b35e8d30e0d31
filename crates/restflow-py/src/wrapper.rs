//! `CachedWrapper`: what `@cache_result` returns. It converts a Python call
//! into a key and delegates to the engine; the lifecycle lives in
//! `restflow-cache`.

use std::sync::Arc;
use std::time::Duration;

use crate::once::OnceValue;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use restflow_cache::key::KeyWriter;
use restflow_cache::{Counter, Entry, GetError, Lifetimes, Lookup, Outcome, Served, Status};

use crate::core::{read_plan, BackendChoice, Call, Core, Fields, OwnedCall};
use crate::runtime::{hooks, SharedErr, RUNTIME};
use crate::signature::Signature;
use crate::stored::Stored;

/// `(build, partition, partitioned, plan)` from `KeyConstructor.compile`.
type FieldsSpec<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    bool,
    Option<Bound<'py, PyAny>>,
);

/// How often a caller waiting on another's computation wakes to let Python
/// handle signals (Ctrl-C) while it waits.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

// A cached function, or a cached method bound to an instance. (A plain
// comment, not a doc comment: a class docstring would shadow the `__doc__`
// getter that answers with the wrapped function's docstring.)
#[pyclass(
    module = "restflow._engine",
    name = "CachedWrapper",
    frozen,
    dict,
    weakref
)]
pub struct CachedWrapper {
    /// The entry point CPython calls for `wrapper(...)`; see [`crate::vectorcall`].
    vectorcall: pyo3::ffi::vectorcallfunc,
    core: Arc<Core>,
    /// For a method fetched from an instance: the instance, and the wrapper
    /// it was fetched through (for `__name__`, `__doc__` and the like).
    bound: Option<(Py<PyAny>, Py<CachedWrapper>)>,
    /// The runtime state bits a positional call needs to take the memory
    /// hot path ([`Core::plain_memory_bits`]; `state::NEVER` for a bound
    /// method, a method, or a key constructor): one test on that path
    /// instead of four.
    hot_bits: u8,
}

type PyShared = restflow_cache::Shared<Stored>;

/// Waits for another caller's computation with the GIL released, waking
/// now and then so Python can deliver signals (Ctrl-C) to the waiter.
fn wait_detached(
    py: Python<'_>,
    waiter: &restflow_cache::Waiter<PyShared, SharedErr>,
) -> Outcome<PyShared, SharedErr> {
    loop {
        if let Some(outcome) = py.detach(|| waiter.wait_timeout(SIGNAL_CHECK_INTERVAL)) {
            return outcome;
        }
        if let Err(interrupt) = py.check_signals() {
            // This caller gives up; the leader carries on for the others.
            return Outcome::Error(Arc::new(interrupt));
        }
    }
}

pub(crate) fn raise(py: Python<'_>, error: GetError<SharedErr>, function_id: &str) -> PyErr {
    match error {
        GetError::Compute(shared) => shared.clone_ref(py),
        GetError::Recursive => {
            PyRuntimeError::new_err(GetError::<SharedErr>::recursion_message(function_id))
        }
    }
}

/// The metadata dict of DESIGN.md §1 of a call the memory store served.
/// Timestamps are present only for a value that is in the cache.
fn metadata<'py>(py: Python<'py>, served: &Served<Stored>) -> PyResult<Bound<'py, PyDict>> {
    let times = |entry: &Entry<Stored>| entry.value().iso(py, entry.stamps());
    let entry = served.reported();
    if let (true, Some(entry)) = (served.report_is_fixed(), entry) {
        // Built once per entry; each caller gets a copy it may mutate.
        let template = entry
            .value()
            .hit_metadata(py, || build_metadata(py, Status::Hit, Some(times(entry))))?;
        return template.copy();
    }
    build_metadata(py, served.status, entry.map(times))
}

/// A metadata dict: the status, and for a value in the cache its
/// `cached_at` and (for one that expires) `reset_at` texts.
fn build_metadata<'py, T: IntoPyObject<'py>>(
    py: Python<'py>,
    status: Status,
    times: Option<(T, Option<T>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item(
        crate::interned!(py, "cache_status"),
        hooks(py)?.statuses[status.index()].bind(py),
    )?;
    if let Some((cached_at, reset_at)) = times {
        dict.set_item(crate::interned!(py, "cached_at"), cached_at)?;
        if let Some(reset_at) = reset_at {
            dict.set_item(crate::interned!(py, "reset_at"), reset_at)?;
        }
    }
    Ok(dict)
}

/// What a call served, from the memory store or a shared one.
pub enum Reply {
    Memory(Served<Stored>),
    Shared(crate::shared::SharedServed),
}

impl Reply {
    /// A fresh memory entry, served as it is: no PyO3 attachment needed
    /// (see [`crate::vectorcall::attached`]).
    #[inline]
    pub fn hit(entry: Arc<Entry<Stored>>) -> Reply {
        Reply::Memory(Served::new(entry, Status::Hit, true))
    }

    /// A value with no entry to report: BYPASS, or what a refresh stored.
    pub fn bare(value: Py<PyAny>, status: Status) -> Reply {
        let stamps = None;
        Reply::Shared(crate::shared::SharedServed {
            value,
            status,
            stamps,
        })
    }

    /// The value.
    #[inline]
    pub fn value(self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Reply::Memory(served) => {
                let value = served.entry.value().value().clone_ref(py);
                release(served.entry);
                value
            }
            Reply::Shared(served) => served.value,
        }
    }

    /// `(value, metadata)`.
    #[inline]
    pub fn with_metadata(self, py: Python<'_>) -> PyResult<(Py<PyAny>, Bound<'_, PyDict>)> {
        match self {
            // A plain drop, not `release`: here that measured ~8 ns more on
            // a ~125 ns hit. A hit's entry is the last reference only if
            // another thread evicted it meanwhile; its decref is then
            // deferred to the next call that is not a memory hit (every
            // eviction is made by one), so the delay is bounded.
            Reply::Memory(served) => {
                let value = served.entry.value().value().clone_ref(py);
                Ok((value, metadata(py, &served)?))
            }
            Reply::Shared(served) => {
                let times = served.stamps.map(|stamps| stamps.iso());
                let dict = build_metadata(py, served.status, times)?;
                Ok((served.value, dict))
            }
        }
    }
}

/// Drops a served entry. When it has left the store meanwhile (evicted by
/// another thread) this is its last reference, and its value is dropped
/// with PyO3 told the thread is attached, so the decref is not deferred
/// (see [`crate::vectorcall::attached`]); otherwise this is an `Arc` drop.
#[inline]
fn release(entry: Arc<Entry<Stored>>) {
    if let Some(last) = Arc::into_inner(entry) {
        drop_attached(last);
    }
}

#[cold]
#[inline(never)]
fn drop_attached(entry: Entry<Stored>) {
    crate::vectorcall::attached(|| drop(entry));
}

impl CachedWrapper {
    /// The call's arguments, with a bound method's instance in front.
    #[inline]
    pub(crate) fn call<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Call<'py>> {
        let args = match &self.bound {
            None => args.clone(),
            Some((instance, _)) => {
                let py = args.py();
                let mut all = Vec::with_capacity(args.len() + 1);
                all.push(instance.bind(py).clone());
                all.extend(args.iter());
                PyTuple::new(py, all)?
            }
        };
        Ok(Call {
            args,
            kwargs: kwargs.cloned(),
        })
    }

    #[inline]
    pub(crate) fn key(&self, call: &Call<'_>) -> PyResult<KeyWriter> {
        let mut w = KeyWriter::new();
        self.core.write_key(&mut w, call)?;
        Ok(w)
    }

    /// What the wrapper delegates to.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The dotted path that names the function.
    pub(crate) fn function_id_str(&self) -> &str {
        &self.core.function_id
    }

    /// HIT, STALE (scheduling the refresh) or MISS, through the engine.
    ///
    /// Anything but a memory hit runs [`attached`](crate::vectorcall::attached):
    /// this is also the vectorcall entry points' general path.
    #[inline]
    fn get<'py>(&self, py: Python<'py>, call: &Call<'py>) -> PyResult<Reply> {
        let engine = RUNTIME.ready(py)?;
        if let Some(backend) = self.shared(py)? {
            // `move`: the backend handle is dropped in there too.
            return crate::vectorcall::attached(move || {
                crate::shared::get(py, &self.core, &backend, call).map(Reply::Shared)
            });
        }
        let key = self.key(call)?;
        let (lookup, fallback) = engine
            .cache()
            .lookup_keeping(key.as_bytes(), self.core.stale_if_error_window());
        if let Lookup::Fresh(entry) = lookup {
            self.core.stats.add(Counter::Hit);
            return Ok(Reply::hit(entry));
        }
        self.resolve(py, key.as_bytes(), lookup, fallback, call)
    }

    /// The shared backend this wrapper uses, or `None` for the memory
    /// store, for a call that uses it: the first claims this function's key
    /// strings (`Core::claim_shared_keys`). Call after `RUNTIME.ready`,
    /// which reads the `BACKEND` setting.
    #[inline]
    pub(crate) fn shared(
        &self,
        py: Python<'_>,
    ) -> PyResult<Option<Py<crate::shared::SharedBackend>>> {
        let backend = self.backend(py)?;
        if backend.is_some() {
            self.core.claim_shared_keys(py)?;
        }
        Ok(backend)
    }

    /// The shared backend this wrapper uses, or `None` for the memory
    /// store, claiming nothing: reading its counters (`stats()`,
    /// `reset_stats()`, a Prometheus scrape) is no use of the store, so a
    /// function never called there must not take its name from a namesake
    /// that is. Dropping entries (`delete_cache`, `invalidate_all`,
    /// `delete_by_prefix`) claims nothing either: a drop can only make a
    /// namesake miss, never serve another function's value, and a wipe
    /// reaches functions dropped but not yet collected, whose claim would
    /// fail against the live namesake while the wipe holds them.
    #[inline]
    fn backend(&self, py: Python<'_>) -> PyResult<Option<Py<crate::shared::SharedBackend>>> {
        if self.core.uses_memory() {
            return Ok(None);
        }
        RUNTIME.backend(py, self.core.backend.spec())
    }

    /// The cached entry of a call (HIT or STALE), without computing,
    /// claiming or removing anything.
    fn peek(&self, py: Python<'_>, call: &Call<'_>) -> PyResult<Option<Reply>> {
        let engine = RUNTIME.ready(py)?;
        if let Some(backend) = self.shared(py)? {
            let peeked = crate::shared::peek(py, &self.core, &backend, call)?;
            return Ok(peeked.map(|(value, stamps, freshness)| {
                Reply::Shared(crate::shared::SharedServed {
                    value,
                    status: Status::of_peek(freshness),
                    stamps: Some(stamps),
                })
            }));
        }
        let key = self.key(call)?;
        Ok(engine.peek_served(key.as_bytes()).map(Reply::Memory))
    }

    /// Recomputes a call now and replaces its entry (REFRESH): one path
    /// for `refresh` and `refresh_with_metadata`.
    fn refresh_reply(&self, py: Python<'_>, call: &Call<'_>) -> PyResult<Reply> {
        let engine = RUNTIME.ready(py)?;
        if let Some(backend) = self.shared(py)? {
            let served = crate::shared::refresh(py, &self.core, &backend, call)?;
            self.core.stats.add(Counter::of_status(served.status));
            return Ok(Reply::Shared(served));
        }
        let key = self.key(call)?;
        let served = engine.refresh_counted(key.as_bytes(), &self.core.stats, || {
            self.core.compute_for_engine(py, call)
        });
        crate::interrupt::raise_parked()?;
        let served = served.map_err(|shared| shared.clone_ref(py))?;
        Ok(Reply::Memory(served))
    }

    /// Finishes a call whose key was looked up (the engine's `resolve`),
    /// queueing the refresh of a stale entry this call claimed. Split from
    /// the lookup so the vectorcall path can look up before it builds an
    /// argument tuple. Runs [`attached`](crate::vectorcall::attached), and
    /// out of line so the hit path before it stays small.
    #[inline(never)]
    pub(crate) fn resolve<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        lookup: Lookup<Stored>,
        fallback: Option<Arc<Entry<Stored>>>,
        call: &Call<'py>,
    ) -> PyResult<Reply> {
        crate::vectorcall::attached(|| {
            // Set when the function ran here, so a hit never looks for a
            // parked interrupt.
            let ran = std::cell::Cell::new(false);
            let compute = || {
                ran.set(true);
                self.core.compute_for_engine(py, call)
            };
            let served = RUNTIME.engine.resolve_refreshing(
                key,
                lookup,
                fallback,
                &self.core.stats,
                compute,
                |waiter| wait_detached(py, waiter),
                |value| {
                    self.core
                        .refreshes(py, value.value(), call)
                        .then(|| self.background_refresh(call))
                },
            );
            if ran.get() {
                crate::interrupt::raise_parked()?;
            }
            let served = served.map_err(|e| raise(py, e, &self.core.function_id))?;
            Ok(Reply::Memory(served))
        })
    }

    /// A new wrapper object, with CPython's fast calling convention switched
    /// on for the class the first time one is made.
    fn make(
        py: Python<'_>,
        core: Arc<Core>,
        bound: Option<(Py<PyAny>, Py<CachedWrapper>)>,
    ) -> PyResult<Bound<'_, CachedWrapper>> {
        let hot_bits = if bound.is_none() && core.plain() {
            core.plain_memory_bits()
        } else {
            crate::runtime::state::NEVER
        };
        let obj = Bound::new(
            py,
            CachedWrapper {
                vectorcall: crate::vectorcall::entry,
                core,
                bound,
                hot_bits,
            },
        )?;
        crate::vectorcall::enable(&obj, &obj.get().vectorcall);
        if obj.get().bound.is_none() {
            let fast = crate::fastpath::WithMetadata::make(py, obj.clone().unbind())?;
            obj.as_any()
                .getattr(crate::interned!(py, "__dict__"))?
                .set_item(crate::interned!(py, "get_with_metadata"), fast)?;
        }
        Ok(obj)
    }

    /// The vectorcall fast path: positional arguments of a plain function,
    /// looked up straight from CPython's argument array, and a fresh memory
    /// entry handed to `hit`. Anything else, and anything but a fresh hit,
    /// continues on the general path, whose reply goes to `other`.
    ///
    /// Inlined into each vectorcall entry point with its `hit`, so a hit
    /// returns just what the caller answers with (not a [`Reply`] copied
    /// through memory) and makes no call of its own beyond the key writer
    /// and the lookup; everything else is out of line ([`Self::serve_rest`]).
    ///
    /// # Safety
    /// Every pointer in `args` and `kwvalues` is a live Python object for
    /// the whole call (CPython's vectorcall argument array), and `kwvalues`
    /// holds one value per name in `kwnames`.
    #[inline(always)]
    pub(crate) unsafe fn serve_vector<'py, R>(
        &self,
        py: Python<'py>,
        args: &[*mut pyo3::ffi::PyObject],
        kwnames: Option<Borrowed<'_, 'py, PyTuple>>,
        kwvalues: &[*mut pyo3::ffi::PyObject],
        hit: impl FnOnce(Arc<Entry<Stored>>) -> PyResult<R>,
        other: impl FnOnce(Reply) -> PyResult<R>,
    ) -> PyResult<R> {
        if kwnames.is_none() && RUNTIME.state() & self.hot_bits == self.hot_bits {
            let mut w = self.core.plain_prefix();
            // SAFETY: live objects, per this function's contract.
            unsafe { self.core.signature.write_positional_raw(py, &mut w, args) }
                .map_err(|e| e.into_pyerr(&self.core.function_id))?;
            // No stale-if-error window on this path: nothing to keep.
            let lookup = RUNTIME.engine.cache().lookup(w.as_bytes());
            if let Lookup::Fresh(entry) = lookup {
                // The one cost statistics add to a hit: a relaxed increment.
                self.core.stats.add(Counter::Hit);
                return hit(entry);
            }
            // SAFETY: as above.
            return other(unsafe { self.resolve_vector(py, args, &w, lookup)? });
        }
        // SAFETY: as above.
        other(unsafe { self.serve_rest(py, args, kwnames, kwvalues)? })
    }

    /// [`Self::serve_vector`] past a lookup that found no fresh entry.
    ///
    /// # Safety
    /// As [`Self::serve_vector`]'s.
    #[inline(never)]
    unsafe fn resolve_vector(
        &self,
        py: Python<'_>,
        args: &[*mut pyo3::ffi::PyObject],
        w: &KeyWriter,
        lookup: Lookup<Stored>,
    ) -> PyResult<Reply> {
        let call = Call {
            // SAFETY: live objects, per this function's contract.
            args: unsafe { crate::vectorcall::tuple_from_raw(py, args)? },
            kwargs: None,
        };
        self.resolve(py, w.as_bytes(), lookup, None, &call)
    }

    /// [`Self::serve_vector`] for a call the memory hot path does not take:
    /// a shared store's hot layer, else the general path.
    ///
    /// # Safety
    /// As [`Self::serve_vector`]'s.
    #[inline(never)]
    unsafe fn serve_rest<'py>(
        &self,
        py: Python<'py>,
        args: &[*mut pyo3::ffi::PyObject],
        kwnames: Option<Borrowed<'_, 'py, PyTuple>>,
        kwvalues: &[*mut pyo3::ffi::PyObject],
    ) -> PyResult<Reply> {
        if kwnames.is_none() && self.bound.is_none() && self.core.plain() {
            // SAFETY: live objects, per this function's contract.
            if let Some(served) = unsafe { self.hot_vector(py, args)? } {
                return Ok(Reply::Shared(served));
            }
        }
        // The instance of a bound method goes straight into the one tuple
        // built here (`self.call` would build a second).
        let instance = self.bound.as_ref().map(|(instance, _)| instance.bind(py));
        // SAFETY: as above.
        let (args, kwargs) =
            unsafe { crate::vectorcall::to_tuple_and_dict(py, instance, args, kwnames, kwvalues)? };
        let call = Call { args, kwargs };
        self.get(py, &call)
    }

    /// A hit from a shared store's hot layer (see `SharedBackend::hot_served`)
    /// for positional arguments straight from CPython's argument array,
    /// keyed as the general path keys them (`write_key` writes the same
    /// bytes); `None`: go the general way.
    ///
    /// # Safety
    /// As [`CachedWrapper::serve_vector`]'s. Out of line, so the memory
    /// hit path before it stays small.
    #[inline(never)]
    unsafe fn hot_vector(
        &self,
        py: Python<'_>,
        args: &[*mut pyo3::ffi::PyObject],
    ) -> PyResult<Option<crate::shared::SharedServed>> {
        use crate::runtime::state;
        if RUNTIME.state() & state::CONFIGURED == 0 {
            return Ok(None);
        }
        // A `Bound`, so the handle's decref is made here and now (the
        // thread is attached; PyO3 does not know it on this path, see
        // `crate::vectorcall::attached`).
        let Some(backend) = self.shared(py)?.map(|b| b.into_bound(py)) else {
            return Ok(None);
        };
        let handle = backend.get();
        if !handle.uses_near(&self.core) {
            return Ok(None);
        }
        let mut w = self.core.plain_prefix();
        // SAFETY: live objects, per this function's contract.
        unsafe { self.core.signature.write_positional_raw(py, &mut w, args) }
            .map_err(|e| e.into_pyerr(&self.core.function_id))?;
        let served = handle.hot_served(py, w.as_bytes());
        if served.is_some() {
            restflow_cache::shared::count_near_hit(&self.core.stats);
        }
        Ok(served)
    }

    /// The computation of the background refresh a call claimed, for the
    /// engine to queue: it runs on a refresh worker, attached, and logs
    /// its failure (the stale value is kept).
    #[cold]
    fn background_refresh(
        &self,
        call: &Call<'_>,
    ) -> impl FnOnce() -> Result<restflow_cache::Computed<Stored>, SharedErr> + Send + 'static {
        let (core, call) = (Arc::clone(&self.core), OwnedCall::new(call));
        move || {
            Python::attach(|py| {
                core.compute_refresh(py, &call.bind(py)).map_err(|error| {
                    core.log_refresh_failure(py, &error);
                    Arc::new(error)
                })
            })
        }
    }
}

#[pymethods]
impl CachedWrapper {
    /// Built by `restflow.caching.cache_result`; not meant to be called
    /// directly.
    #[staticmethod]
    #[pyo3(signature = (
        func, *, signature, method, ttl, stale, policy, namespace, function_id,
        owner, version, key_identifier, fields, backend = None, stale_if_error = None,
        claim = None, early_refresh_beta = None, near_cache = None, receiver_check = None,
        serves = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn create<'py>(
        py: Python<'py>,
        func: Bound<'py, PyAny>,
        signature: Bound<'py, PyAny>,
        method: bool,
        ttl: Option<f64>,
        stale: Option<f64>,
        policy: Option<Bound<'py, PyAny>>,
        namespace: String,
        function_id: String,
        owner: String,
        version: u32,
        key_identifier: bool,
        fields: Option<FieldsSpec<'py>>,
        backend: Option<String>,
        stale_if_error: Option<f64>,
        claim: Option<Bound<'py, PyAny>>,
        early_refresh_beta: Option<f64>,
        near_cache: Option<bool>,
        receiver_check: Option<Bound<'py, PyAny>>,
        serves: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, CachedWrapper>> {
        let lifetimes = Lifetimes::from_secs(ttl, stale, stale_if_error, early_refresh_beta)
            .map_err(PyValueError::new_err)?;
        let signature = Signature::new(function_id.clone(), &signature, method)?;
        let fields = fields
            .map(|(build, partition, partitioned, plan)| {
                let plan = plan
                    .map(|plan| read_plan(&signature, &plan, &function_id))
                    .transpose()?;
                Ok::<_, PyErr>(Fields {
                    build: build.unbind(),
                    partition: partition.unbind(),
                    partitioned,
                    plan,
                })
            })
            .transpose()?;
        // A function whose identity other live functions can have keeps its
        // in-process entries to itself (see `Core::claim`).
        let own_scope = claim.is_some();
        let names =
            RUNTIME
                .scopes
                .name_function((namespace, version), &function_id, owner, own_scope);
        let core = Arc::new(Core {
            func: func.unbind(),
            policy: policy.map(Bound::unbind),
            lifetimes,
            signature,
            scope: names.scope,
            namespace: names.namespace,
            function_id,
            shared_identity: key_identifier,
            fields,
            classes: Default::default(),
            keys: names.keys,
            backend: BackendChoice::parse(backend.as_deref()),
            near_cache,
            json_refusal_logged: Default::default(),
            claim: claim.map(Bound::unbind),
            claimed: OnceValue::new(),
            receiver_check: receiver_check.map(Bound::unbind),
            serves: serves.map(Bound::unbind),
            stats: Default::default(),
        });
        CachedWrapper::make(py, core, None)
    }

    /// Returns the cached value, computing it on a miss.
    ///
    /// (CPython calls [`crate::vectorcall::entry`] instead; this is the
    /// fallback for callers that use `tp_call`.)
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let call = self.call(args, kwargs)?;
        Ok(self.get(py, &call)?.value(py))
    }

    /// Returns `(value, metadata)`: HIT, MISS or STALE.
    ///
    /// (On a plain function, `wrapper.get_with_metadata` finds a
    /// [`crate::fastpath::WithMetadata`] in the instance dict first, which
    /// answers the same through vectorcall.)
    #[pyo3(signature = (*args, **kwargs))]
    fn get_with_metadata<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Py<PyAny>, Bound<'py, PyDict>)> {
        let call = self.call(args, kwargs)?;
        self.get(py, &call)?.with_metadata(py)
    }

    /// Recomputes now and replaces the entry; returns the value.
    #[pyo3(signature = (*args, **kwargs))]
    fn refresh<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let call = self.call(args, kwargs)?;
        Ok(self.refresh_reply(py, &call)?.value(py))
    }

    /// Recomputes now and replaces the entry; returns `(value, metadata)`
    /// with status REFRESH.
    #[pyo3(signature = (*args, **kwargs))]
    fn refresh_with_metadata<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Py<PyAny>, Bound<'py, PyDict>)> {
        let call = self.call(args, kwargs)?;
        self.refresh_reply(py, &call)?.with_metadata(py)
    }

    /// The lifecycle of this function's calls in steps, for callers that
    /// cannot block (the async layer): see `restflow._engine.Steps`.
    #[getter]
    fn steps(slf: &Bound<'_, Self>) -> crate::steps::Steps {
        crate::steps::Steps::new(slf.clone().unbind())
    }

    /// This function's counts, hit ratio and latency percentiles since
    /// the last `reset_stats()` (`restflow.caching.statistics.function_stats`:
    /// the ratios and percentiles are Python's work, the counts the
    /// engine's).
    fn stats<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let module = slf.py().import("restflow.caching.statistics")?;
        module.call_method1("function_stats", (slf,))
    }

    /// Starts this function's statistics over (the running totals that
    /// Prometheus reads keep counting).
    fn reset_stats(&self) {
        self.core.stats.reset();
    }

    /// This function's statistics (see `restflow.caching.statistics`): since
    /// the last `reset_stats`, or since the start with `totals=True`.
    #[pyo3(signature = (totals=false))]
    fn counters<'py>(&self, py: Python<'py>, totals: bool) -> PyResult<Bound<'py, PyDict>> {
        crate::stats::read(py, &self.core.stats, totals)
    }

    /// This function's counters apart from the wrapper (see
    /// `restflow._engine.Counts`): they outlive it, for exporters.
    fn counts(&self) -> crate::stats::Counts {
        crate::stats::Counts(Arc::clone(&self.core.stats))
    }

    /// Events counted since the start (see `Stats::events`): the
    /// Prometheus flush reads a function's totals only when this moved.
    fn counted_events(&self) -> u64 {
        self.core.stats.events()
    }

    /// The shared backend this wrapper's calls use (`None`: the memory
    /// store), for its counters (`near_stats()`, `failures`); claims
    /// nothing (see `backend`). Public: the statistics module, the
    /// management command and monitoring read it.
    fn shared_backend(&self, py: Python<'_>) -> PyResult<Option<Py<crate::shared::SharedBackend>>> {
        RUNTIME.ready(py)?;
        self.backend(py)
    }

    /// Runs the function without reading or writing the cache.
    #[pyo3(signature = (*args, **kwargs))]
    fn bypass_cache<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let call = self.call(args, kwargs)?;
        let func = self.core.func.bind(py);
        // Counted as a computation, and its failure as an error.
        let stats = &self.core.stats;
        let value = stats.count_compute(|| func.call(&call.args, call.kwargs.as_ref()))?;
        // As for every status: counted for a call that served a value.
        stats.add(Counter::Bypass);
        Ok(value.unbind())
    }

    /// Runs the function without reading or writing the cache; returns
    /// `(value, {"cache_status": BYPASS})`.
    #[pyo3(signature = (*args, **kwargs))]
    fn bypass_cache_with_metadata<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Py<PyAny>, Bound<'py, PyDict>)> {
        let value = self.bypass_cache(py, args, kwargs)?;
        Reply::bare(value, Status::Bypass).with_metadata(py)
    }

    /// The cached value (fresh or stale), or `CACHE_MISSING`. Never runs
    /// the function.
    #[pyo3(signature = (*args, **kwargs))]
    fn get_cache_only<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let call = self.call(args, kwargs)?;
        match self.peek(py, &call)? {
            Some(reply) => Ok(reply.value(py)),
            None => Ok(hooks(py)?.missing.clone_ref(py)),
        }
    }

    /// The metadata of the cached entry (status HIT or STALE), or `None`.
    #[pyo3(signature = (*args, **kwargs))]
    fn get_cached_metadata<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let call = self.call(args, kwargs)?;
        match self.peek(py, &call)? {
            Some(reply) => Ok(Some(reply.with_metadata(py)?.1)),
            None => Ok(None),
        }
    }

    /// The key string of a call:
    /// `<namespace>::<function id>::<partition>::<arguments>`.
    #[pyo3(signature = (*args, **kwargs))]
    fn get_cache_key<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<String> {
        RUNTIME.ready(py)?;
        let call = self.call(args, kwargs)?;
        let mut w = KeyWriter::new();
        let layout = self.core.write_key(&mut w, &call)?;
        self.core.key_string(&w, &layout)
    }

    /// Drops the entry of one call. Returns whether there was one.
    #[pyo3(signature = (*args, **kwargs))]
    fn delete_cache<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<bool> {
        let call = self.call(args, kwargs)?;
        let engine = RUNTIME.ready(py)?;
        if let Some(backend) = self.backend(py)? {
            return crate::shared::delete(py, &self.core, &backend, &call);
        }
        let key = self.key(&call)?;
        let removed = engine.delete(key.as_bytes());
        Ok(removed.is_some())
    }

    /// Drops every entry of this function at once (O(1)): their keys become
    /// unreachable and they leave the store by eviction (on a shared
    /// store, in every process).
    fn invalidate_all(&self, py: Python<'_>) -> PyResult<()> {
        self.core.scope.bump();
        RUNTIME.ready(py)?;
        if let Some(backend) = self.backend(py)? {
            crate::shared::invalidate_all(py, &self.core, &backend)?;
        }
        Ok(())
    }

    /// Drops every entry of one partition at once (O(1)). The arguments
    /// bind to the function's signature like a call, but only the key
    /// constructor's partition fields need values; without partition
    /// fields this drops every entry of the function.
    #[pyo3(signature = (*args, **kwargs))]
    fn delete_by_prefix<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<()> {
        let call = self.call(args, kwargs)?;
        RUNTIME.ready(py)?;
        let shared = self.backend(py)?;
        self.core.drop_partition(&call, self.bound.is_some())?;
        if let Some(backend) = shared {
            crate::shared::delete_by_prefix(py, &self.core, &backend, &call, self.bound.is_some())?;
        }
        Ok(())
    }

    /// The Python objects this wrapper holds, for the garbage collector
    /// (a wrapper made in a function, or a function that calls itself, sits
    /// in reference cycles; see issue 10, item 3).
    ///
    /// The objects of the shared `Core` are visited only while this wrapper
    /// is its one owner: visiting a reference that another holder (a bound
    /// method, a queued refresh) also counts would let the collector free
    /// objects still in use. Not visiting one is always safe: the object
    /// then only waits for a later collection. The `__dict__` is visited,
    /// and cleared to break cycles, by PyO3.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if !crate::vectorcall::written(&self.vectorcall) {
            return Ok(()); // still being made: nothing to visit yet
        }
        if let Some((instance, unbound)) = &self.bound {
            visit.call(instance)?;
            visit.call(unbound)?;
        }
        if Arc::strong_count(&self.core) == 1 {
            self.core.traverse(&visit)?;
        }
        Ok(())
    }

    /// The undecorated function.
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.core.func.clone_ref(py)
    }

    /// The dotted path that names this function in key strings.
    #[getter]
    fn function_id(&self) -> &str {
        &self.core.function_id
    }

    #[classattr]
    fn is_cached_function() -> bool {
        true
    }

    /// Binds to an instance like a function does, so the wrapper works on
    /// `APIView.get` and other methods.
    fn __get__(
        slf: &Bound<'_, Self>,
        instance: Option<Bound<'_, PyAny>>,
        owner: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = owner;
        let this = slf.get();
        match instance {
            Some(instance) if !instance.is_none() && this.core.signature.method => {
                let unbound = match &this.bound {
                    Some((_, unbound)) => unbound.clone_ref(slf.py()),
                    None => slf.clone().unbind(),
                };
                let bound = CachedWrapper::make(
                    slf.py(),
                    Arc::clone(&this.core),
                    Some((instance.unbind(), unbound)),
                )?;
                Ok(bound.into_any().unbind())
            }
            _ => Ok(slf.clone().into_any().unbind()),
        }
    }

    /// Called when a class body assigns the wrapper (PEP 487): a method's
    /// key names its class, not `self`, and `restflow.caching` refuses a
    /// method of a class whose instances are its values (a model's rows,
    /// an Enum's members), which would share one entry. Delegated:
    /// `restflow.caching.decorators.check_owner`.
    fn __set_name__(
        slf: &Bound<'_, Self>,
        owner: &Bound<'_, PyAny>,
        name: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !slf.get().core.signature.method {
            return Ok(());
        }
        let check = slf
            .py()
            .import("restflow.caching.decorators")?
            .getattr("check_owner")?;
        check.call1((slf, owner, name)).map(drop)
    }

    /// A bound method answers for the wrapper it came from
    /// (`__name__`, `__doc__`, `__wrapped__`, …).
    fn __getattr__(&self, py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        match &self.bound {
            Some((_, unbound)) => Ok(unbound.bind(py).as_any().getattr(name)?.unbind()),
            None => Err(pyo3::exceptions::PyAttributeError::new_err(format!(
                "'CachedWrapper' object has no attribute '{name}'"
            ))),
        }
    }

    /// The wrapped function's docstring (also on a bound method, where a
    /// class attribute would otherwise answer first).
    #[getter(__doc__)]
    fn doc(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let owner = match &slf.get().bound {
            Some((_, unbound)) => unbound.bind(py).clone().into_any(),
            None => slf.clone().into_any(),
        };
        let dict = owner.getattr(crate::interned!(py, "__dict__"))?;
        match dict.get_item(crate::interned!(py, "__doc__")) {
            Ok(doc) => Ok(doc.unbind()),
            Err(_) => Ok(py.None()),
        }
    }

    /// Set by `functools.update_wrapper`; kept in the instance dict.
    #[setter(__doc__)]
    fn set_doc(slf: &Bound<'_, Self>, doc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let dict = slf.as_any().getattr(crate::interned!(py, "__dict__"))?;
        match doc {
            Some(doc) => dict.set_item(crate::interned!(py, "__doc__"), doc),
            None => dict.set_item(crate::interned!(py, "__doc__"), py.None()),
        }
    }

    /// The instance a bound method was fetched from, like a method's `__self__`.
    #[getter]
    fn __self__(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.bound
            .as_ref()
            .map(|(instance, _)| instance.clone_ref(py))
    }

    fn __repr__(&self) -> String {
        match &self.bound {
            None => format!("<CachedWrapper of {}>", self.core.function_id),
            Some(_) => format!("<bound CachedWrapper of {}>", self.core.function_id),
        }
    }
}
