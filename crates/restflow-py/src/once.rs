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
//! The bindings use the engine's lock-free [`OnceValue`] instead (see
//! [`restflow_cache::once`]); this module only adds what touches Python:
//! making a value while attached ([`Attached`]), importing, and interning.

use pyo3::prelude::*;
use pyo3::types::PyString;
pub use restflow_cache::once::OnceValue;

/// [`OnceValue`]'s makers with the interpreter token: the value is made
/// while the caller is attached (it takes `_py` to say so), and may be made
/// on two threads at once; the value published first is kept.
pub trait Attached<T> {
    /// The value, made by `make` when there is none yet.
    fn get_or_try_init<E>(
        &self,
        py: Python<'_>,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E>;
    /// As [`Attached::get_or_try_init`], for a `make` that cannot fail.
    fn get_or_init(&self, py: Python<'_>, make: impl FnOnce() -> T) -> &T;
}

impl<T> Attached<T> for OnceValue<T> {
    #[inline]
    fn get_or_try_init<E>(
        &self,
        _py: Python<'_>,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E> {
        self.get_or_try_make(make)
    }

    #[inline]
    fn get_or_init(&self, _py: Python<'_>, make: impl FnOnce() -> T) -> &T {
        self.get_or_make(make)
    }
}

/// `module.name`, imported on first use into `cell`.
pub fn import<'py, 'a>(
    cell: &'a OnceValue<Py<PyAny>>,
    py: Python<'py>,
    module: &str,
    name: &str,
) -> PyResult<&'a Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|value| value.bind(py))
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
