//! Interrupts (`KeyboardInterrupt`, `SystemExit`: a `BaseException` that is
//! not an `Exception`) raised inside the store path, carried to the caller.
//!
//! An interrupt is a request to stop, never a bad value or a failing store
//! to log and skip. Where Python raises it inside an engine call (a Django
//! cache's `get_many` interrupted by Ctrl-C), the engine only sees a
//! [`StoreError`](restflow_cache::shared::StoreError) and would answer it
//! by bypassing the store and running the function live. So the store
//! adapter parks the interrupt here, on the calling thread (store calls run
//! on the thread that asked for them), and the bindings take it back as
//! soon as the engine returns, and before they would run the function.

use std::cell::RefCell;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;

thread_local! {
    static PARKED: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Whether `error` must reach the caller whatever the store path was doing.
pub(crate) fn is_interrupt(py: Python<'_>, error: &PyErr) -> bool {
    !error.is_instance_of::<PyException>(py)
}

/// Keeps an interrupt raised inside an engine call for the caller.
pub(crate) fn park(error: PyErr) {
    PARKED.with(|parked| *parked.borrow_mut() = Some(error));
}

/// The interrupt parked on this thread, if any.
pub(crate) fn take() -> Option<PyErr> {
    PARKED.with(|parked| parked.borrow_mut().take())
}

/// Raises the interrupt parked on this thread, if any.
pub(crate) fn raise_parked() -> PyResult<()> {
    take().map_or(Ok(()), Err)
}
