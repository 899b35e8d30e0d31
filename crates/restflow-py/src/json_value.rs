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

/// How deep a value may nest (JSON's own encoder stops near Python's
/// recursion limit; this check must never overflow the Rust stack first).
const MAX_DEPTH: usize = 500;

/// Where a value stops being plain JSON, and what was found there.
pub struct Unfaithful {
    /// The path from the value to the item, innermost last.
    steps: Vec<Step>,
    /// Whether the item is a dict key (rather than a value).
    key: bool,
    /// `module.qualname` of the item's type (or why it is refused).
    pub kind: String,
}

enum Step {
    Index(usize),
    Key(String),
}

impl Unfaithful {
    /// `the value['rows'][0]`, or `a key of the value['rows']`.
    pub fn path(&self) -> String {
        let mut path = String::from("the value");
        for step in self.steps.iter().rev() {
            match step {
                Step::Index(n) => path.push_str(&format!("[{n}]")),
                Step::Key(repr) => path.push_str(&format!("[{repr}]")),
            }
        }
        if self.key {
            format!("a key of {path}")
        } else {
            path
        }
    }
}

/// Checks that `value` is plain JSON all the way down.
pub fn check(value: &Bound<'_, PyAny>) -> Result<(), Unfaithful> {
    walk(value, 0)
}

fn refuse(value: &Bound<'_, PyAny>, key: bool) -> Unfaithful {
    Unfaithful {
        steps: Vec::new(),
        key,
        kind: type_path(&value.get_type()),
    }
}

fn walk(value: &Bound<'_, PyAny>, depth: usize) -> Result<(), Unfaithful> {
    if depth > MAX_DEPTH {
        return Err(Unfaithful {
            steps: Vec::new(),
            key: false,
            kind: format!("containers nested deeper than {MAX_DEPTH} levels"),
        });
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
                walk(&item, depth + 1).map_err(|mut e| {
                    e.steps.push(Step::Index(n));
                    e
                })?;
            }
            return Ok(());
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            let dict = value.cast_unchecked::<PyDict>();
            for (key, item) in dict.iter() {
                if ffi::Py_TYPE(key.as_ptr()) != std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                    return Err(refuse(&key, true));
                }
                walk(&item, depth + 1).map_err(|mut e| {
                    let repr = key
                        .repr()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|_| "?".to_owned());
                    e.steps.push(Step::Key(repr));
                    e
                })?;
            }
            return Ok(());
        }
    }
    Err(refuse(value, false))
}
