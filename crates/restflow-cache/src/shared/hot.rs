//! The hot layer: per-process copies of near-cache entries, already
//! deserialized, keyed by the in-process call key, so that a hit served
//! from the near cache costs what a memory-store hit costs (one map lookup,
//! one epoch comparison, one freshness check) instead of rendering the
//! store's key strings, taking the near cache's lock, copying the payload
//! and deserializing it.
//!
//! Validity is the near cache's, made coarse: a copy records the near
//! cache's [`Epoch`] read *before* the lookup (or the read's ticket) that
//! produced the entry it was made from, and is served only while the epoch
//! reads the same. Every event that can make a near entry unservable bumps
//! the epoch (see [`super::near`]), so a copy is never served after its
//! entry could no longer be; the cost is that any invalidation makes every
//! copy go back once through the near cache, which re-verifies it.
//!
//! Invariants:
//! - an entry is inserted only with an epoch read before a near lookup that
//!   served its entry, or before the ticket of a read the near cache kept;
//! - it holds at most as many entries as the near cache (its bound);
//! - it is the memory store's map (`crate::memory`): values leave it
//!   outside its shard locks, and, as for the memory store, an embedder
//!   whose values run foreign code on drop (Python) uses it only attached
//!   to that runtime, which also keeps it safe across `fork` (the map's
//!   locks are `parking_lot`'s, see [`crate::fork`]);
//! - freshness is judged by the cache's clock, as the memory store judges
//!   it: a copy that is no longer fresh is not served (a stale entry goes
//!   through the shared store, so that one refresh runs across processes).

use std::sync::Arc;

use super::decode::Served;
use super::near::{Epoch, NearCache};
use crate::clock::Clock;
use crate::entry::{Entry, Freshness, Stamps};
use crate::memory::MemoryStore;
use crate::store::Store;

/// A copy as the hot layer keeps it.
#[derive(Debug)]
pub struct Hot<V> {
    /// The near cache's epoch when the entry it copies was served or kept.
    seen: Epoch,
    /// The value (deserialized).
    pub value: V,
}

/// See the module documentation.
pub struct HotCache<V> {
    store: MemoryStore<Hot<V>>,
}

impl<V: Send + Sync> HotCache<V> {
    /// A hot layer of at most `capacity` entries (the near cache's bound).
    pub fn new(capacity: usize) -> Self {
        HotCache {
            store: MemoryStore::new(capacity as u64),
        }
    }

    /// The copy under `key` if it may be served now: made under `near`'s
    /// current epoch, and fresh by `clock`.
    #[inline]
    pub fn get(&self, key: &[u8], near: &NearCache, clock: &Clock) -> Option<Arc<Entry<Hot<V>>>> {
        let entry = self.store.get(key)?;
        if entry.value().seen != near.epoch() {
            return None;
        }
        let now = clock.now_judging(entry.stamps().fresh_until);
        (entry.stamps().freshness(now) == Freshness::Fresh).then_some(entry)
    }

    /// Keeps `value`, a copy of the near entry with `stamps` served (or
    /// kept) after `seen` was read, under `key`. What it replaces or
    /// evicts is dropped here, after the map's lock is released.
    pub fn insert(&self, key: &[u8], seen: Epoch, value: V, stamps: Stamps) {
        let entry = Entry::new(Hot { seen, value }, stamps);
        self.store.insert(key.into(), Arc::new(entry));
    }

    /// Keeps a copy (made by `copy`) of the value `served` when it is an
    /// entry the near cache served or kept ([`Served::kept`]), under `key`.
    /// What it replaces or evicts is dropped here.
    pub fn keep<T>(&self, key: &[u8], served: &Served<T>, copy: impl FnOnce(&T) -> V) {
        if let (Some(seen), Some(stamps)) = (served.kept, served.stamps) {
            self.insert(key, seen, copy(&served.value), stamps);
        }
    }

    /// Copies held now (valid or not).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether it holds no copy.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The bound on the number of copies.
    pub fn capacity(&self) -> usize {
        self.store.max_entries() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Lifetime;
    use crate::shared::store::KeySet;
    use crate::shared::{Generations, NearEntry};
    use crate::timestamp::{Span, Timestamp};

    fn keys(data: &str) -> KeySet {
        KeySet {
            data: data.into(),
            scope: "gen".into(),
            partition: None,
            version: "vgen".into(),
            lock: "lock".into(),
            refresh: "refresh".into(),
        }
    }

    fn stamps(ttl_secs: i64) -> Stamps {
        Stamps::new(
            Timestamp::EPOCH,
            Lifetime::new(Span::from_secs(ttl_secs), Span::from_secs(ttl_secs)),
        )
    }

    fn near_entry(stamps: Stamps) -> NearEntry {
        NearEntry {
            flags: 0,
            value: b"x".to_vec(),
            stamps,
            generations: Generations {
                scope: 1,
                version: 1,
                partition: 0,
            },
        }
    }

    /// A live near cache holding `a`, and a hot copy of it made as the
    /// bindings make one.
    fn filled(clock: &Clock) -> (NearCache, HotCache<&'static str>) {
        let near = NearCache::new(10, "sync:".into());
        near.set_live(true);
        let seen = near.epoch();
        let ticket = near.ticket().unwrap();
        assert!(near.insert(ticket, &keys("a"), near_entry(stamps(60)), None));
        let hot = HotCache::new(near.capacity());
        hot.insert(b"a", seen, "x", stamps(60));
        assert_eq!(hot.get(b"a", &near, clock).unwrap().value().value, "x");
        (near, hot)
    }

    #[test]
    fn every_event_that_makes_a_near_entry_unservable_voids_the_copies() {
        let clock = Clock::frozen(Timestamp::EPOCH);
        type Event = (&'static str, fn(&NearCache));
        let events: [Event; 7] = [
            ("another key invalidated", |n| {
                n.invalidate([b"other".as_slice()])
            }),
            ("a counter invalidated", |n| {
                n.invalidate([b"gen".as_slice()])
            }),
            ("flushed", NearCache::flush),
            ("channel down", |n| n.set_live(false)),
            ("channel re-established", |n| n.set_live(true)),
            // A cluster master's channel (its slots' lanes).
            ("a lane down", |n| n.set_lanes_live(&[0], false)),
            ("a lane re-established", |n| n.set_lanes_live(&[0], true)),
        ];
        for (what, event) in events {
            let (near, hot) = filled(&clock);
            event(&near);
            assert!(hot.get(b"a", &near, &clock).is_none(), "{what}");
        }
    }

    #[test]
    fn forgetting_the_counters_voids_the_copies() {
        let clock = Clock::frozen(Timestamp::EPOCH);
        let (near, hot) = filled(&clock);
        // Enough counters to make the near cache forget them all.
        for i in 0..(4 * near.capacity() + 64) {
            let mut k = keys(&format!("k{i}"));
            k.scope = format!("gen{i}");
            near.insert(near.ticket().unwrap(), &k, near_entry(stamps(60)), None);
        }
        assert!(hot.get(b"a", &near, &clock).is_none());
    }

    #[test]
    fn a_copy_made_under_another_near_cache_is_never_valid() {
        // A forked child (or a store made anew) starts its own near cache.
        let clock = Clock::frozen(Timestamp::EPOCH);
        let (_parent, hot) = filled(&clock);
        let child = NearCache::new(10, "sync:".into());
        assert!(hot.get(b"a", &child, &clock).is_none(), "not live");
        child.set_live(true);
        assert!(hot.get(b"a", &child, &clock).is_none(), "live");
    }

    #[test]
    fn only_a_value_the_near_cache_served_or_kept_is_copied() {
        let clock = Clock::frozen(Timestamp::EPOCH);
        let (near, hot) = filled(&clock);
        let mut served = crate::shared::Served {
            status: crate::Status::Hit,
            value: "y",
            stamps: Some(stamps(60)),
            refresh: None,
            kept: None,
            bypassed: None,
        };
        hot.keep(b"b", &served, |value| *value);
        assert!(
            hot.get(b"b", &near, &clock).is_none(),
            "not the near cache's"
        );
        served.kept = Some(near.epoch());
        hot.keep(b"b", &served, |value| *value);
        assert_eq!(hot.get(b"b", &near, &clock).unwrap().value().value, "y");
        // Nothing stored (no instants): nothing to copy.
        served.stamps = None;
        hot.keep(b"c", &served, |_| unreachable!());
        assert_eq!(hot.len(), 2);
    }

    #[test]
    fn freshness_is_judged_by_the_clock() {
        let clock = Clock::frozen(Timestamp::EPOCH);
        let (near, hot) = filled(&clock);
        clock.advance(Span::from_secs(59));
        assert!(hot.get(b"a", &near, &clock).is_some(), "fresh");
        clock.advance(Span::from_secs(1));
        assert!(hot.get(b"a", &near, &clock).is_none(), "stale");
    }

    #[test]
    fn a_copy_made_with_an_epoch_read_before_an_invalidation_is_void() {
        // The race: an invalidation arrives while a read is in flight.
        let clock = Clock::frozen(Timestamp::EPOCH);
        let near = NearCache::new(10, "sync:".into());
        near.set_live(true);
        let seen = near.epoch();
        near.invalidate([b"a".as_slice()]);
        let hot = HotCache::new(10);
        hot.insert(b"a", seen, "old", stamps(60));
        assert!(hot.get(b"a", &near, &clock).is_none());
    }

    #[test]
    fn bounded_by_the_near_cache_and_frees_what_leaves() {
        let near = NearCache::new(64, "sync:".into());
        let hot: HotCache<Arc<()>> = HotCache::new(near.capacity());
        let first = Arc::new(());
        let seen = near.epoch();
        hot.insert(b"first", seen, Arc::clone(&first), stamps(60));
        let clock = Clock::frozen(Timestamp::EPOCH);
        for i in 0..1000u32 {
            let key = i.to_le_bytes();
            hot.insert(&key, seen, Arc::new(()), stamps(60));
            // Read again and again, so that these, not `first`, stay.
            for _ in 0..3 {
                assert!(hot.get(&key, &near, &clock).is_some());
            }
            assert!(hot.len() <= near.capacity(), "{}", hot.len());
        }
        assert_eq!(Arc::strong_count(&first), 1, "evicted and dropped");
    }
}
