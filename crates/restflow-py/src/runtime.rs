//! The process-wide engine the Python package uses, its settings, and the
//! Python objects it hands back (statuses, the missing sentinel, the logger).
//!
//! Invariant (fork safety): every memory-store operation made by these
//! bindings happens while the thread is attached to Python. `os.fork` runs
//! with the GIL held, so no other thread can be inside one of those locks at
//! the fork and the child keeps its entries. What runs or waits detached
//! (flights, refresh workers, Redis connections) belongs to one process and
//! is made afresh in a child (`restflow_cache::fork`).

use std::cell::Cell;
use std::sync::{Arc, LazyLock};

use crate::once::OnceValue;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use restflow_cache::fork::ForkGate;
use restflow_cache::settings::{Defaults, MadeFromSettings, Settings};
use restflow_cache::{Cache, Clock, Engine, Job, MemoryStore, Refresher, Scopes, Span};

use crate::stored::Stored;

/// The error a computation shares with every caller that waited on it.
pub type SharedErr = Arc<PyErr>;

pub type PyEngine = Engine<Stored, SharedErr, MemoryStore<Stored>>;

/// Refresh workers: two, so one slow refresh does not hold up the rest,
/// and few, because refreshes of Python functions share one GIL.
const REFRESH_THREADS: usize = 2;
/// Refreshes queued beyond the running ones; more are turned away (the
/// entry stays stale and a later read tries again).
const REFRESH_QUEUE: usize = 1024;
/// The bound before settings are read.
const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// Sections no `os.fork` may split (the hooks are registered at import).
pub static FORK_GATE: ForkGate = ForkGate::new();

thread_local! {
    /// Whether this thread has its Python thread state for good.
    static KEEPS_THREAD_STATE: Cell<bool> = const { Cell::new(false) };
}

/// Gives this thread (a refresh worker, started by Rust) a Python thread
/// state for its whole life, made once where no fork can happen.
///
/// Attaching a thread that has none makes one (and detaching deletes it),
/// taking CPython's thread-list lock without the GIL; CPython before
/// 3.11.10 (gh-112275) takes that lock in a forked child before resetting
/// it, so a fork at that instant leaves the child hung inside `os.fork`
/// (seen with gdb in tests/fork_worker.py, twice in about 16,000 forks
/// just after stale reads queued refreshes). Made here, in a [`FORK_GATE`] section, the
/// thread state is found by every later attach (`PyThreadState_New` binds
/// it to the thread with a count that keeps `PyGILState_Release` from
/// deleting it).
fn keep_thread_state() {
    if KEEPS_THREAD_STATE.get() {
        return;
    }
    // SAFETY: neither call needs the GIL; the interpreter is initialized
    // (the engine runs no job once its shutdown
    // has begun, `Refresher::shut_down`).
    unsafe {
        if ffi::PyGILState_GetThisThreadState().is_null() {
            FORK_GATE.section(|| ffi::PyThreadState_New(ffi::PyInterpreterState_Main()));
        }
    }
    KEEPS_THREAD_STATE.set(true);
}

/// Every refresh job runs attached to Python, so its store operations keep
/// the invariant above. (After interpreter shutdown has begun the engine
/// runs none: `Refresher::shut_down`.)
fn run_attached(job: Job) {
    keep_thread_state();
    if Python::try_attach(|_py| job()).is_none() {
        // The interpreter is going away; the job (and the claim it holds)
        // dies with the process.
    }
}

/// What a scope (the entries of one function, or of one key identifier)
/// belongs to, for `KeyConstructor.delete_previous_versions`.
pub use restflow_cache::ScopeLabels;

/// Bits of [`Runtime::state`]: what the hot path needs to know, in one load.
pub use restflow_cache::settings::state;

pub struct Runtime {
    pub engine: Arc<PyEngine>,
    pub scopes: Scopes<ScopeLabels>,
    /// Async callers of shared stores, one computation per key and process:
    /// the leading task's worker thread serves the call through the
    /// shared store (its own locks and single-flight), the other tasks
    /// await its answer without holding a thread (see `flight::Flight`).
    pub shared_flights: restflow_cache::SingleFlight<crate::flight::Answer, SharedErr>,
    /// The settings, with the [`state`] bits.
    defaults: Defaults,
    /// Shared backends by the spec they were resolved from ("" for the
    /// default); forgotten when the settings change.
    backends: MadeFromSettings<Py<crate::shared::SharedBackend>>,
}

pub static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| Runtime {
    engine: Arc::new(Engine::new(
        Cache::new(MemoryStore::new(DEFAULT_MAX_ENTRIES), Clock::system()),
        Refresher::with_runner(REFRESH_THREADS, REFRESH_QUEUE, run_attached),
    )),
    scopes: Scopes::new(),
    shared_flights: restflow_cache::SingleFlight::new(),
    defaults: Defaults::new(),
    backends: MadeFromSettings::default(),
});

/// Objects installed by `restflow.caching` when it is imported.
pub struct Hooks {
    /// `CacheStatus` members, in the order of `restflow_cache::Status::index`
    /// (read by name from the enum at install).
    pub statuses: [Py<PyAny>; 5],
    /// `CACHE_MISSING`.
    pub missing: Py<PyAny>,
    /// `logging.getLogger("restflow.caching")`.
    pub logger: Py<PyAny>,
    /// Returns `restflow.caching.settings.EngineSettings`: `max_entries`,
    /// `stale_while_revalidate`, `max_key_part_length`, `memory` (whether
    /// the backend is the memory store) and `stale_if_error`, read by name.
    pub settings: Py<PyAny>,
    /// `backend_for(spec_or_None) -> SharedBackend | None` (None: memory).
    pub backend_for: Py<PyAny>,
}

pub static HOOKS: OnceValue<Hooks> = OnceValue::new();

pub fn hooks(_py: Python<'_>) -> PyResult<&Hooks> {
    HOOKS.get().ok_or_else(|| {
        PyRuntimeError::new_err(
            "restflow's engine is not installed: import restflow.caching instead of restflow._engine",
        )
    })
}

impl Runtime {
    /// The engine, with the settings read on first use (and again after
    /// [`Runtime::reconfigure`]).
    #[inline]
    pub fn ready(&self, py: Python<'_>) -> PyResult<&Arc<PyEngine>> {
        if self.state() & state::CONFIGURED == 0 {
            self.configure(py)?;
        }
        Ok(&self.engine)
    }

    /// The [`state`] bits, in one load.
    #[inline]
    pub fn state(&self) -> u8 {
        self.defaults.state()
    }

    #[cold]
    fn configure(&self, py: Python<'_>) -> PyResult<()> {
        let read = hooks(py)?.settings.call0(py)?.into_bound(py);
        let max_entries: u64 = read.getattr("max_entries")?.extract()?;
        let stale: f64 = read.getattr("stale_while_revalidate")?.extract()?;
        let max_part: usize = read.getattr("max_key_part_length")?.extract()?;
        let memory: bool = read.getattr("memory")?.extract()?;
        let stale_if_error: f64 = read.getattr("stale_if_error")?.extract()?;
        // The hook validated them already; this only guards the conversion.
        let settings = Settings::from_secs(stale, stale_if_error, max_part, memory)
            .map_err(PyRuntimeError::new_err)?;
        self.engine.cache().store().set_max_entries(max_entries);
        self.defaults.set(&settings);
        Ok(())
    }

    /// Makes the next call read the settings again.
    pub fn reconfigure(&self) {
        self.defaults.unset();
        // Dropped outside the registry's lock: a backend's drop may run Python.
        drop(self.backends.forget());
    }

    /// The stale-if-error window of wrappers that did not choose one.
    pub fn default_stale_if_error(&self) -> Span {
        self.defaults.stale_if_error()
    }

    /// The shared backend for `spec` (`None`: the `BACKEND` setting), or
    /// `None` for the memory store.
    pub fn backend(
        &self,
        py: Python<'_>,
        spec: Option<&str>,
    ) -> PyResult<Option<Py<crate::shared::SharedBackend>>> {
        // The hook runs Python, so threads whose first calls meet here
        // interleave: the engine keeps the first backend made (see
        // `MadeFromSettings`). `None`: the memory store.
        let make = || -> PyResult<_> {
            let resolved = hooks(py)?.backend_for.call1(py, (spec,))?;
            Ok(resolved.extract(py)?)
        };
        self.backends
            .get_or_make(spec.unwrap_or(""), |b| b.clone_ref(py), make)
    }

    /// Key-string parts longer than this are digested.
    pub fn max_key_part_length(&self) -> usize {
        self.defaults.max_key_part_length()
    }

    /// The stale window of wrappers that did not choose one.
    #[inline]
    pub fn default_stale(&self) -> Span {
        self.defaults.stale()
    }
}

/// Logs `message` with `error` attached to the `restflow.caching` logger.
pub fn log_error(py: Python<'_>, message: &str, error: &PyErr) {
    let Ok(hooks) = hooks(py) else { return };
    let kwargs = pyo3::types::PyDict::new(py);
    let logged = kwargs.set_item("exc_info", error.value(py)).and_then(|()| {
        hooks
            .logger
            .call_method(py, "error", PyTuple::new(py, [message])?, Some(&kwargs))
    });
    if let Err(failure) = logged {
        failure.write_unraisable(py, None);
    }
}
