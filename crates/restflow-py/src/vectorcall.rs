//! CPython's vectorcall protocol for `CachedWrapper` objects.
//!
//! PyO3 gives a `#[pyclass]` with `__call__` only the older `tp_call`
//! convention, under which CPython packs every call's arguments into a new
//! tuple (and PyO3 then unpacks it) before we run: on this machine that
//! overhead alone is more than a `functools.lru_cache` hit costs. A cache
//! hit must cost about as much as a plain call, so the class also exposes a
//! vectorcall entry point, which receives CPython's argument array as is.
//!
//! PyO3 0.30 has no supported route for this (a `#[pyclass]`'s `__call__`
//! always becomes `tp_call`; PyO3 sets `tp_vectorcall_offset` only for its
//! own function types), so it is done by hand: each object stores the
//! function pointer in a field, and the type is told that field's offset
//! the first time an object is made (every object of the class has the same
//! layout), as CPython documents for classes that support vectorcall
//! (`Py_TPFLAGS_HAVE_VECTORCALL` and `tp_vectorcall_offset`).
//!
//! Patching the type once, at first use, is safe only because the GIL
//! serializes it with every call. On a free-threaded build
//! (`Py_GIL_DISABLED`) nothing is patched and calls take `tp_call`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyClass;

use crate::wrapper::{CachedWrapper, Reply};

/// A pyclass whose objects carry a vectorcall entry point in a field.
pub trait Vectorcall: PyClass {
    /// Set once the class has been told where the field is.
    fn enabled() -> &'static AtomicBool;
}

impl Vectorcall for CachedWrapper {
    fn enabled() -> &'static AtomicBool {
        static ENABLED: AtomicBool = AtomicBool::new(false);
        &ENABLED
    }
}

/// Whether an object's contents have been written, judged by its
/// vectorcall `field`, for `__traverse__`.
///
/// CPython may run the garbage collector while an object of a
/// `#[pyclass(dict)]` is being made: the base type's `tp_new` allocates the
/// instance dict after the object is tracked, and before PyO3 writes its
/// contents. The collector then traverses an object whose contents are
/// still the allocator's zeroes (PyO3 0.30 does not guard against this), and
/// reading an `Arc` or `Py` field there crashes. PyO3 writes the contents in
/// one piece, so a non-null entry point means every field is set.
#[inline]
pub fn written(field: &ffi::vectorcallfunc) -> bool {
    // SAFETY: reads the field's bytes as an integer, which every bit
    // pattern is; volatile, so the read is not assumed non-null.
    unsafe { std::ptr::read_volatile((field as *const ffi::vectorcallfunc).cast::<usize>()) != 0 }
}

/// Points the class's vectorcall offset at `field` of `obj`.
pub fn enable<T: Vectorcall>(obj: &Bound<'_, T>, field: &ffi::vectorcallfunc) {
    if cfg!(Py_GIL_DISABLED) || T::enabled().load(Ordering::Acquire) {
        return;
    }
    let offset = (field as *const ffi::vectorcallfunc as isize) - (obj.as_ptr() as isize);
    // SAFETY: the offset lies inside every object of this exact type (same
    // layout), the field is initialised for every object before it can be
    // called, and the type is only patched while attached to Python, before
    // any object of it has been called through vectorcall.
    unsafe {
        let ty = ffi::Py_TYPE(obj.as_ptr());
        (*ty).tp_vectorcall_offset = offset as ffi::Py_ssize_t;
        (*ty).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
        ffi::PyType_Modified(ty);
    }
    T::enabled().store(true, Ordering::Release);
}

/// Runs `f` with PyO3 told that the thread is attached to Python.
///
/// The vectorcall entry points are entered straight from CPython, not
/// through a PyO3 trampoline, so PyO3's count of attached frames is 0 there
/// ([`dispatch`] assumes attachment, for speed): every `Py` dropped on that
/// path would have its decref deferred until some PyO3 method runs, and a
/// program that only calls `f(...)` would never free the values its calls
/// evict, expire or leave unstored (issue 10, item 2). So everything but a
/// memory hit runs in here. `Python::attach` also drops every decref
/// deferred so far. It costs `PyGILState_Ensure`/`Release` (~15 ns, measured):
/// too much for a hit (~57 ns), which drops no Python object (see
/// `wrapper::release` for the one it may).
#[inline]
pub fn attached<R>(f: impl FnOnce() -> R) -> R {
    Python::attach(|_| f())
}

/// Splits a vectorcall into what [`CachedWrapper::serve_vector`] takes and
/// turns its result (or a panic) into what CPython expects back.
///
/// # Safety
/// Called from a vectorcall entry point with CPython's arguments: GIL held,
/// `callable` a `T`, `args` pointing at `nargs + len(kwnames)` live objects,
/// and `kwnames` a tuple of `str` or NULL.
#[inline(always)]
pub unsafe fn dispatch<T: PyClass<Frozen = True> + Sync>(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
    serve: impl for<'py> FnOnce(
        Python<'py>,
        &T,
        &[*mut ffi::PyObject],
        Option<Borrowed<'_, 'py, PyTuple>>,
        &[*mut ffi::PyObject],
    ) -> PyResult<Py<PyAny>>,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls vectorcall functions with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per the contract above.
        unsafe {
            let nargs = ffi::PyVectorcall_NARGS(nargsf) as usize;
            let slf = Borrowed::from_ptr(py, callable).cast_unchecked::<T>();
            let kwnames =
                Borrowed::from_ptr_or_opt(py, kwnames).map(|k| k.cast_unchecked::<PyTuple>());
            let total = nargs + kwnames.as_ref().map_or(0, |k| k.len());
            let all = if total == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(args, total)
            };
            serve(py, slf.get(), &all[..nargs], kwnames, &all[nargs..])
        }
    }));
    match outcome {
        Ok(Ok(value)) => value.into_ptr(),
        Ok(Err(error)) => {
            error.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PyRuntimeError::new_err(
                "restflow: internal error (a panic) while serving a cached call",
            )
            .restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The vectorcall entry point of `CachedWrapper` objects: the value.
///
/// # Safety
/// See [`dispatch`].
pub unsafe extern "C" fn entry(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython.
    unsafe {
        dispatch::<CachedWrapper>(callable, args, nargsf, kwnames, |py, this, a, kn, kv| {
            // `serve_vector`'s contract: `dispatch` passes CPython's live
            // argument array.
            this.serve_vector(
                py,
                a,
                kn,
                kv,
                |entry| Ok(Reply::hit(entry).value(py)),
                |reply| Ok(reply.value(py)),
            )
        })
    }
}

/// A tuple of the objects in a vectorcall argument array.
///
/// # Safety
/// Every pointer in `items` is a live object.
pub unsafe fn tuple_from_raw<'py>(
    py: Python<'py>,
    items: &[*mut ffi::PyObject],
) -> PyResult<Bound<'py, PyTuple>> {
    // SAFETY: per the contract.
    PyTuple::new(
        py,
        items.iter().map(|p| unsafe { Borrowed::from_ptr(py, *p) }),
    )
}

/// The general path's view of a vectorcall: an argument tuple (with
/// `first`, a bound method's instance, in front) and a dict of keyword
/// arguments.
///
/// # Safety
/// Every pointer in `positional` and `kwvalues` is a live object.
pub unsafe fn to_tuple_and_dict<'py>(
    py: Python<'py>,
    first: Option<&Bound<'py, PyAny>>,
    positional: &[*mut ffi::PyObject],
    kwnames: Option<Borrowed<'_, 'py, PyTuple>>,
    kwvalues: &[*mut ffi::PyObject],
) -> PyResult<(Bound<'py, PyTuple>, Option<Bound<'py, PyDict>>)> {
    let args = match first {
        // SAFETY: per the contract.
        None => unsafe { tuple_from_raw(py, positional)? },
        Some(first) => {
            let mut all = Vec::with_capacity(positional.len() + 1);
            all.push(first.as_borrowed());
            // SAFETY: per the contract.
            all.extend(
                positional
                    .iter()
                    .map(|p| unsafe { Borrowed::from_ptr(py, *p) }),
            );
            PyTuple::new(py, all)?
        }
    };
    let kwargs = match kwnames {
        None => None,
        Some(names) => {
            let dict = PyDict::new(py);
            for (name, value) in names.iter().zip(kwvalues) {
                // SAFETY: per the contract.
                dict.set_item(name, unsafe { Borrowed::from_ptr(py, *value) })?;
            }
            Some(dict)
        }
    };
    Ok((args, kwargs))
}
