//! A function's parameters, and a call bound to them in canonical order.
//!
//! Binding here (rather than with `inspect.Signature.bind` in Python) is
//! what lets a hit skip the interpreter: `f(1)`, `f(x=1)` and `f()` with a
//! default of 1 all write the same bytes, in parameter order, with the
//! defaults encoded once when the function is decorated.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use restflow_cache::key::{KeyBytes, KeyWriter, Sequence, Unordered};

use crate::encode::{write_value, Unsupported};

/// `inspect.Parameter.kind`, by its integer value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PositionalOnly,
    PositionalOrKeyword,
    VarPositional,
    KeywordOnly,
    VarKeyword,
}

impl Kind {
    fn from_int(n: u8) -> PyResult<Self> {
        Ok(match n {
            0 => Kind::PositionalOnly,
            1 => Kind::PositionalOrKeyword,
            2 => Kind::VarPositional,
            3 => Kind::KeywordOnly,
            4 => Kind::VarKeyword,
            _ => return Err(PyValueError::new_err(format!("unknown parameter kind {n}"))),
        })
    }
}

/// A parameter's default: encoded once, or the reason it cannot be.
enum Default {
    Required,
    Encoded(KeyBytes),
    Unencodable(Unsupported),
}

struct Param {
    name: String,
    kind: Kind,
    default: Default,
    /// The default object itself, for binding a call to a dict.
    default_value: Option<Py<PyAny>>,
}

/// A call assigned to the parameters, before anything is encoded.
struct Assigned<'py> {
    slots: Vec<Option<Bound<'py, PyAny>>>,
    extra_positional: Vec<Bound<'py, PyAny>>,
    extra_keywords: Vec<(String, Bound<'py, PyAny>)>,
}

/// The parameters of a decorated function.
pub struct Signature {
    /// Named parameters (everything but `*args` / `**kwargs`), in order.
    params: Vec<Param>,
    /// How many leading `params` take positional arguments.
    positional: usize,
    has_var_positional: bool,
    has_var_keyword: bool,
    var_positional_name: Option<String>,
    var_keyword_name: Option<String>,
    /// The first parameter is `self` or `cls`: it identifies the class the
    /// call is made on, and is not part of the arguments key.
    pub method: bool,
    function: String,
}

impl Signature {
    /// Visits the parameters' default objects, for the garbage collector
    /// (see `Core::traverse`).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for param in &self.params {
            visit.call(&param.default_value)?;
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

impl BindError {
    pub fn into_pyerr(self, function: &str) -> PyErr {
        match self {
            BindError::Raise(err) => err,
            BindError::Unsupported { param, value } => PyTypeError::new_err(format!(
                "cache_result cannot build a cache key for argument '{param}' of {function}(): \
                 {}",
                value.explain(
                    "Pass None, bool, int, float, str, bytes, a tuple/list/dict/set/frozenset \
                     of those, datetime, date, time, timedelta, Decimal, UUID or an Enum member, \
                     or key the argument another way (a key field or a normalizer that turns it \
                     into one of those)."
                )
            )),
        }
    }
}

impl Signature {
    /// Builds the signature from `(name, kind, default, has_default)`
    /// tuples, as `restflow.caching` reads them with `inspect`.
    pub fn new(function: String, spec: &Bound<'_, PyAny>, method: bool) -> PyResult<Self> {
        let mut params = Vec::new();
        let mut var_positional_name = None;
        let mut var_keyword_name = None;
        for item in spec.try_iter()? {
            let (name, kind, default, has_default): (String, u8, Bound<'_, PyAny>, bool) =
                item?.extract()?;
            match Kind::from_int(kind)? {
                Kind::VarPositional => var_positional_name = Some(name),
                Kind::VarKeyword => var_keyword_name = Some(name),
                kind => {
                    let encoded = if !has_default {
                        Default::Required
                    } else {
                        let mut w = KeyWriter::new();
                        match write_value(&mut w, &default) {
                            Ok(()) => Default::Encoded(w.into_bytes()),
                            Err(unsupported) => Default::Unencodable(unsupported),
                        }
                    };
                    params.push(Param {
                        name,
                        kind,
                        default: encoded,
                        default_value: has_default.then(|| default.clone().unbind()),
                    });
                }
            }
        }
        let positional = params
            .iter()
            .take_while(|p| matches!(p.kind, Kind::PositionalOnly | Kind::PositionalOrKeyword))
            .count();
        if method && positional == 0 {
            return Err(PyValueError::new_err(format!(
                "{function}() is treated as a method but takes no positional 'self' or 'cls'"
            )));
        }
        Ok(Signature {
            params,
            positional,
            has_var_positional: var_positional_name.is_some(),
            has_var_keyword: var_keyword_name.is_some(),
            var_positional_name,
            var_keyword_name,
            method,
            function,
        })
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
        if no_kwargs && args.len() <= self.positional {
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
        let skip = usize::from(self.method);
        for (n, arg) in args.iter().enumerate().skip(skip) {
            write_value(w, &arg).map_err(|e| self.unsupported(n, e))?;
        }
        if self.method && args.is_empty() {
            return Err(self.missing(0).into());
        }
        self.write_tail(w, args.len())
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
        if args.len() > self.positional || self.method {
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
            write_value(w, &arg).map_err(|e| self.unsupported(n, e))?;
        }
        self.write_tail(w, args.len())
    }

    /// Defaults for the parameters after the first `given`, and the empty
    /// `*args` / `**kwargs` a positional-only call leaves.
    #[inline(always)]
    fn write_tail(&self, w: &mut KeyWriter, given: usize) -> Result<(), BindError> {
        if given == self.params.len() && !self.has_var_positional && !self.has_var_keyword {
            return Ok(());
        }
        for n in given..self.params.len() {
            if n == self.positional && self.has_var_positional {
                write_empty(w, Sequence::Tuple);
            }
            self.write_default(w, n)?;
        }
        if self.params.len() == self.positional && self.has_var_positional {
            write_empty(w, Sequence::Tuple);
        }
        if self.has_var_keyword {
            write_empty_dict(w);
        }
        Ok(())
    }

    /// Assigns a call's arguments to the parameters, as Python would, with
    /// Python's errors for a call that does not fit.
    fn assign<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> Result<Assigned<'py>, BindError> {
        let mut slots: Vec<Option<Bound<'py, PyAny>>> = vec![None; self.params.len()];
        let mut extra_positional = Vec::new();
        for (n, arg) in args.iter().enumerate() {
            if n < self.positional {
                slots[n] = Some(arg);
            } else if self.has_var_positional {
                extra_positional.push(arg);
            } else {
                return Err(PyTypeError::new_err(format!(
                    "{}() takes {} positional argument{} but {} were given",
                    self.function,
                    self.positional,
                    if self.positional == 1 { "" } else { "s" },
                    args.len()
                ))
                .into());
            }
        }
        let mut extra_keywords = Vec::new();
        if let Some(kwargs) = kwargs {
            for (name, value) in kwargs.iter() {
                let name = name
                    .cast::<PyString>()
                    .map_err(PyErr::from)?
                    .to_str()?
                    .to_owned();
                let found = self
                    .params
                    .iter()
                    .position(|p| p.name == name && p.kind != Kind::PositionalOnly);
                match found {
                    Some(n) if slots[n].is_some() => {
                        return Err(PyTypeError::new_err(format!(
                            "{}() got multiple values for argument '{name}'",
                            self.function
                        ))
                        .into())
                    }
                    Some(n) => slots[n] = Some(value),
                    None if self.has_var_keyword => extra_keywords.push((name, value)),
                    None => {
                        return Err(PyTypeError::new_err(format!(
                            "{}() got an unexpected keyword argument '{name}'",
                            self.function
                        ))
                        .into())
                    }
                }
            }
        }
        Ok(Assigned {
            slots,
            extra_positional,
            extra_keywords,
        })
    }

    /// The parameter names in the order [`Signature::write_call`] writes
    /// their values (`self`/`cls` left out, `*args` after the positional
    /// parameters, `**kwargs` last).
    pub fn value_names(&self) -> Vec<&str> {
        let mut names = Vec::with_capacity(self.params.len() + 2);
        for (n, param) in self.params.iter().enumerate() {
            if n == self.positional {
                if let Some(name) = &self.var_positional_name {
                    names.push(name.as_str());
                }
            }
            if !(self.method && n == 0) {
                names.push(param.name.as_str());
            }
        }
        if self.params.len() == self.positional {
            if let Some(name) = &self.var_positional_name {
                names.push(name.as_str());
            }
        }
        if let Some(name) = &self.var_keyword_name {
            names.push(name.as_str());
        }
        names
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
        self.params.iter().position(|p| p.name == name)
    }

    /// The value a call gives parameter `n`: its argument or its default.
    pub fn argument<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        indices: &[usize],
    ) -> Result<Vec<Bound<'py, PyAny>>, BindError> {
        let py = args.py();
        let assigned = self.assign(args, kwargs)?;
        let mut values = Vec::with_capacity(indices.len());
        for &n in indices {
            match (&assigned.slots[n], &self.params[n].default_value) {
                (Some(value), _) => values.push(value.clone()),
                (None, Some(default)) => values.push(default.bind(py).clone()),
                (None, None) => return Err(self.missing(n).into()),
            }
        }
        Ok(values)
    }

    /// Any call: binds like Python does, then writes in parameter order.
    fn write_bound(
        &self,
        w: &mut KeyWriter,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Result<(), BindError> {
        let assigned = self.assign(args, kwargs)?;
        for (n, slot) in assigned.slots.iter().enumerate() {
            if n == self.positional && self.has_var_positional {
                self.write_extra_positional(w, &assigned.extra_positional)?;
            }
            match slot {
                Some(_) if self.method && n == 0 => {}
                Some(value) => write_value(w, value).map_err(|e| self.unsupported(n, e))?,
                None => self.write_default(w, n)?,
            }
        }
        if self.params.len() == self.positional && self.has_var_positional {
            self.write_extra_positional(w, &assigned.extra_positional)?;
        }
        if self.has_var_keyword {
            let mut pairs = Vec::with_capacity(assigned.extra_keywords.len());
            for (name, value) in &assigned.extra_keywords {
                let mut pair = KeyWriter::new();
                let written = pair
                    .write_str(name)
                    .map_err(Unsupported::from)
                    .and_then(|()| write_value(&mut pair, value));
                written.map_err(|value| BindError::Unsupported {
                    param: name.clone(),
                    value,
                })?;
                pairs.push(pair);
            }
            w.write_unordered(Unordered::Dict, pairs)
                .map_err(|e| BindError::Unsupported {
                    param: self.var_keyword_name.clone().unwrap_or_default(),
                    value: e.into(),
                })?;
        }
        Ok(())
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
        let bound = PyDict::new(py);
        for (n, slot) in assigned.slots.into_iter().enumerate() {
            let param = &self.params[n];
            match (slot, &param.default_value) {
                (Some(value), _) => bound.set_item(&param.name, value)?,
                (None, Some(default)) => bound.set_item(&param.name, default.bind(py))?,
                (None, None) => return Err(self.missing(n).into()),
            }
        }
        if let Some(name) = &self.var_positional_name {
            bound.set_item(name, PyTuple::new(py, assigned.extra_positional)?)?;
        }
        if let Some(name) = &self.var_keyword_name {
            let extra = PyDict::new(py);
            for (key, value) in assigned.extra_keywords {
                extra.set_item(key, value)?;
            }
            bound.set_item(name, extra)?;
        }
        Ok(bound)
    }

    fn write_extra_positional(
        &self,
        w: &mut KeyWriter,
        extra: &[Bound<'_, PyAny>],
    ) -> Result<(), BindError> {
        w.begin_sequence(Sequence::Tuple, extra.len())
            .map_err(|e| BindError::Unsupported {
                param: self.var_positional_name.clone().unwrap_or_default(),
                value: e.into(),
            })?;
        for (n, value) in extra.iter().enumerate() {
            write_value(w, value).map_err(|value| BindError::Unsupported {
                param: format!("*args[{n}]"),
                value,
            })?;
        }
        Ok(())
    }

    #[inline]
    fn write_default(&self, w: &mut KeyWriter, n: usize) -> Result<(), BindError> {
        match &self.params[n].default {
            Default::Encoded(bytes) => {
                w.write_encoded(bytes);
                Ok(())
            }
            Default::Required => Err(self.missing(n).into()),
            Default::Unencodable(unsupported) => Err(BindError::Unsupported {
                param: self.params[n].name.clone(),
                value: Unsupported {
                    what: format!("{} (its default)", unsupported.what),
                    reason: unsupported.reason.clone(),
                },
            }),
        }
    }

    fn missing(&self, n: usize) -> PyErr {
        PyTypeError::new_err(format!(
            "{}() missing required argument: '{}'",
            self.function, self.params[n].name
        ))
    }

    fn unsupported(&self, n: usize, value: Unsupported) -> BindError {
        BindError::Unsupported {
            param: self.params[n].name.clone(),
            value,
        }
    }
}

/// An empty `*args` tuple.
#[inline(always)]
fn write_empty(w: &mut KeyWriter, kind: Sequence) {
    // Zero items is always within the encoding's limit.
    let _ = w.begin_sequence(kind, 0);
}

/// An empty `**kwargs` dict.
#[inline(always)]
fn write_empty_dict(w: &mut KeyWriter) {
    // Zero items is always within the encoding's limit.
    let _ = w.write_unordered(Unordered::Dict, Vec::new());
}
