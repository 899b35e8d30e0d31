//! What every view of one decorated function shares: the function, its
//! signature, how long its values live, and how a call becomes a key.
//!
//! A call becomes a key in one of two ways:
//!
//! * **arguments** (the default key constructor): every bound argument,
//!   encoded straight from the call, with no Python code run;
//! * **fields** (a key constructor): Python reads the key fields from the
//!   bound arguments and hands back `(partition_items, suffix_items)`, each
//!   item `(label, value, hashed, sort_lists)`; the values are encoded here.
//!
//! The in-process key is `[scope word][class word?][partition generation?]
//! [partition][suffix]`: the scope word carries the scope's generation, so
//! `invalidate_all` is one increment, and the partition's generation comes
//! from the scope's table, so dropping a partition is one increment too.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};
use restflow_cache::key::KeyWriter;
use restflow_cache::layout::{self, render_labelled, Classes, Labels};
use restflow_cache::shared::FunctionKeys;
use restflow_cache::{Computed, Lifetimes, Scope, Span};

use crate::encode::{type_path, PyValues};
use crate::once::Attached;
use crate::runtime::{log_error, ScopeLabels, RUNTIME};
use crate::signature::Signature;
use crate::stored::Stored;

/// The class a method is called on (the engine's, holding the type so its
/// address is never reused for another while registered).
pub(crate) type ClassId = layout::ClassId<Py<PyType>>;

/// Where the parts of a written key are, for rendering its string.
pub(crate) type Layout = layout::Layout<Py<PyType>>;

/// The items of a key constructor made only of planned fields (the
/// engine's plan: fields that read a named argument or a constant).
pub(crate) use restflow_cache::layout::Plan;
use restflow_cache::layout::{FieldError, FieldValues, Item, Partial, PlanError, PlanSpec};

/// Builds a plan from Python's `(partition, suffix)` lists of
/// `(label, kind, payload, hashed, sort_lists)`, kind `"arg"` (payload:
/// the parameter name) or `"const"` (payload: the value).
pub(crate) fn read_plan<'py>(
    signature: &Signature,
    spec: &Bound<'py, PyAny>,
    function_id: &str,
) -> PyResult<Plan> {
    let (partition, suffix): (Bound<'py, PyAny>, Bound<'py, PyAny>) = spec.extract()?;
    let specs = |list: &Bound<'py, PyAny>| {
        let spec = |item: PyResult<Bound<'py, PyAny>>| {
            let (label, kind, payload, hashed, sort_lists): (_, String, Bound<'py, PyAny>, _, _) =
                item?.extract()?;
            let source = match kind.as_str() {
                "arg" => Ok(payload.extract()?),
                "const" => Err(payload),
                other => {
                    let message = format!("unknown plan item {other:?}");
                    return Err(PyValueError::new_err(message));
                }
            };
            Ok(PlanSpec {
                label,
                source,
                hashed,
                sort_lists,
            })
        };
        list.try_iter()?.map(spec).collect::<PyResult<Vec<_>>>()
    };
    let param_index = |name: &str| signature.param_index(name);
    let plan = Plan::read(
        &PyValues::new(),
        param_index,
        specs(&partition)?,
        specs(&suffix)?,
    );
    plan.map_err(|error| match error {
        PlanError::Field(error) => field_error(error, function_id),
        PlanError::NoParam(_) => PyValueError::new_err(error.message(function_id)),
    })
}

/// The Python side of a key constructor.
pub(crate) struct Fields {
    /// `build(bound_arguments) -> (partition_items, suffix_items)`.
    pub build: Py<PyAny>,
    /// `partition(args, kwargs) -> partition_items`, binding partially:
    /// what `delete_by_prefix` and `wipe` use.
    pub partition: Py<PyAny>,
    /// Whether the constructor has partition fields at all.
    pub partitioned: bool,
    /// Set when every field can be read without Python.
    pub plan: Option<Plan>,
}

/// Arguments of one call, with a bound method's instance in front.
pub(crate) struct Call<'py> {
    pub args: Bound<'py, PyTuple>,
    pub kwargs: Option<Bound<'py, PyDict>>,
}

/// A [`Call`] that can cross into detached code and back (a background
/// refresh, a computation run from a store's callback).
pub(crate) struct OwnedCall {
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
}

impl OwnedCall {
    pub fn new(call: &Call<'_>) -> Self {
        OwnedCall {
            args: call.args.clone().unbind(),
            kwargs: call.kwargs.as_ref().map(|k| k.clone().unbind()),
        }
    }

    pub fn bind<'py>(&self, py: Python<'py>) -> Call<'py> {
        Call {
            args: self.args.bind(py).clone(),
            kwargs: self.kwargs.as_ref().map(|k| k.bind(py).clone()),
        }
    }
}

pub(crate) struct Core {
    pub func: Py<PyAny>,
    /// `(result, args, kwargs) -> Decision` (`store`, `ttl` seconds or None), built by
    /// `restflow.caching` from `cache_if`, `cache_unless` and a callable ttl.
    pub policy: Option<Py<PyAny>>,
    /// The ttl, stale and stale-if-error windows and early refresh the
    /// decorator chose (the engine's, which falls back on the settings).
    pub lifetimes: Lifetimes,
    pub signature: Signature,
    pub scope: Arc<Scope<ScopeLabels>>,
    /// `<namespace>` or `<namespace>:v<version>`.
    pub namespace: String,
    /// `module.qualname`, or the constructor's key identifier.
    pub function_id: String,
    /// A key identifier names the entries: methods of different classes
    /// share them too, so no class goes into the key.
    pub shared_identity: bool,
    pub fields: Option<Fields>,
    pub classes: Classes<Py<PyType>>,
    /// How this function's keys and counters are named in a shared store
    /// (the digests computed once, since every shared call names them).
    pub keys: FunctionKeys,
    /// Which store: the `BACKEND` setting, the memory store, or a named one.
    pub backend: BackendChoice,
    /// Whether calls on a shared store use its near cache; `None`: the
    /// `NEAR_CACHE` setting.
    pub near_cache: Option<bool>,
    /// Set once `SERIALIZER="json"` refused a value of this function and
    /// said so (see `shared::log_json_refusal`).
    pub json_refusal_logged: std::sync::atomic::AtomicBool,
    /// For a function whose identity other live functions can have (made
    /// inside a function, or a lambda): `claim()` registers it as the one
    /// function that identity's key strings name across processes, or
    /// raises when another live function holds them. Its memory entries
    /// are its own anyway (a scope of its own); only key strings, which a
    /// shared store sees, need the name to be unambiguous.
    pub claim: Option<Py<PyAny>>,
    /// Set once `claim` succeeded.
    pub claimed: crate::once::OnceValue<()>,
    /// For a method: `check(cls)`, run once per class a call's `self` is an
    /// instance of, before the class is registered; raises for a class
    /// whose instances must not share entries (a model's rows: see
    /// `restflow.caching.decorators.check_receiver`).
    pub receiver_check: Option<Py<PyAny>>,
    /// `serves(value, args, kwargs) -> bool`: whether a call may be answered
    /// with the value found for its key (`cache_response`: whether the
    /// entry's `Vary` headers match the call's request). A call it may not
    /// answer never refreshes that value: a stale (or early-refreshed)
    /// entry's refresh runs with the call that claimed it, so a call of
    /// another variant would replace the entry with its own. `None`: every
    /// call may.
    pub serves: Option<Py<PyAny>>,
    /// Counts and latencies of this function's calls (`wrapper.stats()`);
    /// shared with the `Counts` handles exporters keep (`wrapper.counts()`),
    /// which read the final counts once the wrapper is gone.
    pub stats: Arc<restflow_cache::Stats>,
}

/// The store a wrapper uses.
pub(crate) use restflow_cache::settings::BackendChoice;

impl Core {
    pub fn class_id(&self, first: &Bound<'_, PyAny>) -> PyResult<Arc<ClassId>> {
        let (ty, instance) = match first.cast::<PyType>() {
            Ok(cls) => (cls.clone(), false),
            Err(_) => (first.get_type(), true),
        };
        // Keyed by the type's address: the registry holds the type, so the
        // address is never another's while registered.
        self.classes.get_or_register(ty.as_ptr() as usize, || {
            if let (true, Some(check)) = (instance, &self.receiver_check) {
                check.bind(first.py()).call1((&ty,))?;
            }
            let func = self.func.bind(first.py());
            let name: String = func.getattr("__name__")?.extract()?;
            let mut id = format!("{}.{name}", type_path(&ty));
            if self.is_overridden_in(&ty, &name)? {
                // Reached through `super()` (or called as `Base.method(obj)`)
                // on a class whose own `name` is another function: the plain
                // `module.Class.method` names that one's entries, so this
                // function's carry its own dotted path too.
                let module: String = func.getattr("__module__")?.extract()?;
                let qualname: String = func.getattr("__qualname__")?.extract()?;
                id = format!("{id}[{module}.{qualname}]");
            }
            Ok(ClassId::new(id, ty.clone().unbind()))
        })
    }

    /// Whether `ty.name` (looked up along the class's MRO, as attribute
    /// access does) is something other than this function's wrapper (the
    /// wrapper itself, under a `classmethod`, or inside the async or
    /// response wrapper that keeps it: `_engine`, `cached_render`). A class
    /// without that attribute names no other function: `false`, the plain
    /// name. Run once per class.
    fn is_overridden_in(&self, ty: &Bound<'_, PyType>, name: &str) -> PyResult<bool> {
        for klass in ty.mro().iter() {
            let Ok(found) = klass.getattr("__dict__")?.get_item(name) else {
                continue;
            };
            let found = match found.getattr("__func__") {
                Ok(inner) => inner,
                Err(_) => found,
            };
            let mut candidates = vec![found.clone()];
            for inner in ["cached_render", "_engine"] {
                let last = candidates.last().expect("one at least").clone();
                if let Ok(next) = last.getattr(inner) {
                    candidates.push(next);
                }
            }
            return Ok(!candidates.iter().any(|candidate| {
                candidate
                    .cast::<crate::wrapper::CachedWrapper>()
                    .is_ok_and(|wrapper| std::ptr::eq(Arc::as_ptr(wrapper.borrow().core()), self))
            }));
        }
        Ok(false)
    }

    /// Makes sure this function may use key strings: see [`Core::claim`].
    /// One atomic read once it succeeded.
    pub fn claim_shared_keys(&self, py: Python<'_>) -> PyResult<()> {
        let Some(claim) = &self.claim else {
            return Ok(());
        };
        self.claimed
            .get_or_try_init(py, || claim.call0(py).map(drop))
            .map(drop)
    }

    /// A writer holding the prefix of a plain function's key (no class):
    /// what `layout::write_prefix` writes into a new writer, made in place
    /// for the hot path.
    #[inline(always)]
    pub fn plain_prefix(&self) -> KeyWriter {
        KeyWriter::starting_with_word(self.scope.key_word())
    }

    /// Writes the in-process key of a call.
    pub fn write_key(&self, w: &mut KeyWriter, call: &Call<'_>) -> PyResult<Layout> {
        let class = if self.keyed_by_class() {
            let first = call.args.get_item(0).map_err(|_| {
                PyTypeError::new_err(format!(
                    "{}() missing its first argument ('self' or 'cls')",
                    self.function_id
                ))
            })?;
            Some(self.class_id(&first)?)
        } else {
            None
        };
        let Some(fields) = &self.fields else {
            let arguments = |w: &mut KeyWriter| {
                let (args, kwargs) = (&call.args, call.kwargs.as_ref());
                self.signature.write_call(w, args, kwargs)
            };
            return Layout::of_arguments(w, &self.scope, class, arguments)
                .map_err(|e| e.into_pyerr(&self.function_id));
        };
        // Planned fields are read from the call without Python; otherwise
        // the key constructor builds the items from the bound arguments.
        let values;
        let fields_values = match &fields.plan {
            Some(plan) => {
                values = self
                    .signature
                    .argument(&call.args, call.kwargs.as_ref(), plan.params())
                    .map_err(|e| e.into_pyerr(&self.function_id))?;
                FieldValues::Planned(plan, &values)
            }
            None => {
                let bound = self
                    .signature
                    .bind_to_dict(&call.args, call.kwargs.as_ref())
                    .map_err(|e| e.into_pyerr(&self.function_id))?;
                let built = fields.build.bind(call.args.py()).call1((bound,))?;
                let (partition, suffix): (Bound<'_, PyTuple>, Bound<'_, PyTuple>) =
                    built.extract()?;
                FieldValues::Items(items(&partition)?, items(&suffix)?)
            }
        };
        let at = (&*self.scope, class.as_deref());
        let parts =
            layout::write_fields(&PyValues::new(), w, at, fields.partitioned, fields_values)
                .map_err(|e| field_error(e, &self.function_id))?;
        Ok(Layout { class, parts })
    }

    /// Whether keys carry the class of a method's instance (a method that
    /// does not share its key identifier).
    fn keyed_by_class(&self) -> bool {
        self.signature.method && !self.shared_identity
    }

    /// What a partial call (`delete_by_prefix`, `wipe`) drops: its encoded
    /// partition, and the classes it applies to: for a bound method its
    /// class, for a method called on no instance every class it has been
    /// called on. `None` for a function without key fields.
    fn partial(&self, call: &Call<'_>, bound: bool) -> PyResult<Option<Partial<Py<PyType>>>> {
        let Some(fields) = &self.fields else {
            return Ok(None);
        };
        let items = fields
            .partition
            .bind(call.args.py())
            .call1((&call.args, call.kwargs.as_ref()))?;
        let mut partition = KeyWriter::new();
        let labels = write_items(&mut partition, items.cast::<PyTuple>()?, &self.function_id)?;
        let bound = bound.then_some(|| self.class_id(&call.args.get_item(0)?));
        let classes = self.classes.of_partial(self.keyed_by_class(), bound)?;
        Ok(Some(Partial {
            partition,
            labels,
            classes,
        }))
    }

    /// Drops the partition of a partial call (see [`Core::partial`]) in
    /// this process; the whole scope for a function without partition
    /// fields, whose call still must fit the signature (nothing to bind
    /// to, but a call that could never be made is a mistake worth
    /// reporting).
    pub fn drop_partition(&self, call: &Call<'_>, bound: bool) -> PyResult<()> {
        if !self.partitioned() {
            let (args, kwargs) = (&call.args, call.kwargs.as_ref());
            let fits = self.signature.check_partial(args, kwargs);
            fits.map_err(|e| e.into_pyerr(&self.function_id))?;
            self.scope.bump();
        } else if let Some(partial) = self.partial(call, bound)? {
            partial.drop_in(&self.scope);
        }
        Ok(())
    }

    /// Visits the Python objects this core holds, for the garbage collector
    /// (see `CachedWrapper::__traverse__`, which calls this only while it
    /// owns the core alone). A class number shared with a key still being
    /// built, or a table another thread holds locked, is skipped: skipping
    /// is safe, it only keeps the object for a later collection.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)?;
        visit.call(&self.policy)?;
        if let Some(claim) = &self.claim {
            visit.call(claim)?; // a partial holding the function
        }
        if let Some(check) = &self.receiver_check {
            visit.call(check)?; // a partial holding the function
        }
        self.signature.traverse(visit)?;
        if let Some(fields) = &self.fields {
            visit.call(&fields.build)?;
            visit.call(&fields.partition)?;
        }
        self.classes.visit_unshared(|ty| visit.call(ty))
    }

    /// Whether calls are plain: a function (not a method) keyed by its
    /// arguments, whose key the hot paths write from positional arguments
    /// alone.
    #[inline]
    pub fn plain(&self) -> bool {
        !self.signature.method && self.fields.is_none()
    }

    /// Whether keys have a partition part.
    pub fn partitioned(&self) -> bool {
        self.fields.as_ref().is_some_and(|f| f.partitioned)
    }

    /// How long past its stale window an entry is kept for stale-if-error.
    #[inline]
    pub fn stale_if_error_window(&self) -> Span {
        let default = RUNTIME.default_stale_if_error();
        self.lifetimes.stale_if_error_window(default)
    }

    /// The runtime state bits under which a call may take the hot path (the
    /// memory store, and no stale-if-error window to keep entries for), as
    /// one mask that must be wholly set, so the hot path tests the state
    /// word against a mask made once per wrapper (see
    /// `restflow_cache::settings::BackendChoice::plain_memory_bits`).
    pub fn plain_memory_bits(&self) -> u8 {
        self.backend
            .plain_memory_bits(self.lifetimes.stale_if_error)
    }

    /// Whether calls use the in-process memory store (the hot path asks).
    #[inline]
    pub fn uses_memory(&self) -> bool {
        self.backend.uses_memory(RUNTIME.state())
    }

    /// The key string of a written key:
    /// `<namespace>::<function id>::<partition>::<suffix>`.
    pub fn key_string(&self, w: &KeyWriter, layout: &Layout) -> PyResult<String> {
        let (bytes, identity) = (w.as_bytes(), self.identity());
        let names = self.signature.value_names();
        let max = RUNTIME.max_key_part_length();
        let string = layout.key_string(bytes, &self.namespace, identity, &names, max);
        string.map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// What names a key string's function: its id, and whether a method
    /// shares it (see [`Layout::function_id`]).
    fn identity(&self) -> (&str, bool) {
        (self.function_id.as_str(), self.shared_identity)
    }

    /// The function id, partition text and suffix text of a written key.
    pub fn key_parts<'a>(
        &'a self,
        w: &KeyWriter,
        layout: &'a Layout,
    ) -> PyResult<(&'a str, String, String)> {
        let names = self.signature.value_names();
        let max = RUNTIME.max_key_part_length();
        let parts = layout.key_parts(w.as_bytes(), self.identity(), &names, max);
        parts.map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The partition texts a partial call drops, with the function id of
    /// each class it applies to (see [`Core::partial`]).
    pub fn partition_texts(&self, call: &Call<'_>, bound: bool) -> PyResult<Vec<(String, String)>> {
        let Some(partial) = self.partial(call, bound)? else {
            return Ok(Vec::new());
        };
        partial
            .texts(&self.function_id, RUNTIME.max_key_part_length())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// A value whose fate was decided already: `None` keeps it for the
    /// wrapper's fixed ttl, a `Decision` (`store`, `ttl` seconds or None, a
    /// tuple) says otherwise.
    pub fn decided(
        &self,
        value: Bound<'_, PyAny>,
        decision: Option<(bool, Option<f64>)>,
    ) -> PyResult<Computed<Stored>> {
        let lifetime = self
            .lifetimes
            .decide(decision, RUNTIME.default_stale())
            .map_err(|bad| PyValueError::new_err(bad.message(&self.function_id)))?;
        Ok(Computed {
            value: Stored::new(value.unbind()),
            lifetime,
        })
    }

    /// Whether `call` may refresh `value`, the value found for its key
    /// (see [`Core::serves`]). A `serves` that raises is written as
    /// unraisable and the refresh runs, as it would without one.
    pub fn refreshes(&self, py: Python<'_>, value: &Py<PyAny>, call: &Call<'_>) -> bool {
        let Some(serves) = &self.serves else {
            return true;
        };
        let answer = serves
            .bind(py)
            .call1((value, &call.args, call.kwargs.as_ref()))
            .and_then(|answer| answer.is_truthy());
        answer.unwrap_or_else(|error| {
            error.write_unraisable(py, Some(serves.bind(py)));
            true
        })
    }

    /// Logs a background refresh that raised (its caller keeps serving the
    /// stale value); one that declined ([`RefreshDeclined`]) did not fail.
    pub fn log_refresh_failure(&self, py: Python<'_>, error: &PyErr) {
        if declined(py, error) {
            return;
        }
        log_error(
            py,
            &format!(
                "restflow: background refresh of {}() failed; the stale value is kept",
                self.function_id
            ),
            error,
        );
    }

    /// [`Core::compute`] for the engine, which shares the error among the
    /// callers waiting on it and may answer it with an older value
    /// (stale-if-error): an interrupt is also parked for this caller, to be
    /// raised whatever the engine answers (see `crate::interrupt`).
    ///
    /// A computation for a caller (a miss, a forced refresh), even one
    /// nested in a background refresh on its worker, is no background
    /// refresh ([`in_background_refresh`] is false while it runs).
    pub fn compute_for_engine(
        &self,
        py: Python<'_>,
        call: &Call<'_>,
    ) -> Result<Computed<Stored>, crate::runtime::SharedErr> {
        self.compute_for_engine_as(py, call, false)
    }

    /// [`Core::compute_for_engine`], as a background refresh when
    /// `background` (a shared store's, which the engine ends).
    pub fn compute_for_engine_as(
        &self,
        py: Python<'_>,
        call: &Call<'_>,
        background: bool,
    ) -> Result<Computed<Stored>, crate::runtime::SharedErr> {
        let _scope = Refreshing::scope(background);
        self.compute(py, call).map_err(|error| {
            if crate::interrupt::is_interrupt(py, &error) {
                crate::interrupt::park(error.clone_ref(py));
            }
            Arc::new(error)
        })
    }

    /// Runs the function and decides whether and how long to keep its
    /// value, counting the computation, its time and its failure.
    pub fn compute(&self, py: Python<'_>, call: &Call<'_>) -> PyResult<Computed<Stored>> {
        let started = std::time::Instant::now();
        let computed = self.compute_uncounted(py, call);
        // A background refresh that declined did not fail.
        let failed = computed
            .as_ref()
            .is_err_and(|error| !(in_background_refresh() && declined(py, error)));
        self.stats.computed(started, failed);
        computed
    }

    /// [`Core::compute`] as a background refresh: with
    /// [`in_background_refresh`] true while the function runs, so it may
    /// decline ([`RefreshDeclined`]).
    pub fn compute_refresh(&self, py: Python<'_>, call: &Call<'_>) -> PyResult<Computed<Stored>> {
        let _scope = Refreshing::scope(true);
        self.compute(py, call)
    }

    fn compute_uncounted(&self, py: Python<'_>, call: &Call<'_>) -> PyResult<Computed<Stored>> {
        let value = self.func.bind(py).call(&call.args, call.kwargs.as_ref())?;
        let decision = match &self.policy {
            None => None,
            Some(policy) => Some(
                policy
                    .bind(py)
                    .call1((&value, &call.args, call.kwargs.as_ref()))?
                    .extract()?,
            ),
        };
        self.decided(value, decision)
    }
}

/// Writes labelled items as a counted tuple of `label, value` pairs;
/// returns each value's label and byte range in `w`. Items are
/// `(label, value, hashed, sort_lists)` tuples made by the key constructor.
pub(crate) fn write_items(
    w: &mut KeyWriter,
    items: &Bound<'_, PyTuple>,
    function_id: &str,
) -> PyResult<Labels> {
    layout::write_items(&PyValues::new(), w, &self::items(items)?)
        .map_err(|e| field_error(e, function_id))
}

/// The `(label, value, hashed, sort_lists)` tuples a key constructor made.
fn items<'py>(items: &Bound<'py, PyTuple>) -> PyResult<Vec<Item<Bound<'py, PyAny>>>> {
    let item = |item: Bound<'py, PyAny>| {
        let (label, value, hashed, sort_lists) = item.extract()?;
        Ok(Item {
            label,
            value,
            hashed,
            sort_lists,
        })
    };
    items.iter().map(item).collect()
}

/// A key field the engine refused, as Python's error.
fn field_error(error: FieldError, function_id: &str) -> PyErr {
    PyTypeError::new_err(error.message(function_id))
}

/// The partition and suffix text of labelled items, as a wrapper with
/// these parts renders them (what `KeyConstructor.generate_key` uses).
pub(crate) fn items_key_parts(
    partition_items: &Bound<'_, PyTuple>,
    suffix_items: &Bound<'_, PyTuple>,
    function_id: &str,
) -> PyResult<(String, String)> {
    let text = |items| {
        let mut w = KeyWriter::new();
        let labels = write_items(&mut w, items, function_id)?;
        render_labelled(w.as_bytes(), &labels, RUNTIME.max_key_part_length())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    };
    Ok((text(partition_items)?, text(suffix_items)?))
}

pyo3::create_exception!(
    _engine,
    RefreshDeclined,
    pyo3::exceptions::PyException,
    "Raised by a function in a background refresh (`in_background_refresh()`) \
     whose value is not one to replace the entry with: the stale entry stays, \
     its refresh claim is given back, and nothing is logged or counted as an \
     error."
);

/// Whether `error` is a background refresh's [`RefreshDeclined`].
pub(crate) fn declined(py: Python<'_>, error: &PyErr) -> bool {
    error.is_instance_of::<RefreshDeclined>(py)
}

thread_local! {
    /// Whether the function this thread runs is a background refresh's
    /// ([`Refreshing`]).
    static REFRESHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Says whether this thread runs a background refresh's function until
/// dropped, then restores what it said before. Invariant: every
/// computation enters one around the function's call (a background refresh
/// `true`, any other `false`, so a miss computed inside a refresh is no
/// refresh), and the flag is restored however the call ends (a worker runs
/// other jobs after).
pub(crate) struct Refreshing(bool);

impl Refreshing {
    pub(crate) fn scope(background: bool) -> Self {
        Refreshing(REFRESHING.with(|flag| flag.replace(background)))
    }
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        REFRESHING.with(|flag| flag.set(self.0));
    }
}

/// Whether the function running on this thread is a background refresh's
/// (a synchronous one, on a refresh worker); an async refresh task is told
/// apart by the async layer.
pub(crate) fn in_background_refresh() -> bool {
    REFRESHING.with(std::cell::Cell::get)
}
