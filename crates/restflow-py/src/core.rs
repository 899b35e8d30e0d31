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

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};
use restflow_cache::key::{self, KeyWriter, Sequence};
use restflow_cache::shared::FunctionKeys;
use restflow_cache::{Beta, Computed, Counter, Lifetime, Scope, Span};

use crate::encode::{type_path, write_value, write_value_sorting_lists, Unsupported};
use crate::runtime::{log_error, ScopeLabels, RUNTIME};
use crate::signature::Signature;
use crate::stored::Stored;

/// Numbers classes for the in-process key.
static NEXT_CLASS: AtomicU64 = AtomicU64::new(1);

/// The class a method is called on: its number in key bytes, its dotted
/// path in key strings.
pub(crate) struct ClassId {
    number: u64,
    pub function_id: String,
    /// Keeps the type alive so its address is never reused for another.
    _type: Py<PyType>,
}

/// Where a planned key item's value comes from.
pub(crate) enum Source {
    /// A named parameter of the function (the plan keeps their positions).
    Param,
    /// A constant, encoded once (digested already when the field hashes).
    Const(KeyWriter),
}

/// One item of a key the engine can build without calling Python: a field
/// that reads a named argument or a constant.
pub(crate) struct PlanItem {
    pub label: String,
    pub source: Source,
    pub hashed: bool,
    pub sort_lists: bool,
}

/// The items of a key constructor made only of planned fields, in the
/// order the Python builder would give them.
pub(crate) struct Plan {
    pub partition: Vec<PlanItem>,
    pub suffix: Vec<PlanItem>,
    /// The parameter positions the items read, in item order.
    params: Vec<usize>,
}

impl Plan {
    /// How many of the planned parameters belong to the partition (they
    /// come first).
    fn partition_params(&self) -> usize {
        self.partition
            .iter()
            .filter(|i| matches!(i.source, Source::Param))
            .count()
    }

    /// Builds a plan from Python's `(partition, suffix)` lists of
    /// `(label, kind, payload, hashed, sort_lists)`, kind `"arg"` (payload:
    /// the parameter name) or `"const"` (payload: the value).
    pub fn new(
        signature: &Signature,
        spec: &Bound<'_, PyAny>,
        function_id: &str,
    ) -> PyResult<Plan> {
        let (partition, suffix): (Bound<'_, PyAny>, Bound<'_, PyAny>) = spec.extract()?;
        let mut params = Vec::new();
        let mut items = |list: &Bound<'_, PyAny>| -> PyResult<Vec<PlanItem>> {
            let mut out = Vec::new();
            for item in list.try_iter()? {
                let (label, kind, payload, hashed, sort_lists): (
                    String,
                    String,
                    Bound<'_, PyAny>,
                    bool,
                    bool,
                ) = item?.extract()?;
                let source = match kind.as_str() {
                    "arg" => {
                        let name: String = payload.extract()?;
                        let n = signature.param_index(&name).ok_or_else(|| {
                            PyValueError::new_err(format!("no parameter {name:?} to plan"))
                        })?;
                        params.push(n);
                        Source::Param
                    }
                    "const" => {
                        let mut w = KeyWriter::new();
                        encode_item(&mut w, &label, &payload, hashed, sort_lists, function_id)?;
                        Source::Const(w)
                    }
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "unknown plan item {other:?}"
                        )))
                    }
                };
                out.push(PlanItem {
                    label,
                    source,
                    hashed,
                    sort_lists,
                });
            }
            Ok(out)
        };
        let partition = items(&partition)?;
        let suffix = items(&suffix)?;
        Ok(Plan {
            partition,
            suffix,
            params,
        })
    }
}

/// The suffix of a fields key, waiting for the partition to be written.
enum Suffix<'a, 'py> {
    Planned(&'a Plan, Vec<Bound<'py, PyAny>>),
    Items(Bound<'py, PyTuple>),
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
    /// Set by the async layer: called with no arguments instead of the
    /// function, it returns `(value, decision)`, the decision being `None`
    /// (the wrapper's fixed ttl) or `(store, ttl_seconds_or_None)`, already
    /// made (its predicates may have been awaited).
    pub produce: Option<Bound<'py, PyAny>>,
}

/// A [`Call`] that can cross into detached code and back (a background
/// refresh, a computation run from a store's callback).
pub(crate) struct OwnedCall {
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    produce: Option<Py<PyAny>>,
}

impl OwnedCall {
    pub fn new(call: &Call<'_>) -> Self {
        OwnedCall {
            args: call.args.clone().unbind(),
            kwargs: call.kwargs.as_ref().map(|k| k.clone().unbind()),
            produce: call.produce.as_ref().map(|p| p.clone().unbind()),
        }
    }

    pub fn bind<'py>(&self, py: Python<'py>) -> Call<'py> {
        Call {
            args: self.args.bind(py).clone(),
            kwargs: self.kwargs.as_ref().map(|k| k.bind(py).clone()),
            produce: self.produce.as_ref().map(|p| p.bind(py).clone()),
        }
    }
}

/// Where the parts of a written key are, for rendering its string.
pub(crate) struct Layout {
    pub class: Option<Arc<ClassId>>,
    pub parts: Parts,
}

pub(crate) enum Parts {
    /// The arguments start at this offset and run to the end.
    Arguments(usize),
    /// Labelled values of the partition and of the suffix.
    Fields {
        partition: Vec<(String, Range<usize>)>,
        suffix: Vec<(String, Range<usize>)>,
    },
}

pub(crate) struct Core {
    pub func: Py<PyAny>,
    /// `(result, args, kwargs) -> (store, ttl_seconds_or_None)`, built by
    /// `restflow.caching` from `cache_if`, `cache_unless` and a callable ttl.
    pub policy: Option<Py<PyAny>>,
    /// The same for every value; `None` never expires.
    pub ttl: Option<Span>,
    /// `None`: the `STALE_WHILE_REVALIDATE` setting.
    pub stale: Option<Span>,
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
    pub classes: Mutex<HashMap<usize, Arc<ClassId>>>,
    /// How this function's keys and counters are named in a shared store
    /// (the digests computed once, since every shared call names them).
    pub keys: FunctionKeys,
    /// Which store: the `BACKEND` setting, the memory store, or a named one.
    pub backend: BackendChoice,
    /// `None`: the `STALE_IF_ERROR` setting.
    pub stale_if_error: Option<Span>,
    /// `early_refresh=True`: refresh early (XFetch) with this beta.
    pub early: Option<Beta>,
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
    /// Counts and latencies of this function's calls (`wrapper.stats()`).
    pub stats: restflow_cache::Stats,
}

/// The store a wrapper uses.
pub(crate) enum BackendChoice {
    /// The `BACKEND` setting.
    Default,
    /// The in-process memory store, whatever the setting says.
    Memory,
    /// A backend spec (`"redis://…"`, `"django:alias"`).
    Named(String),
}

impl Core {
    pub fn class_id(&self, first: &Bound<'_, PyAny>) -> PyResult<Arc<ClassId>> {
        let ty = match first.cast::<PyType>() {
            Ok(cls) => cls.clone(),
            Err(_) => first.get_type(),
        };
        let address = ty.as_ptr() as usize;
        if let Some(found) = self.classes.lock().get(&address) {
            return Ok(Arc::clone(found));
        }
        let name: String = self.func.bind(first.py()).getattr("__name__")?.extract()?;
        let made = Arc::new(ClassId {
            number: NEXT_CLASS.fetch_add(1, Ordering::Relaxed),
            function_id: format!("{}.{name}", type_path(&ty)),
            _type: ty.unbind(),
        });
        let (found, unused) = {
            let mut classes = self.classes.lock();
            match classes.get(&address) {
                // Another thread named the class first; ours is dropped
                // below, outside the lock (it holds a Python reference).
                Some(found) => (Arc::clone(found), Some(made)),
                None => {
                    classes.insert(address, Arc::clone(&made));
                    (made, None)
                }
            }
        };
        drop(unused);
        Ok(found)
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
    /// what [`Core::write_prefix`] writes into a new writer, made in place
    /// for the hot path.
    #[inline(always)]
    pub fn plain_prefix(&self) -> KeyWriter {
        KeyWriter::starting_with_word(self.scope.key_word())
    }

    /// The first words of every key of this function: the scope word, and
    /// for methods the class number.
    #[inline]
    pub fn write_prefix(&self, w: &mut KeyWriter, class: Option<&ClassId>) {
        w.write_prefix_word(self.scope.key_word());
        if let Some(class) = class {
            w.write_prefix_word(class.number);
        }
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
            self.write_prefix(w, class.as_deref());
            let start = w.len();
            self.signature
                .write_call(w, &call.args, call.kwargs.as_ref())
                .map_err(|e| e.into_pyerr(&self.function_id))?;
            return Ok(Layout {
                class,
                parts: Parts::Arguments(start),
            });
        };
        // The partition is written first on its own: its generation, looked
        // up by its bytes, goes in front of it.
        let mut partition = KeyWriter::new();
        let (partition_labels, suffix) = match &fields.plan {
            Some(plan) => {
                let values = self
                    .signature
                    .argument(&call.args, call.kwargs.as_ref(), &plan.params)
                    .map_err(|e| e.into_pyerr(&self.function_id))?;
                let split = plan.partition_params();
                let labels = self.write_plan(&mut partition, &plan.partition, &values[..split])?;
                (labels, Suffix::Planned(plan, values[split..].to_vec()))
            }
            None => {
                let py = call.args.py();
                let bound = self
                    .signature
                    .bind_to_dict(&call.args, call.kwargs.as_ref())
                    .map_err(|e| e.into_pyerr(&self.function_id))?;
                let built = fields.build.bind(py).call1((bound,))?;
                let (partition_items, suffix_items): (Bound<'_, PyTuple>, Bound<'_, PyTuple>) =
                    built.extract()?;
                let labels = self.write_items(&mut partition, &partition_items)?;
                (labels, Suffix::Items(suffix_items))
            }
        };
        self.write_prefix(w, class.as_deref());
        if fields.partitioned {
            let table_key = partition_table_key(class.as_deref(), partition.as_bytes());
            w.write_prefix_word(self.scope.partition_generation(&table_key));
        }
        let partition_start = w.len();
        w.write_encoded(partition.as_bytes());
        let suffix_labels = match suffix {
            Suffix::Planned(plan, values) => self.write_plan(w, &plan.suffix, &values)?,
            Suffix::Items(items) => self.write_items(w, &items)?,
        };
        // The partition's ranges are relative to its own writer.
        let partition_labels = partition_labels
            .into_iter()
            .map(|(label, r)| (label, r.start + partition_start..r.end + partition_start))
            .collect();
        Ok(Layout {
            class,
            parts: Parts::Fields {
                partition: partition_labels,
                suffix: suffix_labels,
            },
        })
    }

    /// Writes planned items exactly as [`write_items`] writes the same
    /// items coming from Python; `values` are the planned parameters' values
    /// in item order.
    fn write_plan(
        &self,
        w: &mut KeyWriter,
        items: &[PlanItem],
        values: &[Bound<'_, PyAny>],
    ) -> PyResult<Vec<(String, Range<usize>)>> {
        w.begin_sequence(Sequence::Tuple, items.len())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut labels = Vec::with_capacity(items.len());
        let mut values = values.iter();
        for item in items {
            let start = w.len() + 5 + item.label.len();
            match &item.source {
                Source::Const(encoded) => w.write_encoded(encoded.as_bytes()),
                Source::Param => {
                    let value = values.next().expect("one value per planned parameter");
                    encode_item(
                        w,
                        &item.label,
                        value,
                        item.hashed,
                        item.sort_lists,
                        &self.function_id,
                    )?;
                }
            }
            labels.push((item.label.clone(), start..w.len()));
        }
        Ok(labels)
    }

    fn write_items(
        &self,
        w: &mut KeyWriter,
        items: &Bound<'_, PyTuple>,
    ) -> PyResult<Vec<(String, Range<usize>)>> {
        write_items(w, items, &self.function_id)
    }
    /// Whether keys carry the class of a method's instance (a method that
    /// does not share its key identifier).
    fn keyed_by_class(&self) -> bool {
        self.signature.method && !self.shared_identity
    }

    /// What a partial call (`delete_by_prefix`, `wipe`) drops: its encoded
    /// partition with the items' labels, and the classes it applies to
    /// (`None` for a function not keyed by class): for a bound method its
    /// class, for a method called on no instance every class it has been
    /// called on. `None` for a function without key fields.
    #[allow(clippy::type_complexity)]
    fn partial(
        &self,
        call: &Call<'_>,
        bound: bool,
    ) -> PyResult<
        Option<(
            KeyWriter,
            Vec<(String, Range<usize>)>,
            Vec<Option<Arc<ClassId>>>,
        )>,
    > {
        let Some(fields) = &self.fields else {
            return Ok(None);
        };
        let items = fields
            .partition
            .bind(call.args.py())
            .call1((&call.args, call.kwargs.as_ref()))?;
        let mut partition = KeyWriter::new();
        let labels = self.write_items(&mut partition, items.cast::<PyTuple>()?)?;
        let classes = match (self.keyed_by_class(), bound) {
            (false, _) => vec![None],
            (true, true) => vec![Some(self.class_id(&call.args.get_item(0)?)?)],
            (true, false) => self.classes.lock().values().cloned().map(Some).collect(),
        };
        Ok(Some((partition, labels, classes)))
    }

    /// Drops the partition of a partial call (see [`Core::partial`]) in
    /// this process; the whole scope for a function without key fields.
    pub fn drop_partition(&self, call: &Call<'_>, bound: bool) -> PyResult<()> {
        let Some((partition, _, classes)) = self.partial(call, bound)? else {
            self.scope.bump();
            return Ok(());
        };
        for class in classes {
            let table_key = partition_table_key(class.as_deref(), partition.as_bytes());
            self.scope.bump_partition(&table_key);
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
        self.signature.traverse(visit)?;
        if let Some(fields) = &self.fields {
            visit.call(&fields.build)?;
            visit.call(&fields.partition)?;
        }
        if let Some(classes) = self.classes.try_lock() {
            for class in classes.values() {
                if Arc::strong_count(class) == 1 {
                    visit.call(&class._type)?;
                }
            }
        }
        Ok(())
    }

    /// Whether keys have a partition part.
    pub fn partitioned(&self) -> bool {
        self.fields.as_ref().is_some_and(|f| f.partitioned)
    }

    /// How long past its stale window an entry is kept for stale-if-error.
    #[inline]
    pub fn stale_if_error_window(&self) -> Span {
        self.stale_if_error
            .unwrap_or_else(|| RUNTIME.default_stale_if_error())
    }

    /// The runtime state bits under which a call may take the hot path (the
    /// memory store, and no stale-if-error window to keep entries for), as
    /// one mask that must be wholly set, so the hot path tests the state
    /// word against a mask made once per wrapper: [`state::NEVER`] when no
    /// state lets it (a named store, a stale-if-error window).
    ///
    /// [`state::NEVER`]: crate::runtime::state::NEVER
    pub fn plain_memory_bits(&self) -> u8 {
        use crate::runtime::state;
        let memory = match self.backend {
            BackendChoice::Memory => 0,
            BackendChoice::Default => state::MEMORY,
            BackendChoice::Named(_) => state::NEVER,
        };
        let no_keep = match self.stale_if_error {
            Some(keep) if keep.is_zero() => 0,
            Some(_) => state::NEVER,
            None => state::NO_KEEP,
        };
        state::CONFIGURED | memory | no_keep
    }

    /// Whether calls use the in-process memory store (the hot path asks).
    #[inline]
    pub fn uses_memory(&self) -> bool {
        match self.backend {
            BackendChoice::Memory => true,
            BackendChoice::Default => RUNTIME.default_is_memory(),
            BackendChoice::Named(_) => false,
        }
    }

    /// The key string of a written key:
    /// `<namespace>::<function id>::<partition>::<suffix>`.
    pub fn key_string(&self, w: &KeyWriter, layout: &Layout) -> PyResult<String> {
        let (function_id, partition, suffix) = self.key_parts(w, layout)?;
        Ok(key::compose(
            &self.namespace,
            function_id,
            &partition,
            &suffix,
        ))
    }

    /// The function id, partition text and suffix text of a written key.
    pub fn key_parts<'a>(
        &'a self,
        w: &KeyWriter,
        layout: &'a Layout,
    ) -> PyResult<(&'a str, String, String)> {
        let max = RUNTIME.max_key_part_length();
        let bytes = w.as_bytes();
        let function_id = match (&layout.class, self.shared_identity) {
            (Some(class), false) => class.function_id.as_str(),
            _ => self.function_id.as_str(),
        };
        let malformed = |e: key::Malformed| PyValueError::new_err(e.to_string());
        let (partition, suffix) = match &layout.parts {
            Parts::Arguments(start) => {
                // Labelled like the default key constructor's items, so
                // `DefaultKeyConstructor().generate_key` gives this string.
                let ranges = key::value_ranges(&bytes[*start..]).map_err(malformed)?;
                let mut labelled: Vec<(String, Range<usize>)> = self
                    .signature
                    .value_names()
                    .into_iter()
                    .zip(ranges)
                    .map(|(name, r)| (format!("arguments.{name}"), r.start + start..r.end + start))
                    .collect();
                labelled.sort_by(|a, b| a.0.cmp(&b.0));
                (
                    String::new(),
                    render_labelled(bytes, &labelled, max).map_err(malformed)?,
                )
            }
            Parts::Fields { partition, suffix } => (
                render_labelled(bytes, partition, max).map_err(malformed)?,
                render_labelled(bytes, suffix, max).map_err(malformed)?,
            ),
        };
        Ok((function_id, partition, suffix))
    }

    /// The partition texts a partial call drops, with the function id of
    /// each class it applies to (see [`Core::partial`]).
    pub fn partition_texts(&self, call: &Call<'_>, bound: bool) -> PyResult<Vec<(String, String)>> {
        let Some((partition, labels, classes)) = self.partial(call, bound)? else {
            return Ok(Vec::new());
        };
        let text = render_labelled(partition.as_bytes(), &labels, RUNTIME.max_key_part_length())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(classes
            .into_iter()
            .map(|class| {
                let function_id = class.map_or_else(
                    || self.function_id.clone(),
                    |class| class.function_id.clone(),
                );
                (function_id, text.clone())
            })
            .collect())
    }

    /// A value whose fate was decided already: `None` keeps it for the
    /// wrapper's fixed ttl, `(store, ttl_seconds_or_None)` says otherwise.
    pub fn decided(
        &self,
        value: Bound<'_, PyAny>,
        decision: Option<(bool, Option<f64>)>,
    ) -> PyResult<Computed<Stored>> {
        let stale = self.stale.unwrap_or_else(|| RUNTIME.default_stale());
        let lifetime = |ttl: Option<Span>| match (ttl, self.early) {
            (Some(ttl), Some(beta)) => Lifetime::new(ttl, stale).refreshing_early(beta),
            (Some(ttl), None) => Lifetime::new(ttl, stale),
            (None, _) => Lifetime::FOREVER,
        };
        let lifetime = match decision {
            None => Some(lifetime(self.ttl)),
            Some((false, _)) => None,
            Some((true, None)) => Some(Lifetime::FOREVER),
            Some((true, Some(secs))) => Some(lifetime(Some(
                Span::from_secs_f64(secs).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "the ttl of {}() came out as {secs}: return a number of seconds >= 0, \
                         a timedelta, or None",
                        self.function_id
                    ))
                })?,
            ))),
        };
        Ok(Computed {
            value: Stored::new(value.unbind()),
            lifetime,
        })
    }

    /// Logs a background refresh that raised (its caller keeps serving the
    /// stale value).
    pub fn log_refresh_failure(&self, py: Python<'_>, error: &PyErr) {
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
    pub fn compute_for_engine(
        &self,
        py: Python<'_>,
        call: &Call<'_>,
    ) -> Result<Computed<Stored>, crate::runtime::SharedErr> {
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
        self.stats.add(Counter::Computation);
        self.stats.observe_compute(started.elapsed());
        if computed.is_err() {
            self.stats.add(Counter::Error);
        }
        computed
    }

    fn compute_uncounted(&self, py: Python<'_>, call: &Call<'_>) -> PyResult<Computed<Stored>> {
        if let Some(produce) = &call.produce {
            let (value, decision): (Bound<'_, PyAny>, Option<(bool, Option<f64>)>) =
                produce.call0()?.extract()?;
            return self.decided(value, decision);
        }
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
) -> PyResult<Vec<(String, Range<usize>)>> {
    w.begin_sequence(Sequence::Tuple, items.len())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut labels = Vec::with_capacity(items.len());
    for item in items.iter() {
        let (label, value, hashed, sort_lists): (String, Bound<'_, PyAny>, bool, bool) =
            item.extract()?;
        let start = w.len() + 5 + label.len();
        encode_item(w, &label, &value, hashed, sort_lists, function_id)?;
        labels.push((label, start..w.len()));
    }
    Ok(labels)
}

/// One labelled item: the label, then the value (or, for a hashed field,
/// the digest of the value's encoding).
fn encode_item(
    w: &mut KeyWriter,
    label: &str,
    value: &Bound<'_, PyAny>,
    hashed: bool,
    sort_lists: bool,
    function_id: &str,
) -> PyResult<()> {
    let encode = |w: &mut KeyWriter| {
        if sort_lists {
            write_value_sorting_lists(w, value)
        } else {
            write_value(w, value)
        }
    };
    let encoded = w
        .write_str(label)
        .map_err(Unsupported::from)
        .and_then(|()| {
            if hashed {
                // A hashed field keeps only a fixed digest of its value.
                let mut full = KeyWriter::new();
                encode(&mut full)?;
                Ok(w.write_str(&key::digest(full.as_bytes()))?)
            } else {
                encode(w)
            }
        });
    encoded.map_err(|unsupported| {
        PyTypeError::new_err(format!(
            "cache_result cannot build a cache key for '{label}' of {function_id}(): {}",
            unsupported.explain(
                "Give the key field a normalizer (or a path) that turns it into None, bool, \
                 int, float, str, bytes, a container of those, a date/time, Decimal, UUID or \
                 an Enum member."
            )
        ))
    })
}

/// The partition and suffix text of labelled items, as a wrapper with
/// these parts renders them (what `KeyConstructor.generate_key` uses).
pub(crate) fn items_key_parts(
    partition_items: &Bound<'_, PyTuple>,
    suffix_items: &Bound<'_, PyTuple>,
    function_id: &str,
) -> PyResult<(String, String)> {
    let max = RUNTIME.max_key_part_length();
    let malformed = |e: key::Malformed| PyValueError::new_err(e.to_string());
    let mut partition = KeyWriter::new();
    let labels = write_items(&mut partition, partition_items, function_id)?;
    let partition_text = render_labelled(partition.as_bytes(), &labels, max).map_err(malformed)?;
    let mut suffix = KeyWriter::new();
    let labels = write_items(&mut suffix, suffix_items, function_id)?;
    let suffix_text = render_labelled(suffix.as_bytes(), &labels, max).map_err(malformed)?;
    Ok((partition_text, suffix_text))
}

/// What a partition's generation is kept under: the class (for methods,
/// so one view class's partitions are dropped apart from another's) and
/// the partition's encoding.
fn partition_table_key(class: Option<&ClassId>, partition: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + partition.len());
    key.extend_from_slice(&class.map_or(0, |c| c.number).to_le_bytes());
    key.extend_from_slice(partition);
    key
}

/// `label=value,label=value`, or `h` and the digest of that text when it
/// is longer than `max` (labels are identifiers and dotted paths, so `=`
/// and `,` cannot be forged).
fn render_labelled(
    bytes: &[u8],
    labels: &[(String, Range<usize>)],
    max: usize,
) -> Result<String, key::Malformed> {
    let mut text = String::new();
    for (n, (label, range)) in labels.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(label);
        text.push('=');
        text.push_str(&key::render(&bytes[range.clone()])?);
    }
    Ok(key::fit_part(text, max))
}
