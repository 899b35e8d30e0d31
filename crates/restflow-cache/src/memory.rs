//! The in-process store: a bounded, concurrent map of live values.
//!
//! Built on `quick_cache`, whose per-hit bookkeeping is a single relaxed
//! counter (measured ~25 ns over a bare map, against moka's much heavier
//! read path), and whose eviction policy (S3-FIFO-like, with a ghost queue)
//! keeps hot entries under scan-heavy traffic.

use std::sync::Arc;

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{Lifecycle, OptionsBuilder, UnitWeighter};

use crate::entry::Entry;
use crate::store::Store;

/// Keys are compared in full and hashed with foldhash: in-process only, so
/// a hash that differs between versions or processes does no harm.
type Hasher = foldhash::fast::RandomState;

/// Moves every value that leaves the map into the request state, which the
/// cache drops only after its shard lock is released (see [`Store`]).
///
/// quick_cache's default lifecycle keeps at most two leaving items and drops
/// any more in place, under the lock; this one keeps them all.
#[derive(Clone, Copy, Debug, Default)]
struct DropOutsideLock;

impl<K, V> Lifecycle<K, V> for DropOutsideLock {
    type RequestState = Vec<(K, V)>;

    #[inline]
    fn on_evict(&self, state: &mut Self::RequestState, key: K, val: V) {
        state.push((key, val));
    }
}

type Map<V> = QuickCache<Box<[u8]>, Arc<Entry<V>>, UnitWeighter, Hasher, DropOutsideLock>;

/// A bounded in-memory store.
///
/// Invariant: `len() <= max_entries()` at all times; an insert into a full
/// shard evicts first.
pub struct MemoryStore<V> {
    map: Map<V>,
}

/// quick_cache shards the bound and rounds each shard's share up; the store
/// rounds down instead, so the bound is never exceeded.
fn per_shard_total(max_entries: u64, shards: u64) -> u64 {
    (max_entries / shards).max(1) * shards
}

impl<V: Send + Sync> MemoryStore<V> {
    /// A store that holds at most `max_entries` entries (at least one).
    pub fn new(max_entries: u64) -> Self {
        let max_entries = max_entries.max(1);
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        // At least 32 entries a shard, so a small bound is not split into
        // shards that each evict after a handful of inserts.
        let mut shards = (parallelism * 4).next_power_of_two();
        while shards > 1 && max_entries / shards < 32 {
            shards /= 2;
        }
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(max_entries as usize)
            .weight_capacity(per_shard_total(max_entries, shards))
            .build()
            .expect("the options are within quick_cache's bounds");
        let map = Map::with_options(options, UnitWeighter, Hasher::default(), DropOutsideLock);
        MemoryStore { map }
    }

    /// The bound on the number of entries.
    pub fn max_entries(&self) -> u64 {
        self.map.capacity()
    }

    /// Changes the bound, evicting down to it when it shrinks.
    pub fn set_max_entries(&self, max_entries: u64) {
        let shards = self.map.num_shards() as u64;
        self.map
            .set_capacity(per_shard_total(max_entries.max(1), shards));
    }
}

impl<V: Send + Sync> Store<V> for MemoryStore<V> {
    #[inline]
    fn get(&self, key: &[u8]) -> Option<Arc<Entry<V>>> {
        self.map.get(key)
    }

    fn insert(&self, key: Box<[u8]>, entry: Arc<Entry<V>>) {
        self.map.insert(key, entry);
    }

    fn insert_handing_back(&self, key: Box<[u8]>, entry: Arc<Entry<V>>) -> Vec<Arc<Entry<V>>> {
        let mut left = Vec::new();
        self.map.insert_with_lifecycle(key, entry, &mut left);
        left.into_iter().map(|(_, entry)| entry).collect()
    }

    fn remove(&self, key: &[u8]) -> Option<Arc<Entry<V>>> {
        self.map.remove(key).map(|(_, entry)| entry)
    }

    fn remove_if_same(&self, key: &[u8], entry: &Arc<Entry<V>>) -> Option<Arc<Entry<V>>> {
        self.map
            .remove_if(key, |current| Arc::ptr_eq(current, entry))
            .map(|(_, entry)| entry)
    }

    fn drain(&self) -> Vec<Arc<Entry<V>>> {
        self.map.drain().map(|(_, entry)| entry).collect()
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Lifetime, Stamps};
    use crate::timestamp::Timestamp;

    fn entry(n: u32) -> Arc<Entry<u32>> {
        Arc::new(Entry::new(
            n,
            Stamps::new(Timestamp::EPOCH, Lifetime::FOREVER),
        ))
    }

    fn key(n: u32) -> Box<[u8]> {
        n.to_le_bytes().to_vec().into_boxed_slice()
    }

    #[test]
    fn never_holds_more_than_the_bound() {
        for bound in [1u64, 7, 100, 1_000, 10_000] {
            let store = MemoryStore::new(bound);
            for n in 0..(bound as u32 * 10) {
                store.insert(key(n), entry(n));
                assert!(
                    store.len() as u64 <= bound,
                    "bound {bound}: {} entries",
                    store.len()
                );
            }
            assert!(store.len() > 0);
        }
    }

    #[test]
    fn evicted_values_are_released() {
        let store = MemoryStore::new(50);
        let handles: Vec<_> = (0..5_000).map(entry).collect();
        for (n, handle) in handles.iter().enumerate() {
            store.insert(key(n as u32), handle.clone());
        }
        // Every value the store let go of is referenced by our handle alone.
        let held_by_store = handles.iter().filter(|h| Arc::strong_count(h) > 1).count();
        assert_eq!(held_by_store, store.len());
        assert!(store.len() <= 50);
    }

    #[test]
    fn remove_if_same_spares_a_newer_entry() {
        let store = MemoryStore::new(10);
        let old = entry(1);
        store.insert(key(1), old.clone());
        let new = entry(2);
        store.insert(key(1), new.clone());
        assert!(store.remove_if_same(&key(1), &old).is_none());
        assert!(store.remove_if_same(&key(1), &new).is_some());
        assert!(store.get(&key(1)).is_none());
    }

    #[test]
    fn shrinking_the_bound_evicts() {
        let store = MemoryStore::new(1_000);
        for n in 0..1_000 {
            store.insert(key(n), entry(n));
        }
        store.set_max_entries(100);
        let held = store.len();
        assert!(held > 0 && held <= 100, "{held} entries");
        assert_eq!(store.drain().len(), held);
        assert!(store.is_empty());
    }
}
