//! Where a value stops being one a serializer gives back unchanged, said
//! so the caller can log one clear error.
//!
//! A hit must return what the function returned. A JSON store only keeps
//! values made of plain objects with text keys, arrays, texts, numbers,
//! booleans and null: anything else comes back changed or cannot be
//! written. The embedder walks the value (it knows its language's types)
//! and reports the first item that is not plain, with its path built here.

/// How deep a value may nest before it is refused (a JSON encoder stops
/// near its own recursion limit; a walk must never overflow the stack
/// first).
pub const MAX_DEPTH: usize = 500;

/// One step from a container into an item.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// An array's item.
    Index(usize),
    /// An object's value, under the key as the embedder prints it.
    Key(String),
}

/// Where a value stops being plain JSON, and what was found there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfaithful {
    /// The path from the value to the item, innermost first.
    steps: Vec<Step>,
    /// Whether the item is an object's key (rather than a value).
    key: bool,
    /// What was found: the item's type (or why it is refused).
    pub kind: String,
}

impl Unfaithful {
    /// An item of type `kind` (`key`: an object's key) that is not plain.
    pub fn found(kind: String, key: bool) -> Self {
        Unfaithful {
            steps: Vec::new(),
            key,
            kind,
        }
    }

    /// Containers nested deeper than [`MAX_DEPTH`].
    pub fn too_deep() -> Self {
        Self::found(
            format!("containers nested deeper than {MAX_DEPTH} levels"),
            false,
        )
    }

    /// This refusal, seen from the array holding it at `index`.
    pub fn in_index(mut self, index: usize) -> Self {
        self.steps.push(Step::Index(index));
        self
    }

    /// This refusal, seen from the object holding it under `key` (as the
    /// embedder prints keys: `'rows'`).
    pub fn in_key(mut self, key: String) -> Self {
        self.steps.push(Step::Key(key));
        self
    }

    /// `the value['rows'][0]`, or `a key of the value['rows']`.
    pub fn path(&self) -> String {
        let mut path = String::from("the value");
        for step in self.steps.iter().rev() {
            match step {
                Step::Index(n) => path.push_str(&format!("[{n}]")),
                Step::Key(repr) => path.push_str(&format!("[{repr}]")),
            }
        }
        if self.key {
            format!("a key of {path}")
        } else {
            path
        }
    }

    /// The error to log, once per cached function (`function_id`), when
    /// `SERIALIZER="json"` refuses its value: what was refused and where,
    /// what the cache does about it, and what to change.
    pub fn refusal(&self, function_id: &str) -> String {
        format!(
            "restflow: SERIALIZER=\"json\" cannot store what {function_id}() returned \
             unchanged: {} is a '{}', which JSON gives back as another type or cannot write. \
             A hit must return what the function returned, so its values are served but not \
             cached (logged once). Return only dict (with str keys), list, str, int, float, \
             bool and None, or set SERIALIZER=\"pickle\".",
            self.path(),
            self.kind,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_reads_from_the_value_inwards() {
        let refused = Unfaithful::found("decimal.Decimal".into(), false)
            .in_index(0)
            .in_key("'rows'".into());
        assert_eq!(refused.path(), "the value['rows'][0]");
        assert_eq!(refused.kind, "decimal.Decimal");
        let key = Unfaithful::found("int".into(), true).in_key("'by_id'".into());
        assert_eq!(key.path(), "a key of the value['by_id']");
        assert_eq!(Unfaithful::too_deep().path(), "the value");
        assert!(Unfaithful::too_deep().kind.contains("500"));
    }

    #[test]
    fn the_refusal_says_what_where_and_what_to_change() {
        let refused = Unfaithful::found("tuple".into(), false).in_key("'rows'".into());
        assert_eq!(
            refused.refusal("app.views.f"),
            "restflow: SERIALIZER=\"json\" cannot store what app.views.f() returned \
             unchanged: the value['rows'] is a 'tuple', which JSON gives back as another type \
             or cannot write. A hit must return what the function returned, so its values are \
             served but not cached (logged once). Return only dict (with str keys), list, str, \
             int, float, bool and None, or set SERIALIZER=\"pickle\"."
        );
    }
}
