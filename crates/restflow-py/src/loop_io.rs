//! Redis lookups driven by a Python event loop: no thread hand-off.
//!
//! The loop owns a non-blocking socket (the engine's
//! [`restflow_cache::shared::loop_conn`]): it sends the lookup, registers
//! the socket with `loop.add_reader`, and hands each readable event to
//! [`LoopConnection::receive`]. Only fresh hits are answered this way;
//! everything else (misses, stale entries, locks, faults) goes through the
//! engine on a worker thread. This module only converts errors and answers.

use std::time::Duration;

use pyo3::exceptions::{PyConnectionError, PyValueError};
use pyo3::prelude::*;
use redis::Value;
use restflow_cache::shared::loop_conn::{self, LoopError};

/// One non-blocking connection to Redis, used from one event loop.
#[pyclass(module = "restflow._engine", name = "LoopConnection", frozen)]
pub struct LoopConnection {
    conn: loop_conn::LoopConnection,
}

/// An answer read by a [`LoopConnection`], for `SharedBackend.fresh_hit`.
#[pyclass(module = "restflow._engine", name = "RedisAnswer", frozen)]
pub struct RedisAnswer {
    pub value: Value,
}

/// A lookup the event loop may send itself (`Steps.loop_fetch`): on the
/// socket of a [`LoopConnection`] to `backend`'s server, `command`, whose
/// answer `SharedBackend.fresh_hit` checks against the entry `key`.
#[pyclass(module = "restflow._engine", name = "LoopFetch", frozen)]
pub struct LoopFetch {
    #[pyo3(get)]
    pub backend: Py<crate::shared::SharedBackend>,
    #[pyo3(get)]
    pub command: Py<pyo3::types::PyBytes>,
    #[pyo3(get)]
    pub key: String,
}

fn raise(error: LoopError) -> PyErr {
    match error {
        LoopError::Url(why) => PyValueError::new_err(why),
        LoopError::Connection(why) => PyConnectionError::new_err(why),
    }
}

#[pymethods]
impl LoopConnection {
    /// Connects to `url` (blocking: call it from a worker thread), then
    /// switches the socket to non-blocking. Only plain `redis://` TCP.
    #[staticmethod]
    fn open(py: Python<'_>, url: &str, timeout: f64) -> PyResult<LoopConnection> {
        let timeout = Duration::from_secs_f64(timeout.max(0.001));
        let conn = py
            .detach(|| loop_conn::LoopConnection::open(url, timeout))
            .map_err(raise)?;
        Ok(LoopConnection { conn })
    }

    /// The socket, for `loop.add_reader`.
    fn fileno(&self) -> i32 {
        self.conn.fd()
    }

    /// Sends a packed command. Raises if the socket cannot take it at once
    /// (the caller falls back to the engine).
    fn send(&self, command: &[u8]) -> PyResult<()> {
        self.conn.send(command).map_err(raise)
    }

    /// Reads what the socket holds; returns the answer once it is whole,
    /// `None` while it is not.
    fn receive(&self) -> PyResult<Option<RedisAnswer>> {
        let value = self.conn.receive().map_err(raise)?;
        Ok(value.map(|value| RedisAnswer { value }))
    }
}
