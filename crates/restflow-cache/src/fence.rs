//! Fences: a single-key delete that the computations of that key already
//! under way do not undo.
//!
//! A computation of a key (a leader's, a background refresh's, a forced
//! recompute's) reads its data before it stores its value. A delete of
//! the key that lands in between (the caller changed the data and drops
//! the entry) must not be followed by that computation storing the value
//! it made from the old data. Whole-function and partition drops are
//! fenced by generations ([`crate::Scope`]); a single key is fenced here.
//!
//! Every computation that will store under a key holds a [`Ticket`] from
//! its start; a delete of the key counts itself in the key's slot, and a
//! ticket whose slot counted a delete since the ticket was taken stores
//! nothing ([`Fences::store`]). Slots exist only while a ticket for the
//! key is held, so a delete of a key nobody computes costs one lookup.
//!
//! Invariant: the check of a ticket and its insert happen under the same
//! lock as a delete's count and its removal, so after [`Fences::delete`]
//! returns no computation that began before it can store (either its
//! insert came first and the delete removed it, or it sees the delete and
//! stores nothing). Nothing is dropped under that lock: the store hands
//! back what left it ([`Store::insert_handing_back`]), dropped after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::entry::Entry;
use crate::fork::PerProcess;
use crate::store::Store;

type Hasher = foldhash::fast::RandomState;

/// The computations of one key under way, and the deletes it has had
/// since the first of them began.
#[derive(Debug, Default)]
struct Slot {
    /// Tickets held for the key.
    holders: usize,
    /// Deletes of the key since its slot was made.
    deletes: u64,
}

type Slots = HashMap<Box<[u8]>, Slot, Hasher>;

/// The slots of the keys being computed (one process's: see
/// [`crate::fork`]).
#[derive(Default)]
pub struct Fences {
    slots: PerProcess<Mutex<Slots>>,
}

/// Held by a computation that will store under a key, from its start;
/// dropped when it ends (stored or not).
pub struct Ticket {
    fences: Arc<Fences>,
    key: Box<[u8]>,
    /// The key's delete count when the ticket was taken.
    deletes: u64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("deletes", &self.deletes)
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`. No code panics while holding it, so a poisoned one holds
/// consistent data.
fn lock(mutex: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fences {
    /// No key being computed.
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        lock(self.slots.get_or_init(|| Mutex::new(HashMap::default())))
    }

    /// A ticket for a computation of `key` that begins now.
    pub fn enter(self: &Arc<Self>, key: &[u8]) -> Ticket {
        let deletes = {
            let mut slots = self.slots();
            let slot = match slots.get_mut(key) {
                Some(slot) => slot,
                None => slots.entry(key.into()).or_default(),
            };
            slot.holders += 1;
            slot.deletes
        };
        Ticket {
            fences: Arc::clone(self),
            key: key.into(),
            deletes,
        }
    }

    /// Removes `key`'s entry from `store` and fences every computation of
    /// the key under way: none of them stores afterwards. Hands back the
    /// entry removed, to be dropped by the caller.
    pub fn delete<V, S: Store<V>>(&self, store: &S, key: &[u8]) -> Option<Arc<Entry<V>>> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get_mut(key) {
            slot.deletes += 1;
        }
        let removed = store.remove(key);
        drop(slots);
        removed
    }

    /// Stores `entry` under the ticket's key unless the key was deleted
    /// since the ticket was taken. Returns whether it stored, and what
    /// left the store, to be dropped by the caller.
    pub fn store<V, S: Store<V>>(
        &self,
        store: &S,
        ticket: &Ticket,
        entry: Arc<Entry<V>>,
    ) -> (bool, Vec<Arc<Entry<V>>>) {
        let slots = self.slots();
        // A slot missing: a ticket taken by the parent of this forked
        // process, whose deletes this process never saw.
        let fenced = slots
            .get(&ticket.key)
            .is_some_and(|slot| slot.deletes != ticket.deletes);
        if fenced {
            return (false, vec![entry]);
        }
        let left = store.insert_handing_back(ticket.key.clone(), entry);
        drop(slots);
        (true, left)
    }

    /// How many keys have a computation under way (tests).
    pub fn keys(&self) -> usize {
        self.slots.get().map_or(0, |slots| lock(slots).len())
    }
}

impl Ticket {
    /// The key the ticket is for.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the key was deleted since the ticket was taken.
    pub fn is_fenced(&self) -> bool {
        self.fences
            .slots()
            .get(&self.key)
            .is_some_and(|slot| slot.deletes != self.deletes)
    }

    /// Stores `entry` under the ticket's key unless it was deleted since
    /// (see [`Fences::store`]).
    pub fn store<V, S: Store<V>>(
        &self,
        store: &S,
        entry: Arc<Entry<V>>,
    ) -> (bool, Vec<Arc<Entry<V>>>) {
        self.fences.store(store, self, entry)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut slots = self.fences.slots();
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.holders = slot.holders.saturating_sub(1);
            if slot.holders == 0 {
                slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Lifetime, Stamps};
    use crate::memory::MemoryStore;
    use crate::timestamp::Timestamp;

    fn entry(n: u32) -> Arc<Entry<u32>> {
        Arc::new(Entry::new(
            n,
            Stamps::new(Timestamp::EPOCH, Lifetime::FOREVER),
        ))
    }

    #[test]
    fn a_delete_fences_the_tickets_taken_before_it_only() {
        let fences = Arc::new(Fences::new());
        let store = MemoryStore::new(10);
        store.insert(b"k".as_slice().into(), entry(0));
        let before = fences.enter(b"k");
        let other_key = fences.enter(b"j");
        assert_eq!(fences.keys(), 2);
        assert_eq!(*fences.delete(&store, b"k").unwrap().value(), 0);
        let after = fences.enter(b"k");
        assert!(before.is_fenced());
        assert!(!after.is_fenced());
        assert!(!other_key.is_fenced());
        let (stored, _) = before.store(&store, entry(1));
        assert!(!stored, "computed before the delete: not stored");
        assert!(store.get(b"k").is_none());
        let (stored, _) = after.store(&store, entry(2));
        assert!(stored);
        assert_eq!(*store.get(b"k").unwrap().value(), 2);
        let (stored, _) = other_key.store(&store, entry(3));
        assert!(stored);
        drop((before, after, other_key));
        assert_eq!(fences.keys(), 0, "slots live only while a ticket does");
    }

    #[test]
    fn a_delete_without_computations_only_removes() {
        let fences = Arc::new(Fences::new());
        let store = MemoryStore::new(10);
        store.insert(b"k".as_slice().into(), entry(0));
        assert!(fences.delete(&store, b"k").is_some());
        assert!(fences.delete(&store, b"k").is_none());
        assert_eq!(fences.keys(), 0);
        let ticket = fences.enter(b"k");
        assert!(ticket.store(&store, entry(1)).0);
    }

    #[test]
    fn what_an_insert_replaces_is_handed_back() {
        let fences = Arc::new(Fences::new());
        let store = MemoryStore::new(10);
        let old = entry(0);
        store.insert(b"k".as_slice().into(), Arc::clone(&old));
        let ticket = fences.enter(b"k");
        let (stored, left) = ticket.store(&store, entry(1));
        assert!(stored);
        assert_eq!(left.len(), 1);
        assert!(Arc::ptr_eq(&left[0], &old));
    }
}
