//! The process-wide engine the Python package uses, its settings, and the
//! Python objects it hands back (statuses, the missing sentinel, the logger).
//!
//! Invariant (fork safety): every store and flight-map operation made by
//! these bindings happens while the thread is attached to Python. `os.fork`
//! runs with the GIL held, so no other thread can be inside one of those
//! locks at the fork; the child keeps its entries, and only the flights and
//! refresh workers (which wait or run detached) are replaced after a fork.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use restflow_cache::{Cache, Clock, Engine, Job, MemoryStore, Refresher, Scopes, Span, Status};

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

/// Every refresh job runs attached to Python, so its store operations keep
/// the invariant above. After interpreter shutdown has begun, jobs are
/// dropped instead.
fn run_attached(job: Job) {
    if RUNTIME.shutting_down.load(Ordering::Acquire) {
        return;
    }
    if Python::try_attach(|_py| job()).is_none() {
        // The interpreter is going away; the job (and the claim it holds)
        // dies with the process.
    }
}

/// What a scope (the entries of one function, or of one key identifier)
/// belongs to, for `KeyConstructor.delete_previous_versions`.
#[derive(Debug)]
pub struct ScopeLabels {
    /// The key constructor's dotted path.
    pub owner: String,
    /// The constructor's version.
    pub version: u32,
}

pub struct Runtime {
    pub engine: Arc<PyEngine>,
    pub scopes: Scopes<ScopeLabels>,
    configured: AtomicBool,
    default_stale_micros: AtomicI64,
    max_key_part_length: AtomicUsize,
    pub shutting_down: AtomicBool,
}

pub static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| Runtime {
    engine: Arc::new(Engine::new(
        Cache::new(MemoryStore::new(DEFAULT_MAX_ENTRIES), Clock::system()),
        Refresher::with_runner(REFRESH_THREADS, REFRESH_QUEUE, run_attached),
    )),
    scopes: Scopes::new(),
    configured: AtomicBool::new(false),
    default_stale_micros: AtomicI64::new(0),
    max_key_part_length: AtomicUsize::new(250),
    shutting_down: AtomicBool::new(false),
});

/// Objects installed by `restflow.caching` when it is imported.
pub struct Hooks {
    /// `CacheStatus` members, in the order of [`status_index`].
    pub statuses: [Py<PyAny>; 5],
    /// `CACHE_MISSING`.
    pub missing: Py<PyAny>,
    /// `logging.getLogger("restflow.caching")`.
    pub logger: Py<PyAny>,
    /// Returns `(max_entries, stale_while_revalidate_seconds,
    /// max_key_part_length)` from settings.
    pub settings: Py<PyAny>,
}

pub static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();

pub fn hooks(py: Python<'_>) -> PyResult<&Hooks> {
    HOOKS.get(py).ok_or_else(|| {
        PyRuntimeError::new_err(
            "restflow's engine is not installed: import restflow.caching instead of restflow._engine",
        )
    })
}

pub const fn status_index(status: Status) -> usize {
    match status {
        Status::Hit => 0,
        Status::Miss => 1,
        Status::Stale => 2,
        Status::Bypass => 3,
        Status::Refresh => 4,
    }
}

impl Runtime {
    /// The engine, with the settings read on first use (and again after
    /// [`Runtime::reconfigure`]).
    #[inline]
    pub fn ready(&self, py: Python<'_>) -> PyResult<&Arc<PyEngine>> {
        if !self.configured.load(Ordering::Acquire) {
            self.configure(py)?;
        }
        Ok(&self.engine)
    }

    #[cold]
    fn configure(&self, py: Python<'_>) -> PyResult<()> {
        let settings = hooks(py)?.settings.call0(py)?;
        let (max_entries, stale, max_part): (u64, f64, usize) = settings.extract(py)?;
        let stale = Span::from_secs_f64(stale).ok_or_else(|| {
            PyRuntimeError::new_err("the settings hook returned a negative stale window")
        })?;
        self.engine.cache().store().set_max_entries(max_entries);
        self.default_stale_micros
            .store(stale.as_micros(), Ordering::Release);
        self.max_key_part_length.store(max_part, Ordering::Release);
        self.configured.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes the next call read the settings again.
    pub fn reconfigure(&self) {
        self.configured.store(false, Ordering::Release);
    }

    /// Key-string parts longer than this are digested.
    pub fn max_key_part_length(&self) -> usize {
        self.max_key_part_length.load(Ordering::Acquire)
    }

    /// The stale window of wrappers that did not choose one.
    #[inline]
    pub fn default_stale(&self) -> Span {
        Span::from_micros(self.default_stale_micros.load(Ordering::Acquire))
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
