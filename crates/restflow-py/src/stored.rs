//! The value the engine stores for Python: the object itself, and its
//! timestamps as Python strings, made once per entry on first use.

use crate::once::{Attached, OnceValue};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use restflow_cache::Stamps;

/// A cached Python object.
pub struct Stored {
    value: Py<PyAny>,
    /// `cached_at` and `reset_at` (absent when the entry never expires) as
    /// ISO-8601 strings, so a hit that returns metadata only copies pointers.
    iso: OnceValue<(Py<PyString>, Option<Py<PyString>>)>,
    /// The metadata dict of a hit on this entry, copied for each caller.
    hit_metadata: OnceValue<Py<PyDict>>,
}

impl Stored {
    pub fn new(value: Py<PyAny>) -> Self {
        Stored {
            value,
            iso: OnceValue::new(),
            hit_metadata: OnceValue::new(),
        }
    }

    #[inline]
    pub fn value(&self) -> &Py<PyAny> {
        &self.value
    }

    /// The hit metadata of this entry, built by `build` the first time.
    #[inline]
    pub fn hit_metadata<'py>(
        &self,
        py: Python<'py>,
        build: impl FnOnce() -> PyResult<Bound<'py, PyDict>>,
    ) -> PyResult<&Bound<'py, PyDict>> {
        Ok(self
            .hit_metadata
            .get_or_try_init(py, || build().map(Bound::unbind))?
            .bind(py))
    }

    /// The entry's `cached_at` and `reset_at` strings.
    #[inline]
    pub fn iso<'py>(
        &self,
        py: Python<'py>,
        stamps: &Stamps,
    ) -> (Bound<'py, PyString>, Option<Bound<'py, PyString>>) {
        let (cached_at, reset_at) = self.iso.get_or_init(py, || {
            let cached_at = PyString::new(py, &stamps.cached_at.to_isoformat()).unbind();
            let reset_at = stamps
                .fresh_until
                .map(|t| PyString::new(py, &t.to_isoformat()).unbind());
            (cached_at, reset_at)
        });
        (
            cached_at.bind(py).clone(),
            reset_at.as_ref().map(|r| r.bind(py).clone()),
        )
    }
}
