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
//! - the owner is keyed under it again at the cost of one lookup by its
//!   identity, without its path being read again;
//! - a class's path is read when its first value is keyed and kept for the
//!   class's life: a class whose `module`/`qualname` is reassigned later
//!   keeps the path it owns (its keys do not change under it), and keeps
//!   that path from any other live class, as before the change. Reading
//!   the path afresh instead would cost the formatting on every value, and
//!   would leave the class owning both paths (the old one kept from other
//!   classes, the new one in its keys);
//! - a second class, while the owner lives, is refused, with an error that
//!   names the path and both classes; before refusing, the embedder
//!   collects its garbage once (an owner kept only by a reference cycle,
//!   as an enum class that its members name, is dead, not live);
//! - once the owner is garbage, the next class with its path takes it over:
//!   that is how a reloaded class is told from a clash (the module's old
//!   class is gone), and it reads the entries stored under the path, as
//!   the same class in another process would;
//! - dead owners leave the table: when it has doubled since its last
//!   prune (and holds at least [`PRUNE_FLOOR`] entries), the next
//!   registration drops every dead one, so it holds fewer than twice as
//!   many entries as were live at its last prune (or [`PRUNE_FLOOR`]), at
//!   an amortized constant cost per registration. A program that makes and
//!   drops classes of fresh names in a loop, or reloads one class again and
//!   again, does not grow it without bound.
//!
//! The registry is generic over the embedder's classes ([`ClassHandles`]):
//! it keeps weak references to the classes that own a path, and asks the
//! embedder whether one still refers to a live class, whether two classes
//! are the same one, and a class's identity as a number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::signature::Unsupported;

/// The table's size below which it is never pruned (a prune then costs
/// nothing worth saving).
pub const PRUNE_FLOOR: usize = 64;

/// What the registry needs from the embedder about its classes.
///
/// [`ClassHandles::identity`], [`ClassHandles::upgrade`] and
/// [`ClassHandles::same`] are called with the registry's lock held: they
/// must not call back into the registry, and are quick (no allocation that
/// could run an embedder's finalizers). The other methods are called with
/// no lock held, and may re-enter it.
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
    /// A number that no other class alive at the same time has (an
    /// address): the registry finds a class's path by it. A dead class's
    /// number may be a new class's: the registry checks, by
    /// [`ClassHandles::upgrade`] and [`ClassHandles::same`], that what it
    /// found is `class` itself.
    fn identity(&self, class: &Self::Class) -> usize;
    /// Frees the classes that only reference cycles keep alive, so that
    /// [`ClassHandles::upgrade`] no longer finds them.
    fn collect_garbage(&self);
    /// How an error message names `class`: it should tell two classes of
    /// one path apart (an address, say).
    fn describe(&self, class: &Self::Class) -> String;
}

/// The registry: dotted path → the one live class keyed by it, and each
/// such class → its path. See the module documentation.
///
/// Invariants: an entry's path is the path its class was first keyed
/// under, read then and never again while the class lives; at most one
/// class is keyed under a path while it lives (every other is refused),
/// except one the embedder could make no weak reference to, which is keyed
/// without owning it, by its path read afresh each time; a live class
/// found by its identity owns the path found with it (the two entries are
/// made under one lock, and an owner's path is only taken over once it is
/// dead); and after every registration each of the two maps holds fewer
/// than `prune_at` entries, where `prune_at` is at most twice the number
/// of classes alive at the last prune (or [`PRUNE_FLOOR`]).
///
/// The lock is held only for a lookup, an insertion or a prune, never
/// while the embedder makes a reference, reads a path, collects garbage or
/// frees what the table let go of (any of which may run code that keys a
/// value and comes back here). An embedder that calls the registry only
/// under its own interpreter lock never finds it contended, nor held at a
/// fork; the lock is `std::sync`'s all the same, as every lock that
/// threads may take freely ([`crate::fork`]).
pub struct ValueClasses<R> {
    table: Mutex<Option<Table<R>>>,
}

struct Table<R> {
    /// Path → the class that owns it.
    holders: HashMap<Arc<str>, R>,
    /// A class's identity → the class and the path it owns: what a value
    /// of an already keyed class is looked up by (its path not read).
    /// Hashed with foldhash (an address in a few instructions; the std
    /// hasher's SipHash cost a hit about 150).
    owned: HashMap<usize, Owned<R>, foldhash::fast::RandomState>,
    /// The size at which the next registration prunes the dead entries.
    prune_at: usize,
}

/// A class that owns a path, found by its identity.
struct Owned<R> {
    class: R,
    path: Arc<str>,
}

/// Who holds a path, as one lookup found it.
enum Holder<C> {
    /// No live class: the path is free.
    Free,
    /// The class asked about: the path it is keyed by.
    Mine(Arc<str>),
    /// Another live class.
    Other(C),
}

impl<R> Table<R> {
    fn new() -> Self {
        Table {
            holders: HashMap::new(),
            owned: HashMap::default(),
            prune_at: PRUNE_FLOOR,
        }
    }

    /// The path `class` owns, found by its identity; `None` when it owns
    /// none (never keyed, or keyed without owning).
    #[inline(always)]
    fn owned<E: ClassHandles<Ref = R>>(&self, embedder: &E, class: &E::Class) -> Option<Arc<str>> {
        let owned = self.owned.get(&embedder.identity(class))?;
        // `None`: a dead class whose identity `class` has now.
        let held = embedder.upgrade(&owned.class)?;
        // A live class of `class`'s identity is `class` (checked all the
        // same): dropping `held` frees nothing, the caller holds it too.
        embedder.same(&held, class).then(|| owned.path.clone())
    }

    /// Who holds `path`, asked for `class`: first whether `class` owns a
    /// path already (its own, whatever `path` is: a class keeps the path
    /// it was first keyed by), then who owns `path`.
    #[inline(always)]
    fn holder<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: &Arc<str>,
        class: &E::Class,
    ) -> Holder<E::Class> {
        if let Some(own) = self.owned(embedder, class) {
            return Holder::Mine(own);
        }
        let Some(held) = self.holders.get(path).and_then(|w| embedder.upgrade(w)) else {
            return Holder::Free;
        };
        // Dropping `held` when it is `class` frees nothing: the caller holds
        // `class` too. Another class is handed out, to be dropped unlocked.
        match embedder.same(&held, class) {
            true => Holder::Mine(path.clone()),
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
        // The dead entries first, then their removal: the table is left as
        // it was if the embedder panics while being asked.
        let mut dead_paths = vec![];
        for (path, weak) in &self.holders {
            match embedder.upgrade(weak) {
                Some(class) => looked.push(class),
                None => dead_paths.push(path.clone()),
            }
        }
        let mut dead_classes = vec![];
        for (identity, owned) in &self.owned {
            match embedder.upgrade(&owned.class) {
                Some(class) => looked.push(class),
                None => dead_classes.push(*identity),
            }
        }
        released.extend(
            dead_paths
                .iter()
                .filter_map(|path| self.holders.remove(path)),
        );
        released.extend(
            dead_classes
                .iter()
                .filter_map(|identity| self.owned.remove(identity))
                .map(|owned| owned.class),
        );
        let live = self.holders.len().max(self.owned.len());
        self.prune_at = (2 * live).max(PRUNE_FLOOR);
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
    /// change is the `insert`s of one registration or the removal of
    /// entries found dead.
    fn lock(&self) -> MutexGuard<'_, Option<Table<R>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many paths the table holds, live or dead (for tests and
    /// diagnostics).
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, |table| table.holders.len())
    }

    /// How many classes the table holds by their identity, live or dead
    /// (for tests and diagnostics).
    pub fn classes(&self) -> usize {
        self.lock().as_ref().map_or(0, |table| table.owned.len())
    }

    /// Whether the table holds no path.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dotted path a value of `class` is keyed by: the path `class`
    /// owns, found by its identity, when its values were keyed before
    /// (`path` is not called); otherwise `path()`, read now, once `class`
    /// owns it; the refusal ([`clash`]) when another live class does, even
    /// after the embedder collected its garbage once.
    #[inline(always)]
    pub fn path_for<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        class: &E::Class,
        path: impl FnOnce() -> String,
    ) -> Result<Arc<str>, Unsupported> {
        let owned = match self.lock().as_ref() {
            Some(table) => table.owned(embedder, class),
            None => None,
        };
        match owned {
            Some(path) => Ok(path),
            // Read with the lock released: the embedder may run code.
            None => self.first_keyed(embedder, class, path().into()),
        }
    }

    /// [`ValueClasses::path_for`] for a class that owns no path yet (or
    /// could not be referred to): once per class.
    #[cold]
    fn first_keyed<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        class: &E::Class,
        path: Arc<str>,
    ) -> Result<Arc<str>, Unsupported> {
        let held = match self.claim(embedder, &path, class) {
            Ok(path) => return Ok(path),
            Err(held) => held,
        };
        // The owner may be garbage kept by a reference cycle: collect before
        // refusing, which only ever happens on a clash, never per call.
        drop(held);
        embedder.collect_garbage();
        self.claim(embedder, &path, class)
            .map_err(|held| clash(&path, &embedder.describe(&held), &embedder.describe(class)))
    }

    /// Registers `class` as the owner of `path` when no live class owns it,
    /// and returns the path `class` is keyed by (`path`, or the path it
    /// came to own meanwhile); `Err(other)`: the other live class that owns
    /// `path`.
    fn claim<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: &Arc<str>,
        class: &E::Class,
    ) -> Result<Arc<str>, E::Class> {
        let found = match self.lock().as_ref() {
            Some(table) => table.holder(embedder, path, class),
            None => Holder::Free,
        };
        match found {
            Holder::Mine(path) => Ok(path),
            Holder::Other(held) => Err(held),
            Holder::Free => self.register(embedder, path, class),
        }
    }

    /// [`ValueClasses::claim`] for a path no live class owned at its lookup.
    fn register<E: ClassHandles<Ref = R>>(
        &self,
        embedder: &E,
        path: &Arc<str>,
        class: &E::Class,
    ) -> Result<Arc<str>, E::Class> {
        // Made with the lock released: the embedder may run code that comes
        // back here (a collection whose finalizers key a value). One
        // reference for each map; without both the class owns nothing, and
        // is keyed by the path read each time.
        let (Some(mine), Some(also_mine)) = (embedder.downgrade(class), embedder.downgrade(class))
        else {
            return Ok(path.clone());
        };
        let mut released = vec![];
        let mut looked = vec![];
        let found = {
            let mut table = self.lock();
            let table = table.get_or_insert_with(Table::new);
            // Looked up again: code run while the lock was released may
            // have registered a class since (`class` itself, even, under
            // the path it read then: it keeps that one).
            match table.holder(embedder, path, class) {
                Holder::Free => {
                    released.extend(table.holders.insert(path.clone(), mine));
                    // Any entry under `class`'s identity is a dead class's:
                    // a live one would be `class`, found by `holder`.
                    let owned = Owned {
                        class: also_mine,
                        path: path.clone(),
                    };
                    let dead = table.owned.insert(embedder.identity(class), owned);
                    released.extend(dead.map(|dead| dead.class));
                    if table.holders.len().max(table.owned.len()) >= table.prune_at {
                        table.prune(embedder, &mut released, &mut looked);
                    }
                    Ok(path.clone())
                }
                Holder::Mine(own) => {
                    released.extend([mine, also_mine]);
                    Ok(own)
                }
                Holder::Other(held) => {
                    released.extend([mine, also_mine]);
                    Err(held)
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Weak;

    /// A class: its name, and its identity (unique among live classes).
    struct Class {
        name: &'static str,
        id: usize,
    }

    /// Code run the next time the registry makes a reference (with its
    /// lock released, as an embedder's finalizers or another thread may).
    type Hook = Box<dyn FnOnce(&Fake)>;

    /// Classes as `Arc`s, referred to by `Weak`s; `cycles` stands for the
    /// classes only reference cycles keep alive, which a collection frees.
    #[derive(Default)]
    struct Fake {
        cycles: RefCell<Vec<Arc<Class>>>,
        collections: Cell<usize>,
        /// Makes no weak reference (as an embedder out of memory).
        no_refs: Cell<bool>,
        /// How many times a path was read.
        reads: Cell<usize>,
        on_downgrade: RefCell<Option<Hook>>,
    }

    impl ClassHandles for Fake {
        type Class = Arc<Class>;
        type Ref = Weak<Class>;

        fn downgrade(&self, class: &Arc<Class>) -> Option<Weak<Class>> {
            let hook = self.on_downgrade.borrow_mut().take();
            if let Some(hook) = hook {
                hook(self);
            }
            (!self.no_refs.get()).then(|| Arc::downgrade(class))
        }
        fn upgrade(&self, weak: &Weak<Class>) -> Option<Arc<Class>> {
            weak.upgrade()
        }
        fn same(&self, a: &Arc<Class>, b: &Arc<Class>) -> bool {
            Arc::ptr_eq(a, b)
        }
        fn identity(&self, class: &Arc<Class>) -> usize {
            class.id
        }
        fn collect_garbage(&self) {
            self.cycles.borrow_mut().clear();
            self.collections.set(self.collections.get() + 1);
        }
        fn describe(&self, class: &Arc<Class>) -> String {
            format!("<class '{}'> at {:p}", class.name, Arc::as_ptr(class))
        }
    }

    impl Fake {
        /// The path a value of `class` is keyed by, when `path` is the
        /// path it reads as now (counted in `reads` when it is read).
        fn key<R>(
            &self,
            registry: &ValueClasses<R>,
            path: &str,
            class: &Arc<Class>,
        ) -> Result<String, Unsupported>
        where
            Self: ClassHandles<Ref = R>,
        {
            let read = || {
                self.reads.set(self.reads.get() + 1);
                path.to_owned()
            };
            registry.path_for(self, class, read).map(|p| p.to_string())
        }
    }

    /// A new class, of an identity no other has.
    fn class(name: &'static str) -> Arc<Class> {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        class_at(name, NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A new class of identity `id` (a dead class's, or none's).
    fn class_at(name: &'static str, id: usize) -> Arc<Class> {
        Arc::new(Class { name, id })
    }

    fn ok(path: &str) -> Result<String, Unsupported> {
        Ok(path.to_owned())
    }

    #[test]
    fn the_first_class_owns_its_path_and_is_keyed_by_it_again_without_reading_it() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let (color, size) = (class("Color"), class("Size"));
        for _ in 0..3 {
            assert_eq!(fake.key(&registry, "app.Color", &color), ok("app.Color"));
        }
        // Another path is another owner.
        assert_eq!(fake.key(&registry, "app.Size", &size), ok("app.Size"));
        assert_eq!((registry.len(), registry.classes()), (2, 2));
        // Each path read once, when its class was first keyed.
        assert_eq!(fake.reads.get(), 2);
        assert_eq!(fake.collections.get(), 0);
    }

    #[test]
    fn a_renamed_class_keeps_the_path_it_was_first_keyed_by() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let color = class("Color");
        assert_eq!(fake.key(&registry, "app.Color", &color), ok("app.Color"));
        // Its module or qualname reassigned: its keys do not change, and
        // the new path is not even read.
        assert_eq!(fake.key(&registry, "app.Shade", &color), ok("app.Color"));
        assert_eq!(fake.reads.get(), 1);
        // It still owns its path: another class of that path is refused.
        let other = class("Color");
        let refused = fake.key(&registry, "app.Color", &other).unwrap_err();
        assert_eq!(
            refused,
            clash("app.Color", &fake.describe(&color), &fake.describe(&other))
        );
        // The path it was renamed to is not its own: a class of it owns it.
        let shade = class("Shade");
        assert_eq!(fake.key(&registry, "app.Shade", &shade), ok("app.Shade"));
        assert_eq!(fake.key(&registry, "app.Shade", &color), ok("app.Color"));
        assert_eq!((registry.len(), registry.classes()), (2, 2));
    }

    #[test]
    fn a_class_first_keyed_twice_at_once_under_two_paths_keeps_the_first_registered() {
        // While the registry makes a reference for `app.Shade` (its lock
        // released), the same class is keyed under `app.Color` (another
        // thread that read its path before a rename, or a finalizer).
        static REGISTRY: ValueClasses<Weak<Class>> = ValueClasses::new();
        let fake = Fake::default();
        let color = class("Color");
        let inner = color.clone();
        *fake.on_downgrade.borrow_mut() = Some(Box::new(move |fake: &Fake| {
            assert_eq!(fake.key(&REGISTRY, "app.Color", &inner), ok("app.Color"));
        }));
        // The class keeps the one path it owns; the other stays free.
        assert_eq!(fake.key(&REGISTRY, "app.Shade", &color), ok("app.Color"));
        assert_eq!(fake.key(&REGISTRY, "app.Shade", &color), ok("app.Color"));
        assert_eq!((REGISTRY.len(), REGISTRY.classes()), (1, 1));
        assert_eq!(
            fake.key(&REGISTRY, "app.Shade", &class("Shade")),
            ok("app.Shade")
        );
        assert_eq!(fake.reads.get(), 3);
    }

    #[test]
    fn a_new_class_of_a_dead_class_identity_is_keyed_by_its_own_path() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let old = class_at("Old", 0);
        assert_eq!(fake.key(&registry, "app.Old", &old), ok("app.Old"));
        drop(old);
        // The address of a collected class, taken by a new one.
        let new = class_at("New", 0);
        assert_eq!(fake.key(&registry, "app.New", &new), ok("app.New"));
        assert_eq!(fake.key(&registry, "app.New", &new), ok("app.New"));
        assert_eq!(fake.reads.get(), 2);
        assert_eq!((registry.len(), registry.classes()), (2, 1));
        // The dead class's path is free.
        assert_eq!(fake.key(&registry, "app.Old", &class("Old")), ok("app.Old"));
    }

    #[test]
    fn a_second_live_class_of_a_path_is_refused_naming_the_path_and_both_classes() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let (first, second) = (class("Color"), class("Color"));
        assert!(fake.key(&registry, "app.Color", &first).is_ok());
        let refused = fake.key(&registry, "app.Color", &second).unwrap_err();
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
        assert_eq!(fake.key(&registry, "app.Color", &first), ok("app.Color"));
        assert!(fake.key(&registry, "app.Color", &second).is_err());
        assert_eq!((registry.len(), registry.classes()), (1, 1));
    }

    #[test]
    fn a_reloaded_class_takes_over_the_path_once_the_old_one_is_garbage() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let old = class("Point");
        assert!(fake.key(&registry, "app.Point", &old).is_ok());
        drop(old);
        // The module reloaded: its new class is keyed by the same path.
        let new = class("Point");
        assert_eq!(fake.key(&registry, "app.Point", &new), ok("app.Point"));
        assert_eq!(fake.collections.get(), 0);
        // And owns it now: a third while it lives is refused.
        assert!(fake.key(&registry, "app.Point", &class("Point")).is_err());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn an_owner_kept_only_by_a_cycle_is_collected_and_its_path_taken() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        let old = class("Local");
        assert!(fake.key(&registry, "app.Local", &old).is_ok());
        // Only a cycle holds it now (an enum class its members name).
        fake.cycles.borrow_mut().push(old);
        let new = class("Local");
        assert_eq!(fake.key(&registry, "app.Local", &new), ok("app.Local"));
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
            assert_eq!(fake.key(&registry, &path, &fresh), ok(&path));
            // Live at the last prune: the kept ones, and the class keyed.
            let bound = (2 * (kept.len() + 1)).max(PRUNE_FLOOR);
            let sizes = (registry.len(), registry.classes());
            assert!(
                sizes.0 < bound && sizes.1 < bound,
                "{sizes:?} paths and classes after {} classes, {} of them alive",
                i + 1,
                kept.len() + 1
            );
            if i % 4 == 0 {
                kept.push((path, fresh));
            }
        }
        // The live owners kept their paths through every prune.
        for (path, owner) in &kept {
            assert_eq!(fake.key(&registry, path, owner), ok(path));
            assert!(fake.key(&registry, path, &class("Fresh")).is_err());
        }
        assert_eq!(fake.collections.get(), kept.len());
    }

    #[test]
    fn a_class_reloaded_again_and_again_does_not_grow_the_table() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        // One path, a new class each time (the old one garbage): the path
        // is taken over, and each class is a new identity.
        for _ in 0..10_000 {
            let point = class("Point");
            assert_eq!(fake.key(&registry, "app.Point", &point), ok("app.Point"));
            assert_eq!(registry.len(), 1);
            assert!(registry.classes() < PRUNE_FLOOR, "{}", registry.classes());
        }
    }

    #[test]
    fn a_class_no_weak_reference_can_be_made_to_is_keyed_without_owning_its_path() {
        let fake = Fake::default();
        let registry = ValueClasses::new();
        fake.no_refs.set(true);
        let first = class("Color");
        assert_eq!(fake.key(&registry, "app.Color", &first), ok("app.Color"));
        // By its path as it reads each time: it owns none.
        assert_eq!(fake.key(&registry, "app.Shade", &first), ok("app.Shade"));
        assert_eq!(fake.reads.get(), 2);
        assert!(registry.is_empty());
        assert_eq!(registry.classes(), 0);
        // The next class that can be referred to owns the path.
        fake.no_refs.set(false);
        let second = class("Color");
        assert!(fake.key(&registry, "app.Color", &second).is_ok());
        assert!(fake.key(&registry, "app.Color", &first).is_err());
    }
}
