//! The in-process key of a cached function, and the key string rendered
//! from it.
//!
//! A call's key is `[scope word][class word?][partition generation?]
//! [partition][suffix]`: the scope word carries the scope's generation, so
//! invalidating a function is one increment; a method's key carries the
//! number of the class it was called on ([`ClassId`]); and a key with key
//! fields carries its partition's generation, looked up under
//! [`partition_table_key`], so dropping a partition is one increment too.
//!
//! The key string (what a shared store sees, and `get_cache_key` shows) is
//! `<namespace>::<function id>::<partition>::<suffix>` ([`crate::key::compose`]),
//! the partition and suffix rendered as `label=value,…` from the byte
//! ranges a [`Layout`] records while the key is written.
//!
//! Invariant (fork safety, see [`crate::fork`]): a [`Classes`] registry is
//! only used while the embedder holds a lock `fork` waits for (Python's
//! GIL), so its `parking_lot` lock is never held by a thread a fork leaves
//! behind.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::key::{self, KeyWriter, Malformed, Sequence, TooLong};
use crate::scope::Scope;
use crate::signature::Unsupported;
use crate::value::{self, ValueReader};

/// Each labelled value's label and byte range in its key.
pub type Labels = Vec<(String, Range<usize>)>;

/// Numbers classes for the in-process key (0 is "no class").
static NEXT_CLASS: AtomicU64 = AtomicU64::new(1);

/// The class a method is called on: its number in key bytes, its dotted
/// path in key strings. `H` is the embedder's handle on the class, kept so
/// the class (and the address it is registered under) stays alive.
pub struct ClassId<H> {
    number: u64,
    function_id: String,
    handle: H,
}

impl<H> ClassId<H> {
    /// A class with a number no other class of this process has, named
    /// `function_id` in key strings (`module.Class.method`).
    pub fn new(function_id: String, handle: H) -> Self {
        ClassId {
            number: NEXT_CLASS.fetch_add(1, Ordering::Relaxed),
            function_id,
            handle,
        }
    }

    /// The class's number, written into its methods' keys.
    #[inline(always)]
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The function id of the method when called on this class.
    pub fn function_id(&self) -> &str {
        &self.function_id
    }
}

/// The classes one method has been called on, by the address of the class
/// object; see the module's fork-safety invariant.
pub struct Classes<H> {
    by_address: Mutex<HashMap<usize, Arc<ClassId<H>>>>,
}

impl<H> Default for Classes<H> {
    fn default() -> Self {
        Classes {
            by_address: Mutex::new(HashMap::new()),
        }
    }
}

impl<H> Classes<H> {
    /// The class registered under `address`.
    pub fn get(&self, address: usize) -> Option<Arc<ClassId<H>>> {
        self.by_address.lock().get(&address).cloned()
    }

    /// Registers `made` under `address` unless another thread registered
    /// a class there first: the class registered, and `made` when it lost,
    /// for the caller to drop once the registry is unlocked (its handle may
    /// need the embedder's care to drop).
    #[allow(clippy::type_complexity)]
    pub fn register(
        &self,
        address: usize,
        made: ClassId<H>,
    ) -> (Arc<ClassId<H>>, Option<ClassId<H>>) {
        let mut classes = self.by_address.lock();
        match classes.get(&address) {
            Some(found) => (Arc::clone(found), Some(made)),
            None => {
                let made = Arc::new(made);
                classes.insert(address, Arc::clone(&made));
                (made, None)
            }
        }
    }

    /// The class registered under `address`, or the one `make` makes (run
    /// without the lock held, so it may call into the embedder), registered
    /// unless another thread registered one first: then `make`'s class is
    /// dropped once the lock is released (its handle may need the
    /// embedder's care to drop).
    pub fn get_or_register<E>(
        &self,
        address: usize,
        make: impl FnOnce() -> Result<ClassId<H>, E>,
    ) -> Result<Arc<ClassId<H>>, E> {
        if let Some(found) = self.get(address) {
            return Ok(found);
        }
        let (found, unused) = self.register(address, make()?);
        drop(unused);
        Ok(found)
    }

    /// Every class registered so far.
    pub fn all(&self) -> Vec<Arc<ClassId<H>>> {
        self.by_address.lock().values().cloned().collect()
    }

    /// The classes a partial call (`delete_by_prefix`, `wipe`) names (see
    /// [`Partial::classes`]): for a function not `keyed_by_class`, none
    /// (`[None]`); for a method's call bound to an instance, its class
    /// (`bound` finds it, only then); for a method called on no instance,
    /// every class it has been called on.
    #[allow(clippy::type_complexity)]
    pub fn of_partial<E>(
        &self,
        keyed_by_class: bool,
        bound: Option<impl FnOnce() -> Result<Arc<ClassId<H>>, E>>,
    ) -> Result<Vec<Option<Arc<ClassId<H>>>>, E> {
        Ok(match (keyed_by_class, bound) {
            (false, _) => vec![None],
            (true, Some(class)) => vec![Some(class()?)],
            (true, None) => self.all().into_iter().map(Some).collect(),
        })
    }

    /// Calls `visit` on the handle of every class no key being built holds
    /// (for a garbage collector); skips them all when another thread holds
    /// the registry. Skipping is safe: it only keeps a handle alive longer.
    pub fn visit_unshared<E>(&self, mut visit: impl FnMut(&H) -> Result<(), E>) -> Result<(), E> {
        if let Some(classes) = self.by_address.try_lock() {
            for class in classes.values() {
                if Arc::strong_count(class) == 1 {
                    visit(&class.handle)?;
                }
            }
        }
        Ok(())
    }
}

/// Where the parts of a written key are, for rendering its string.
pub struct Layout<H> {
    /// The class of a method's call, when keys are keyed by class.
    pub class: Option<Arc<ClassId<H>>>,
    /// Where the labelled values are.
    pub parts: Parts,
}

/// The labelled values of a written key.
#[derive(Debug)]
pub enum Parts {
    /// The arguments start at this offset and run to the end.
    Arguments(usize),
    /// Labelled values of the partition and of the suffix.
    Fields {
        /// The partition's values.
        partition: Labels,
        /// The suffix's values.
        suffix: Labels,
    },
}

impl<H> Layout<H> {
    /// Writes the key of a call keyed by its arguments: the prefix (the
    /// scope word, and a method's `class`), then what `arguments` writes.
    pub fn of_arguments<L, E>(
        w: &mut KeyWriter,
        scope: &Scope<L>,
        class: Option<Arc<ClassId<H>>>,
        arguments: impl FnOnce(&mut KeyWriter) -> Result<(), E>,
    ) -> Result<Self, E> {
        write_prefix(w, scope, class.as_deref());
        let start = w.len();
        arguments(w)?;
        let parts = Parts::Arguments(start);
        Ok(Layout { class, parts })
    }

    /// The key string of the key written in `bytes`:
    /// `<namespace>::<function id>::<partition>::<suffix>` (see
    /// [`Layout::key_parts`] for the rest).
    pub fn key_string(
        &self,
        bytes: &[u8],
        namespace: &str,
        identity: (&str, bool),
        value_names: &[&str],
        max: usize,
    ) -> Result<String, Malformed> {
        let (function_id, partition, suffix) = self.key_parts(bytes, identity, value_names, max)?;
        Ok(key::compose(namespace, function_id, &partition, &suffix))
    }

    /// The function id a key string names: the class's method, unless the
    /// function shares its key identifier (`shared_identity`) or is not a
    /// method, when it is `own`.
    pub fn function_id<'a>(&'a self, own: &'a str, shared_identity: bool) -> &'a str {
        match (&self.class, shared_identity) {
            (Some(class), false) => class.function_id(),
            _ => own,
        }
    }

    /// The function id, partition text and suffix text of the key written
    /// in `bytes` (see [`Layout::function_id`] and [`Layout::texts`]).
    pub fn key_parts<'a>(
        &'a self,
        bytes: &[u8],
        (own, shared_identity): (&'a str, bool),
        value_names: &[&str],
        max: usize,
    ) -> Result<(&'a str, String, String), Malformed> {
        let (partition, suffix) = self.texts(bytes, value_names, max)?;
        Ok((self.function_id(own, shared_identity), partition, suffix))
    }

    /// The partition and suffix texts of the key written in `bytes`.
    /// Arguments are labelled `arguments.<name>` (`value_names` in written
    /// order) and sorted, like the default key constructor's items; each
    /// text longer than `max` becomes its digest ([`key::fit_part`]).
    pub fn texts(
        &self,
        bytes: &[u8],
        value_names: &[&str],
        max: usize,
    ) -> Result<(String, String), Malformed> {
        match &self.parts {
            Parts::Arguments(start) => {
                let ranges = key::value_ranges(&bytes[*start..])?;
                let mut labelled: Labels = value_names
                    .iter()
                    .zip(ranges)
                    .map(|(name, r)| (format!("arguments.{name}"), r.start + start..r.end + start))
                    .collect();
                labelled.sort_by(|a, b| a.0.cmp(&b.0));
                Ok((String::new(), render_labelled(bytes, &labelled, max)?))
            }
            Parts::Fields { partition, suffix } => Ok((
                render_labelled(bytes, partition, max)?,
                render_labelled(bytes, suffix, max)?,
            )),
        }
    }
}

/// What a partition's generation is kept under in its scope: the class
/// (for methods, so one view class's partitions are dropped apart from
/// another's) and the partition's encoding.
pub fn partition_table_key<H>(class: Option<&ClassId<H>>, partition: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + partition.len());
    key.extend_from_slice(&class.map_or(0, |c| c.number).to_le_bytes());
    key.extend_from_slice(partition);
    key
}

/// Writes the first words of every key of a function: the scope word (its
/// generation), and for a method's call the class number.
#[inline]
pub fn write_prefix<L, H>(w: &mut KeyWriter, scope: &Scope<L>, class: Option<&ClassId<H>>) {
    w.write_prefix_word(scope.key_word());
    if let Some(class) = class {
        w.write_prefix_word(class.number());
    }
}

/// Writes the key of a call keyed by key fields, whose partition was
/// encoded on its own first (`partition`, with its items' `labels` relative
/// to it): the prefix, the partition's generation when the function
/// `partitioned` its keys (looked up by the partition's bytes, so dropping
/// the partition makes every key written under it unreachable), the
/// partition, then the suffix `suffix` writes. Returns where the labelled
/// values of both parts are in `w`.
pub fn write_fields_key<L, H, E>(
    w: &mut KeyWriter,
    scope: &Scope<L>,
    class: Option<&ClassId<H>>,
    partitioned: bool,
    (partition, labels): (&KeyWriter, Labels),
    suffix: impl FnOnce(&mut KeyWriter) -> Result<Labels, E>,
) -> Result<Parts, E> {
    write_prefix(w, scope, class);
    if partitioned {
        let table_key = partition_table_key(class, partition.as_bytes());
        w.write_prefix_word(scope.partition_generation(&table_key));
    }
    let start = w.len();
    w.write_encoded(partition.as_bytes());
    let suffix = suffix(w)?;
    let partition = labels
        .into_iter()
        .map(|(label, r)| (label, r.start + start..r.end + start))
        .collect();
    Ok(Parts::Fields { partition, suffix })
}

/// The key fields of one call, ready to be written.
pub enum FieldValues<'a, V> {
    /// A plan's items, with the planned parameters' values in item order
    /// (the partition's first, as [`Plan::params`] lists them).
    Planned(&'a Plan, &'a [V]),
    /// The partition and suffix items the embedder's key builder made.
    Items(Vec<Item<V>>, Vec<Item<V>>),
}

/// Writes the key of a call keyed by key fields, their values read
/// through `reader`: the partition encoded first on its own, then the key
/// as [`write_fields_key`] lays it out. A plan writes exactly what its
/// items handed over one by one would.
pub fn write_fields<R: ValueReader, L, H>(
    reader: &R,
    w: &mut KeyWriter,
    (scope, class): (&Scope<L>, Option<&ClassId<H>>),
    partitioned: bool,
    fields: FieldValues<'_, R::Value>,
) -> Result<Parts, FieldError> {
    let mut partition = KeyWriter::new();
    match fields {
        FieldValues::Planned(plan, values) => {
            let (head, tail) = values.split_at(plan.partition_params());
            let labels = Plan::write_values(reader, &mut partition, plan.partition(), head)?;
            write_fields_key(w, scope, class, partitioned, (&partition, labels), |w| {
                Plan::write_values(reader, w, plan.suffix(), tail)
            })
        }
        FieldValues::Items(head, tail) => {
            let labels = write_items(reader, &mut partition, &head)?;
            write_fields_key(w, scope, class, partitioned, (&partition, labels), |w| {
                write_items(reader, w, &tail)
            })
        }
    }
}

/// What a partial call (`delete_by_prefix`, `wipe`) names: a partition,
/// encoded on its own, and the classes it applies to (`None`: a function
/// not keyed by class).
pub struct Partial<H> {
    /// The partition's encoding.
    pub partition: KeyWriter,
    /// Its items' labels and ranges in `partition`.
    pub labels: Labels,
    /// The classes whose keys it names.
    pub classes: Vec<Option<Arc<ClassId<H>>>>,
}

impl<H> Partial<H> {
    /// Makes every key written under the partition unreachable in `scope`
    /// (one increment per class, whatever the number of entries).
    pub fn drop_in<L>(&self, scope: &Scope<L>) {
        for class in &self.classes {
            let table_key = partition_table_key(class.as_deref(), self.partition.as_bytes());
            scope.bump_partition(&table_key);
        }
    }

    /// The partition's text, with the function id each class names it
    /// under (`own` for a function not keyed by class): what a shared
    /// store's partition counters are named after.
    pub fn texts(&self, own: &str, max: usize) -> Result<Vec<(String, String)>, Malformed> {
        let text = render_labelled(self.partition.as_bytes(), &self.labels, max)?;
        Ok(self
            .classes
            .iter()
            .map(|class| {
                let id = class.as_ref().map_or(own, |class| class.function_id());
                (id.to_owned(), text.clone())
            })
            .collect())
    }
}

/// `label=value,label=value`, or `h` and the digest of that text when it
/// is longer than `max` (labels are identifiers and dotted paths, so `=`
/// and `,` cannot be forged).
pub fn render_labelled(
    bytes: &[u8],
    labels: &[(String, Range<usize>)],
    max: usize,
) -> Result<String, Malformed> {
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

/// Begins `count` labelled items: a tuple of `label, value` pairs.
pub fn begin_labelled(w: &mut KeyWriter, count: usize) -> Result<(), TooLong> {
    w.begin_sequence(Sequence::Tuple, count)
}

/// Where a labelled item's value will start: after the label's text.
#[inline]
fn value_start(w: &KeyWriter, label: &str) -> usize {
    // A text is a tag byte and a 32-bit length, then its bytes.
    w.len() + 5 + label.len()
}

/// Writes one labelled item: the label, then the value `encode` writes
/// (or, for a `hashed` item, the digest of that encoding); returns the
/// value's byte range in `w`.
pub fn write_labelled(
    w: &mut KeyWriter,
    label: &str,
    hashed: bool,
    encode: impl FnOnce(&mut KeyWriter) -> Result<(), Unsupported>,
) -> Result<Range<usize>, Unsupported> {
    let start = value_start(w, label);
    w.write_str(label)?;
    if hashed {
        // A hashed field keeps only a fixed digest of its value.
        let mut full = KeyWriter::new();
        encode(&mut full)?;
        w.write_str(&key::digest(full.as_bytes()))?;
    } else {
        encode(w)?;
    }
    Ok(start..w.len())
}

/// One key field's value, as the embedder's key builder hands it over.
pub struct Item<V> {
    /// The field's label.
    pub label: String,
    /// Its value.
    pub value: V,
    /// Whether the key keeps only a digest of the value.
    pub hashed: bool,
    /// Whether lists in the value are sorted before encoding.
    pub sort_lists: bool,
}

/// A key field whose value has no key encoding.
#[derive(Debug)]
pub struct FieldError {
    /// The field's label.
    pub label: String,
    /// Why its value was refused.
    pub value: Unsupported,
}

impl FieldError {
    /// The error message for a key field of `function`.
    pub fn message(&self, function: &str) -> String {
        self.value.for_field(&self.label, function)
    }
}

/// Writes one key field, its value read through `reader`, as
/// [`write_labelled`] does; returns the value's byte range in `w`.
pub fn write_item<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    label: &str,
    value: &R::Value,
    hashed: bool,
    sort_lists: bool,
) -> Result<Range<usize>, FieldError> {
    let encode = |w: &mut KeyWriter| value::write_value(reader, w, value, sort_lists);
    write_labelled(w, label, hashed, encode).map_err(|value| FieldError {
        label: label.to_owned(),
        value,
    })
}

/// Writes `items` as labelled items (a counted tuple of `label, value`
/// pairs); returns each value's label and byte range in `w`.
pub fn write_items<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    items: &[Item<R::Value>],
) -> Result<Labels, FieldError> {
    begin_items(w, items.len())?;
    let mut labels = Vec::with_capacity(items.len());
    for item in items {
        let range = write_item(
            reader,
            w,
            &item.label,
            &item.value,
            item.hashed,
            item.sort_lists,
        )?;
        labels.push((item.label.clone(), range));
    }
    Ok(labels)
}

/// [`begin_labelled`], failing as a field would (more than 2**32 items: a
/// key part's limit, which no embedder's item list comes near).
fn begin_items(w: &mut KeyWriter, count: usize) -> Result<(), FieldError> {
    begin_labelled(w, count).map_err(|too_long| FieldError {
        label: String::new(),
        value: too_long.into(),
    })
}

/// Writes a labelled item encoded already by [`write_labelled`] (a
/// constant key field); returns the value's byte range in `w`.
pub fn write_labelled_encoded(w: &mut KeyWriter, label: &str, encoded: &[u8]) -> Range<usize> {
    let start = value_start(w, label);
    w.write_encoded(encoded);
    start..w.len()
}

/// Where a planned key item's value comes from.
pub enum Source {
    /// The named parameter at this position of the function's signature.
    Param(usize),
    /// A constant, encoded once by [`write_labelled`] (label included,
    /// digested already when the field hashes).
    Const(KeyWriter),
}

/// One item of a key that can be built from the call's arguments alone:
/// a field that reads a named argument, or a constant.
pub struct PlanItem {
    /// The item's label.
    pub label: String,
    /// Where its value comes from.
    pub source: Source,
    /// Whether the key keeps only a digest of the value.
    pub hashed: bool,
    /// Whether lists in the value are sorted before encoding.
    pub sort_lists: bool,
}

/// The items of a key constructor made only of planned fields, in the
/// order the embedder's key builder would give them.
///
/// Invariant: `params` lists the positions the items read, partition
/// items first, in item order.
pub struct Plan {
    partition: Vec<PlanItem>,
    suffix: Vec<PlanItem>,
    params: Vec<usize>,
}

impl Plan {
    /// The plan of these partition and suffix items.
    pub fn new(partition: Vec<PlanItem>, suffix: Vec<PlanItem>) -> Self {
        let params = partition
            .iter()
            .chain(&suffix)
            .filter_map(|item| match item.source {
                Source::Param(n) => Some(n),
                Source::Const(_) => None,
            })
            .collect();
        Plan {
            partition,
            suffix,
            params,
        }
    }

    /// The parameter positions the items read, in item order: the values
    /// a call hands [`Plan::write`].
    pub fn params(&self) -> &[usize] {
        &self.params
    }

    /// The partition's items.
    pub fn partition(&self) -> &[PlanItem] {
        &self.partition
    }

    /// The suffix's items.
    pub fn suffix(&self) -> &[PlanItem] {
        &self.suffix
    }

    /// How many of [`Plan::params`] belong to the partition (they come
    /// first).
    pub fn partition_params(&self) -> usize {
        self.partition
            .iter()
            .filter(|i| matches!(i.source, Source::Param(_)))
            .count()
    }

    /// Writes `items` (the partition's or the suffix's) as labelled items,
    /// after [`begin_labelled`], exactly as the same items written one by
    /// one with [`write_labelled`]: constants as encoded, each parameter's
    /// value (from `values`, in item order) through `encode`, which writes
    /// the item and returns its value's range.
    pub fn write<V, E>(
        w: &mut KeyWriter,
        items: &[PlanItem],
        values: &[V],
        mut encode: impl FnMut(&mut KeyWriter, &PlanItem, &V) -> Result<Range<usize>, E>,
    ) -> Result<Labels, E> {
        let mut labels = Vec::with_capacity(items.len());
        let mut values = values.iter();
        for item in items {
            let range = match &item.source {
                Source::Const(encoded) => {
                    write_labelled_encoded(w, &item.label, encoded.as_bytes())
                }
                Source::Param(_) => {
                    let value = values.next().expect("one value per planned parameter");
                    encode(w, item, value)?
                }
            };
            labels.push((item.label.clone(), range));
        }
        Ok(labels)
    }
}

/// One planned item as the embedder hands it over: its label, where its
/// value comes from (an argument by name, or a constant value), and how
/// it is encoded.
pub struct PlanSpec<V> {
    /// The item's label.
    pub label: String,
    /// `Ok(name)`: the argument of that parameter; `Err(value)`: a
    /// constant.
    pub source: Result<String, V>,
    /// Whether the key keeps only a digest of the value.
    pub hashed: bool,
    /// Whether lists in the value are sorted before encoding.
    pub sort_lists: bool,
}

/// Why a plan could not be made.
#[derive(Debug)]
pub enum PlanError {
    /// An item reads an argument the function has no parameter for.
    NoParam(String),
    /// A constant has no key encoding.
    Field(FieldError),
}

impl PlanError {
    /// The error message for a key constructor of `function`.
    pub fn message(&self, function: &str) -> String {
        match self {
            PlanError::NoParam(name) => format!("no parameter {name:?} to plan"),
            PlanError::Field(error) => error.message(function),
        }
    }
}

impl Plan {
    /// The plan of these partition and suffix items: an argument's item
    /// reads the parameter `param_index` finds for its name, a constant is
    /// encoded once, here, through `reader`.
    pub fn read<R: ValueReader>(
        reader: &R,
        param_index: impl Fn(&str) -> Option<usize>,
        partition: Vec<PlanSpec<R::Value>>,
        suffix: Vec<PlanSpec<R::Value>>,
    ) -> Result<Plan, PlanError> {
        let item = |spec: PlanSpec<R::Value>| {
            let source = match spec.source {
                Ok(name) => Source::Param(param_index(&name).ok_or(PlanError::NoParam(name))?),
                Err(value) => {
                    let (label, hashed) = (&spec.label, spec.hashed);
                    let mut w = KeyWriter::new();
                    write_item(reader, &mut w, label, &value, hashed, spec.sort_lists)
                        .map_err(PlanError::Field)?;
                    Source::Const(w)
                }
            };
            Ok::<_, PlanError>(PlanItem {
                label: spec.label,
                source,
                hashed: spec.hashed,
                sort_lists: spec.sort_lists,
            })
        };
        let items = |specs: Vec<PlanSpec<R::Value>>| -> Result<Vec<_>, _> {
            specs.into_iter().map(item).collect()
        };
        Ok(Plan::new(items(partition)?, items(suffix)?))
    }

    /// Writes `items` (the partition's or the suffix's) as labelled items,
    /// exactly as [`write_items`] writes the same items handed over one by
    /// one: `values` are the planned parameters' values in item order, read
    /// through `reader`.
    pub fn write_values<R: ValueReader>(
        reader: &R,
        w: &mut KeyWriter,
        items: &[PlanItem],
        values: &[R::Value],
    ) -> Result<Labels, FieldError> {
        begin_items(w, items.len())?;
        Plan::write(w, items, values, |w, item, value| {
            write_item(reader, w, &item.label, value, item.hashed, item.sort_lists)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;

    fn text(w: &mut KeyWriter, s: &str) -> Result<(), Unsupported> {
        Ok(w.write_str(s)?)
    }

    #[test]
    fn labelled_items_render_as_label_equals_value() {
        let mut w = KeyWriter::new();
        begin_labelled(&mut w, 2).unwrap();
        let user = write_labelled(&mut w, "user", false, |w| text(w, "ann")).unwrap();
        let page = write_labelled(&mut w, "page", false, |w| {
            w.write_int(2);
            Ok(())
        })
        .unwrap();
        let labels = vec![("user".to_owned(), user), ("page".to_owned(), page)];
        assert_eq!(
            render_labelled(w.as_bytes(), &labels, 250).unwrap(),
            "user=s3:ann,page=i2"
        );
        // Too long for the limit: the digest of the text instead.
        let long = render_labelled(w.as_bytes(), &labels, 5).unwrap();
        assert_eq!(long, format!("h{}", key::digest(b"user=s3:ann,page=i2")));
    }

    #[test]
    fn a_constant_item_writes_what_the_item_itself_writes() {
        let mut constant = KeyWriter::new();
        write_labelled(&mut constant, "kind", true, |w| text(w, "report")).unwrap();
        let mut a = KeyWriter::new();
        a.write_int(9);
        let from_constant = write_labelled_encoded(&mut a, "kind", constant.as_bytes());
        let mut b = KeyWriter::new();
        b.write_int(9);
        let direct = write_labelled(&mut b, "kind", true, |w| text(w, "report")).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(from_constant, direct);
        // A hashed value is the digest of its encoding, as text.
        let mut full = KeyWriter::new();
        full.write_str("report").unwrap();
        assert_eq!(
            key::render(&a.as_bytes()[direct]).unwrap(),
            format!("s32:{}", key::digest(full.as_bytes()))
        );
    }

    #[test]
    fn arguments_are_labelled_by_name_and_sorted() {
        let mut w = KeyWriter::new();
        w.write_prefix_word(7);
        let start = w.len();
        w.write_int(1);
        w.write_str("x").unwrap();
        let layout: Layout<()> = Layout {
            class: None,
            parts: Parts::Arguments(start),
        };
        assert_eq!(
            layout.texts(w.as_bytes(), &["zeta", "alpha"], 250).unwrap(),
            (
                String::new(),
                "arguments.alpha=s1:x,arguments.zeta=i1".to_owned()
            )
        );
        assert_eq!(layout.function_id("mod.f", false), "mod.f");
    }

    #[test]
    fn a_key_of_arguments_is_its_prefix_then_its_arguments() {
        let scopes: Scopes<()> = Scopes::new();
        let scope = scopes.unique(());
        let class = Arc::new(ClassId::new("m.A.f".into(), ()));
        let mut w = KeyWriter::new();
        let write = |w: &mut KeyWriter| text(w, "x");
        let layout = Layout::of_arguments(&mut w, &scope, Some(Arc::clone(&class)), write).unwrap();
        let mut expected = KeyWriter::new();
        write_prefix(&mut expected, &scope, Some(&*class));
        let start = expected.len();
        text(&mut expected, "x").unwrap();
        assert_eq!(w.as_bytes(), expected.as_bytes());
        assert!(matches!(layout.parts, Parts::Arguments(at) if at == start));
        // The class's method names the key, unless the identity is shared.
        let string =
            |shared| layout.key_string(w.as_bytes(), "ns:v2", ("m.f", shared), &["q"], 250);
        assert_eq!(string(false).unwrap(), "ns:v2::m.A.f::::arguments.q=s1:x");
        assert_eq!(string(true).unwrap(), "ns:v2::m.f::::arguments.q=s1:x");
        // A writer's failure is handed back.
        let failed = Layout::<()>::of_arguments(&mut KeyWriter::new(), &scope, None, |_| Err("no"));
        assert!(matches!(failed, Err("no")));
    }

    #[test]
    fn a_partial_call_names_no_class_its_bound_class_or_every_class() {
        let classes: Classes<&str> = Classes::default();
        let (a, _) = classes.register(1, ClassId::new("m.A.f".into(), "A"));
        let (b, _) = classes.register(2, ClassId::new("m.B.f".into(), "B"));
        let numbers = |found: Vec<Option<Arc<ClassId<&str>>>>| {
            let mut numbers: Vec<_> = found
                .iter()
                .map(|c| c.as_ref().map(|c| c.number()))
                .collect();
            numbers.sort();
            numbers
        };
        let not_asked = || -> Result<Arc<ClassId<&str>>, ()> { panic!("not keyed by class") };
        assert_eq!(
            numbers(classes.of_partial(false, Some(not_asked)).unwrap()),
            [None]
        );
        let bound = || Ok::<_, ()>(Arc::clone(&b));
        assert_eq!(
            numbers(classes.of_partial(true, Some(bound)).unwrap()),
            [Some(b.number())]
        );
        let none = None::<fn() -> Result<Arc<ClassId<&'static str>>, ()>>;
        let every = numbers(classes.of_partial(true, none).unwrap());
        let mut expected = [Some(a.number()), Some(b.number())];
        expected.sort();
        assert_eq!(every, expected);
        let failed = classes.of_partial(true, Some(|| Err("no instance")));
        assert!(matches!(failed, Err("no instance")));
    }

    #[test]
    fn classes_have_numbers_of_their_own_and_name_their_methods() {
        let classes: Classes<&str> = Classes::default();
        let (a, lost) = classes.register(1, ClassId::new("m.A.f".into(), "A"));
        assert!(lost.is_none());
        let (again, lost) = classes.register(1, ClassId::new("m.A.f".into(), "A2"));
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(lost.map(|c| c.handle), Some("A2"));
        let (b, _) = classes.register(2, ClassId::new("m.B.f".into(), "B"));
        let found = classes.get_or_register(2, || Err("made again")).unwrap();
        assert!(Arc::ptr_eq(&found, &b), "found, not made again");
        let c = classes
            .get_or_register(3, || Ok::<_, ()>(ClassId::new("m.C.f".into(), "C")))
            .unwrap();
        assert_eq!(c.function_id(), "m.C.f");
        assert_ne!(a.number(), b.number());
        assert_ne!(a.number(), 0, "0 is the table key of no class");
        assert_ne!(
            partition_table_key(Some(&*a), b"p"),
            partition_table_key(Some(&*b), b"p")
        );
        assert_eq!(partition_table_key::<()>(None, b"p")[..8], [0; 8]);

        let layout = Layout {
            class: Some(Arc::clone(&b)),
            parts: Parts::Arguments(0),
        };
        assert_eq!(layout.function_id("m.Base.f", false), "m.B.f");
        assert_eq!(
            layout
                .key_parts(&[], ("m.Base.f", false), &[], 250)
                .unwrap(),
            ("m.B.f", String::new(), String::new())
        );
        assert_eq!(layout.function_id("shared-id", true), "shared-id");

        let mut visited = Vec::new();
        classes
            .visit_unshared(|h| {
                visited.push(*h);
                Ok::<_, ()>(())
            })
            .unwrap();
        assert!(visited.is_empty(), "every class is held by a test variable");
        drop((a, again, layout, b, found, c));
        classes
            .visit_unshared(|h| {
                visited.push(*h);
                Ok::<_, ()>(())
            })
            .unwrap();
        visited.sort();
        assert_eq!(visited, ["A", "B", "C"]);
        assert_eq!(classes.all().len(), 3);
    }

    /// A partition `org=<name>` on its own writer, with its labels.
    fn partition(name: &str) -> (KeyWriter, Labels) {
        let mut w = KeyWriter::new();
        begin_labelled(&mut w, 1).unwrap();
        let range = write_labelled(&mut w, "org", false, |w| text(w, name)).unwrap();
        (w, vec![("org".to_owned(), range)])
    }

    /// The key of `org=<name>` with suffix `page=1`, and its parts' texts.
    fn fields_key(
        scope: &Scope<()>,
        class: Option<&ClassId<&str>>,
        partitioned: bool,
        name: &str,
    ) -> (KeyWriter, String, String) {
        let (p, labels) = partition(name);
        let mut w = KeyWriter::new();
        let suffix = |w: &mut KeyWriter| {
            begin_labelled(w, 1)?;
            let range = write_labelled(w, "page", false, |w| {
                w.write_int(1);
                Ok(())
            })?;
            Ok::<_, Unsupported>(vec![("page".to_owned(), range)])
        };
        let parts =
            write_fields_key(&mut w, scope, class, partitioned, (&p, labels), suffix).unwrap();
        let layout: Layout<&str> = Layout { class: None, parts };
        let (p_text, s_text) = layout.texts(w.as_bytes(), &[], 250).unwrap();
        (w, p_text, s_text)
    }

    #[test]
    fn a_dropped_partition_changes_only_its_own_keys() {
        let scopes: Scopes<()> = Scopes::new();
        let scope = scopes.unique(());
        let (acme, p_text, s_text) = fields_key(&scope, None, true, "acme");
        assert_eq!(
            (p_text.as_str(), s_text.as_str()),
            ("org=s4:acme", "page=i1")
        );
        let (other, ..) = fields_key(&scope, None, true, "other");
        let dropped = Partial::<&str> {
            partition: partition("acme").0,
            labels: partition("acme").1,
            classes: vec![None],
        };
        dropped.drop_in(&scope);
        let (acme_after, ..) = fields_key(&scope, None, true, "acme");
        assert_ne!(acme.as_bytes(), acme_after.as_bytes());
        assert_eq!(
            other.as_bytes(),
            fields_key(&scope, None, true, "other").0.as_bytes()
        );
        // A function without partition fields keeps no generation per
        // partition: its keys only change with the scope.
        let (flat, ..) = fields_key(&scope, None, false, "acme");
        dropped.drop_in(&scope);
        assert_eq!(
            flat.as_bytes(),
            fields_key(&scope, None, false, "acme").0.as_bytes()
        );
        scope.bump();
        assert_ne!(
            flat.as_bytes(),
            fields_key(&scope, None, false, "acme").0.as_bytes()
        );
    }

    #[test]
    fn a_partial_call_names_its_partition_per_class() {
        let scopes: Scopes<()> = Scopes::new();
        let scope = scopes.unique(());
        let a = Arc::new(ClassId::new("m.A.f".into(), "A"));
        let b = Arc::new(ClassId::new("m.B.f".into(), "B"));
        let (p, labels) = partition("acme");
        let partial = Partial {
            partition: p,
            labels,
            classes: vec![Some(Arc::clone(&a))],
        };
        let (on_a, ..) = fields_key(&scope, Some(&a), true, "acme");
        let (on_b, ..) = fields_key(&scope, Some(&b), true, "acme");
        partial.drop_in(&scope);
        assert_ne!(
            on_a.as_bytes(),
            fields_key(&scope, Some(&a), true, "acme").0.as_bytes()
        );
        assert_eq!(
            on_b.as_bytes(),
            fields_key(&scope, Some(&b), true, "acme").0.as_bytes()
        );
        assert_eq!(
            partial.texts("m.Base.f", 250).unwrap(),
            [("m.A.f".to_owned(), "org=s4:acme".to_owned())]
        );
        let unkeyed = Partial::<&str> {
            classes: vec![None],
            ..partial
        };
        assert_eq!(unkeyed.texts("m.Base.f", 250).unwrap()[0].0, "m.Base.f");
    }

    /// Texts; `"?"` is a value with no key encoding.
    struct Texts;

    impl ValueReader for Texts {
        type Value = &'static str;

        fn view<'a>(&self, value: &'a &'static str) -> crate::value::View<'a, &'static str> {
            match *value {
                "?" => crate::value::View::Unsupported(Unsupported {
                    what: "a value of type 'app.Opaque'".into(),
                    reason: None,
                }),
                text => crate::value::View::Str(text),
            }
        }
    }

    #[test]
    fn items_and_their_plan_write_the_same_key() {
        let item = |label: &str, value, hashed| Item {
            label: label.into(),
            value,
            hashed,
            sort_lists: false,
        };
        let mut written = KeyWriter::new();
        let items = [item("org", "acme", false), item("q", "x", true)];
        let labels = write_items(&Texts, &mut written, &items).unwrap();
        let mut direct = KeyWriter::new();
        begin_labelled(&mut direct, 2).unwrap();
        let org = write_labelled(&mut direct, "org", false, |w| text(w, "acme")).unwrap();
        let q = write_labelled(&mut direct, "q", true, |w| text(w, "x")).unwrap();
        assert_eq!(written.as_bytes(), direct.as_bytes());
        assert_eq!(labels, vec![("org".to_owned(), org), ("q".to_owned(), q)]);

        let planned = |label: &str, n, hashed| PlanItem {
            label: label.into(),
            source: Source::Param(n),
            hashed,
            sort_lists: false,
        };
        let plan = Plan::new(
            vec![],
            vec![planned("org", 0, false), planned("q", 1, true)],
        );
        let mut from_plan = KeyWriter::new();
        let plan_labels =
            Plan::write_values(&Texts, &mut from_plan, plan.suffix(), &["acme", "x"]).unwrap();
        assert_eq!(from_plan.as_bytes(), written.as_bytes());
        assert_eq!(plan_labels, labels);

        let refused = write_items(&Texts, &mut KeyWriter::new(), &[item("user", "?", true)]);
        let refused = refused.unwrap_err();
        assert_eq!(refused.label, "user");
        assert!(refused
            .message("app.f")
            .starts_with("cache_result cannot build a cache key for 'user' of app.f(): it is a value of type 'app.Opaque'"));
    }

    #[test]
    fn a_planned_key_and_its_items_write_the_same_key_and_parts() {
        let scopes: Scopes<()> = Scopes::new();
        let scope = scopes.unique(());
        let planned = |label: &str, n| PlanItem {
            label: label.into(),
            source: Source::Param(n),
            hashed: false,
            sort_lists: false,
        };
        let item = |label: &str, value| Item {
            label: label.into(),
            value,
            hashed: false,
            sort_lists: false,
        };
        let plan = Plan::new(vec![planned("org", 1)], vec![planned("page", 0)]);
        let class = ClassId::new("m.A.f".to_owned(), "A");
        for (partitioned, class) in [(true, None), (false, None), (true, Some(&class))] {
            let at = (&*scope, class);
            let values = ["acme", "2"];
            let mut from_plan = KeyWriter::new();
            let fields = FieldValues::Planned(&plan, &values);
            let plan_parts = write_fields(&Texts, &mut from_plan, at, partitioned, fields);
            let mut from_items = KeyWriter::new();
            let items = FieldValues::Items(vec![item("org", "acme")], vec![item("page", "2")]);
            let item_parts = write_fields(&Texts, &mut from_items, at, partitioned, items);
            assert_eq!(from_plan.as_bytes(), from_items.as_bytes());
            let texts = |w: &KeyWriter, parts: Parts| {
                let Parts::Fields { partition, suffix } = parts else {
                    panic!("a fields key")
                };
                let render = |labels: Labels| render_labelled(w.as_bytes(), &labels, 250).unwrap();
                (render(partition), render(suffix))
            };
            let expected = ("org=s4:acme".to_owned(), "page=s1:2".to_owned());
            assert_eq!(texts(&from_plan, plan_parts.unwrap()), expected);
            assert_eq!(texts(&from_items, item_parts.unwrap()), expected);
        }
        let refused = FieldValues::Items(vec![], vec![item("user", "?")]);
        let at = (&*scope, None::<&ClassId<&str>>);
        let refused = write_fields(&Texts, &mut KeyWriter::new(), at, true, refused);
        assert_eq!(refused.unwrap_err().label, "user");
    }

    #[test]
    fn a_plan_read_from_specs_finds_its_parameters_and_encodes_its_constants_once() {
        let spec = |label: &str, source, hashed| PlanSpec {
            label: label.into(),
            source,
            hashed,
            sort_lists: false,
        };
        let param_index = |name: &str| ["q", "page", "org"].iter().position(|p| *p == name);
        let plan = Plan::read(
            &Texts,
            param_index,
            vec![spec("org", Ok("org".into()), false)],
            vec![
                spec("kind", Err("r"), false),
                spec("q", Ok("q".into()), true),
            ],
        )
        .unwrap();
        assert_eq!(plan.params(), [2, 0]);
        assert_eq!(plan.partition_params(), 1);
        let mut from_plan = KeyWriter::new();
        Plan::write_values(&Texts, &mut from_plan, plan.suffix(), &["x"]).unwrap();
        let item = |label: &str, value, hashed| Item {
            label: label.into(),
            value,
            hashed,
            sort_lists: false,
        };
        let mut from_items = KeyWriter::new();
        let items = [item("kind", "r", false), item("q", "x", true)];
        write_items(&Texts, &mut from_items, &items).unwrap();
        assert_eq!(from_plan.as_bytes(), from_items.as_bytes());

        let missing = Plan::read(
            &Texts,
            param_index,
            vec![spec("u", Ok("user".into()), false)],
            vec![],
        );
        let missing = missing.err().unwrap();
        assert_eq!(missing.message("app.f"), "no parameter \"user\" to plan");
        let opaque = Plan::read(
            &Texts,
            param_index,
            vec![],
            vec![spec("k", Err("?"), false)],
        );
        let Some(PlanError::Field(refused)) = opaque.err() else {
            panic!("a constant with no key encoding is refused")
        };
        assert_eq!(refused.label, "k");
    }

    #[test]
    fn a_plan_writes_what_the_items_write_one_by_one() {
        let item = |label: &str, source, hashed| PlanItem {
            label: label.into(),
            source,
            hashed,
            sort_lists: false,
        };
        let mut constant = KeyWriter::new();
        write_labelled(&mut constant, "kind", false, |w| text(w, "r")).unwrap();
        let plan = Plan::new(
            vec![item("org", Source::Param(2), false)],
            vec![
                item("kind", Source::Const(constant), false),
                item("q", Source::Param(0), true),
            ],
        );
        assert_eq!(plan.params(), [2, 0]);
        assert_eq!(plan.partition_params(), 1);
        let values = ["acme", "x"];
        let encode = |w: &mut KeyWriter, item: &PlanItem, v: &&str| {
            write_labelled(w, &item.label, item.hashed, |w| text(w, v))
        };
        let mut planned = KeyWriter::new();
        begin_labelled(&mut planned, 2).unwrap();
        let labels = Plan::write(&mut planned, plan.suffix(), &values[1..], encode).unwrap();
        let mut direct = KeyWriter::new();
        begin_labelled(&mut direct, 2).unwrap();
        let kind = write_labelled(&mut direct, "kind", false, |w| text(w, "r")).unwrap();
        let q = write_labelled(&mut direct, "q", true, |w| text(w, "x")).unwrap();
        assert_eq!(planned.as_bytes(), direct.as_bytes());
        assert_eq!(labels, vec![("kind".to_owned(), kind), ("q".to_owned(), q)]);
        let mut partition = KeyWriter::new();
        let labels = Plan::write(&mut partition, plan.partition(), &values[..1], encode).unwrap();
        assert_eq!(
            render_labelled(partition.as_bytes(), &labels, 250).unwrap(),
            "org=s4:acme"
        );
    }
}
