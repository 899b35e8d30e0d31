//! Redis lookups driven by a Python event loop: no thread hand-off.
//!
//! An async hit on Redis would otherwise hop to a worker thread and back
//! (on a small VM that hand-off alone costs more than the round trip). Here
//! the loop owns a non-blocking socket: it sends the lookup, registers the
//! socket with `loop.add_reader`, and hands each readable event to
//! [`LoopConnection::receive`], which parses the answer in Rust. One request
//! is in flight per connection, so an answer is exactly what the socket
//! holds. Only fresh hits are answered this way; everything else (misses,
//! stale entries, locks, faults) goes through the engine on a worker thread.
//!
//! Written here rather than taken from the client crate because its
//! connections are blocking or belong to a Rust async runtime; neither can
//! be driven by Python's event loop.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyValueError};
use pyo3::prelude::*;
use redis::{IntoConnectionInfo, Value};
use restflow_cache::shared::connect_tcp;

/// The largest answer the loop path accepts before calling it garbage.
const MAX_ANSWER: usize = 64 << 20;

/// One non-blocking connection to Redis, used from one event loop.
#[pyclass(module = "restflow._engine", name = "LoopConnection", frozen)]
pub struct LoopConnection {
    stream: Mutex<TcpStream>,
    buffer: Mutex<Vec<u8>>,
    fd: i32,
}

/// An answer read by a [`LoopConnection`], for `SharedBackend.fresh_hit`.
#[pyclass(module = "restflow._engine", name = "RedisAnswer", frozen)]
pub struct RedisAnswer {
    pub value: Value,
}

fn io_error(error: std::io::Error) -> PyErr {
    PyConnectionError::new_err(error.to_string())
}

#[pymethods]
impl LoopConnection {
    /// Connects to `url` (blocking: call it from a worker thread), then
    /// switches the socket to non-blocking. Only plain `redis://` TCP.
    #[staticmethod]
    fn open(py: Python<'_>, url: &str, timeout: f64) -> PyResult<LoopConnection> {
        let info = url
            .into_connection_info()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let timeout = Duration::from_secs_f64(timeout.max(0.001));
        let stream = py
            .detach(|| connect_tcp(&info, timeout))
            .ok_or_else(|| PyValueError::new_err("only redis:// over TCP is driven by the loop"))?
            .map_err(io_error)?;
        let fd = stream.as_raw_fd();
        Ok(LoopConnection {
            stream: Mutex::new(stream),
            buffer: Mutex::new(Vec::new()),
            fd,
        })
    }

    /// The socket, for `loop.add_reader`.
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// Sends a packed command. Raises if the socket cannot take it at once
    /// (the caller falls back to the engine).
    fn send(&self, command: &[u8]) -> PyResult<()> {
        self.buffer.lock().clear();
        let mut stream = self.stream.lock();
        let mut sent = 0;
        while sent < command.len() {
            match stream.write(&command[sent..]) {
                Ok(0) => return Err(PyConnectionError::new_err("Redis closed the connection")),
                Ok(n) => sent += n,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error(error)),
            }
        }
        Ok(())
    }

    /// Reads what the socket holds; returns the answer once it is whole,
    /// `None` while it is not.
    fn receive(&self) -> PyResult<Option<RedisAnswer>> {
        let mut stream = self.stream.lock();
        let mut buffer = self.buffer.lock();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(PyConnectionError::new_err("Redis closed the connection")),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error(error)),
            }
        }
        match redis::parse_redis_value(&buffer) {
            Ok(value) => {
                buffer.clear();
                Ok(Some(RedisAnswer { value }))
            }
            // Not whole yet (or garbage, which the caller's timeout ends).
            Err(_) if buffer.len() < MAX_ANSWER => Ok(None),
            Err(error) => Err(PyConnectionError::new_err(error.to_string())),
        }
    }
}
