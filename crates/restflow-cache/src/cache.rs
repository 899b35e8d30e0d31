//! Entries read through the lifecycle: a store, and the clock that decides
//! what each entry is when it is read.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::clock::Clock;
use crate::early::Dice;
use crate::entry::{Entry, Freshness, Lifetime, Stamps};
use crate::store::Store;
use crate::timestamp::Span;

/// What a key holds when it is read.
#[derive(Debug)]
pub enum Lookup<V> {
    /// A fresh entry.
    Fresh(Arc<Entry<V>>),
    /// A fresh entry whose early refresh this reader drew and claimed
    /// (see [`crate::early`]): serve it as a hit, and refresh it.
    Early(Arc<Entry<V>>),
    /// An entry past its ttl but inside its stale window. `refresh` is
    /// `true` for the one reader that claimed the entry's refresh.
    Stale {
        /// The entry to serve.
        entry: Arc<Entry<V>>,
        /// Whether this reader must schedule the refresh.
        refresh: bool,
    },
    /// No usable entry.
    Miss,
}

/// A store read through a clock.
///
/// Invariant: an expired entry is never served; the read that finds one
/// removes it (unless a newer entry took its place meanwhile).
pub struct Cache<V, S> {
    store: S,
    clock: Arc<Clock>,
    dice: Arc<Dice>,
    values: PhantomData<fn() -> V>,
}

impl<V, S: Store<V>> Cache<V, S> {
    /// A cache over `store` that reads time from `clock` (which other
    /// caches may share).
    pub fn new(store: S, clock: impl Into<Arc<Clock>>) -> Self {
        Cache {
            store,
            clock: clock.into(),
            dice: Arc::new(Dice::from_entropy()),
            values: PhantomData,
        }
    }

    /// This cache, drawing its early refreshes from `dice` (which other
    /// caches may share; tests seed it).
    pub fn with_dice(self, dice: Arc<Dice>) -> Self {
        Cache { dice, ..self }
    }

    /// The source of early-refresh draws.
    pub fn dice(&self) -> &Arc<Dice> {
        &self.dice
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The clock, to share with another cache.
    pub fn shared_clock(&self) -> Arc<Clock> {
        Arc::clone(&self.clock)
    }

    /// Reads `key`, claiming the refresh of a stale entry for at most one
    /// reader.
    ///
    /// Freshness is judged on the coarse clock ([`Clock::now_coarse`]),
    /// which saves most of a hit's clock cost, except within the coarse
    /// clock's lag of the entry's deadline, where the precise clock judges
    /// ([`Clock::now_judging`]): no entry is served fresh past its deadline.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> Lookup<V> {
        let Some(entry) = self.store.get(key) else {
            return Lookup::Miss;
        };
        let now = self.clock.now_judging(entry.stamps().fresh_until);
        match entry.stamps().freshness(now) {
            Freshness::Fresh if entry.stamps().early.is_none() => Lookup::Fresh(entry),
            Freshness::Fresh => self.fresh_or_early(entry, now),
            Freshness::Stale => Lookup::Stale {
                refresh: entry.claim_refresh(),
                entry,
            },
            Freshness::Expired => {
                drop(self.store.remove_if_same(key, &entry));
                Lookup::Miss
            }
        }
    }

    /// A fresh entry that refreshes early, read at `now`: [`Lookup::Early`]
    /// for the one reader whose draw says refresh and who claims it, else
    /// [`Lookup::Fresh`]. Out of line, so entries without early refresh
    /// pay one test on the hit path.
    #[cold]
    #[inline(never)]
    fn fresh_or_early(&self, entry: Arc<Entry<V>>, now: crate::timestamp::Timestamp) -> Lookup<V> {
        if entry.stamps().refreshes_early(now, &self.dice) && entry.claim_refresh() {
            Lookup::Early(entry)
        } else {
            Lookup::Fresh(entry)
        }
    }

    /// [`Cache::lookup`], except that an expired entry still inside `keep`
    /// past its stale window is kept in the store and handed back beside
    /// the miss: the value to serve if the recompute fails
    /// (stale-if-error).
    ///
    /// [`Cache::lookup`] stays a separate, smaller body: written as this
    /// with a zero `keep`, the hit path measured ~7 ns slower.
    pub fn lookup_keeping(&self, key: &[u8], keep: Span) -> (Lookup<V>, Option<Arc<Entry<V>>>) {
        if keep.is_zero() {
            return (self.lookup(key), None);
        }
        let Some(entry) = self.store.get(key) else {
            return (Lookup::Miss, None);
        };
        let now = self.clock.now_judging(entry.stamps().fresh_until);
        match entry.stamps().freshness(now) {
            Freshness::Fresh if entry.stamps().early.is_none() => (Lookup::Fresh(entry), None),
            Freshness::Fresh => (self.fresh_or_early(entry, now), None),
            Freshness::Stale => (
                Lookup::Stale {
                    refresh: entry.claim_refresh(),
                    entry,
                },
                None,
            ),
            Freshness::Expired => {
                if entry
                    .stamps()
                    .kept_until(keep)
                    .is_some_and(|until| now < until)
                {
                    (Lookup::Miss, Some(entry))
                } else {
                    drop(self.store.remove_if_same(key, &entry));
                    (Lookup::Miss, None)
                }
            }
        }
    }

    /// Reads `key` without claiming or removing anything: the entry and
    /// what it is now, or `None` when there is no usable entry (an expired
    /// entry may be kept for stale-if-error; see [`Cache::lookup_keeping`]).
    pub fn peek(&self, key: &[u8]) -> Option<(Arc<Entry<V>>, Freshness)> {
        let entry = self.store.get(key)?;
        let now = self.clock.now_judging(entry.stamps().fresh_until);
        match entry.stamps().freshness(now) {
            Freshness::Expired => None,
            freshness => Some((entry, freshness)),
        }
    }

    /// Stores `value` under `key`, stamped now with `lifetime`.
    pub fn insert(&self, key: &[u8], value: V, lifetime: Lifetime) -> Arc<Entry<V>> {
        self.insert_measured(key, value, lifetime, Span::ZERO)
    }

    /// [`Cache::insert`] for a value that took `delta` to compute, which
    /// weighs its early refresh.
    pub fn insert_measured(
        &self,
        key: &[u8],
        value: V,
        lifetime: Lifetime,
        delta: Span,
    ) -> Arc<Entry<V>> {
        let entry = self.entry_measured(value, lifetime, delta);
        self.store.insert(key.into(), Arc::clone(&entry));
        entry
    }

    /// The entry [`Cache::insert_measured`] would store, not stored.
    pub fn entry_measured(&self, value: V, lifetime: Lifetime, delta: Span) -> Arc<Entry<V>> {
        let stamps = Stamps::new(self.clock.now(), lifetime).measured(delta);
        Arc::new(Entry::new(value, stamps))
    }

    /// Removes the entry under `key`, handing it back to be dropped by the caller.
    pub fn remove(&self, key: &[u8]) -> Option<Arc<Entry<V>>> {
        self.store.remove(key)
    }

    /// Removes every entry, handing them back to be dropped by the caller.
    pub fn clear(&self) -> Vec<Arc<Entry<V>>> {
        self.store.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::timestamp::Timestamp;

    fn cache() -> Cache<&'static str, MemoryStore<&'static str>> {
        Cache::new(
            MemoryStore::new(100),
            Clock::frozen(Timestamp::from_micros(0)),
        )
    }

    #[test]
    fn lookup_walks_fresh_stale_expired() {
        let cache = cache();
        let lifetime = Lifetime::new(Span::from_secs(10), Span::from_secs(5));
        cache.insert(b"k", "v", lifetime);
        assert!(matches!(cache.lookup(b"k"), Lookup::Fresh(_)));
        cache.clock().advance(Span::from_secs(10));
        assert!(matches!(
            cache.lookup(b"k"),
            Lookup::Stale { refresh: true, .. }
        ));
        // Only the first stale reader is asked to refresh.
        assert!(matches!(
            cache.lookup(b"k"),
            Lookup::Stale { refresh: false, .. }
        ));
        cache.clock().advance(Span::from_secs(5));
        assert!(matches!(cache.lookup(b"k"), Lookup::Miss));
        // The expired entry left the store.
        assert!(cache.store().is_empty());
    }

    #[test]
    fn lookup_keeping_holds_an_expired_entry_for_stale_if_error() {
        let cache = cache();
        cache.insert(
            b"k",
            "v",
            Lifetime::new(Span::from_secs(10), Span::from_secs(5)),
        );
        cache.clock().advance(Span::from_secs(20));
        let (lookup, fallback) = cache.lookup_keeping(b"k", Span::from_secs(60));
        assert!(matches!(lookup, Lookup::Miss));
        assert_eq!(*fallback.unwrap().value(), "v");
        assert!(!cache.store().is_empty(), "kept for stale-if-error");
        cache.clock().advance(Span::from_secs(60));
        let (_, fallback) = cache.lookup_keeping(b"k", Span::from_secs(60));
        assert!(fallback.is_none());
        assert!(cache.store().is_empty());
    }

    #[test]
    fn a_fresh_read_whose_draw_passes_claims_an_early_refresh() {
        let cache = cache().with_dice(Arc::new(Dice::seeded(1)));
        // A beta so large that every draw passes.
        let lifetime = Lifetime::new(Span::from_secs(10), Span::ZERO)
            .refreshing_early(crate::early::Beta::new(1e12).unwrap());
        cache.insert_measured(b"k", "v", lifetime, Span::from_secs(1));
        cache.clock().advance(Span::from_secs(1));
        assert!(matches!(cache.lookup(b"k"), Lookup::Early(_)));
        // The claim is held: the next reader is served fresh.
        assert!(matches!(cache.lookup(b"k"), Lookup::Fresh(_)));
        // An entry without early refresh never draws.
        cache.insert(
            b"plain",
            "v",
            Lifetime::new(Span::from_secs(10), Span::ZERO),
        );
        assert!(matches!(cache.lookup(b"plain"), Lookup::Fresh(_)));
        // Nor does one whose computation took no time.
        cache.insert_measured(b"instant", "v", lifetime, Span::ZERO);
        assert!(matches!(cache.lookup(b"instant"), Lookup::Fresh(_)));
    }

    #[test]
    fn peek_claims_nothing() {
        let cache = cache();
        cache.insert(
            b"k",
            "v",
            Lifetime::new(Span::from_secs(1), Span::from_secs(5)),
        );
        cache.clock().advance(Span::from_secs(2));
        let (entry, freshness) = cache.peek(b"k").unwrap();
        assert_eq!(freshness, Freshness::Stale);
        assert!(entry.claim_refresh());
        assert!(cache.peek(b"missing").is_none());
    }

    #[test]
    fn a_zero_ttl_is_never_fresh_on_the_real_clock() {
        let cache = Cache::new(MemoryStore::new(10), Clock::system());
        for _ in 0..2_000 {
            cache.insert(b"k", "v", Lifetime::new(Span::ZERO, Span::ZERO));
            assert!(matches!(cache.lookup(b"k"), Lookup::Miss));
            cache.insert(b"k", "v", Lifetime::new(Span::ZERO, Span::from_secs(60)));
            assert!(matches!(cache.lookup(b"k"), Lookup::Stale { .. }));
            assert_eq!(cache.peek(b"k").unwrap().1, Freshness::Stale);
        }
    }

    #[test]
    fn remove_and_clear() {
        let cache = cache();
        cache.insert(b"a", "1", Lifetime::FOREVER);
        cache.insert(b"b", "2", Lifetime::FOREVER);
        assert_eq!(*cache.remove(b"a").unwrap().value(), "1");
        assert!(cache.remove(b"a").is_none());
        assert_eq!(cache.clear().len(), 1);
        assert!(matches!(cache.lookup(b"b"), Lookup::Miss));
    }
}
