//! Generations: invalidation that costs the same however many entries
//! there are.
//!
//! Every key starts with its scope's number and generation, and carries the
//! generation of its partition. Bumping a generation makes every key built
//! before it unreachable at once; the entries themselves are never looked
//! for, and leave the store by expiry or eviction. Nothing is ever scanned.
//!
//! A scope is what entries are shared under: one cached function, or
//! several that share a key identifier. Scopes are interned by their
//! identity string, so two wrappers with one identity share entries and
//! generations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::shared::FunctionKeys;

type Hasher = foldhash::fast::RandomState;

/// The most dropped partitions a scope remembers. One more, and it forgets
/// them all and moves every partition to a generation above any handed out
/// so far: all the scope's entries are dropped once, and memory stays
/// bounded however many partition values are ever dropped.
pub const MAX_DROPPED_PARTITIONS: usize = 10_000;

/// The generations of one scope.
#[derive(Debug)]
pub struct Scope<L> {
    number: u32,
    labels: L,
    generation: AtomicU64,
    /// Only partitions dropped since the last overflow are here; an absent
    /// partition is at the base generation.
    partitions: RwLock<Partitions>,
    /// Set once `partitions` has an entry, so the common case (no
    /// partition ever dropped) reads one atomic instead of taking a lock.
    any_dropped: AtomicBool,
}

/// The generations of dropped partitions.
///
/// Invariant: `base` is above every generation a partition had before the
/// last time `dropped` was cleared, so clearing never brings back a key
/// built before it (a reader that still holds the scope's old word reads
/// the new base, which no key was built with).
#[derive(Debug, Default)]
struct Partitions {
    dropped: HashMap<Box<[u8]>, u64, Hasher>,
    base: u64,
}

impl<L> Scope<L> {
    /// The scope's number, unique in the process.
    #[inline]
    pub fn number(&self) -> u32 {
        self.number
    }

    /// What the scope was registered with.
    pub fn labels(&self) -> &L {
        &self.labels
    }

    /// The current generation of the whole scope.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes every entry of the scope unreachable.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current generation of one partition (its encoded values).
    #[inline]
    pub fn partition_generation(&self, partition: &[u8]) -> u64 {
        if !self.any_dropped.load(Ordering::Acquire) {
            return 0;
        }
        let partitions = self.partitions.read();
        partitions
            .dropped
            .get(partition)
            .copied()
            .unwrap_or(partitions.base)
    }

    /// Makes every entry of one partition unreachable.
    pub fn bump_partition(&self, partition: &[u8]) {
        let mut partitions = self.partitions.write();
        let base = partitions.base;
        if partitions.dropped.len() >= MAX_DROPPED_PARTITIONS
            && !partitions.dropped.contains_key(partition)
        {
            // Forget them all; the new base retires every key built so far.
            let highest = partitions.dropped.values().copied().max().unwrap_or(base);
            partitions.base = highest.max(base) + 1;
            partitions.dropped.clear();
        } else {
            *partitions.dropped.entry(partition.into()).or_insert(base) += 1;
        }
        self.any_dropped.store(true, Ordering::Release);
    }

    /// How many dropped partitions the scope remembers (at most
    /// `MAX_DROPPED_PARTITIONS`, 10,000).
    pub fn remembered_partitions(&self) -> usize {
        self.partitions.read().dropped.len()
    }

    /// The first word of every key in the scope: the number in the high
    /// half, the generation's low 32 bits in the low half. (A generation
    /// wraps after 2^32 bumps; an entry would have to outlive all of them
    /// to be reachable again.)
    #[inline]
    pub fn key_word(&self) -> u64 {
        (u64::from(self.number) << 32) | (self.generation() & 0xFFFF_FFFF)
    }
}

/// Every scope of the process, by identity.
#[derive(Debug)]
pub struct Scopes<L> {
    next: AtomicU32,
    by_identity: Mutex<HashMap<String, Arc<Scope<L>>, Hasher>>,
    /// Scopes of their own ([`Scopes::unique`]), held weakly: each goes
    /// with the function that owns it, so making such functions over and
    /// over does not grow this registry.
    own: Mutex<Vec<Weak<Scope<L>>>>,
}

impl<L> Default for Scopes<L> {
    fn default() -> Self {
        Scopes {
            next: AtomicU32::new(1),
            by_identity: Mutex::new(HashMap::default()),
            own: Mutex::new(Vec::new()),
        }
    }
}

impl<L> Scopes<L> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The scope of `identity`, registering it with `labels` if it is new
    /// (the labels of an existing scope are kept).
    pub fn intern(&self, identity: &str, labels: L) -> Arc<Scope<L>> {
        let mut scopes = self.by_identity.lock();
        if let Some(scope) = scopes.get(identity) {
            return Arc::clone(scope);
        }
        let scope = self.make(labels);
        scopes.insert(identity.to_owned(), Arc::clone(&scope));
        scope
    }

    /// A scope of its own for one caller: for a function whose identity
    /// other functions can have (a closure made by a factory), so its
    /// in-process entries are never another's. No identity finds it;
    /// [`Scopes::bump_where`] still reaches it while the caller keeps it.
    pub fn unique(&self, labels: L) -> Arc<Scope<L>> {
        let scope = self.make(labels);
        let mut own = self.own.lock();
        if own.len() == own.capacity() {
            // Forget dropped scopes before the vector grows: amortized O(1),
            // and the vector stays within twice the most ever live at once.
            own.retain(|weak| weak.strong_count() > 0);
        }
        own.push(Arc::downgrade(&scope));
        scope
    }

    fn make(&self, labels: L) -> Arc<Scope<L>> {
        Arc::new(Scope {
            number: self.next.fetch_add(1, Ordering::Relaxed),
            labels,
            generation: AtomicU64::new(0),
            partitions: RwLock::new(Partitions::default()),
            any_dropped: AtomicBool::new(false),
        })
    }

    /// What `pick` takes from the labels of every live scope (a shared
    /// store names some keys by labels, and reaches every function of a
    /// key constructor through them). One step per scope.
    pub fn collect_labels<T>(&self, mut pick: impl FnMut(&L) -> Option<T>) -> Vec<T> {
        let mut scopes: Vec<_> = self.by_identity.lock().values().cloned().collect();
        scopes.extend(self.own.lock().iter().filter_map(Weak::upgrade));
        scopes
            .iter()
            .filter_map(|scope| pick(&scope.labels))
            .collect()
    }

    /// Bumps every scope whose labels match; returns how many matched.
    /// Costs one step per scope (per cached function), never per entry.
    pub fn bump_where(&self, mut matches: impl FnMut(&L) -> bool) -> usize {
        let mut scopes: Vec<_> = self.by_identity.lock().values().cloned().collect();
        scopes.extend(self.own.lock().iter().filter_map(Weak::upgrade));
        let mut bumped = 0;
        for scope in scopes.iter().filter(|s| matches(&s.labels)) {
            scope.bump();
            bumped += 1;
        }
        bumped
    }
}

/// What a cached function's scope belongs to: the key constructor that
/// names its entries, at which version, and the function's id.
#[derive(Debug)]
pub struct ScopeLabels {
    /// The key constructor's dotted path.
    pub owner: String,
    /// The constructor's version.
    pub version: u32,
    /// The function id (a Redis Cluster store names the shards of a
    /// function's keys after it).
    pub function_id: String,
}

impl Scopes<ScopeLabels> {
    /// Makes every entry of the key constructor `owner`'s versions below
    /// `version` unreachable (`KeyConstructor.delete_previous_versions`);
    /// returns how many scopes that touched. One step per cached function,
    /// never per entry.
    pub fn drop_versions_below(&self, owner: &str, version: u32) -> usize {
        self.bump_where(|labels| labels.owner == owner && labels.version < version)
    }

    /// The scope of a cached function whose key strings name it
    /// `identity`: the one every function of that identity shares, or, for
    /// a function whose identity other live functions can have (`own`: one
    /// made inside a function, a lambda), a scope of its own, so its
    /// in-process entries are never another's.
    pub fn of_function(
        &self,
        identity: &str,
        labels: ScopeLabels,
        own: bool,
    ) -> Arc<Scope<ScopeLabels>> {
        match own {
            true => self.unique(labels),
            false => self.intern(identity, labels),
        }
    }

    /// The names of a cached function `function_id`, keyed by the key
    /// constructor `owner` at `version` under `namespace`: its key
    /// strings' namespace part, its names in a shared store, and its
    /// scope (`own`: one of its own, see [`Scopes::of_function`]). Its
    /// identity, what its entries are named by, is
    /// `<namespace part>::<function id>`.
    pub fn name_function(
        &self,
        (namespace, version): (String, u32),
        function_id: &str,
        owner: String,
        own: bool,
    ) -> FunctionNames {
        let namespace = crate::settings::namespace_part(namespace, version);
        let identity = format!("{namespace}::{function_id}");
        let keys = FunctionKeys::new(function_id, &identity, &owner, version);
        let labels = ScopeLabels {
            owner,
            version,
            function_id: function_id.to_owned(),
        };
        let scope = self.of_function(&identity, labels, own);
        FunctionNames {
            namespace,
            keys,
            scope,
        }
    }
}

/// What names one cached function, made once when it is decorated
/// ([`Scopes::name_function`]).
pub struct FunctionNames {
    /// `<namespace>`, or `<namespace>:v<version>` past version 1: the
    /// first part of its key strings.
    pub namespace: String,
    /// How a shared store names its keys and counters.
    pub keys: FunctionKeys,
    /// Its in-process scope.
    pub scope: Arc<Scope<ScopeLabels>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_shares_its_identitys_scope_unless_it_keeps_its_own() {
        let scopes = Scopes::new();
        let labels = || ScopeLabels {
            owner: "app.Keys".into(),
            version: 1,
            function_id: "app.f".into(),
        };
        let first = scopes.of_function("ns::app.f", labels(), false);
        let same = scopes.of_function("ns::app.f", labels(), false);
        let own = scopes.of_function("ns::app.f", labels(), true);
        assert!(Arc::ptr_eq(&first, &same));
        assert!(!Arc::ptr_eq(&first, &own));
        assert_ne!(first.key_word(), own.key_word());
        // Both are reached by their key constructor's version drop.
        assert_eq!(scopes.drop_versions_below("app.Keys", 2), 2);
    }

    #[test]
    fn a_function_is_named_by_its_namespace_version_and_id() {
        let scopes = Scopes::new();
        let name = |version, id: &str, own| {
            let owner = "app.Keys".to_owned();
            scopes.name_function(("ns".to_owned(), version), id, owner, own)
        };
        let (first, again, own) = (
            name(1, "app.f", false),
            name(1, "app.f", false),
            name(1, "app.f", true),
        );
        assert_eq!(first.namespace, "ns");
        assert_eq!(
            first.keys,
            FunctionKeys::new("app.f", "ns::app.f", "app.Keys", 1)
        );
        assert!(Arc::ptr_eq(&first.scope, &again.scope));
        assert!(!Arc::ptr_eq(&first.scope, &own.scope));
        // A later version: its own namespace part, identity and scope.
        let v2 = name(2, "app.f", false);
        assert_eq!(v2.namespace, "ns:v2");
        assert_eq!(
            v2.keys,
            FunctionKeys::new("app.f", "ns:v2::app.f", "app.Keys", 2)
        );
        assert!(!Arc::ptr_eq(&first.scope, &v2.scope));
        assert_eq!(v2.scope.labels.function_id, "app.f");
        assert_eq!(scopes.drop_versions_below("app.Keys", 2), 2);
    }

    #[test]
    fn older_versions_of_one_constructor_are_dropped() {
        let scopes: Scopes<ScopeLabels> = Scopes::new();
        let labels = |owner: &str, version| ScopeLabels {
            owner: owner.into(),
            version,
            function_id: "m.f".into(),
        };
        let old = scopes.intern("a1", labels("app.Keys", 1));
        let current = scopes.intern("a2", labels("app.Keys", 2));
        let other = scopes.intern("b1", labels("app.Other", 1));
        let before = [old.generation(), current.generation(), other.generation()];
        assert_eq!(scopes.drop_versions_below("app.Keys", 2), 1);
        assert_ne!(old.generation(), before[0]);
        assert_eq!(current.generation(), before[1]);
        assert_eq!(other.generation(), before[2]);
    }

    #[test]
    fn one_identity_one_scope() {
        let scopes: Scopes<&str> = Scopes::new();
        let a = scopes.intern("ns::f", "first");
        let b = scopes.intern("ns::f", "second");
        let c = scopes.intern("ns::g", "third");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*b.labels(), "first");
        assert_ne!(a.number(), c.number());
    }

    #[test]
    fn a_unique_scope_is_shared_with_no_one_and_still_bumped_by_label() {
        let scopes: Scopes<u32> = Scopes::new();
        let named = scopes.intern("ns::mk.<locals>.f", 1);
        let a = scopes.unique(1);
        let b = scopes.unique(1);
        assert_ne!(a.number(), b.number());
        assert_ne!(a.number(), named.number());
        assert!(Arc::ptr_eq(&named, &scopes.intern("ns::mk.<locals>.f", 1)));
        assert_eq!(scopes.bump_where(|version| *version == 1), 3);
        assert_eq!((a.generation(), b.generation()), (1, 1));
        // A dropped one is gone; making many never grows the registry past
        // twice the most ever live at once.
        drop(b);
        assert_eq!(scopes.bump_where(|version| *version == 1), 2);
        for _ in 0..1000 {
            drop(scopes.unique(1));
        }
        assert!(scopes.own.lock().len() <= 2 * 2);
    }

    #[test]
    fn bumps_change_the_key_word_and_partition_generations() {
        let scopes: Scopes<()> = Scopes::new();
        let scope = scopes.intern("s", ());
        let before = scope.key_word();
        scope.bump();
        assert_ne!(scope.key_word(), before);
        assert_eq!(scope.key_word() >> 32, u64::from(scope.number()));
        assert_eq!(scope.partition_generation(b"tenant-a"), 0);
        scope.bump_partition(b"tenant-a");
        scope.bump_partition(b"tenant-a");
        assert_eq!(scope.partition_generation(b"tenant-a"), 2);
        assert_eq!(scope.partition_generation(b"tenant-b"), 0);
    }

    #[test]
    fn bump_where_touches_only_matching_scopes() {
        let scopes: Scopes<u32> = Scopes::new();
        let v1 = scopes.intern("c:v1", 1);
        let v2 = scopes.intern("c:v2", 2);
        assert_eq!(scopes.bump_where(|version| *version < 2), 1);
        assert_eq!(v1.generation(), 1);
        assert_eq!(v2.generation(), 0);
    }

    #[test]
    fn dropped_partitions_are_bounded_and_stay_dropped() {
        let scopes: Scopes<()> = Scopes::new();
        let scope = scopes.intern("s", ());
        let name = |i: usize| format!("tenant-{i}").into_bytes();
        // Keys built before the drops, and their generations.
        let before: Vec<u64> = (0..20_000)
            .map(|i| scope.partition_generation(&name(i)))
            .collect();
        for i in 0..20_000 {
            scope.bump_partition(&name(i));
            assert!(scope.remembered_partitions() <= MAX_DROPPED_PARTITIONS);
        }
        // No partition is back at the generation it was dropped from.
        for (i, dropped) in before.iter().enumerate() {
            assert_ne!(
                scope.partition_generation(&name(i)),
                *dropped,
                "partition {i} came back"
            );
        }
    }
}
