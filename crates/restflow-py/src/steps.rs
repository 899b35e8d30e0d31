//! `Steps`: the lifecycle of a cached function in steps, for callers that
//! cannot block (the async layer, `restflow.caching.asynchronous`).
//!
//! One typed object per wrapper (`CachedWrapper.steps`) instead of private
//! methods reached across modules. Every step converts and delegates: the
//! decisions (single-flight, locks, stale-if-error, claims) are the
//! engine's (`restflow_cache::Engine` for the memory store,
//! `restflow_cache::shared::SharedCache::begin` for shared ones).
//!
//! Which steps block: on a shared store, `begin`, `begin_refresh` and the
//! `finish`/`fail` of what they hand out make round trips (run them on a
//! worker thread); everything else answers at once.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::flight::{Claim, Flight, Lead, Lookup};
use crate::loop_io::LoopFetch;
use crate::runtime::RUNTIME;
use crate::shared::{Begun, SharedBackend};
use crate::wrapper::{CachedWrapper, Reply};

/// `(value, metadata)`, what a served step hands Python.
type Answer<'py> = (Py<PyAny>, Bound<'py, PyDict>);

/// The key of the flight of this process's tasks that miss the entry `key`
/// of `backend` (`RUNTIME.shared_flights`, one map for every shared
/// store): the store's URL in front of the key string. Functions that
/// share a key identifier but not a store have equal key strings; grouped
/// by key string alone, a task of one was handed the other's answer (which
/// its own store never got), as the sync path, whose callers are grouped
/// per store, never does.
fn tasks_key(backend: &SharedBackend, key: &[u8]) -> Vec<u8> {
    let url = backend.url().as_bytes();
    let mut joined = Vec::with_capacity(url.len() + 1 + key.len());
    joined.extend_from_slice(url);
    joined.push(0); // no URL holds a NUL byte
    joined.extend_from_slice(key);
    joined
}

/// The steps of one cached function's calls (see the module documentation).
#[pyclass(module = "restflow._engine", name = "Steps", frozen)]
pub struct Steps {
    wrapper: Py<CachedWrapper>,
}

impl Steps {
    pub(crate) fn new(wrapper: Py<CachedWrapper>) -> Self {
        Steps { wrapper }
    }

    /// The wrapper and its shared store (`None`: the memory store), once
    /// the runtime is ready: what every step that may reach a shared store
    /// starts with.
    fn shared(&self, py: Python<'_>) -> PyResult<(&CachedWrapper, Option<Py<SharedBackend>>)> {
        RUNTIME.ready(py)?;
        let wrapper = self.wrapper.get();
        Ok((wrapper, wrapper.shared(py)?))
    }
}

#[pymethods]
impl Steps {
    /// The wrapper, for the garbage collector: an async wrapper holds its
    /// `Steps`, and a function defined in a function may hold that wrapper
    /// (a cycle the collector must see whole; the wrapper's `__dict__` is
    /// what it clears).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.wrapper)
    }

    /// Whether the calls use the in-process memory store (else a shared one).
    fn uses_memory(&self, py: Python<'_>) -> PyResult<bool> {
        RUNTIME.ready(py)?;
        Ok(self.wrapper.get().core().uses_memory())
    }

    /// The memory store's answer for a call, without computing: a
    /// `Lookup` (HIT or STALE, with the refresh this call claimed, if
    /// any), or `None` on a miss (then `flight`).
    #[pyo3(signature = (args, kwargs=None))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Lookup>> {
        let wrapper = self.wrapper.get();
        let core = wrapper.core();
        let call = wrapper.call(args, kwargs)?;
        let engine = RUNTIME.ready(py)?;
        let key = wrapper.key(&call)?;
        // An expired entry inside the stale-if-error window stays, for a
        // failing computation to fall back on (see `flight`); what a miss
        // turns into is counted by its flight.
        let window = core.stale_if_error_window();
        let Some((served, claim)) = engine.found_claiming(key.as_bytes(), window, &core.stats)
        else {
            return Ok(None);
        };
        let refresh = claim.map(|claim| Lead::new(core, Claim::Memory(claim), false));
        Lookup::new(py, Reply::Memory(served), refresh).map(Some)
    }

    /// Joins the in-process computation of a call, as task `task` (any
    /// number unique among the loop's live tasks) of this thread's event
    /// loop: the `Flight` of its leader or of a follower. On the memory
    /// store, the engine's flight for a call that `lookup` missed
    /// (`followed`: the caller followed a leader that abandoned); on a
    /// shared store, the flight of this process's tasks that miss the key,
    /// whose leader serves the call (`begin`) and shares its answer.
    #[pyo3(signature = (args, kwargs, task, followed=false))]
    fn flight<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        task: u64,
        followed: bool,
    ) -> PyResult<Flight> {
        let wrapper = self.wrapper.get();
        let call = wrapper.call(args, kwargs)?;
        RUNTIME.ready(py)?;
        let key = wrapper.key(&call)?;
        match wrapper.shared(py)? {
            None => Flight::join(wrapper.core(), key.as_bytes(), task, followed),
            Some(backend) => {
                let key = tasks_key(backend.get(), key.as_bytes());
                Flight::join_tasks(wrapper.core(), &key, task)
            }
        }
    }

    /// Everything of a shared-store call that blocks (round trips, another
    /// process's lock): a `Lookup` (HIT, STALE with the refresh it claimed,
    /// or what another thread of this process computed), or a `Lead`: this
    /// caller computes the value, then completes it. `flight`: the flight
    /// of this process's tasks for the key, which the calling task leads
    /// (`flight`); the store's claim is that task's. Blocks: call it on a
    /// worker thread.
    fn begin<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        flight: PyRef<'py, Flight>,
    ) -> PyResult<Py<PyAny>> {
        let Some(task) = flight.leading_task() else {
            return Err(PyRuntimeError::new_err(
                "begin is for the task that leads the flight of its shared-store key",
            ));
        };
        drop(flight);
        let (wrapper, Some(backend)) = self.shared(py)? else {
            return Err(PyRuntimeError::new_err(
                "begin is for shared stores: this function uses the memory store",
            ));
        };
        let (core, call) = (wrapper.core(), wrapper.call(args, kwargs)?);
        let begun = backend.get().on(core, &call)?.begin(py, task)?;
        let lead = |lead| Lead::new(core, Claim::Shared(backend.clone_ref(py), lead), false);
        match begun {
            Begun::Lead(claim) => Ok(Py::new(py, lead(claim))?.into_any()),
            Begun::Served(served, refresh) => {
                let lookup = Lookup::new(py, Reply::Shared(served), refresh.map(lead))?;
                Ok(Py::new(py, lookup)?.into_any())
            }
        }
    }

    /// The `Lead` of a forced recompute of a call (`arefresh`), keyed as
    /// the call is now: complete it with the value the caller awaited. On
    /// a shared store it blocks: call it on a worker thread.
    #[pyo3(signature = (args, kwargs=None))]
    fn begin_refresh<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Lead> {
        let call = self.wrapper.get().call(args, kwargs)?;
        let (wrapper, backend) = self.shared(py)?;
        let claim = match backend {
            Some(backend) => {
                let lead = backend.get().on(wrapper.core(), &call)?.begin_refresh(py)?;
                Claim::Shared(backend, lead)
            }
            None => Claim::Memory(RUNTIME.engine.begin_refresh(wrapper.key(&call)?.as_bytes())),
        };
        Ok(Lead::new(wrapper.core(), claim, true))
    }

    /// How many callers (threads and tasks) follow the in-process
    /// computation of a call now: what tests wait on before they let a
    /// leader finish.
    #[pyo3(signature = (args, kwargs=None))]
    fn waiters<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<usize> {
        let call = self.wrapper.get().call(args, kwargs)?;
        let (wrapper, backend) = self.shared(py)?;
        let key = wrapper.key(&call)?;
        let Some(backend) = backend else {
            return Ok(RUNTIME.engine.waiters(key.as_bytes()));
        };
        // Threads in the store's flight, and tasks awaiting a leader task.
        let tasks = RUNTIME
            .shared_flights
            .waiters(&tasks_key(backend.get(), key.as_bytes()));
        Ok(backend.get().on(wrapper.core(), &call)?.waiters() + tasks)
    }

    /// For a shared Redis backend the event loop may drive: the lookup it
    /// may send itself; `None` otherwise.
    #[pyo3(signature = (args, kwargs=None))]
    fn loop_fetch<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<LoopFetch>> {
        let (wrapper, Some(backend)) = self.shared(py)? else {
            return Ok(None);
        };
        // A call that uses the near cache goes through the engine, which
        // keeps what it reads there (`near_hit` serves it next time).
        if !backend.get().loop_fetches() || backend.get().uses_near(wrapper.core()) {
            return Ok(None);
        }
        let call = wrapper.call(args, kwargs)?;
        let (command, key) = backend.get().on(wrapper.core(), &call)?.fetch_command();
        let command = PyBytes::new(py, &command).unbind();
        Ok(Some(LoopFetch {
            backend,
            command,
            key,
        }))
    }

    /// A fresh hit from the shared backend's near cache, without a round
    /// trip: `(value, metadata)`, or `None`.
    #[pyo3(signature = (args, kwargs=None))]
    fn near_hit<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Answer<'py>>> {
        let (wrapper, Some(backend)) = self.shared(py)? else {
            return Ok(None);
        };
        let call = wrapper.call(args, kwargs)?;
        crate::shared::near_hit(py, wrapper.core(), &backend, &call)?
            .map(|served| Reply::Shared(served).with_metadata(py))
            .transpose()
    }

    /// Counts an event the async layer served itself (see
    /// [`crate::stats::record`]).
    #[pyo3(signature = (event, seconds=None))]
    fn record(&self, event: &str, seconds: Option<f64>) -> PyResult<()> {
        crate::stats::record(&self.wrapper.get().core().stats, event, seconds)
    }
}
