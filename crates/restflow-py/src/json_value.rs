//! What `SERIALIZER="json"` may store: exactly the values JSON gives back
//! unchanged.
//!
//! A hit must return what the function returned. `json.loads(json.dumps(v))`
//! is `v` only when `v` is made of exact `dict` (with `str` keys), `list`,
//! `str`, `int`, `float`, `bool` and `None`: a tuple comes back a list, an
//! int key a string, an `OrderedDict` or DRF's `ReturnDict` a plain dict, an
//! `IntEnum` an int; sets, `Decimal`, dates and bytes cannot be written at
//! all. Such a value is refused before anything is written, with the place
//! where it stops being plain JSON, so the caller can log one clear error.
//!
//! Checked by type pointer, as the key encoder does, so a large payload of
//! plain values costs one comparison per item.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::encode::type_path;

/// Where a value stops being plain JSON (the engine's, with its path).
pub use restflow_cache::shared::unfaithful::Unfaithful;
use restflow_cache::shared::unfaithful::MAX_DEPTH;

/// Checks that `value` is plain JSON all the way down.
pub fn check(value: &Bound<'_, PyAny>) -> Result<(), Unfaithful> {
    walk(value, 0)
}

fn refuse(value: &Bound<'_, PyAny>, key: bool) -> Unfaithful {
    Unfaithful::found(type_path(&value.get_type()), key)
}

fn walk(value: &Bound<'_, PyAny>, depth: usize) -> Result<(), Unfaithful> {
    if depth > MAX_DEPTH {
        return Err(Unfaithful::too_deep());
    }
    let ptr = value.as_ptr();
    // SAFETY: `ptr` is a live object; comparing its type pointer with the
    // static type objects is what the `Py*_CheckExact` macros do.
    unsafe {
        let ty = ffi::Py_TYPE(ptr);
        if ptr == ffi::Py_None()
            || ty == std::ptr::addr_of_mut!(ffi::PyUnicode_Type)
            || ty == std::ptr::addr_of_mut!(ffi::PyLong_Type)
            || ty == std::ptr::addr_of_mut!(ffi::PyFloat_Type)
            || ty == std::ptr::addr_of_mut!(ffi::PyBool_Type)
        {
            return Ok(());
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyList_Type) {
            let list = value.cast_unchecked::<PyList>();
            for (n, item) in list.iter().enumerate() {
                walk(&item, depth + 1).map_err(|e| e.in_index(n))?;
            }
            return Ok(());
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            let dict = value.cast_unchecked::<PyDict>();
            for (key, item) in dict.iter() {
                if ffi::Py_TYPE(key.as_ptr()) != std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                    return Err(refuse(&key, true));
                }
                walk(&item, depth + 1).map_err(|e| {
                    let repr = key.repr().map(|r| r.to_string());
                    e.in_key(repr.unwrap_or_else(|_| "?".to_owned()))
                })?;
            }
            return Ok(());
        }
    }
    Err(refuse(value, false))
}
