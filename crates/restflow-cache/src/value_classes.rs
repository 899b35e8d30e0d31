//! Which class a dotted path names in keys.
//!
//! A key names the class of an enum member or of a subclass instance by its
//! dotted path (`module.qualname`, [`crate::value::View::Enum`] and
//! [`crate::value::View::Subclass`]), never by anything that differs from
//! one process to the next (an address), because key strings must be the
//! same in every process (DESIGN section 4). A path is not always unique:
//! two classes alive at once can share it (two `Enum("Color", ...)` of one
//! module, named tuples made by a factory, a class redefined while the old
//! one lives), and their equal values would then key alike and serve each
//! other's entries. [`ValueClasses`] is the registry that prevents it: a
//! path belongs to one live class at a time, and a value of any other
//! class with that path is refused ([`clash`]).
//!
//! The rules, each tested below:
//! - the first class keyed under a path owns it;
//! - the owner is keyed under it again at the cost of one lookup;
//! - a second class, while the owner lives, is refused, with an error that
//!   names the path and both classes; before refusing, the embedder
//!   collects its garbage once (an owner kept only by a reference cycle,
//!   as an enum class that its members name, is dead, not live);
//! - once the owner is garbage, the next class with its path takes it over:
//!   that is how a reloaded class is told from a clash (the module's old
//!   class is gone), and it reads the entries stored under the path, as
//!   the same class in another process would;
//! - dead owners leave the table: when it has doubled since its last
//!   prune (and holds at least [`PRUNE_FLOOR`] paths), the next
//!   registration drops every dead one, so it holds fewer than twice as
//!   many paths as were live at its last prune (or [`PRUNE_FLOOR`]), at an
//!   amortized constant cost per registration. A program that makes and
//!   drops classes of fresh names in a loop does not grow it without bound.
//!
//! The registry is generic over the embedder's classes ([`ClassHandles`]):
//! it keeps a weak reference per path, and asks the embedder whether one
//! still refers to a live class and whether two classes are the same one.

use std::collections::HashMap;

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::signature::Unsupported;

/// The table's size below which it is never pruned (a prune then costs
/// nothing worth saving).
pub const PRUNE_FLOOR: usize = 64;

/// What the registry needs from the embedder about its classes.
///
/// [`ClassHandles::upgrade`] and [`ClassHandles::same`] are called with the
/// registry's lock held: they must not call back into the registry, and
/// are quick (no allocation that could run an embedder's finalizers). The
/// other methods are called with no lock held, and may re-enter it.
pub trait ClassHandles {
    /// A class, held strongly (as long as this handle lives, so does the
    /// class).
    type Class;
    /// A weak reference to a class, kept in the registry's table: it never
    /// keeps its class alive.
    type Ref;

    /// A weak reference to `class`; `None` when none can be made, and the
    /// class is then keyed by its path without owning it.
    fn downgrade(&self, class: &Self::Class) -> Option<Self::Ref>;
    /// The class `weak` refers to, while it is alive; `None` once it is
    /// garbage.
    fn upgrade(&self, weak: &Self::Ref) -> Option<Self::Class>;
    /// Whether `a` and `b` are one class (identity, not equality).
    fn same(&self, a: &Self::Class, b: &Self::Class) -> bool;
    /// Frees the classes that only reference cycles keep alive, so that
    /// [`ClassHandles::upgrade`] no longer finds them.
    fn collect_garbage(&self);
    /// How an error message names `class`: it should tell two classes of
    /// one path apart (an address, say).
    fn describe(&self, class: &Self::Class) -> String;
}

/// The registry: dotted path → the one live class keyed by it. See the
/// module documentation.
///
/// Invariants: an entry's path is the path its class was keyed under; at
/// most one class is keyed under a path while it lives (every other is
/// refused), except one the embedder could make no weak reference to,
/// which is keyed without owning it; and after every registration the table holds fewer than
/// `prune_at` entries, where `prune_at` is at most twice the number of
/// entries alive at the last prune (or [`PRUNE_FLOOR`]).
///
/// The lock is held only for a lookup, an insertion or a prune, never
/// while the embedder makes a reference, collects garbage or frees what
/// the table let go of (any of which may run code that keys a value and
/// comes back here). An embedder that calls the registry only under its
/// own interpreter lock never finds it contended, nor held at a fork; the
/// lock is `std::sync`'s all the same, as every lock that threads may take
/// freely ([`crate::fork`]).
pub struct ValueClasses<R> {
    table: Mutex<Option<Table<R>>>,
}

struct Table<R> {
    holders: HashMap<String, R>,
    /// The size at which the next registration prunes the dead entries.
    prune_at: usize,
}

/// Who holds a path, as one lookup found it.
enum Holder<C> {
    /// No live class: the path is free.
    Free,
    /// The class asked about.
    Mine,
    /// Another live class.
    Other(C),
}

impl<R> Table<R> {
    fn new() -> Self {
        Table {
            holders: HashMap::new(),
            prune_at: PRUNE_FLOOR,
        }
    }

    #[inline(always)]
    fn holder<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: &str,
        class: &E::Class,
    ) -> Holder<E::Class> {
        let Some(held) = self.holders.get(path).and_then(|w| embedder.upgrade(w)) else {
            return Holder::Free;
        };
        // Dropping `held` when it is `class` frees nothing: the caller holds
        // `class` too. Another class is handed out, to be dropped unlocked.
        match embedder.same(&held, class) {
            true => Holder::Mine,
            false => Holder::Other(held),
        }
    }

    /// Keeps only the entries whose class lives, and sets the size of the
    /// next prune to twice what is left. The dead references go to
    /// `released`, and the live classes looked at to `looked`, to be dropped
    /// with the lock released (dropping the last handle on a class may run
    /// the embedder's finalizers).
    fn prune<E: ClassHandles<Ref = R>>(
        &mut self,
        embedder: &E,
        released: &mut Vec<R>,
        looked: &mut Vec<E::Class>,
    ) {
        // The dead paths first, then their removal: the table is left as it
        // was if the embedder panics while being asked.
        let mut dead = vec![];
        for (path, weak) in &self.holders {
            match embedder.upgrade(weak) {
                Some(class) => looked.push(class),
                None => dead.push(path.clone()),
            }
        }
        released.extend(dead.iter().filter_map(|path| self.holders.remove(path)));
        self.prune_at = (2 * self.holders.len()).max(PRUNE_FLOOR);
    }
}

impl<R> ValueClasses<R> {
    /// An empty registry (usable in a `static`).
    pub const fn new() -> Self {
        ValueClasses {
            table: Mutex::new(None),
        }
    }

    /// The table. A panic while it was held (in an embedder's method)
    /// left it whole: the embedder is only asked before a change, and every
    /// change is one `insert` or the removal of paths found dead.
    fn lock(&self) -> MutexGuard<'_, Option<Table<R>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many paths the table holds, live or dead (for tests and
    /// diagnostics).
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, |table| table.holders.len())
    }

    /// Whether the table holds no path.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dotted path a value of `class` is keyed by: `path`, once `class`
    /// owns it; the refusal ([`clash`]) when another live class does, even
    /// after the embedder collected its garbage once.
    pub fn path_for<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: String,
        class: &E::Class,
    ) -> Result<String, Unsupported> {
        let Some(held) = self.claim(embedder, &path, class) else {
            return Ok(path);
        };
        // The owner may be garbage kept by a reference cycle: collect before
        // refusing, which only ever happens on a clash, never per call.
        drop(held);
        embedder.collect_garbage();
        match self.claim(embedder, &path, class) {
            None => Ok(path),
            Some(held) => Err(clash(
                &path,
                &embedder.describe(&held),
                &embedder.describe(class),
            )),
        }
    }

    /// Registers `class` as the owner of `path` when no live class owns it;
    /// `Some(other)`: the other live class that does. One lookup once
    /// `class` owns it (inlined: every value of an enum class or subclass
    /// comes here, the registration only once per class).
    #[inline(always)]
    fn claim<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: &str,
        class: &E::Class,
    ) -> Option<E::Class> {
        let found = match self.lock().as_ref() {
            Some(table) => table.holder(embedder, path, class),
            None => Holder::Free,
        };
        match found {
            Holder::Mine => None,
            Holder::Other(held) => Some(held),
            Holder::Free => self.register(embedder, path, class),
        }
    }

    /// [`ValueClasses::claim`] for a path no live class owned at its lookup.
    #[cold]
    fn register<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: &str,
        class: &E::Class,
    ) -> Option<E::Class> {
        // Made with the lock released: the embedder may run code that comes
        // back here (a collection whose finalizers key a value).
        let mine = embedder.downgrade(class)?;
        let mut released = vec![];
        let mut looked = vec![];
        let found = {
            let mut table = self.lock();
            let table = table.get_or_insert_with(Table::new);
            // Looked up again: code run while the lock was released may
            // have registered a class since.
            match table.holder(embedder, path, class) {
                Holder::Free => {
                    if let Some(dead) = table.holders.insert(path.to_owned(), mine) {
                        released.push(dead);
                    } else if table.holders.len() >= table.prune_at {
                        table.prune(embedder, &mut released, &mut looked);
                    }
                    None
                }
                Holder::Mine => {
                    released.push(mine);
                    None
                }
                Holder::Other(held) => {
                    released.push(mine);
                    Some(held)
                }
            }
        };
        // Freed with the lock released.
        drop(released);
        drop(looked);
        found
    }
}

impl<R> Default for ValueClasses<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// The refusal of a value of class `class` whose dotted `path` the live
/// class `held` has too (each as [`ClassHandles::describe`] names it).
pub fn clash(path: &str, held: &str, class: &str) -> Unsupported {
    Unsupported {
        what: format!("a value of class '{path}'"),
        reason: Some(format!(
            "another live class has that dotted path too ({held}, and {class}), and keys name \
             a value's class by its dotted path, the same in every process, so the two would \
             serve each other's entries. Define each class once at module level under a name \
             of its own (not in a function or by a factory, nor twice by Enum's functional \
             API), or pass a plain value instead (a member's .value, a named tuple as a \
             tuple), or key the argument by a plain attribute with a key constructor \
             (ArgsKeyField('<argument>', path='<attribute>'))."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::sync::{Arc, Weak};

    /// A class: its identity is its allocation.
    struct Class(&'static str);

    /// Classes as `Arc`s, referred to by `Weak`s; `cycles` stands for the
    /// classes only reference cycles keep alive, which a collection frees.
    #[derive(Default)]
    struct Fake {
        cycles: RefCell<Vec<Arc<Class>>>,
        collections: Cell<usize>,
        /// Makes no weak reference (as an embedder out of memory).
        no_refs: Cell<bool>,
    }

    impl ClassHandles for Fake {
        type Class = Arc<Class>;
        type Ref = Weak<Class>;

        fn downgrade(&self, class: &Arc<Class>) -> Option<Weak<Class>> {
            (!self.no_refs.get()).then(|| Arc::downgrade(class))
        }
        fn upgrade(&self, weak: &Weak<Class>) -> Option<Arc<Class>> {
            weak.upgrade()
        }
        fn same(&self, a: &Arc<Class>, b: &Arc<Class>) -> bool {
            Arc::ptr_eq(a, b)
        }
        fn collect_garbage(&self) {
            self.cycles.borrow_mut().clear();
            self.collections.set(self.collections.get() + 1);
        }
        fn describe(&self, class: &Arc<Class>) -> String {
            format!("<class '{}'> at {:p}", class.0, Arc::as_ptr(class))
        }
    }

    fn class(name: &'static str) -> Arc<Class> {
        Arc::new(Class(name))
    }

    #[test]
    fn the_first_class_owns_its_path_and_is_keyed_by_it_again_without_collecting() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let (color, size) = (class("Color"), class("Size"));
        for _ in 0..3 {
            assert_eq!(
                registry.path_for(&fake, "app.Color".into(), &color),
                Ok("app.Color".to_owned())
            );
        }
        // Another path is another owner.
        assert_eq!(
            registry.path_for(&fake, "app.Size".into(), &size),
            Ok("app.Size".to_owned())
        );
        assert_eq!(registry.len(), 2);
        assert_eq!(fake.collections.get(), 0);
    }

    #[test]
    fn a_second_live_class_of_a_path_is_refused_naming_the_path_and_both_classes() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let (first, second) = (class("Color"), class("Color"));
        assert!(registry.path_for(&fake, "app.Color".into(), &first).is_ok());
        let refused = registry
            .path_for(&fake, "app.Color".into(), &second)
            .unwrap_err();
        assert_eq!(refused.what, "a value of class 'app.Color'");
        let reason = refused.reason.as_deref().unwrap();
        let both = format!(
            "another live class has that dotted path too ({}, and {}), ",
            fake.describe(&first),
            fake.describe(&second)
        );
        assert!(reason.starts_with(&both), "{reason}");
        assert!(reason.contains("Define each class once at module level"));
        assert_eq!(
            refused,
            clash("app.Color", &fake.describe(&first), &fake.describe(&second))
        );
        // Collected once before refusing; the owner keeps its path.
        assert_eq!(fake.collections.get(), 1);
        assert_eq!(
            registry.path_for(&fake, "app.Color".into(), &first),
            Ok("app.Color".to_owned())
        );
        assert!(registry
            .path_for(&fake, "app.Color".into(), &second)
            .is_err());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_reloaded_class_takes_over_the_path_once_the_old_one_is_garbage() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let old = class("Point");
        assert!(registry.path_for(&fake, "app.Point".into(), &old).is_ok());
        drop(old);
        // The module reloaded: its new class is keyed by the same path.
        let new = class("Point");
        assert_eq!(
            registry.path_for(&fake, "app.Point".into(), &new),
            Ok("app.Point".to_owned())
        );
        assert_eq!(fake.collections.get(), 0);
        // And owns it now: a third while it lives is refused.
        assert!(registry
            .path_for(&fake, "app.Point".into(), &class("Point"))
            .is_err());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn an_owner_kept_only_by_a_cycle_is_collected_and_its_path_taken() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let old = class("Local");
        assert!(registry.path_for(&fake, "app.Local".into(), &old).is_ok());
        // Only a cycle holds it now (an enum class its members name).
        fake.cycles.borrow_mut().push(old);
        let new = class("Local");
        assert_eq!(
            registry.path_for(&fake, "app.Local".into(), &new),
            Ok("app.Local".to_owned())
        );
        assert_eq!(fake.collections.get(), 1);
        assert!(fake.cycles.borrow().is_empty());
    }

    #[test]
    fn dead_owners_leave_the_table_so_classes_of_fresh_names_do_not_grow_it() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        // A program that makes classes of fresh names in a loop, and keeps
        // one in four alive.
        let mut kept = vec![];
        for i in 0..10_000 {
            let path = format!("app.make.<locals>.Fresh{i}");
            let fresh = class("Fresh");
            assert_eq!(
                registry.path_for(&fake, path.clone(), &fresh),
                Ok(path.clone())
            );
            // Live at the last prune: the kept ones, and the class keyed.
            let bound = (2 * (kept.len() + 1)).max(PRUNE_FLOOR);
            assert!(
                registry.len() < bound,
                "{} paths after {} classes, {} of them alive",
                registry.len(),
                i + 1,
                kept.len() + 1
            );
            if i % 4 == 0 {
                kept.push((path, fresh));
            }
        }
        // The live owners kept their paths through every prune.
        for (path, owner) in &kept {
            assert_eq!(
                registry.path_for(&fake, path.clone(), owner),
                Ok(path.clone())
            );
            assert!(registry
                .path_for(&fake, path.clone(), &class("Fresh"))
                .is_err());
        }
        assert_eq!(fake.collections.get(), kept.len());
    }

    #[test]
    fn a_class_no_weak_reference_can_be_made_to_is_keyed_without_owning_its_path() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        fake.no_refs.set(true);
        let first = class("Color");
        assert_eq!(
            registry.path_for(&fake, "app.Color".into(), &first),
            Ok("app.Color".to_owned())
        );
        assert!(registry.is_empty());
        // The next class that can be referred to owns the path.
        fake.no_refs.set(false);
        let second = class("Color");
        assert!(registry
            .path_for(&fake, "app.Color".into(), &second)
            .is_ok());
        assert!(registry
            .path_for(&fake, "app.Color".into(), &first)
            .is_err());
    }
}
