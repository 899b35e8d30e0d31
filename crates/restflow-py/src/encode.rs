//! Python values → the engine's canonical key encoding.
//!
//! The format (tags, nesting limit, sorting, refusals and their words) is
//! the engine's [`restflow_cache::value`]; this module only says what a
//! Python value is ([`PyValues`]). Exact built-in types are recognised by
//! their type pointer first (the hot path writes the commonest inline,
//! [`write_common`]); everything else goes through a few `isinstance`
//! checks against the standard types that have a faithful text form.
//! Anything else is refused: a `repr()` could embed a memory address and
//! silently make every call a miss, or two different objects equal.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::once::{Attached, OnceValue};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{
    PyBytes, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple, PyType, PyWeakrefMethods,
    PyWeakrefReference,
};
use restflow_cache::key::KeyWriter;
use restflow_cache::value::{self, ValueReader, View};
use restflow_cache::value_classes::{ClassHandles, ValueClasses};

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

/// Reads Python values for the engine's key encoding
/// ([`restflow_cache::value`], which owns the format).
pub(crate) struct PyValues<'py>(PhantomData<Bound<'py, PyAny>>);

impl PyValues<'_> {
    pub(crate) const fn new() -> Self {
        PyValues(PhantomData)
    }
}

impl<'py> ValueReader for PyValues<'py> {
    type Value = Bound<'py, PyAny>;

    #[inline(always)]
    fn write_fast(&self, w: &mut KeyWriter, value: &Self::Value) -> bool {
        // SAFETY: `value` is a live object borrowed for the call.
        unsafe { write_common(w, value.as_ptr()) }
    }

    fn view<'a>(&self, value: &'a Self::Value) -> View<'a, Self::Value> {
        view_builtin::<true>(value).unwrap_or_else(|| view_other(value))
    }
}

/// Appends `value` to `w`.
#[inline]
pub fn write_value(w: &mut KeyWriter, value: &Bound<'_, PyAny>) -> Encoded {
    value::write_value(&PyValues::new(), w, value, false)
}

/// [`write_value`] for a value [`write_common`] declined already.
pub fn write_declined(w: &mut KeyWriter, value: &Bound<'_, PyAny>) -> Encoded {
    value::write_declined(&PyValues::new(), w, value)
}

/// The view of a value of a built-in type, recognised by its type pointer;
/// `None` for anything else. `EXACT`: of exactly that type (the built-in
/// types any value may be); otherwise of a subclass of one whose value
/// keys it (`int`, `str`, `float`, `tuple`, `bytes`: named tuples, str
/// enums without `Enum`, int subclasses), read as the base type's value.
fn view_builtin<'a, 'py, const EXACT: bool>(
    value: &'a Bound<'py, PyAny>,
) -> Option<View<'a, Bound<'py, PyAny>>> {
    let ptr = value.as_ptr();
    // SAFETY: `ptr` is a live object borrowed for the call; comparing its
    // type pointer with the static type objects is what the
    // `Py*_CheckExact` macros do (`PyObject_TypeCheck` what `Py*_Check`
    // do), and each cast is to the type found or a subclass of it, whose
    // layout starts with the base type's.
    unsafe {
        let ty = ffi::Py_TYPE(ptr);
        let is = |base: *mut ffi::PyTypeObject| match EXACT {
            true => ty == base,
            false => ffi::PyObject_TypeCheck(ptr, base) != 0,
        };
        Some(if is(std::ptr::addr_of_mut!(ffi::PyLong_Type)) {
            view_int(value)
        } else if is(std::ptr::addr_of_mut!(ffi::PyUnicode_Type)) {
            view_str(value.cast_unchecked::<PyString>())
        } else if is(std::ptr::addr_of_mut!(ffi::PyFloat_Type)) {
            View::Float(ffi::PyFloat_AS_DOUBLE(ptr))
        } else if is(std::ptr::addr_of_mut!(ffi::PyTuple_Type)) {
            View::Tuple(value.cast_unchecked::<PyTuple>().iter().collect())
        } else if is(std::ptr::addr_of_mut!(ffi::PyBytes_Type)) {
            View::Bytes(value.cast_unchecked::<PyBytes>().as_bytes())
        } else if !EXACT {
            return None;
        } else if ptr == ffi::Py_None() {
            View::None
        } else if ty == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
            View::Bool(ptr == ffi::Py_True())
        } else if ty == std::ptr::addr_of_mut!(ffi::PyList_Type) {
            View::List(value.cast_unchecked::<PyList>().iter().collect())
        } else if ty == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            View::Dict(value.cast_unchecked::<PyDict>().iter().collect())
        } else if ty == std::ptr::addr_of_mut!(ffi::PySet_Type) {
            View::Set(value.cast_unchecked::<PySet>().iter().collect())
        } else if ty == std::ptr::addr_of_mut!(ffi::PyFrozenSet_Type) {
            View::FrozenSet(value.cast_unchecked::<PyFrozenSet>().iter().collect())
        } else {
            return None;
        })
    }
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

fn view_int<'a, 'py>(value: &Bound<'py, PyAny>) -> View<'a, Bound<'py, PyAny>> {
    let mut overflow = 0;
    // SAFETY: `value` is a live int (or int subclass); the call sets no
    // error for an out-of-range value, it reports it in `overflow`.
    let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(value.as_ptr(), &mut overflow) };
    if overflow == 0 && !(n == -1 && unsafe { !ffi::PyErr_Occurred().is_null() }) {
        return View::Int(n);
    }
    // Clear a conversion error, if any, before falling back.
    let _ = PyErr::take(value.py());
    // `hex()`, not `str()`: linear in the size of the number and not
    // capped by `sys.set_int_max_str_digits` (see
    // `KeyWriter::write_big_int`).
    // SAFETY: `value` is a live int (or int subclass); the call returns a
    // new reference or NULL with an exception set.
    let hex = unsafe {
        Bound::from_owned_ptr_or_err(value.py(), ffi::PyNumber_ToBase(value.as_ptr(), 16))
    };
    match hex.as_ref().map(|h| h.extract::<String>()) {
        Ok(Ok(hex)) => View::BigInt(hex),
        _ => View::Unsupported(unsupported(value)),
    }
}

fn view_str<'a, 'py>(value: &'a Bound<'py, PyString>) -> View<'a, Bound<'py, PyAny>> {
    // A compact ASCII string was written by `write_common` (unless too
    // long, which the engine then reports).
    match value.to_str() {
        Ok(text) => View::Str(text),
        // Lone surrogates have no UTF-8 form: keep their exact code points.
        Err(_) => match value
            .call_method1("encode", ("utf-8", "surrogatepass"))
            .and_then(|raw| Ok(raw.cast::<PyBytes>()?.as_bytes().to_vec()))
        {
            Ok(raw) => View::Surrogates(raw),
            Err(_) => View::Unsupported(unsupported(value)),
        },
    }
}

/// Everything that is not an exact built-in type.
#[cold]
fn view_other<'a, 'py>(value: &'a Bound<'py, PyAny>) -> View<'a, Bound<'py, PyAny>> {
    read_other(value).unwrap_or_else(|()| View::Unsupported(unsupported(value)))
}

/// [`view_other`]; `Err`: the value could not be read.
fn read_other<'a, 'py>(value: &'a Bound<'py, PyAny>) -> Result<View<'a, Bound<'py, PyAny>>, ()> {
    let py = value.py();
    // A key field that found nothing (a missing attribute or query
    // parameter) reports CACHE_MISSING.
    if let Ok(hooks) = crate::runtime::hooks(py) {
        if value.is(hooks.missing.bind(py)) {
            return Ok(View::Missing);
        }
    }
    let types = std_types(py).map_err(drop)?;
    let kind = value.get_type();
    let text = |v: &Bound<'_, PyAny>| -> Result<String, ()> {
        Ok(v.str().map_err(drop)?.to_string_lossy().into_owned())
    };
    if is_enum(value, &kind, types) {
        let class = match value_class_path(&kind) {
            Ok(class) => class,
            Err(refused) => return Ok(View::Unsupported(refused)),
        };
        return Ok(View::Enum {
            class,
            value: value.getattr("value").map_err(drop)?,
        });
    }
    // Exact types: a datetime is a date too.
    let iso = || text(&value.call_method0("isoformat").map_err(drop)?);
    if kind.is(types.date.bind(py)) {
        return Ok(View::Date(iso()?));
    }
    for (ty, time) in [(&types.datetime, false), (&types.time, true)] {
        if kind.is(ty.bind(py)) {
            let iso = iso()?;
            let fold: i64 = value
                .getattr("fold")
                .and_then(|f| f.extract())
                .map_err(drop)?;
            let zone = match crate::moment::zone(value, types) {
                Ok(zone) => zone,
                Err(refused) => return Ok(View::Unsupported(refused)),
            };
            return Ok(View::Moment {
                time,
                iso,
                fold,
                zone,
            });
        }
    }
    if kind.is(types.timedelta.bind(py)) {
        return Ok(View::Timedelta(timedelta_parts(value)));
    }
    if kind.is(types.decimal.bind(py)) {
        return Ok(View::Decimal(text(value)?));
    }
    if kind.is(types.uuid.bind(py)) {
        return Ok(View::Uuid(text(value)?));
    }
    // Subclasses of the built-in value types: the class path, then the
    // base value.
    let base = view_builtin::<false>(value).ok_or(())?;
    let class = match value_class_path(&kind) {
        Ok(class) => class,
        Err(refused) => return Ok(View::Unsupported(refused)),
    };
    Ok(View::Subclass {
        class,
        base: Box::new(base),
    })
}

/// Whether `value` is an enum member (`isinstance(value, enum.Enum)`).
#[inline]
fn is_enum(value: &Bound<'_, PyAny>, kind: &Bound<'_, PyType>, types: &StdTypes) -> bool {
    let enum_type = types.enum_type.bind(value.py());
    // SAFETY: both are live type objects. `PyType_IsSubtype` walks the
    // type's MRO in C: when it finds `Enum`, `isinstance` says so too
    // (Enum's metaclass keeps type's `__instancecheck__`, which asks the
    // same first), without the metaclass's method called per value. Only
    // when it does not is `isinstance` asked (a value whose `__class__`
    // names another class).
    let subtype = unsafe { ffi::PyType_IsSubtype(kind.as_type_ptr(), enum_type.as_type_ptr()) };
    subtype != 0 || value.is_instance(enum_type).unwrap_or(false)
}

/// The registry of the classes values are keyed by (the engine's
/// [`ValueClasses`], which owns the rules): a class's dotted path is its
/// own while no other live class has it.
static VALUE_CLASSES: ValueClasses<Py<PyWeakrefReference>> = ValueClasses::new();

/// The dotted path a value of class `kind` is keyed by, or the refusal when
/// another live class has it. Only values of Enum classes and of subclasses
/// of the built-in value types come here; plain values never do.
///
/// The path is read ([`type_path`]) when the class's first value is keyed
/// and kept for the class's life: the registry finds it by the class's
/// identity after that, without formatting anything. A class whose
/// `__module__` or `__qualname__` is reassigned afterwards keeps its keys
/// (and its path, from any other class); one reassigned before its first
/// value is keyed is keyed by its new path.
fn value_class_path(kind: &Bound<'_, PyType>) -> Result<Arc<str>, Unsupported> {
    VALUE_CLASSES.path_for(&PyClasses(kind.py()), kind, || type_path(kind))
}

/// Python classes for the registry: weak references, identity, `gc`.
/// Used attached to the interpreter: with the GIL held (on a build that has
/// one), the registry's lock is never contended, nor held at a fork.
struct PyClasses<'py>(Python<'py>);

impl<'py> ClassHandles for PyClasses<'py> {
    type Class = Bound<'py, PyType>;
    type Ref = Py<PyWeakrefReference>;

    fn downgrade(&self, class: &Self::Class) -> Option<Self::Ref> {
        PyWeakrefReference::new(class).ok().map(Bound::unbind)
    }

    fn upgrade(&self, weak: &Self::Ref) -> Option<Self::Class> {
        // Runs no Python code (the registry's lock is held).
        let class = weak.bind(self.0).upgrade()?;
        // SAFETY: every reference in the registry was made to a class
        // ([`PyClasses::downgrade`] takes only classes).
        Some(unsafe { class.cast_into_unchecked::<PyType>() })
    }

    fn same(&self, a: &Self::Class, b: &Self::Class) -> bool {
        a.is(b)
    }

    fn identity(&self, class: &Self::Class) -> usize {
        // An object's address: no two live objects share it.
        class.as_ptr() as usize
    }

    fn collect_garbage(&self) {
        if let Ok(gc) = self.0.import("gc") {
            let _ = gc.call_method0("collect");
        }
    }

    fn describe(&self, class: &Self::Class) -> String {
        let repr = class
            .repr()
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".to_owned());
        format!("{repr} at {:#x}", class.as_ptr() as usize)
    }
}

/// A `timedelta`'s `(days, seconds, microseconds)`.
pub(crate) fn timedelta_parts(value: &Bound<'_, PyAny>) -> [i64; 3] {
    ["days", "seconds", "microseconds"].map(|part| {
        let part = value.getattr(part).and_then(|v| v.extract::<i64>());
        part.unwrap_or_default()
    })
}

pub(crate) fn unsupported(value: &Bound<'_, PyAny>) -> Unsupported {
    Unsupported {
        what: format!("a value of type '{}'", type_path(&value.get_type())),
        reason: None,
    }
}
