//! A function's parameters, and a call bound to them in canonical order.
//!
//! The parameter model of a dynamically typed call (positional-only,
//! positional-or-keyword, `*args`, keyword-only, `**kwargs`, defaults) is
//! the same whatever the language holding the values, so it lives here; an
//! embedder only reads its values and encodes them, through the callbacks
//! these functions take.
//!
//! Binding here, rather than in the embedding language, is what lets a hit
//! skip its interpreter: `f(1)`, `f(x=1)` and `f()` with a default of 1 all
//! write the same bytes, in parameter order, with the defaults encoded once
//! when the function is decorated.
//!
//! Invariants:
//! - values are written in parameter order, `self`/`cls` of a method left
//!   out, `*args` (a tuple) right after the positional parameters and
//!   `**kwargs` (a dict, in canonical order) last; [`Signature::value_names`]
//!   names them in that order;
//! - a call that leaves `*args` or `**kwargs` empty writes an empty tuple or
//!   dict, so `f(1)` and `f(1, *())` are the same key;
//! - a call that does not fit the parameters fails with the message the
//!   embedding language would give ([`CallError`]).

use std::fmt;

use crate::key::{KeyBytes, KeyWriter, Sequence, TooLong, Unordered};

/// A value the encoder cannot represent faithfully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// What was found, for the error message.
    pub what: String,
    /// Why a value of a type the encoder knows is refused (too long, a zone
    /// with no name); `None` for a type it does not know, whose message
    /// lists the types it does.
    pub reason: Option<String>,
}

impl Unsupported {
    /// The end of an error message about this value: `it is …`, and what
    /// to do about it (`types` lists what the caller may pass instead).
    pub fn explain(&self, types: &str) -> String {
        match &self.reason {
            Some(reason) => format!("it is {}: {reason}", self.what),
            None => format!(
                "it is {}, which has no canonical encoding. {types}",
                self.what
            ),
        }
    }
}

impl Unsupported {
    /// The error message for an argument `param` of `function` holding
    /// this value (the default key constructor keys every argument).
    pub fn for_argument(&self, param: &str, function: &str) -> String {
        format!(
            "cache_result cannot build a cache key for argument '{param}' of {function}(): {}",
            self.explain(
                "Pass None, bool, int, float, str, bytes, a tuple/list/dict/set/frozenset \
                 of those, datetime, date, time, timedelta, Decimal, UUID or an Enum member, \
                 or key the argument another way (a key field or a normalizer that turns it \
                 into one of those)."
            )
        )
    }

    /// The error message for the key field `label` of `function` reading
    /// this value.
    pub fn for_field(&self, label: &str, function: &str) -> String {
        format!(
            "cache_result cannot build a cache key for '{label}' of {function}(): {}",
            self.explain(
                "Give the key field a normalizer (or a path) that turns it into None, bool, \
                 int, float, str, bytes, a container of those, a date/time, Decimal, UUID or \
                 an Enum member."
            )
        )
    }
}

impl From<TooLong> for Unsupported {
    fn from(too_long: TooLong) -> Self {
        Unsupported {
            what: format!("a value of {} bytes or items", too_long.len),
            reason: Some(
                "a key part holds at most 4 GiB (4294967295 bytes or items). Key it by \
                 something shorter: an id, or a digest of it (a key field with a normalizer)."
                    .to_owned(),
            ),
        }
    }
}

/// A parameter's kind, numbered as Python's `inspect.Parameter.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Taken by position only.
    PositionalOnly,
    /// Taken by position or by name.
    PositionalOrKeyword,
    /// `*args`: the positional arguments left over.
    VarPositional,
    /// Taken by name only.
    KeywordOnly,
    /// `**kwargs`: the keyword arguments left over.
    VarKeyword,
}

impl Kind {
    /// The kind numbered `n` (0 to 4, in the order of the variants).
    pub fn from_code(n: u8) -> Result<Self, SignatureError> {
        Ok(match n {
            0 => Kind::PositionalOnly,
            1 => Kind::PositionalOrKeyword,
            2 => Kind::VarPositional,
            3 => Kind::KeywordOnly,
            4 => Kind::VarKeyword,
            _ => return Err(SignatureError::UnknownKind(n)),
        })
    }
}

/// Parameters that cannot make a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// A kind number [`Kind::from_code`] does not know.
    UnknownKind(u8),
    /// A function treated as a method with no positional parameter to take
    /// its instance or class.
    NoSelf {
        /// The function's name.
        function: String,
    },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::UnknownKind(n) => write!(f, "unknown parameter kind {n}"),
            SignatureError::NoSelf { function } => write!(
                f,
                "{function}() is treated as a method but takes no positional 'self' or 'cls'"
            ),
        }
    }
}

impl std::error::Error for SignatureError {}

/// A call that does not fit the parameters; its text is the one Python
/// gives for the same call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// More positional arguments than positional parameters, and no `*args`.
    TooManyPositional {
        /// The function's name.
        function: String,
        /// How many positional parameters it has.
        positional: usize,
        /// How many positional arguments the call gave.
        given: usize,
    },
    /// A parameter given by position and by name.
    MultipleValues {
        /// The function's name.
        function: String,
        /// The parameter.
        name: String,
    },
    /// A keyword no parameter takes, and no `**kwargs`.
    UnexpectedKeyword {
        /// The function's name.
        function: String,
        /// The keyword.
        name: String,
    },
    /// A parameter with no default that the call did not give.
    Missing {
        /// The function's name.
        function: String,
        /// The parameter.
        name: String,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::TooManyPositional {
                function,
                positional,
                given,
            } => write!(
                f,
                "{function}() takes {positional} positional argument{} but {given} were given",
                if *positional == 1 { "" } else { "s" },
            ),
            CallError::MultipleValues { function, name } => {
                write!(f, "{function}() got multiple values for argument '{name}'")
            }
            CallError::UnexpectedKeyword { function, name } => {
                write!(
                    f,
                    "{function}() got an unexpected keyword argument '{name}'"
                )
            }
            CallError::Missing { function, name } => {
                write!(f, "{function}() missing required argument: '{name}'")
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Why the arguments of a call could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindError {
    /// The call does not fit the parameters.
    Call(CallError),
    /// The argument of parameter `param` (or `*args[n]`, or a `**kwargs`
    /// keyword) has no canonical encoding.
    Unsupported {
        /// The parameter, as the error names it.
        param: String,
        /// Why its value was refused.
        value: Unsupported,
    },
}

impl From<CallError> for BindError {
    fn from(error: CallError) -> Self {
        BindError::Call(error)
    }
}

/// A parameter's default: encoded once, or the reason it cannot be.
enum Default {
    Required,
    Encoded(KeyBytes),
    Unencodable(Unsupported),
}

/// One parameter as an embedder describes it to [`Signature::new`].
pub struct ParamSpec<D> {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its default, if it has one: the embedder's handle on the default
    /// object (handed back by [`Signature::value_of`]), and its encoding or
    /// why it has none (an error only once a call relies on it).
    pub default: Option<(D, Result<KeyBytes, Unsupported>)>,
}

struct Param<D> {
    name: String,
    kind: Kind,
    default: Default,
    /// The default object itself, for handing a call's values back.
    default_value: Option<D>,
}

/// A call's arguments assigned to the parameters, before anything is
/// encoded: `slots[n]` is parameter `n`'s argument, when the call gave one.
pub struct Assigned<V> {
    /// One slot per named parameter, in order.
    pub slots: Vec<Option<V>>,
    /// The positional arguments `*args` takes.
    pub extra_positional: Vec<V>,
    /// The keyword arguments `**kwargs` takes, in call order.
    pub extra_keywords: Vec<(String, V)>,
}

/// What one parameter of a bound call ([`Signature::bound`]) holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Bound<V> {
    /// A named parameter's argument or default.
    One(V),
    /// What `*args` takes.
    Positional(Vec<V>),
    /// What `**kwargs` takes, in call order.
    Keywords(Vec<(String, V)>),
}

/// The parameters of a function; `D` is the embedder's handle on a
/// default object (a Python object, say).
pub struct Signature<D> {
    /// Named parameters (everything but `*args` / `**kwargs`), in order.
    params: Vec<Param<D>>,
    /// How many leading `params` take positional arguments.
    positional: usize,
    has_var_positional: bool,
    has_var_keyword: bool,
    var_positional_name: Option<String>,
    var_keyword_name: Option<String>,
    /// The first parameter is `self` or `cls`: it identifies the class the
    /// call is made on, and is not part of the arguments key.
    method: bool,
    function: String,
}

impl<D> Signature<D> {
    /// The signature of `function` from its parameters in declaration
    /// order; `method` says its first parameter is `self` or `cls`.
    pub fn new(
        function: String,
        specs: impl IntoIterator<Item = ParamSpec<D>>,
        method: bool,
    ) -> Result<Self, SignatureError> {
        let mut params = Vec::new();
        let mut var_positional_name = None;
        let mut var_keyword_name = None;
        for spec in specs {
            match spec.kind {
                Kind::VarPositional => var_positional_name = Some(spec.name),
                Kind::VarKeyword => var_keyword_name = Some(spec.name),
                kind => {
                    let (default, default_value) = match spec.default {
                        None => (Default::Required, None),
                        Some((value, Ok(encoded))) => (Default::Encoded(encoded), Some(value)),
                        Some((value, Err(why))) => (Default::Unencodable(why), Some(value)),
                    };
                    params.push(Param {
                        name: spec.name,
                        kind,
                        default,
                        default_value,
                    });
                }
            }
        }
        let positional = params
            .iter()
            .take_while(|p| matches!(p.kind, Kind::PositionalOnly | Kind::PositionalOrKeyword))
            .count();
        if method && positional == 0 {
            return Err(SignatureError::NoSelf { function });
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

    /// Whether the first parameter is `self` or `cls`.
    #[inline(always)]
    pub fn method(&self) -> bool {
        self.method
    }

    /// How many parameters take positional arguments: a call with no more
    /// positional arguments than this and no keywords can be written by
    /// [`Signature::write_tail`] after its arguments, with no binding.
    #[inline(always)]
    pub fn positional(&self) -> usize {
        self.positional
    }

    /// The function's name, as errors give it.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The default objects, for an embedder's garbage collector.
    pub fn default_values(&self) -> impl Iterator<Item = &D> {
        self.params.iter().filter_map(|p| p.default_value.as_ref())
    }

    /// The named parameters' names, in order (`*args`/`**kwargs` left out).
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// The names of `*args` and `**kwargs`, when the function takes them.
    pub fn var_names(&self) -> (Option<&str>, Option<&str>) {
        (
            self.var_positional_name.as_deref(),
            self.var_keyword_name.as_deref(),
        )
    }

    /// The position of the named (non-variadic) parameter `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// The parameter names in the order the call's values are written
    /// (`self`/`cls` left out, `*args` after the positional parameters,
    /// `**kwargs` last).
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

    /// Assigns a call's arguments to the parameters, as Python would, with
    /// Python's errors for a call that does not fit. `kwargs` yields each
    /// keyword and its value, or the embedder's error reading it (returned
    /// as is, at the point it comes).
    pub fn assign<V, E: From<CallError>>(
        &self,
        args: impl ExactSizeIterator<Item = V>,
        kwargs: impl IntoIterator<Item = Result<(String, V), E>>,
    ) -> Result<Assigned<V>, E> {
        let given = args.len();
        let mut slots: Vec<Option<V>> = Vec::with_capacity(self.params.len());
        slots.resize_with(self.params.len(), || None);
        let mut extra_positional = Vec::new();
        for (n, arg) in args.enumerate() {
            if n < self.positional {
                slots[n] = Some(arg);
            } else if self.has_var_positional {
                extra_positional.push(arg);
            } else {
                return Err(CallError::TooManyPositional {
                    function: self.function.clone(),
                    positional: self.positional,
                    given,
                }
                .into());
            }
        }
        let mut extra_keywords = Vec::new();
        for keyword in kwargs {
            let (name, value) = keyword?;
            let found = self
                .params
                .iter()
                .position(|p| p.name == name && p.kind != Kind::PositionalOnly);
            match found {
                Some(n) if slots[n].is_some() => {
                    return Err(CallError::MultipleValues {
                        function: self.function.clone(),
                        name,
                    }
                    .into())
                }
                Some(n) => slots[n] = Some(value),
                None if self.has_var_keyword => extra_keywords.push((name, value)),
                None => {
                    return Err(CallError::UnexpectedKeyword {
                        function: self.function.clone(),
                        name,
                    }
                    .into())
                }
            }
        }
        Ok(Assigned {
            slots,
            extra_positional,
            extra_keywords,
        })
    }

    /// The value an assigned call gives parameter `n`: its argument, or
    /// `default` of its default object.
    pub fn value_of<V: Clone>(
        &self,
        assigned: &Assigned<V>,
        n: usize,
        default: impl FnOnce(&D) -> V,
    ) -> Result<V, CallError> {
        match (&assigned.slots[n], &self.params[n].default_value) {
            (Some(value), _) => Ok(value.clone()),
            (None, Some(value)) => Ok(default(value)),
            (None, None) => Err(self.missing(n)),
        }
    }

    /// The values an assigned call gives parameters `indices`, in that
    /// order (see [`Signature::value_of`]): what a key plan reads.
    pub fn values_of<V: Clone>(
        &self,
        assigned: &Assigned<V>,
        indices: &[usize],
        default: impl Fn(&D) -> V,
    ) -> Result<Vec<V>, CallError> {
        indices
            .iter()
            .map(|&n| self.value_of(assigned, n, &default))
            .collect()
    }

    /// An assigned call bound to every parameter by name, as Python's
    /// `BoundArguments` with defaults applied: each named parameter's value
    /// in order, then what `*args` and `**kwargs` take (empty when the call
    /// gave them nothing). What key fields read.
    #[allow(clippy::type_complexity)]
    pub fn bound<V: Clone>(
        &self,
        assigned: Assigned<V>,
        default: impl Fn(&D) -> V,
    ) -> Result<Vec<(&str, Bound<V>)>, CallError> {
        let mut bound = Vec::with_capacity(self.params.len() + 2);
        for n in 0..self.params.len() {
            let value = self.value_of(&assigned, n, &default)?;
            bound.push((self.params[n].name.as_str(), Bound::One(value)));
        }
        let (var_positional, var_keyword) = self.var_names();
        if let Some(name) = var_positional {
            bound.push((name, Bound::Positional(assigned.extra_positional)));
        }
        if let Some(name) = var_keyword {
            bound.push((name, Bound::Keywords(assigned.extra_keywords)));
        }
        Ok(bound)
    }

    /// Writes an assigned call in parameter order, each argument through
    /// `encode`, the defaults from their encodings made at [`Signature::new`].
    pub fn write_assigned<V>(
        &self,
        w: &mut KeyWriter,
        assigned: &Assigned<V>,
        mut encode: impl FnMut(&mut KeyWriter, &V) -> Result<(), Unsupported>,
    ) -> Result<(), BindError> {
        for (n, slot) in assigned.slots.iter().enumerate() {
            if n == self.positional && self.has_var_positional {
                self.write_extra_positional(w, &assigned.extra_positional, &mut encode)?;
            }
            match slot {
                Some(_) if self.method && n == 0 => {}
                Some(value) => encode(w, value).map_err(|e| self.unsupported(n, e))?,
                None => self.write_default(w, n)?,
            }
        }
        if self.params.len() == self.positional && self.has_var_positional {
            self.write_extra_positional(w, &assigned.extra_positional, &mut encode)?;
        }
        if self.has_var_keyword {
            let mut pairs = Vec::with_capacity(assigned.extra_keywords.len());
            for (name, value) in &assigned.extra_keywords {
                let mut pair = KeyWriter::new();
                let written = pair
                    .write_str(name)
                    .map_err(Unsupported::from)
                    .and_then(|()| encode(&mut pair, value));
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

    fn write_extra_positional<V>(
        &self,
        w: &mut KeyWriter,
        extra: &[V],
        encode: &mut impl FnMut(&mut KeyWriter, &V) -> Result<(), Unsupported>,
    ) -> Result<(), BindError> {
        w.begin_sequence(Sequence::Tuple, extra.len())
            .map_err(|e| BindError::Unsupported {
                param: self.var_positional_name.clone().unwrap_or_default(),
                value: e.into(),
            })?;
        for (n, value) in extra.iter().enumerate() {
            encode(w, value).map_err(|value| BindError::Unsupported {
                param: format!("*args[{n}]"),
                value,
            })?;
        }
        Ok(())
    }

    /// Writes a call made only of positional arguments (at most
    /// [`Signature::positional`], no keywords), each through `encode`,
    /// leaving out a method's `self`/`cls`, then its [`Signature::write_tail`].
    #[inline(always)]
    pub fn write_positional<V>(
        &self,
        w: &mut KeyWriter,
        args: impl ExactSizeIterator<Item = V>,
        mut encode: impl FnMut(&mut KeyWriter, &V) -> Result<(), Unsupported>,
    ) -> Result<(), BindError> {
        let given = args.len();
        for (n, arg) in args.enumerate().skip(usize::from(self.method)) {
            encode(w, &arg).map_err(|e| self.unsupported(n, e))?;
        }
        if self.method && given == 0 {
            return Err(self.missing(0).into());
        }
        self.write_tail(w, given)
    }

    /// After the first `given` arguments of a call made only of positional
    /// arguments (at most [`Signature::positional`]), already written:
    /// the defaults of the parameters after them, and the empty `*args` /
    /// `**kwargs` such a call leaves.
    #[inline(always)]
    pub fn write_tail(&self, w: &mut KeyWriter, given: usize) -> Result<(), BindError> {
        if given == self.params.len() && !self.has_var_positional && !self.has_var_keyword {
            return Ok(());
        }
        for n in given..self.params.len() {
            if n == self.positional && self.has_var_positional {
                write_empty_tuple(w);
            }
            self.write_default(w, n)?;
        }
        if self.params.len() == self.positional && self.has_var_positional {
            write_empty_tuple(w);
        }
        if self.has_var_keyword {
            write_empty_dict(w);
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

    /// The error for a call that gives parameter `n` no value.
    pub fn missing(&self, n: usize) -> CallError {
        CallError::Missing {
            function: self.function.clone(),
            name: self.params[n].name.clone(),
        }
    }

    /// The error for parameter `n`'s argument, which has no encoding.
    pub fn unsupported(&self, n: usize, value: Unsupported) -> BindError {
        BindError::Unsupported {
            param: self.params[n].name.clone(),
            value,
        }
    }
}

/// An empty `*args` tuple.
#[inline(always)]
fn write_empty_tuple(w: &mut KeyWriter) {
    // Zero items is always within the encoding's limit.
    let _ = w.begin_sequence(Sequence::Tuple, 0);
}

/// An empty `**kwargs` dict.
#[inline(always)]
fn write_empty_dict(w: &mut KeyWriter) {
    // Zero items is always within the encoding's limit.
    let _ = w.write_unordered(Unordered::Dict, Vec::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_value_says_where_it_was_and_what_to_pass() {
        let unknown = Unsupported {
            what: "a value of type 'app.User'".to_owned(),
            reason: None,
        };
        let argument = unknown.for_argument("user", "app.views.f");
        assert!(argument.starts_with(
            "cache_result cannot build a cache key for argument 'user' of app.views.f(): \
             it is a value of type 'app.User', which has no canonical encoding. Pass None,"
        ));
        let field = unknown.for_field("org", "app.views.f");
        assert!(field.starts_with(
            "cache_result cannot build a cache key for 'org' of app.views.f(): it is"
        ));
        assert!(field.ends_with("Decimal, UUID or an Enum member."));
        // A known type refused for a reason gives the reason, not the list.
        let too_long = Unsupported::from(TooLong { len: 1 << 33 });
        assert!(!too_long
            .for_field("org", "f")
            .contains("normalizer (or a path)"));
    }

    /// `def f(a, /, b, *args, c, d=7, **kwargs)`, the default of `d` the
    /// handle `"seven"`.
    fn full() -> Signature<&'static str> {
        let mut seven = KeyWriter::new();
        seven.write_int(7);
        let spec = |name: &str, kind, default| ParamSpec {
            name: name.to_owned(),
            kind,
            default,
        };
        Signature::new(
            "f".to_owned(),
            [
                spec("a", Kind::PositionalOnly, None),
                spec("b", Kind::PositionalOrKeyword, None),
                spec("args", Kind::VarPositional, None),
                spec("c", Kind::KeywordOnly, None),
                spec(
                    "d",
                    Kind::KeywordOnly,
                    Some(("seven", Ok(seven.into_bytes()))),
                ),
                spec("kwargs", Kind::VarKeyword, None),
            ],
            false,
        )
        .unwrap()
    }

    fn int(w: &mut KeyWriter, v: &i64) -> Result<(), Unsupported> {
        w.write_int(*v);
        Ok(())
    }

    fn keywords(pairs: &[(&str, i64)]) -> Vec<Result<(String, i64), CallError>> {
        pairs.iter().map(|(k, v)| Ok((k.to_string(), *v))).collect()
    }

    fn write(sig: &Signature<&str>, args: &[i64], kwargs: &[(&str, i64)]) -> Vec<u8> {
        let assigned = sig.assign(args.iter().copied(), keywords(kwargs)).unwrap();
        let mut w = KeyWriter::new();
        sig.write_assigned(&mut w, &assigned, int).unwrap();
        w.as_bytes().to_vec()
    }

    #[test]
    fn a_bound_call_names_every_parameter_then_args_and_kwargs() {
        let sig = full();
        let assigned = sig.assign([1, 2, 8].into_iter(), keywords(&[("c", 3), ("x", 4)]));
        let bound = sig.bound(assigned.unwrap(), |seven| seven.len() as i64);
        let expected = [
            ("a", Bound::One(1)),
            ("b", Bound::One(2)),
            ("c", Bound::One(3)),
            ("d", Bound::One(5)), // the default's handle, through `default`
            ("args", Bound::Positional(vec![8])),
            ("kwargs", Bound::Keywords(vec![("x".to_owned(), 4)])),
        ];
        assert_eq!(bound.unwrap(), expected);
        // A parameter the call gives no value is Python's error.
        let partial = sig.assign([1].into_iter(), keywords(&[("c", 3)])).unwrap();
        let missing = sig.bound(partial, |_| 0).unwrap_err();
        assert_eq!(missing.to_string(), sig.missing(1).to_string());
    }

    #[test]
    fn values_are_written_in_parameter_order_with_defaults_and_empty_varargs() {
        let sig = full();
        let mut expected = KeyWriter::new();
        expected.write_int(1);
        expected.write_int(2);
        write_empty_tuple(&mut expected);
        expected.write_int(3);
        expected.write_int(7);
        write_empty_dict(&mut expected);
        assert_eq!(write(&sig, &[1, 2], &[("c", 3)]), expected.as_bytes());
        // The same call with `b` by keyword and the keywords reordered.
        assert_eq!(
            write(&sig, &[1], &[("c", 3), ("b", 2)]),
            expected.as_bytes()
        );
        assert_eq!(
            sig.value_names(),
            ["a", "b", "args", "c", "d", "kwargs"],
            "the names follow the written order"
        );
    }

    #[test]
    fn leftover_arguments_go_to_args_and_kwargs_in_canonical_order() {
        let sig = full();
        assert_eq!(
            write(&sig, &[1, 2, 8, 9], &[("c", 3), ("y", 5), ("x", 4)]),
            write(&sig, &[1, 2, 8, 9], &[("x", 4), ("c", 3), ("y", 5)]),
        );
        assert_ne!(
            write(&sig, &[1, 2, 8], &[("c", 3)]),
            write(&sig, &[1, 2], &[("c", 3)]),
        );
    }

    #[test]
    fn a_positional_call_with_tail_writes_what_a_bound_call_writes() {
        // `def g(x, y=7)`: `g(1)` on the fast path equals `g(y=7, x=1)`.
        let mut seven = KeyWriter::new();
        seven.write_int(7);
        let sig: Signature<&str> = Signature::new(
            "g".to_owned(),
            [
                ParamSpec {
                    name: "x".into(),
                    kind: Kind::PositionalOrKeyword,
                    default: None,
                },
                ParamSpec {
                    name: "y".into(),
                    kind: Kind::PositionalOrKeyword,
                    default: Some(("seven", Ok(seven.into_bytes()))),
                },
            ],
            false,
        )
        .unwrap();
        let mut fast = KeyWriter::new();
        fast.write_int(1);
        sig.write_tail(&mut fast, 1).unwrap();
        assert_eq!(fast.as_bytes(), write(&sig, &[], &[("y", 7), ("x", 1)]));
        assert_eq!(
            sig.write_tail(&mut KeyWriter::new(), 0),
            Err(BindError::Call(CallError::Missing {
                function: "g".into(),
                name: "x".into()
            }))
        );
    }

    #[test]
    fn calls_that_do_not_fit_fail_with_pythons_messages() {
        let sig = full();
        let err = |args: &[i64], kwargs: &[(&str, i64)]| {
            sig.assign(args.iter().copied(), keywords(kwargs))
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            err(&[1], &[("a", 1)]).as_deref(),
            None,
            "a positional-only name is free for **kwargs"
        );
        assert_eq!(
            err(&[1, 2], &[("b", 2)]).as_deref(),
            Some("f() got multiple values for argument 'b'")
        );
        let assigned = sig.assign([1].into_iter(), keywords(&[])).unwrap();
        assert_eq!(
            sig.value_of(&assigned, 1, |_| 0).unwrap_err().to_string(),
            "f() missing required argument: 'b'"
        );
        assert_eq!(sig.value_of(&assigned, 3, |d| d.len() as i64), Ok(5));
        let full_call = sig.assign([1, 2].into_iter(), keywords(&[])).unwrap();
        assert_eq!(sig.values_of(&full_call, &[3, 0], |_| 7), Ok(vec![7, 1]));
        assert!(sig.values_of(&assigned, &[0, 1], |_| 7).is_err());

        let strict: Signature<()> = Signature::new(
            "h".into(),
            [ParamSpec {
                name: "x".into(),
                kind: Kind::PositionalOrKeyword,
                default: None,
            }],
            false,
        )
        .unwrap();
        let err = |args: &[i64], kwargs: &[(&str, i64)]| {
            strict
                .assign(args.iter().copied(), keywords(kwargs))
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err(&[1, 2], &[]),
            "h() takes 1 positional argument but 2 were given"
        );
        assert_eq!(
            err(&[], &[("z", 1)]),
            "h() got an unexpected keyword argument 'z'"
        );
    }

    #[test]
    fn a_method_leaves_out_self_and_needs_a_positional_parameter() {
        let param = |name: &str, kind| ParamSpec::<()> {
            name: name.into(),
            kind,
            default: None,
        };
        let sig = Signature::new(
            "m".into(),
            [
                param("self", Kind::PositionalOrKeyword),
                param("x", Kind::PositionalOrKeyword),
            ],
            true,
        )
        .unwrap();
        assert_eq!(sig.value_names(), ["x"]);
        let assigned = sig.assign([100, 1].into_iter(), keywords(&[])).unwrap();
        let mut w = KeyWriter::new();
        sig.write_assigned(&mut w, &assigned, int).unwrap();
        let mut expected = KeyWriter::new();
        expected.write_int(1);
        assert_eq!(w.as_bytes(), expected.as_bytes());
        // The positional fast path writes the same, and a call with no
        // `self` at all misses it.
        let mut fast = KeyWriter::new();
        sig.write_positional(&mut fast, [100, 1].into_iter(), int)
            .unwrap();
        assert_eq!(fast.as_bytes(), expected.as_bytes());
        assert_eq!(
            sig.write_positional(&mut KeyWriter::new(), std::iter::empty(), int),
            Err(BindError::Call(sig.missing(0)))
        );
        assert_eq!(
            Signature::new("m".into(), [param("x", Kind::KeywordOnly)], true)
                .err()
                .unwrap()
                .to_string(),
            "m() is treated as a method but takes no positional 'self' or 'cls'"
        );
        assert_eq!(
            Kind::from_code(9).unwrap_err().to_string(),
            "unknown parameter kind 9"
        );
    }

    #[test]
    fn unencodable_values_and_defaults_name_their_parameter() {
        let refuse = |_: &mut KeyWriter, _: &i64| {
            Err(Unsupported {
                what: "a thing".into(),
                reason: None,
            })
        };
        let sig = full();
        let assigned = sig
            .assign([1, 2, 3].into_iter(), keywords(&[("c", 3)]))
            .unwrap();
        match sig.write_assigned(&mut KeyWriter::new(), &assigned, refuse) {
            Err(BindError::Unsupported { param, .. }) => assert_eq!(param, "a"),
            other => panic!("unexpected {other:?}"),
        }
        let unencodable: Signature<()> = Signature::new(
            "u".into(),
            [ParamSpec {
                name: "x".into(),
                kind: Kind::PositionalOrKeyword,
                default: Some((
                    (),
                    Err(Unsupported {
                        what: "an object".into(),
                        reason: None,
                    }),
                )),
            }],
            false,
        )
        .unwrap();
        match unencodable.write_tail(&mut KeyWriter::new(), 0) {
            Err(BindError::Unsupported { param, value }) => {
                assert_eq!(param, "x");
                assert_eq!(value.what, "an object (its default)");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
