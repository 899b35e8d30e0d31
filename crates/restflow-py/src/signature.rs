//! A Python function's parameters, and a Python call bound to them in
//! canonical order.
//!
//! The parameter model (kinds, defaults, assignment, Python's errors for a
//! call that does not fit, the order values are written in) is the engine's
//! [`restflow_cache::signature`]; this module reads the values from the
//! call's tuple and dict and encodes them.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use restflow_cache::key::KeyWriter;
use restflow_cache::signature::{self as model, Assigned, CallError, Kind, ParamSpec};

use crate::encode::{write_value, Unsupported};

/// The parameters of a decorated function.
pub struct Signature {
    model: model::Signature<Py<PyAny>>,
    /// The first parameter is `self` or `cls`: it identifies the class the
    /// call is made on, and is not part of the arguments key. (A copy of
    /// the model's, read on the hit path.)
    pub method: bool,
}

impl Signature {
    /// Visits the parameters' default objects, for the garbage collector
    /// (see `Core::traverse`).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for default in self.model.default_values() {
            visit.call(default)?;
        }
        Ok(())
    }
}

/// Where the arguments of one call failed to encode.
pub enum BindError {
    /// A Python error to raise as is (a call that does not fit the signature).
    Raise(PyErr),
    /// The argument named `param` has no canonical encoding.
    Unsupported { param: String, value: Unsupported },
}

impl From<PyErr> for BindError {
    fn from(err: PyErr) -> Self {
        BindError::Raise(err)
    }
}

impl From<CallError> for BindError {
    fn from(err: CallError) -> Self {
        BindError::Raise(PyTypeError::new_err(err.to_string()))
    }
}

impl From<model::BindError> for BindError {
    fn from(err: model::BindError) -> Self {
        match err {
            model::BindError::Call(err) => err.into(),
            model::BindError::Unsupported { param, value } => {
                BindError::Unsupported { param, value }
            }
        }
    }
}

impl BindError {
    pub fn into_pyerr(self, function: &str) -> PyErr {
        match self {
            BindError::Raise(err) => err,
            BindError::Unsupported { param, value } => {
                PyTypeError::new_err(value.for_argument(&param, function))
            }
        }
    }
}

/// Writes one argument (a `write_assigned` callback).
fn encode(w: &mut KeyWriter, value: &Bound<'_, PyAny>) -> Result<(), Unsupported> {
    write_value(w, value)
}

impl Signature {
    /// Builds the signature from `(name, kind, default, has_default)`
    /// tuples, as `restflow.caching` reads them with `inspect`; defaults
    /// are encoded once, here.
    pub fn new(function: String, spec: &Bound<'_, PyAny>, method: bool) -> PyResult<Self> {
        let mut params = Vec::new();
        for item in spec.try_iter()? {
            let (name, kind, default, has_default): (String, u8, Bound<'_, PyAny>, bool) =
                item?.extract()?;
            let kind = Kind::from_code(kind).map_err(|e| PyValueError::new_err(e.to_string()))?;
            let default = has_default.then(|| {
                let mut w = KeyWriter::new();
                let encoded = write_value(&mut w, &default).map(|()| w.into_bytes());
                (default.unbind(), encoded)
            });
            params.push(ParamSpec {
                name,
                kind,
                default,
            });
        }
        let model = model::Signature::new(function, params, method)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Signature { model, method })
    }

    /// Writes the arguments of a call, in parameter order and with defaults
    /// filled in, leaving out `self`/`cls` for methods.
    #[inline]
    pub fn write_call(
        &self,
        w: &mut KeyWriter,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Result<(), BindError> {
        let no_kwargs = kwargs.is_none_or(|k| k.is_empty());
        if no_kwargs && args.len() <= self.model.positional() {
            return self.write_positional(w, args);
        }
        self.write_bound(w, args, kwargs)
    }

    /// The common case: positional arguments only, no overflow.
    #[inline]
    fn write_positional(
        &self,
        w: &mut KeyWriter,
        args: &Bound<'_, PyTuple>,
    ) -> Result<(), BindError> {
        Ok(self.model.write_positional(w, args.iter(), encode)?)
    }

    /// [`Signature::write_positional`] for CPython's vectorcall argument
    /// array (plain functions only: no `self` to skip).
    ///
    /// # Safety
    /// Every pointer in `args` is a live object.
    #[inline]
    pub unsafe fn write_positional_raw(
        &self,
        py: Python<'_>,
        w: &mut KeyWriter,
        args: &[*mut pyo3::ffi::PyObject],
    ) -> Result<(), BindError> {
        if args.len() > self.model.positional() || self.method {
            // SAFETY: per the contract.
            let tuple = unsafe { crate::vectorcall::tuple_from_raw(py, args)? };
            return self.write_bound(w, &tuple, None);
        }
        for (n, arg) in args.iter().enumerate() {
            // SAFETY: per the contract.
            if unsafe { crate::encode::write_common(w, *arg) } {
                continue;
            }
            // SAFETY: per the contract.
            let arg = unsafe { Borrowed::from_ptr(py, *arg) };
            crate::encode::write_declined(w, &arg).map_err(|e| self.model.unsupported(n, e))?;
        }
        Ok(self.model.write_tail(w, args.len())?)
    }

    /// Assigns a call's arguments to the parameters, as Python would, with
    /// Python's errors for a call that does not fit.
    fn assign<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> Result<Assigned<Bound<'py, PyAny>>, BindError> {
        let keywords = kwargs
            .into_iter()
            .flat_map(|k| k.iter())
            .map(|(name, value)| {
                let name = name.cast::<PyString>().map_err(PyErr::from)?.to_str()?;
                Ok::<_, BindError>((name.to_owned(), value))
            });
        self.model.assign(args.iter(), keywords)
    }

    /// The parameter names in the order [`Signature::write_call`] writes
    /// their values (`self`/`cls` left out, `*args` after the positional
    /// parameters, `**kwargs` last).
    pub fn value_names(&self) -> Vec<&str> {
        self.model.value_names()
    }

    /// Checks that a partial call fits the signature (no unknown keyword,
    /// no extra positional argument); missing arguments are allowed.
    pub fn check_partial(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Result<(), BindError> {
        self.assign(args, kwargs).map(|_| ())
    }

    /// The position of the named (non-variadic) parameter `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.model.param_index(name)
    }

    /// The values a call gives parameters `indices`: arguments or defaults.
    pub fn argument<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        indices: &[usize],
    ) -> Result<Vec<Bound<'py, PyAny>>, BindError> {
        let py = args.py();
        let assigned = self.assign(args, kwargs)?;
        Ok(self
            .model
            .values_of(&assigned, indices, |d| d.bind(py).clone())?)
    }

    /// Any call: binds like Python does, then writes in parameter order.
    fn write_bound(
        &self,
        w: &mut KeyWriter,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Result<(), BindError> {
        let assigned = self.assign(args, kwargs)?;
        Ok(self.model.write_assigned(w, &assigned, encode)?)
    }

    /// The call as `{parameter: value}` with defaults applied, `*args` as a
    /// tuple and `**kwargs` as a dict under their own names: what key
    /// fields read.
    pub fn bind_to_dict<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> Result<Bound<'py, PyDict>, BindError> {
        let py = args.py();
        let assigned = self.assign(args, kwargs)?;
        let dict = PyDict::new(py);
        for (name, value) in self.model.bound(assigned, |d| d.bind(py).clone())? {
            match value {
                model::Bound::One(value) => dict.set_item(name, value)?,
                model::Bound::Positional(values) => {
                    dict.set_item(name, PyTuple::new(py, values)?)?
                }
                model::Bound::Keywords(items) => dict.set_item(name, items.into_py_dict(py)?)?,
            }
        }
        Ok(dict)
    }
}
