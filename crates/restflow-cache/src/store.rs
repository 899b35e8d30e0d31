//! The trait every store implements, so the engine's lifecycle logic is
//! written once whatever holds the entries.

use std::sync::Arc;

use crate::entry::Entry;

/// A place entries live, keyed by their canonical key bytes.
///
/// Invariant for implementors: a store never drops a value while it holds
/// one of its own locks. Values that leave (replaced, evicted, removed,
/// cleared) are dropped after the lock is released or handed back to the
/// caller, because dropping a value may run foreign code (a Python
/// `__del__`) that calls back into the store.
pub trait Store<V>: Send + Sync {
    /// The entry under `key`, if any, whatever its freshness.
    fn get(&self, key: &[u8]) -> Option<Arc<Entry<V>>>;

    /// Stores `entry` under `key`, replacing any previous entry.
    fn insert(&self, key: Box<[u8]>, entry: Arc<Entry<V>>);

    /// [`Store::insert`], handing back every entry that left the store to
    /// make room (the one replaced, any evicted) instead of dropping them,
    /// for a caller that inserts under a lock of its own.
    fn insert_handing_back(&self, key: Box<[u8]>, entry: Arc<Entry<V>>) -> Vec<Arc<Entry<V>>>;

    /// Removes the entry under `key` and hands it back.
    fn remove(&self, key: &[u8]) -> Option<Arc<Entry<V>>>;

    /// Removes the entry under `key` only if it is `entry` itself, so an
    /// expired entry can be dropped without racing a newer one.
    fn remove_if_same(&self, key: &[u8], entry: &Arc<Entry<V>>) -> Option<Arc<Entry<V>>>;

    /// Removes every entry and hands them back.
    fn drain(&self) -> Vec<Arc<Entry<V>>>;

    /// How many entries are held now.
    fn len(&self) -> usize;

    /// Whether the store holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
