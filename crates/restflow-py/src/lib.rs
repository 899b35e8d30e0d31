//! Python bindings for restflow's engine: conversion and delegation only.
//!
//! `restflow.caching` (Python) owns the public API, settings and Django
//! integration; this module turns Python calls into engine keys, Python
//! values into stored entries, and engine statuses into `CacheStatus`
//! members. The lifecycle itself is `restflow-cache`'s.
//!
//! GIL discipline: every wait (single-flight followers, idle waits) happens
//! detached from Python, and no Python code (a user function, `__eq__`, the
//! drop of a cached value) runs while a Rust lock is held.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

mod core;
mod django_store;
mod encode;
mod fastpath;
mod flight;
mod interrupt;
mod json_value;
mod loop_io;
mod moment;
mod once;
mod runtime;
mod shared;
mod signature;
mod stats;
mod steps;
mod stored;
mod vectorcall;
mod wrapper;

use runtime::{Hooks, HOOKS, RUNTIME};

/// Installs the Python objects the engine hands back: `statuses` is the
/// `CacheStatus` enum, whose members are read by name. Called once by
/// `restflow.caching` at import.
#[pyfunction]
fn install(
    _py: Python<'_>,
    statuses: Bound<'_, PyAny>,
    missing: Py<PyAny>,
    logger: Py<PyAny>,
    settings: Py<PyAny>,
    backend_for: Py<PyAny>,
) -> PyResult<()> {
    use restflow_cache::Status;
    // In `Status::index` order, each member named as the engine names it.
    let member = |status: Status| statuses.getattr(status.as_str()).map(Bound::unbind);
    let statuses = [
        member(Status::Hit)?,
        member(Status::Miss)?,
        member(Status::Stale)?,
        member(Status::Bypass)?,
        member(Status::Refresh)?,
    ];
    let _ = HOOKS.set(Hooks {
        statuses,
        missing,
        logger,
        settings,
        backend_for,
    });
    Ok(())
}

/// Makes the next call read the settings again.
#[pyfunction]
fn reconfigure() {
    RUNTIME.reconfigure();
}

/// Whether the function running on this thread runs as a synchronous
/// background refresh (on a refresh worker): it may then raise
/// `RefreshDeclined` to keep the stale entry.
#[pyfunction]
fn in_background_refresh() -> bool {
    core::in_background_refresh()
}

/// Drops every entry of every cached function. Returns how many there were.
#[pyfunction]
fn clear() -> usize {
    let drained = RUNTIME.engine.cache().clear();
    drained.len()
}

/// How many entries the memory store holds.
#[pyfunction]
fn entry_count(py: Python<'_>) -> PyResult<usize> {
    use restflow_cache::Store;
    Ok(RUNTIME.ready(py)?.cache().store().len())
}

/// The memory store's bound.
#[pyfunction]
fn max_entries(py: Python<'_>) -> PyResult<u64> {
    Ok(RUNTIME.ready(py)?.cache().store().max_entries())
}

/// The engine clock, in seconds since the epoch.
#[pyfunction]
fn now() -> f64 {
    RUNTIME.engine.cache().clock().now().as_secs_f64()
}

/// Freezes the engine clock at `at` (seconds since the epoch), or at the
/// current time; NaN is refused (`ValueError`).
#[pyfunction]
#[pyo3(signature = (at=None))]
fn freeze_clock(at: Option<f64>) -> PyResult<()> {
    RUNTIME
        .engine
        .cache()
        .clock()
        .freeze_at_secs(at)
        .map_err(PyValueError::new_err)
}

/// Moves the engine clock forward by `seconds` (freezing it first).
#[pyfunction]
fn advance_clock(seconds: f64) -> PyResult<f64> {
    let clock = RUNTIME.engine.cache().clock();
    let now = clock.advance_secs(seconds).map_err(PyValueError::new_err)?;
    Ok(now.as_secs_f64())
}

/// Lets the engine clock follow the system time again.
#[pyfunction]
fn unfreeze_clock() {
    RUNTIME.engine.cache().clock().unfreeze();
}

/// Whether the engine clock is frozen.
#[pyfunction]
fn clock_is_frozen() -> bool {
    RUNTIME.engine.cache().clock().is_frozen()
}

/// Restarts the early-refresh draws from `seed`, so a test's outcomes are
/// exact; `None` seeds them from the system's entropy again.
#[pyfunction]
#[pyo3(signature = (seed=None))]
fn seed_early_refresh(seed: Option<u64>) {
    RUNTIME.engine.cache().dice().restart(seed);
}

/// Waits (GIL released) until no background refresh is queued or running.
/// Returns whether that happened within `timeout` seconds (any number: an
/// infinite one waits as long as it takes; NaN is refused by the engine).
#[pyfunction]
#[pyo3(signature = (timeout=10.0))]
fn wait_for_refreshes(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let idle = py.detach(|| RUNTIME.engine.refresher().wait_idle_secs(timeout));
    idle.map_err(PyValueError::new_err)
}

/// Refreshes queued or running.
#[pyfunction]
fn pending_refreshes() -> usize {
    RUNTIME.engine.refresher().pending()
}

/// Keys being computed right now.
#[pyfunction]
fn in_flight() -> usize {
    RUNTIME.engine.flights().in_flight()
}

/// Callers following an in-process computation right now, over every key:
/// threads and tasks of the memory store, and async tasks of shared stores
/// (not the worker threads those wait on). What tests wait on before they
/// let a leader finish (`Steps.waiters` counts one call's).
#[pyfunction]
fn waiters() -> usize {
    RUNTIME.engine.flights().total_waiters() + RUNTIME.shared_flights.total_waiters()
}

/// The partition and suffix text a wrapper renders for these items: what
/// `KeyConstructor.generate_key` and its helpers use.
#[pyfunction]
fn key_parts(
    py: Python<'_>,
    function_id: &str,
    partition_items: Bound<'_, PyTuple>,
    suffix_items: Bound<'_, PyTuple>,
) -> PyResult<(String, String)> {
    RUNTIME.ready(py)?;
    core::items_key_parts(&partition_items, &suffix_items, function_id)
}

/// Makes every entry of the key constructor `owner`'s versions below
/// `version` unreachable; returns how many functions' scopes that touched.
/// One step per cached function, never per entry.
#[pyfunction]
fn drop_versions_below(owner: &str, version: u32) -> usize {
    RUNTIME.scopes.drop_versions_below(owner, version)
}

/// Called at interpreter exit: queued refreshes are dropped, running ones
/// get `timeout` seconds to finish.
#[pyfunction]
#[pyo3(signature = (timeout=1.0))]
fn shutdown(py: Python<'_>, timeout: f64) -> PyResult<()> {
    let idle = py.detach(|| RUNTIME.engine.refresher().shut_down(timeout));
    idle.map(drop).map_err(PyValueError::new_err)
}

/// `os.fork`'s `before` hook: waits until no worker is making its Python
/// thread state (see `runtime::keep_thread_state`) and holds new ones back.
#[pyfunction]
fn _before_fork() {
    runtime::FORK_GATE.before_fork();
}

/// `os.fork`'s `after_in_parent` hook: workers may make thread states
/// again. (A child has a gate of its own.)
#[pyfunction]
fn _after_fork_in_parent() {
    runtime::FORK_GATE.after_fork_in_parent();
}

/// Registers the fork gate's hooks. `before` hooks run ahead of the
/// interpreter's own fork locks, so a worker in a section (which needs
/// none of them) always gets out.
fn register_fork_hooks(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let os = m.py().import("os")?;
    if !os.hasattr("register_at_fork")? {
        return Ok(()); // no fork on this platform
    }
    let hooks = pyo3::types::PyDict::new(m.py());
    hooks.set_item("before", wrap_pyfunction!(_before_fork, m)?)?;
    hooks.set_item(
        "after_in_parent",
        wrap_pyfunction!(_after_fork_in_parent, m)?,
    )?;
    os.call_method("register_at_fork", (), Some(&hooks))?;
    Ok(())
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Registers the engine's fork handler now, at import, rather than on
    // first use, when another thread could be mid-registration at a fork.
    restflow_cache::fork::generation();
    register_fork_hooks(m)?;
    // Process-wide values made lazily by std's blocking cells are made here,
    // on the importing thread, for the same reason (see `once`).
    std::sync::LazyLock::force(&RUNTIME);
    restflow_cache::Timestamp::coarse_lag();
    encode::check_int_layout(m.py())?;
    m.add_class::<wrapper::CachedWrapper>()?;
    m.add_class::<fastpath::WithMetadata>()?;
    m.add_class::<flight::Lookup>()?;
    m.add_class::<flight::Flight>()?;
    m.add_class::<steps::Steps>()?;
    m.add_class::<flight::Lead>()?;
    m.add_class::<shared::SharedBackend>()?;
    m.add_class::<loop_io::LoopConnection>()?;
    m.add_class::<loop_io::RedisAnswer>()?;
    m.add_class::<loop_io::LoopFetch>()?;
    m.add_class::<stats::Counts>()?;
    m.add(
        "CacheBackendError",
        m.py().get_type::<shared::CacheBackendError>(),
    )?;
    m.add(
        "RefreshDeclined",
        m.py().get_type::<core::RefreshDeclined>(),
    )?;
    m.add_function(wrap_pyfunction!(in_background_refresh, m)?)?;
    m.add_function(wrap_pyfunction!(install, m)?)?;
    m.add_function(wrap_pyfunction!(reconfigure, m)?)?;
    m.add_function(wrap_pyfunction!(clear, m)?)?;
    m.add_function(wrap_pyfunction!(entry_count, m)?)?;
    m.add_function(wrap_pyfunction!(max_entries, m)?)?;
    m.add_function(wrap_pyfunction!(now, m)?)?;
    m.add_function(wrap_pyfunction!(freeze_clock, m)?)?;
    m.add_function(wrap_pyfunction!(advance_clock, m)?)?;
    m.add_function(wrap_pyfunction!(unfreeze_clock, m)?)?;
    m.add_function(wrap_pyfunction!(clock_is_frozen, m)?)?;
    m.add_function(wrap_pyfunction!(seed_early_refresh, m)?)?;
    m.add_function(wrap_pyfunction!(wait_for_refreshes, m)?)?;
    m.add_function(wrap_pyfunction!(pending_refreshes, m)?)?;
    m.add_function(wrap_pyfunction!(in_flight, m)?)?;
    m.add_function(wrap_pyfunction!(waiters, m)?)?;
    m.add_function(wrap_pyfunction!(drop_versions_below, m)?)?;
    m.add_function(wrap_pyfunction!(key_parts, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(stats::stats_bucket_bounds, m)?)?;
    Ok(())
}
