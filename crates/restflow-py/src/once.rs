//! Values made once per process while attached to the interpreter, that a
//! forked child can always finish making.
//!
//! pyo3's `PyOnceLock` (and `intern!`, which is built on it) detaches from
//! the interpreter, takes its once-cell's lock, and re-attaches inside it to
//! run the initializer. Between the two, the thread holds the cell's lock
//! while it waits for the GIL; if another thread takes the GIL at that
//! instant and forks (gunicorn `--preload`, Celery prefork), the child's copy
//! of the cell is locked by a thread that does not exist in the child, and
//! its first use waits forever (seen as a rare hang of children in
//! tests/test_fork.py under load).
//!
//! [`OnceValue`] never locks: the value is made while attached, with no lock
//! held, and published by one compare-and-swap (`once_cell::race::OnceBox`).
//! There is no state in which a reader waits on another thread, so a fork at
//! any instant leaves a cell that is either set or empty. Two threads may
//! both make the value; one wins and the other's copy is dropped. That is
//! fine for what is kept here (imported objects, interned strings, formatted
//! timestamps, an idempotent claim), and each use says so where it matters.

use once_cell::race::OnceBox;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// A value made on first use; see the module documentation.
///
/// Invariant: once [`OnceValue::get`] has returned `Some`, it returns the
/// same value for the life of the cell (the first value published wins).
pub struct OnceValue<T>(OnceBox<T>);

impl<T> OnceValue<T> {
    pub const fn new() -> Self {
        OnceValue(OnceBox::new())
    }

    /// The value, when it has been made.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }

    /// Publishes `value` unless a value is already there; `Err(value)` then.
    pub fn set(&self, value: T) -> Result<(), T> {
        self.0.set(Box::new(value)).map_err(|boxed| *boxed)
    }

    /// The value, made by `make` when there is none yet. `make` runs while
    /// the caller is attached (it takes `_py` to say so) and may run on two
    /// threads at once; the value published first is kept.
    #[inline]
    pub fn get_or_try_init<E>(
        &self,
        _py: Python<'_>,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E> {
        self.get_or_try_make(make)
    }

    /// What [`OnceValue::get_or_try_init`] does, without the token.
    #[inline]
    fn get_or_try_make<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(value) = self.0.get() {
            return Ok(value);
        }
        self.0.get_or_try_init(|| make().map(Box::new))
    }

    /// As [`OnceValue::get_or_try_init`], for a `make` that cannot fail.
    #[inline]
    pub fn get_or_init(&self, py: Python<'_>, make: impl FnOnce() -> T) -> &T {
        match self.get_or_try_init::<std::convert::Infallible>(py, || Ok(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

impl<T> Default for OnceValue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl OnceValue<Py<PyAny>> {
    /// `module.name`, imported on first use.
    pub fn import<'py>(
        &self,
        py: Python<'py>,
        module: &str,
        name: &str,
    ) -> PyResult<&Bound<'py, PyAny>> {
        self.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
        })
        .map(|value| value.bind(py))
    }
}

/// A Python string interned on first use (what `pyo3::intern!` keeps, without
/// its lock).
pub struct Interned {
    text: &'static str,
    value: OnceValue<Py<PyString>>,
}

impl Interned {
    pub const fn new(text: &'static str) -> Self {
        Interned {
            text,
            value: OnceValue::new(),
        }
    }

    #[inline]
    pub fn get<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.value
            .get_or_init(py, || PyString::intern(py, self.text).unbind())
            .bind(py)
    }
}

/// `interned!(py, "text")`: the interned Python string `"text"`, made once
/// per process; a drop-in for `pyo3::intern!` that is safe across fork.
#[macro_export]
macro_rules! interned {
    ($py:expr, $text:expr) => {{
        static INTERNED: $crate::once::Interned = $crate::once::Interned::new($text);
        INTERNED.get($py)
    }};
}

#[cfg(test)]
mod tests {
    use super::OnceValue;
    use std::sync::mpsc;

    /// The property the module exists for: a fork while another thread is
    /// making the value leaves the child a cell it can fill. (With a
    /// blocking once-cell the child waits forever on the vanished thread.)
    #[test]
    #[cfg(unix)]
    fn a_child_forked_while_another_thread_makes_the_value_can_make_it() {
        static CELL: OnceValue<u32> = OnceValue::new();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            // The property needs no interpreter: `get_or_try_init` is
            // `get_or_try_make` with a token.
            *CELL
                .get_or_try_make(|| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok::<_, ()>(1)
                })
                .unwrap()
        });
        entered_rx.recv().unwrap();
        // SAFETY: the child only reads and fills the cell, allocates, and
        // leaves with `_exit`; it touches no lock another thread holds.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let made = *CELL.get_or_try_make(|| Ok::<_, ()>(2)).unwrap();
            // SAFETY: `_exit` ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(if made == 2 { 0 } else { 3 }) };
        }
        release_tx.send(()).unwrap();
        assert_eq!(maker.join().unwrap(), 1);
        let mut status = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            // SAFETY: waits for our own child without blocking.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: kills our own child, which hung.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the child hung on a cell another thread was making at the fork");
            }
            std::thread::yield_now();
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
