//! The key encoding of an embedder's values: which values have one, under
//! which tags, how containers nest and sort, and what is refused.
//!
//! The embedder says what a value *is* ([`View`], through a
//! [`ValueReader`]); this module decides how it is written. So the format
//! (the tags, the depth limit, which containers carry no order, the words
//! of a refusal) is restflow's, the same for every embedder, and tested
//! here without an interpreter.
//!
//! Invariants:
//! - equal values write equal bytes whatever order a dict or set holds its
//!   items in (they are written sorted by their encodings), and a list is
//!   sorted the same way only when the key field asks (`sort_lists`);
//! - a value nested deeper than [`MAX_DEPTH`] containers is refused (a
//!   container that holds itself would otherwise never end);
//! - a value the embedder cannot name faithfully is refused, never keyed by
//!   what it prints (a `repr()` may hold a memory address).

use std::sync::Arc;

use crate::key::{KeyWriter, Sequence, Unordered};
use crate::moment::{write_moment, Zone};
use crate::signature::Unsupported;

/// How deep containers may nest before a value is refused.
pub const MAX_DEPTH: usize = 64;

/// What one value is, as far as its key is concerned. `V` is the
/// embedder's handle on a value (the items of a container).
pub enum View<'a, V> {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A larger integer, as its hexadecimal text (`-0x…` or `0x…`).
    BigInt(String),
    /// A float.
    Float(f64),
    /// A text.
    Str(&'a str),
    /// A text with lone surrogates (no UTF-8 form): its code points as
    /// UTF-8 with surrogates passed through.
    Surrogates(Vec<u8>),
    /// A byte string.
    Bytes(&'a [u8]),
    /// A tuple's items.
    Tuple(Vec<V>),
    /// A list's items.
    List(Vec<V>),
    /// A dict's pairs.
    Dict(Vec<(V, V)>),
    /// A set's items.
    Set(Vec<V>),
    /// A frozen set's items.
    FrozenSet(Vec<V>),
    /// The "missing" sentinel a key field reports when it found nothing:
    /// no real value can equal it.
    Missing,
    /// An enum member: its class's dotted path and its value.
    Enum {
        /// The class's dotted path (shared: the embedder keeps one per
        /// class, [`crate::value_classes`]).
        class: Arc<str>,
        /// The member's value.
        value: V,
    },
    /// A date, as its ISO-8601 text.
    Date(String),
    /// A date-time (`time: false`) or a time of day (`time: true`).
    Moment {
        /// Whether it is a time of day.
        time: bool,
        /// Its ISO-8601 text.
        iso: String,
        /// Its fold (which of a repeated hour it is).
        fold: i64,
        /// What names its zone beyond the text.
        zone: Zone,
    },
    /// A duration, as days, seconds and microseconds.
    Timedelta([i64; 3]),
    /// A decimal number, as its text.
    Decimal(String),
    /// A UUID, as its text.
    Uuid(String),
    /// An instance of a subclass of a built-in value type (a named tuple,
    /// an `int` subclass): the subclass's dotted path, then the value as
    /// its base type.
    Subclass {
        /// The subclass's dotted path (shared, as [`View::Enum`]'s).
        class: Arc<str>,
        /// The value as its base type.
        base: Box<View<'a, V>>,
    },
    /// No faithful encoding (or the value could not be read).
    Unsupported(Unsupported),
}

/// How an embedder reads its values.
pub trait ValueReader {
    /// The embedder's handle on a value.
    type Value;

    /// Writes `value` when it is one the embedder writes faster itself (an
    /// inline path for the commonest arguments); `false`: nothing was
    /// written, and [`ValueReader::view`] is asked.
    #[inline(always)]
    fn write_fast(&self, _w: &mut KeyWriter, _value: &Self::Value) -> bool {
        false
    }

    /// What `value` is.
    fn view<'a>(&self, value: &'a Self::Value) -> View<'a, Self::Value>;
}

/// Appends `value` to `w`; with `sort_lists`, every list in it is sorted by
/// its items' encodings (for key fields whose lists carry no order).
#[inline(always)]
pub fn write_value<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    value: &R::Value,
    sort_lists: bool,
) -> Result<(), Unsupported> {
    if reader.write_fast(w, value) {
        return Ok(());
    }
    write_at_depth(reader, w, value, 0, sort_lists)
}

/// [`write_value`] for a value [`ValueReader::write_fast`] declined
/// already (the embedder's hot path tried it inline): not asked again.
pub fn write_declined<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    value: &R::Value,
) -> Result<(), Unsupported> {
    let view = reader.view(value);
    write_view(reader, w, view, 0, false)
}

fn write_at_depth<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    value: &R::Value,
    depth: usize,
    sort: bool,
) -> Result<(), Unsupported> {
    if depth > MAX_DEPTH {
        return Err(Unsupported {
            what: format!("containers nested deeper than {MAX_DEPTH} levels"),
            reason: Some(format!(
                "keys nest at most {MAX_DEPTH} levels deep (a guard against a container \
                 that holds itself); key it by something flatter, such as an id."
            )),
        });
    }
    if depth > 0 && reader.write_fast(w, value) {
        return Ok(());
    }
    let view = reader.view(value);
    write_view(reader, w, view, depth, sort)
}

fn write_view<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    view: View<'_, R::Value>,
    depth: usize,
    sort: bool,
) -> Result<(), Unsupported> {
    let nested = depth + 1;
    match view {
        View::None => w.write_none(),
        View::Bool(b) => w.write_bool(b),
        View::Int(n) => w.write_int(n),
        View::BigInt(hex) => w.write_big_int(&hex)?,
        View::Float(x) => w.write_float(x),
        View::Str(text) => w.write_str(text)?,
        View::Surrogates(raw) => {
            // Under a tag of their own, so no valid text can match.
            w.begin_tagged("str+surrogates")?;
            w.write_bytes(&raw)?;
        }
        View::Bytes(bytes) => w.write_bytes(bytes)?,
        View::Tuple(items) => write_items(reader, w, Sequence::Tuple, &items, nested, sort)?,
        View::List(items) if sort => {
            let encoded = encode_each(reader, items.iter(), nested, true)?;
            w.write_sorted_list(encoded)?;
        }
        View::List(items) => write_items(reader, w, Sequence::List, &items, nested, sort)?,
        View::Dict(pairs) => {
            let mut encoded = Vec::with_capacity(pairs.len());
            for (key, value) in &pairs {
                let mut pair = KeyWriter::new();
                write_at_depth(reader, &mut pair, key, nested, sort)?;
                write_at_depth(reader, &mut pair, value, nested, sort)?;
                encoded.push(pair);
            }
            w.write_unordered(Unordered::Dict, encoded)?;
        }
        View::Set(items) => {
            let encoded = encode_each(reader, items.iter(), nested, sort)?;
            w.write_unordered(Unordered::Set, encoded)?;
        }
        View::FrozenSet(items) => {
            let encoded = encode_each(reader, items.iter(), nested, sort)?;
            w.write_unordered(Unordered::FrozenSet, encoded)?;
        }
        View::Missing => {
            w.begin_tagged("missing")?;
            w.write_none();
        }
        View::Enum { class, value } => {
            // A member is its class and its value: two enums with equal
            // values stay apart, and the key survives reordering members.
            w.begin_tagged_parts("enum:", &class)?;
            write_at_depth(reader, w, &value, nested, sort)?;
        }
        View::Date(iso) => {
            w.begin_tagged("date")?;
            w.write_str(&iso)?;
        }
        View::Moment {
            time,
            iso,
            fold,
            zone,
        } => {
            w.begin_tagged(if time { "time" } else { "datetime" })?;
            write_moment(w, &iso, fold, &zone)?;
        }
        View::Timedelta(parts) => {
            w.begin_tagged("timedelta")?;
            w.begin_sequence(Sequence::Tuple, 3)?;
            for part in parts {
                w.write_int(part);
            }
        }
        View::Decimal(text) => {
            w.begin_tagged("Decimal")?;
            w.write_str(&text)?;
        }
        View::Uuid(text) => {
            w.begin_tagged("UUID")?;
            w.write_str(&text)?;
        }
        View::Subclass { class, base } => {
            w.begin_tagged(&class)?;
            // The base value sits at the subclass's own depth: a named
            // tuple nests like the tuple it is.
            write_view(reader, w, *base, depth, sort)?;
        }
        View::Unsupported(unsupported) => return Err(unsupported),
    }
    Ok(())
}

fn write_items<R: ValueReader>(
    reader: &R,
    w: &mut KeyWriter,
    kind: Sequence,
    items: &[R::Value],
    depth: usize,
    sort: bool,
) -> Result<(), Unsupported> {
    w.begin_sequence(kind, items.len())?;
    for item in items {
        write_at_depth(reader, w, item, depth, sort)?;
    }
    Ok(())
}

/// Each item's encoding on its own, for a container written sorted.
fn encode_each<'v, R: ValueReader>(
    reader: &R,
    items: impl Iterator<Item = &'v R::Value>,
    depth: usize,
    sort: bool,
) -> Result<Vec<KeyWriter>, Unsupported>
where
    R::Value: 'v,
{
    let mut encoded = Vec::new();
    for item in items {
        let mut one = KeyWriter::new();
        write_at_depth(reader, &mut one, item, depth, sort)?;
        encoded.push(one);
    }
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::render;

    /// A toy embedder: values are trees of these.
    #[derive(Clone)]
    enum Toy {
        Int(i64),
        Str(&'static str),
        List(Vec<Toy>),
        Tuple(Vec<Toy>),
        Dict(Vec<(Toy, Toy)>),
        Named(Vec<Toy>),
        Color(i64),
        Opaque,
    }

    struct Reader;

    impl ValueReader for Reader {
        type Value = Toy;

        fn view<'a>(&self, value: &'a Toy) -> View<'a, Toy> {
            match value {
                Toy::Int(n) => View::Int(*n),
                Toy::Str(s) => View::Str(s),
                Toy::List(items) => View::List(items.clone()),
                Toy::Tuple(items) => View::Tuple(items.clone()),
                Toy::Dict(pairs) => View::Dict(pairs.clone()),
                Toy::Named(items) => View::Subclass {
                    class: "app.Point".into(),
                    base: Box::new(View::Tuple(items.clone())),
                },
                Toy::Color(n) => View::Enum {
                    class: "app.Color".into(),
                    value: Toy::Int(*n),
                },
                Toy::Opaque => View::Unsupported(Unsupported {
                    what: "a value of type 'app.Opaque'".into(),
                    reason: None,
                }),
            }
        }
    }

    fn rendered(value: &Toy, sort: bool) -> Result<String, Unsupported> {
        let mut w = KeyWriter::new();
        write_value(&Reader, &mut w, value, sort)?;
        Ok(render(w.as_bytes()).unwrap())
    }

    fn nested(depth: usize) -> Toy {
        (0..depth).fold(Toy::Int(1), |inner, _| Toy::List(vec![inner]))
    }

    #[test]
    fn dicts_are_unordered_and_lists_only_when_asked() {
        let ab = Toy::Dict(vec![
            (Toy::Str("a"), Toy::Int(1)),
            (Toy::Str("b"), Toy::Int(2)),
        ]);
        let ba = Toy::Dict(vec![
            (Toy::Str("b"), Toy::Int(2)),
            (Toy::Str("a"), Toy::Int(1)),
        ]);
        assert_eq!(rendered(&ab, false), rendered(&ba, false));
        let mut declined = KeyWriter::new();
        write_declined(&Reader, &mut declined, &ab).unwrap();
        assert_eq!(render(declined.as_bytes()).ok(), rendered(&ab, false).ok());
        let up = Toy::List(vec![Toy::Int(1), Toy::Int(2)]);
        let down = Toy::List(vec![Toy::Int(2), Toy::Int(1)]);
        assert_ne!(rendered(&up, false), rendered(&down, false));
        assert_eq!(rendered(&up, true), rendered(&down, true));
        // Sorting reaches lists inside other containers, not tuples.
        let inside = |l| Toy::Tuple(vec![l]);
        assert_eq!(
            rendered(&inside(up.clone()), true),
            rendered(&inside(down.clone()), true)
        );
        let tuples = |a, b| Toy::Tuple(vec![Toy::Int(a), Toy::Int(b)]);
        assert_ne!(rendered(&tuples(1, 2), true), rendered(&tuples(2, 1), true));
    }

    #[test]
    fn tagged_values_stay_apart_from_their_plain_form() {
        let point = Toy::Named(vec![Toy::Int(1), Toy::Int(2)]);
        let plain = Toy::Tuple(vec![Toy::Int(1), Toy::Int(2)]);
        assert_eq!(rendered(&plain, false).unwrap(), "t2(i1,i2)");
        assert_eq!(rendered(&point, false).unwrap(), "x9:app.Point(t2(i1,i2))");
        assert_eq!(
            rendered(&Toy::Color(1), false).unwrap(),
            "x14:enum:app.Color(i1)"
        );
    }

    #[test]
    fn containers_nest_at_most_max_depth_levels() {
        assert!(rendered(&nested(MAX_DEPTH), false).is_ok());
        let refused = rendered(&nested(MAX_DEPTH + 1), false).unwrap_err();
        assert_eq!(refused.what, "containers nested deeper than 64 levels");
        assert!(refused.reason.unwrap().contains("such as an id"));
        // A subclass's base is not a level of its own.
        let named = Toy::Named(vec![nested(MAX_DEPTH - 1)]);
        assert!(rendered(&named, false).is_ok());
    }

    #[test]
    fn an_unsupported_item_refuses_the_whole_value() {
        let refused = rendered(&Toy::List(vec![Toy::Int(1), Toy::Opaque]), true).unwrap_err();
        assert_eq!(refused.what, "a value of type 'app.Opaque'");
        assert!(refused.explain("Pass an int.").ends_with("Pass an int."));
    }
}
