//! Python values → the engine's canonical key encoding.
//!
//! Exact built-in types are recognised by their type pointer first (the hot
//! path); everything else goes through a few `isinstance` checks against
//! the standard types that have a faithful text form. Anything else is
//! refused: a `repr()` could embed a memory address and silently make every
//! call a miss, or two different objects equal.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::once::{Attached, OnceValue};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple, PyType};
use restflow_cache::key::{KeyWriter, Sequence, Unordered};

/// How deep containers may nest before a value is refused (a guard against
/// self-referencing containers).
const MAX_DEPTH: usize = 64;

/// A value the encoder cannot represent faithfully (the engine's type, so
/// the parameter model can carry it).
pub use restflow_cache::signature::Unsupported;

type Encoded = Result<(), Unsupported>;

pub(crate) struct StdTypes {
    enum_type: Py<PyType>,
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    timedelta: Py<PyType>,
    decimal: Py<PyType>,
    uuid: Py<PyType>,
    pub timezone: Py<PyType>,
    pub zone_info: Py<PyType>,
}

static STD_TYPES: OnceValue<StdTypes> = OnceValue::new();

fn std_types(py: Python<'_>) -> PyResult<&StdTypes> {
    STD_TYPES.get_or_try_init(py, || {
        let get = |module: &str, name: &str| -> PyResult<Py<PyType>> {
            Ok(py
                .import(module)?
                .getattr(name)?
                .cast_into::<PyType>()?
                .unbind())
        };
        Ok(StdTypes {
            enum_type: get("enum", "Enum")?,
            datetime: get("datetime", "datetime")?,
            date: get("datetime", "date")?,
            time: get("datetime", "time")?,
            timedelta: get("datetime", "timedelta")?,
            decimal: get("decimal", "Decimal")?,
            uuid: get("uuid", "UUID")?,
            timezone: get("datetime", "timezone")?,
            zone_info: get("zoneinfo", "ZoneInfo")?,
        })
    })
}

/// `module.qualname` of a type.
pub fn type_path(ty: &Bound<'_, PyType>) -> String {
    let module = ty
        .module()
        .map(|m| m.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let qualname = ty
        .qualname()
        .map(|q| q.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    format!("{module}.{qualname}")
}

/// Appends `value` to `w`.
#[inline]
pub fn write_value(w: &mut KeyWriter, value: &Bound<'_, PyAny>) -> Encoded {
    write_at_depth(w, value, 0, false)
}

/// Appends `value` to `w` with every list in it sorted by its items'
/// encodings, for key fields whose lists carry no order (`sort_lists`).
pub fn write_value_sorting_lists(w: &mut KeyWriter, value: &Bound<'_, PyAny>) -> Encoded {
    write_at_depth(w, value, 0, true)
}

fn write_at_depth(
    w: &mut KeyWriter,
    value: &Bound<'_, PyAny>,
    depth: usize,
    sort: bool,
) -> Encoded {
    if depth > MAX_DEPTH {
        return Err(Unsupported {
            what: format!("containers nested deeper than {MAX_DEPTH} levels"),
            reason: Some(format!(
                "keys nest at most {MAX_DEPTH} levels deep (a guard against a container \
                 that holds itself); key it by something flatter, such as an id."
            )),
        });
    }
    let ptr = value.as_ptr();
    // SAFETY: `ptr` is a live object borrowed for the duration of the call.
    if unsafe { write_common(w, ptr) } {
        return Ok(());
    }
    // SAFETY: as above; reading its type pointer and comparing it with the
    // static type objects is what the `Py*_CheckExact` macros do.
    let ty = unsafe { ffi::Py_TYPE(ptr) };
    unsafe {
        if ty == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            return write_int(w, value);
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            return write_str(w, value.cast_unchecked::<PyString>());
        }
        if ptr == ffi::Py_None() {
            w.write_none();
            return Ok(());
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
            w.write_bool(ptr == ffi::Py_True());
            return Ok(());
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyTuple_Type) {
            let tuple = value.cast_unchecked::<PyTuple>();
            return write_items(w, Sequence::Tuple, tuple.iter(), depth, sort);
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyList_Type) {
            let list = value.cast_unchecked::<PyList>();
            if sort {
                return write_sorted_list(w, list.iter(), depth);
            }
            return write_items(w, Sequence::List, list.iter(), depth, sort);
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            return write_dict(w, value.cast_unchecked::<PyDict>(), depth, sort);
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
            w.write_bytes(value.cast_unchecked::<PyBytes>().as_bytes())?;
            return Ok(());
        }
        if ty == std::ptr::addr_of_mut!(ffi::PySet_Type) {
            let set = value.cast_unchecked::<PySet>();
            return write_set(w, Unordered::Set, set.iter(), depth, sort);
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyFrozenSet_Type) {
            let set = value.cast_unchecked::<PyFrozenSet>();
            return write_set(w, Unordered::FrozenSet, set.iter(), depth, sort);
        }
    }
    write_other(w, value, depth, sort)
}

/// Appends `ptr` when it is one of the arguments calls pass most (an exact
/// `int` of one digit, `float`, or compact ASCII `str`), inline and without
/// a `Result` to pass back: the hot path writes each positional argument
/// through this first (see `Signature::write_positional_raw`), and
/// [`write_at_depth`] starts with it. `false`: nothing was written; encode
/// the value with [`write_value`].
///
/// # Safety
/// `ptr` is a live object.
#[inline(always)]
pub unsafe fn write_common(w: &mut KeyWriter, ptr: *mut ffi::PyObject) -> bool {
    // SAFETY: a live object, per the contract; the type checks are what the
    // `Py*_CheckExact` macros do, and each read below is of the type found.
    unsafe {
        let ty = ffi::Py_TYPE(ptr);
        if ty == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            return match one_digit_int(ptr) {
                Some(n) => {
                    w.write_int(n);
                    true
                }
                None => false,
            };
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            // A compact ASCII string keeps its bytes right after its header,
            // and ASCII is UTF-8: read them in place (what
            // PyUnicode_AsUTF8AndSize returns for it, without the call).
            if ffi::PyUnicode_IS_COMPACT_ASCII(ptr) == 0 {
                return false;
            }
            let len = ffi::PyUnicode_GET_LENGTH(ptr) as usize;
            let data = ffi::PyUnicode_DATA(ptr) as *const u8;
            let text = std::str::from_utf8_unchecked(std::slice::from_raw_parts(data, len));
            // Too long for a key: nothing is written, and `write_value`
            // says why.
            return w.write_str(text).is_ok();
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            w.write_float(ffi::PyFloat_AS_DOUBLE(ptr));
            return true;
        }
    }
    false
}

/// Whether this interpreter stores an `int`'s digits as 30 bits in a
/// `u32`, the layout [`one_digit_int`] reads. CPython's default on every
/// 64-bit platform, but a build configured with 15-bit digits exists:
/// checked once, at import ([`check_int_layout`]); until then, and on any
/// other layout, every `int` takes the call.
static THIRTY_BIT_DIGITS: AtomicBool = AtomicBool::new(false);

/// Reads `sys.int_info` and enables [`one_digit_int`] when its layout
/// holds. Called from the module's initialisation, on the importing thread.
pub(crate) fn check_int_layout(py: Python<'_>) -> PyResult<()> {
    let info = py.import("sys")?.getattr("int_info")?;
    let bits: u32 = info.getattr("bits_per_digit")?.extract()?;
    let size: usize = info.getattr("sizeof_digit")?.extract()?;
    let layout = bits == 30 && size == std::mem::size_of::<u32>();
    THIRTY_BIT_DIGITS.store(layout && cfg!(compact_int_layout_known), Ordering::Relaxed);
    Ok(())
}

/// The value of an exact `int` of at most one digit (|n| < 2**30), read
/// from the object in place: the common small argument, which would
/// otherwise cost a call to `PyLong_AsLongLongAndOverflow` (~20
/// instructions of a ~60-instruction key on the hot path). `None`: take
/// the call.
///
/// The layouts are CPython's (`Include/cpython/longintrepr.h`): up to
/// 3.11, `ob_size` is the signed digit count and the digits follow the
/// `PyVarObject` header; from 3.12, `lv_tag` after the `PyObject` header
/// holds the digit count shifted by 3 and the sign in its low 2 bits (0
/// positive, 1 zero, 2 negative), and a value is compact (one digit or
/// zero) when `lv_tag < 16` (`_PyLong_IsCompact`).
///
/// # Safety
/// `ptr` is a live object whose type is exactly `int` (a subclass may add
/// fields but keeps the layout; only the exact type is passed here).
#[inline(always)]
unsafe fn one_digit_int(ptr: *mut ffi::PyObject) -> Option<i64> {
    #[cfg(compact_int_layout_known)]
    {
        if !THIRTY_BIT_DIGITS.load(Ordering::Relaxed) {
            return None;
        }
        #[cfg(not(Py_3_12))]
        {
            // SAFETY: an `int` is a `PyVarObject` followed by at least one
            // digit (CPython allocates one even for zero), per the contract.
            unsafe {
                let size = (*ptr.cast::<ffi::PyVarObject>()).ob_size;
                if !(-1..=1).contains(&size) {
                    return None;
                }
                let digits = ptr
                    .cast::<u8>()
                    .add(std::mem::size_of::<ffi::PyVarObject>());
                let digit = std::ptr::read(digits.cast::<u32>());
                Some(size as i64 * i64::from(digit))
            }
        }
        #[cfg(Py_3_12)]
        {
            // SAFETY: an `int` is a `PyObject` followed by `lv_tag` and at
            // least one digit, per the contract.
            unsafe {
                let tag_at = ptr.cast::<u8>().add(std::mem::size_of::<ffi::PyObject>());
                let tag = std::ptr::read(tag_at.cast::<usize>());
                if tag >= 16 {
                    return None;
                }
                let sign = 1 - (tag & 3) as i64;
                let digit = std::ptr::read(tag_at.add(std::mem::size_of::<usize>()).cast::<u32>());
                Some(sign * i64::from(digit))
            }
        }
    }
    #[cfg(not(compact_int_layout_known))]
    {
        let _ = ptr;
        None
    }
}

#[inline]
fn write_int(w: &mut KeyWriter, value: &Bound<'_, PyAny>) -> Encoded {
    let mut overflow = 0;
    // SAFETY: `value` is a live int (or int subclass); the call sets no
    // error for an out-of-range value, it reports it in `overflow`.
    let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(value.as_ptr(), &mut overflow) };
    match overflow {
        0 if !(n == -1 && unsafe { !ffi::PyErr_Occurred().is_null() }) => w.write_int(n),
        _ => {
            // Clear a conversion error, if any, before falling back.
            let _ = PyErr::take(value.py());
            // `hex()`, not `str()`: linear in the size of the number and
            // not capped by `sys.set_int_max_str_digits` (see
            // `KeyWriter::write_big_int`).
            // SAFETY: `value` is a live int (or int subclass); the call
            // returns a new reference or NULL with an exception set.
            let hex = unsafe {
                Bound::from_owned_ptr_or_err(value.py(), ffi::PyNumber_ToBase(value.as_ptr(), 16))
            }
            .map_err(|_| unsupported(value))?;
            let hex = hex.cast::<PyString>().map_err(|_| unsupported(value))?;
            w.write_big_int(hex.to_str().map_err(|_| unsupported(value))?)?;
        }
    }
    Ok(())
}

#[inline]
fn write_str(w: &mut KeyWriter, value: &Bound<'_, PyString>) -> Encoded {
    // A compact ASCII string was written by `write_common` (unless too
    // long, which `to_str` and `write_str` then report).
    match value.to_str() {
        Ok(text) => w.write_str(text)?,
        Err(_) => {
            // Lone surrogates have no UTF-8 form: keep their exact code
            // points, under a tag of their own so no valid text can match.
            let raw = value
                .call_method1("encode", ("utf-8", "surrogatepass"))
                .map_err(|_| unsupported(value))?;
            let raw = raw.cast::<PyBytes>().map_err(|_| unsupported(value))?;
            w.begin_tagged("str+surrogates")?;
            w.write_bytes(raw.as_bytes())?;
        }
    }
    Ok(())
}

fn write_items<'py>(
    w: &mut KeyWriter,
    kind: Sequence,
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    depth: usize,
    sort: bool,
) -> Encoded {
    w.begin_sequence(kind, items.len())?;
    for item in items {
        write_at_depth(w, &item, depth + 1, sort)?;
    }
    Ok(())
}

fn write_sorted_list<'py>(
    w: &mut KeyWriter,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> Encoded {
    let mut encoded = Vec::new();
    for item in items {
        let mut one = KeyWriter::new();
        write_at_depth(&mut one, &item, depth + 1, true)?;
        encoded.push(one);
    }
    w.write_sorted_list(encoded)?;
    Ok(())
}

fn write_dict(w: &mut KeyWriter, dict: &Bound<'_, PyDict>, depth: usize, sort: bool) -> Encoded {
    let mut items = Vec::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let mut pair = KeyWriter::new();
        write_at_depth(&mut pair, &key, depth + 1, sort)?;
        write_at_depth(&mut pair, &value, depth + 1, sort)?;
        items.push(pair);
    }
    w.write_unordered(Unordered::Dict, items)?;
    Ok(())
}

fn write_set<'py>(
    w: &mut KeyWriter,
    kind: Unordered,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
    sort: bool,
) -> Encoded {
    let mut encoded = Vec::new();
    for item in items {
        let mut one = KeyWriter::new();
        write_at_depth(&mut one, &item, depth + 1, sort)?;
        encoded.push(one);
    }
    w.write_unordered(kind, encoded)?;
    Ok(())
}

/// Everything that is not an exact built-in type.
#[cold]
fn write_other(w: &mut KeyWriter, value: &Bound<'_, PyAny>, depth: usize, sort: bool) -> Encoded {
    let py = value.py();
    // A key field that found nothing (a missing attribute or query
    // parameter) reports CACHE_MISSING, which no real value can equal.
    if let Ok(hooks) = crate::runtime::hooks(py) {
        if value.is(hooks.missing.bind(py)) {
            w.begin_tagged("missing")?;
            w.write_none();
            return Ok(());
        }
    }
    let types = std_types(py).map_err(|_| unsupported(value))?;
    let is = |ty: &Py<PyType>| value.is_instance(ty.bind(py)).unwrap_or(false);
    let text = |v: &Bound<'_, PyAny>| -> Result<String, Unsupported> {
        Ok(v.str()
            .map_err(|_| unsupported(v))?
            .to_string_lossy()
            .into_owned())
    };

    if is(&types.enum_type) {
        // A member is its class and its value: two enums with equal values
        // stay apart, and the key survives reordering the members.
        w.begin_tagged(&format!("enum:{}", type_path(&value.get_type())))?;
        let inner = value.getattr("value").map_err(|_| unsupported(value))?;
        return write_at_depth(w, &inner, depth + 1, sort);
    }
    // Exact types: a datetime is a date too.
    for (ty, name) in [
        (&types.datetime, "datetime"),
        (&types.date, "date"),
        (&types.time, "time"),
    ] {
        if value.get_type().is(ty.bind(py)) {
            let iso = value
                .call_method0("isoformat")
                .map_err(|_| unsupported(value))?;
            let iso = text(&iso)?;
            w.begin_tagged(name)?;
            if name == "date" {
                w.write_str(&iso)?;
                return Ok(());
            }
            return crate::moment::write_moment(w, value, &iso, types);
        }
    }
    if value.get_type().is(types.timedelta.bind(py)) {
        w.begin_tagged("timedelta")?;
        let parts = ["days", "seconds", "microseconds"].map(|part| {
            value
                .getattr(part)
                .and_then(|v| v.extract::<i64>())
                .unwrap_or_default()
        });
        w.begin_sequence(Sequence::Tuple, 3)?;
        for part in parts {
            w.write_int(part);
        }
        return Ok(());
    }
    if value.get_type().is(types.decimal.bind(py)) {
        w.begin_tagged("Decimal")?;
        w.write_str(&text(value)?)?;
        return Ok(());
    }
    if value.get_type().is(types.uuid.bind(py)) {
        w.begin_tagged("UUID")?;
        w.write_str(&text(value)?)?;
        return Ok(());
    }
    // Subclasses of the built-in value types (named tuples, str enums
    // without Enum, int subclasses): the class path, then the base value.
    let base = [
        ("int", std::ptr::addr_of_mut!(ffi::PyLong_Type)),
        ("str", std::ptr::addr_of_mut!(ffi::PyUnicode_Type)),
        ("float", std::ptr::addr_of_mut!(ffi::PyFloat_Type)),
        ("tuple", std::ptr::addr_of_mut!(ffi::PyTuple_Type)),
        ("bytes", std::ptr::addr_of_mut!(ffi::PyBytes_Type)),
    ]
    .into_iter()
    .find(|(_, base)| unsafe { ffi::PyObject_TypeCheck(value.as_ptr(), *base) != 0 });
    if let Some((name, _)) = base {
        w.begin_tagged(&type_path(&value.get_type()))?;
        return match name {
            "int" => write_int(w, value),
            "str" => write_str(w, value.cast::<PyString>().map_err(|_| unsupported(value))?),
            "float" => {
                w.write_float(value.extract::<f64>().map_err(|_| unsupported(value))?);
                Ok(())
            }
            "tuple" => {
                let tuple = value.cast::<PyTuple>().map_err(|_| unsupported(value))?;
                write_items(w, Sequence::Tuple, tuple.iter(), depth, sort)
            }
            _ => {
                let bytes = value.cast::<PyBytes>().map_err(|_| unsupported(value))?;
                w.write_bytes(bytes.as_bytes())?;
                Ok(())
            }
        };
    }
    Err(unsupported(value))
}

pub(crate) fn unsupported(value: &Bound<'_, PyAny>) -> Unsupported {
    Unsupported {
        what: format!("a value of type '{}'", type_path(&value.get_type())),
        reason: None,
    }
}
