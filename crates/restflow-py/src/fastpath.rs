//! `wrapper.get_with_metadata` through vectorcall.
//!
//! A PyO3 method that takes `*args` packs them into a new tuple on every
//! call. The view code of the spec calls `get_with_metadata` on every
//! request, so a plain function's wrapper keeps one of these objects in its
//! instance dict under that name (an instance attribute wins over a
//! method), and CPython calls it with its argument array as is.

use std::sync::atomic::AtomicBool;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::vectorcall::{dispatch, enable, Vectorcall};
use crate::wrapper::{CachedWrapper, Reply};

/// `get_with_metadata` bound to one wrapper.
#[pyclass(module = "restflow._engine", name = "GetWithMetadata", frozen)]
pub struct WithMetadata {
    vectorcall: ffi::vectorcallfunc,
    wrapper: Py<CachedWrapper>,
}

impl Vectorcall for WithMetadata {
    fn enabled() -> &'static AtomicBool {
        static ENABLED: AtomicBool = AtomicBool::new(false);
        &ENABLED
    }
}

impl WithMetadata {
    pub fn make(py: Python<'_>, wrapper: Py<CachedWrapper>) -> PyResult<Bound<'_, WithMetadata>> {
        let obj = Bound::new(
            py,
            WithMetadata {
                vectorcall: entry,
                wrapper,
            },
        )?;
        enable(&obj, &obj.get().vectorcall);
        Ok(obj)
    }
}

#[pymethods]
impl WithMetadata {
    /// Returns `(value, metadata)`: HIT, MISS or STALE.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let wrapper = self.wrapper.bind(py);
        let method = wrapper
            .as_any()
            .getattr(crate::interned!(py, "__class__"))?;
        let method = method.getattr(crate::interned!(py, "get_with_metadata"))?;
        let mut all = vec![wrapper.clone().into_any()];
        all.extend(args.iter());
        Ok(method.call(PyTuple::new(py, all)?, kwargs)?.unbind())
    }

    /// The wrapper this object is kept in (its `__dict__`) is reachable
    /// from here: without this, that cycle is invisible to the garbage
    /// collector and a wrapper nothing else refers to is never freed
    /// (issue 10, item 3). The wrapper's `__dict__` is cleared by its
    /// `tp_clear`, which breaks the cycle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if !crate::vectorcall::written(&self.vectorcall) {
            return Ok(()); // still being made: nothing to visit yet
        }
        visit.call(&self.wrapper)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<get_with_metadata of {}>",
            self.wrapper.bind(py).get().function_id_str()
        )
    }
}

/// # Safety
/// See [`dispatch`].
unsafe extern "C" fn entry(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython.
    unsafe {
        dispatch::<WithMetadata>(callable, args, nargsf, kwnames, |py, this, a, kn, kv| {
            let wrapper = this.wrapper.bind(py).get();
            // `serve_vector`'s contract: `dispatch` passes CPython's live
            // argument array.
            let answer = |reply: Reply| -> PyResult<Py<PyAny>> {
                Ok(reply
                    .with_metadata(py)?
                    .into_pyobject(py)?
                    .into_any()
                    .unbind())
            };
            wrapper.serve_vector(py, a, kn, kv, |entry| answer(Reply::hit(entry)), answer)
        })
    }
}
