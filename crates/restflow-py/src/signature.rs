//! A function's parameters, and a call bound to them in canonical order.
//!
//! Binding here (rather than with `inspect.Signature.bind` in Python) is
//! what lets a hit skip the interpreter: `f(1)`, `f(x=1)` and `f()` with a
//! default of 1 all write the same bytes, in parameter order, with the
//! defaults encoded once when the function is decorated.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
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
    Unencodable(String),
}

struct Param {
    name: String,
    kind: Kind,
    default: Default,
}

/// The parameters of a decorated function.
pub struct Signature {
    /// Named parameters (everything but `*args` / `**kwargs`), in order.
    params: Vec<Param>,
    /// How many leading `params` take positional arguments.
    positional: usize,
    has_var_positional: bool,
    has_var_keyword: bool,
    /// The first parameter is `self` or `cls`: it identifies the class the
    /// call is made on, and is not part of the arguments key.
    pub method: bool,
    function: String,
}

/// Where the arguments of one call failed to encode.
pub enum BindError {
    /// A Python error to raise as is (a call that does not fit the signature).
    Raise(PyErr),
    /// The argument named `param` has no canonical encoding.
    Unsupported { param: String, what: String },
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
            BindError::Unsupported { param, what } => PyTypeError::new_err(format!(
                "cache_result cannot build a cache key for argument '{param}' of {function}(): \
                 it is {what}, which has no canonical encoding. Pass None, bool, int, float, str, \
                 bytes, a tuple/list/dict/set/frozenset of those, datetime, date, time, \
                 timedelta, Decimal, UUID or an Enum member, or key the argument another way \
                 (a key field or a normalizer that turns it into one of those)."
            )),
        }
    }
}

impl Signature {
    /// Builds the signature from `(name, kind, default, has_default)`
    /// tuples, as `restflow.caching` reads them with `inspect`.
    pub fn new(function: String, spec: &Bound<'_, PyAny>, method: bool) -> PyResult<Self> {
        let mut params = Vec::new();
        let mut has_var_positional = false;
        let mut has_var_keyword = false;
        for item in spec.try_iter()? {
            let (name, kind, default, has_default): (String, u8, Bound<'_, PyAny>, bool) =
                item?.extract()?;
            match Kind::from_int(kind)? {
                Kind::VarPositional => has_var_positional = true,
                Kind::VarKeyword => has_var_keyword = true,
                kind => {
                    let default = if !has_default {
                        Default::Required
                    } else {
                        let mut w = KeyWriter::new();
                        match write_value(&mut w, &default) {
                            Ok(()) => Default::Encoded(w.into_bytes()),
                            Err(Unsupported { what }) => Default::Unencodable(what),
                        }
                    };
                    params.push(Param {
                        name,
                        kind,
                        default,
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
            has_var_positional,
            has_var_keyword,
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
                w.begin_sequence(Sequence::Tuple, 0);
            }
            self.write_default(w, n)?;
        }
        if self.params.len() == self.positional && self.has_var_positional {
            w.begin_sequence(Sequence::Tuple, 0);
        }
        if self.has_var_keyword {
            w.write_unordered(Unordered::Dict, Vec::new());
        }
        Ok(())
    }

    /// Any call: binds like Python does, then writes in parameter order.
    fn write_bound(
        &self,
        w: &mut KeyWriter,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Result<(), BindError> {
        let py = args.py();
        let mut slots: Vec<Option<Bound<'_, PyAny>>> = vec![None; self.params.len()];
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
                let name_str = name
                    .cast::<PyString>()
                    .map_err(PyErr::from)?
                    .to_str()?
                    .to_owned();
                let found = self
                    .params
                    .iter()
                    .position(|p| p.name == name_str && p.kind != Kind::PositionalOnly);
                match found {
                    Some(n) if slots[n].is_some() => {
                        return Err(PyTypeError::new_err(format!(
                            "{}() got multiple values for argument '{name_str}'",
                            self.function
                        ))
                        .into())
                    }
                    Some(n) => slots[n] = Some(value),
                    None if self.has_var_keyword => {
                        let mut pair = KeyWriter::new();
                        pair.write_str(&name_str);
                        write_value(&mut pair, &value).map_err(|e| BindError::Unsupported {
                            param: name_str.clone(),
                            what: e.what,
                        })?;
                        extra_keywords.push(pair);
                    }
                    None => {
                        return Err(PyTypeError::new_err(format!(
                            "{}() got an unexpected keyword argument '{name_str}'",
                            self.function
                        ))
                        .into())
                    }
                }
            }
        }
        let _ = py;
        for (n, slot) in slots.iter().enumerate() {
            if n == self.positional && self.has_var_positional {
                self.write_extra_positional(w, &extra_positional)?;
            }
            match slot {
                Some(value) if self.method && n == 0 => {
                    let _ = value;
                }
                Some(value) => write_value(w, value).map_err(|e| self.unsupported(n, e))?,
                None => self.write_default(w, n)?,
            }
        }
        if self.params.len() == self.positional && self.has_var_positional {
            self.write_extra_positional(w, &extra_positional)?;
        }
        if self.has_var_keyword {
            w.write_unordered(Unordered::Dict, extra_keywords);
        }
        Ok(())
    }

    fn write_extra_positional(
        &self,
        w: &mut KeyWriter,
        extra: &[Bound<'_, PyAny>],
    ) -> Result<(), BindError> {
        w.begin_sequence(Sequence::Tuple, extra.len());
        for (n, value) in extra.iter().enumerate() {
            write_value(w, value).map_err(|e| BindError::Unsupported {
                param: format!("*args[{n}]"),
                what: e.what,
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
            Default::Unencodable(what) => Err(BindError::Unsupported {
                param: self.params[n].name.clone(),
                what: format!("{what} (its default)"),
            }),
        }
    }

    fn missing(&self, n: usize) -> PyErr {
        PyTypeError::new_err(format!(
            "{}() missing required argument: '{}'",
            self.function, self.params[n].name
        ))
    }

    fn unsupported(&self, n: usize, e: Unsupported) -> BindError {
        BindError::Unsupported {
            param: self.params[n].name.clone(),
            what: e.what,
        }
    }
}
