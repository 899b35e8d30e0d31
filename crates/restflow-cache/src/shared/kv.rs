//! A shared store over a plain key-value cache: Django's cache API
//! (LocMem, the database cache, memcached, django-redis), or anything with
//! `get_many`, `add`, `set`, `delete` and `touch`.
//!
//! The lifecycle is the engine's, as with Redis; [`KvStore`] maps the
//! [`SharedStore`] operations onto those calls: `get_many` for a lookup
//! (one round trip on caches that batch it), `add` for locks and for
//! starting generation counters (epochs; see [`SharedStore`]), `delete` to
//! retire one. An embedder only implements [`KvCache`] (the calls, and its
//! values as [`KvValue`]).
//!
//! Unlike Redis, a lock is released by reading it and deleting it: two
//! calls, so a lock that expired in between could be released for its next
//! holder (documented; keep the lock timeout well above the time a
//! computation takes). Likewise an entry is written after its counters are
//! read, not atomically: an invalidation in between still wins, since the
//! entry then carries epochs no counter holds.

use std::time::Duration;

use super::{
    fresh_epoch, Fetched, Generations, Holder, KeySet, SharedStore, StoreError, Written,
    EPOCH_LIMIT,
};
use crate::key;

/// A value as the cache holds it, seen by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvValue {
    /// No value (or the cache's null).
    Missing,
    /// A byte string: a payload.
    Bytes(Vec<u8>),
    /// A non-negative integer that fits 64 bits (not a boolean): an epoch.
    Int(u64),
    /// A text: a lock's token.
    Text(String),
    /// Anything else (garbage under one of our keys).
    Other,
}

impl KvValue {
    /// The epoch a counter holds: an integer below [`EPOCH_LIMIT`]; `None`
    /// when it is missing or anything else (garbage heals: the next
    /// computation starts it again).
    fn epoch(&self) -> Option<u64> {
        match self {
            KvValue::Int(n) if *n < EPOCH_LIMIT => Some(*n),
            _ => None,
        }
    }
}

/// A value the store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvWrite<'a> {
    /// A payload.
    Bytes(&'a [u8]),
    /// An epoch.
    Int(u64),
    /// A lock's token.
    Text(&'a str),
}

/// The calls of a key-value cache, each one round trip. `timeout` is in
/// seconds, `None` for never.
pub trait KvCache: Send + Sync {
    /// The values of `names`, in order.
    fn get_many(&self, names: &[String]) -> Result<Vec<KvValue>, StoreError>;
    /// The value of `name`.
    fn get(&self, name: &str) -> Result<KvValue, StoreError>;
    /// Writes `name`.
    fn set(&self, name: &str, value: KvWrite<'_>, timeout: Option<f64>) -> Result<(), StoreError>;
    /// Writes `name` unless it holds a value; whether it wrote.
    fn add(&self, name: &str, value: KvWrite<'_>, timeout: Option<f64>)
        -> Result<bool, StoreError>;
    /// Removes `name`; whether it existed.
    fn delete(&self, name: &str) -> Result<bool, StoreError>;
    /// Sets `name`'s timeout.
    fn touch(&self, name: &str, timeout: Option<f64>) -> Result<(), StoreError>;
    /// The longest name (in bytes) the cache takes as it is: longer ones
    /// are replaced by their digest. A Django cache on memcached refuses a
    /// key over 250 bytes *after* its prefix; one with a long `KEY_PREFIX`
    /// says less than [`LONGEST_NAME`] here.
    fn longest_name(&self) -> usize {
        LONGEST_NAME
    }
}

/// A [`KvCache`] as a [`SharedStore`].
pub struct KvStore<C>(pub C);

/// The longest name a cache takes as it is by default
/// ([`KvCache::longest_name`]): memcached's 250 bytes, less room for the
/// prefix a Django cache puts before it (`:1:` and its `KEY_PREFIX`).
pub const LONGEST_NAME: usize = 200;

/// Cache keys must suit memcached: short, no spaces or control
/// characters. Keys that do not are replaced by their digest.
pub fn safe(key: &str) -> String {
    fitted(key, LONGEST_NAME)
}

/// `key` as it is if it has at most `longest` bytes, all printable ASCII
/// without spaces; else its digest (`restflow:h:` and 32 hex digits).
fn fitted(key: &str, longest: usize) -> String {
    if key.len() <= longest && key.bytes().all(|b| b.is_ascii_graphic()) {
        key.to_owned()
    } else {
        format!("restflow:h:{}", key::digest(key.as_bytes()))
    }
}

/// A ttl as a cache timeout: whole seconds, rounded up, plus one.
///
/// Django caches take whole seconds: memcached (and Django's own Redis
/// backend) drop the fraction and read anything under a second as "expire
/// now" (a 0.5 s lock or partition counter was gone before it was read:
/// nothing was ever stored), and memcached's clock ticks once a second, so
/// an item given `n` seconds lives between `n - 1` and `n`. Rounded up and
/// one more, a key lives at least its ttl everywhere (and at most 2 s past
/// it); never 0, which means "expire now" to some caches and "never" to
/// others.
fn timeout(ttl: Option<Duration>) -> Option<f64> {
    ttl.map(|d| d.as_secs_f64().ceil() + 1.0)
}

/// Generations from counters read in `KvStore::counter_names` order.
fn generations_of(epochs: &[Option<u64>]) -> Option<Generations> {
    Some(Generations {
        scope: (*epochs.first()?)?,
        version: (*epochs.get(1)?)?,
        partition: match epochs.get(2) {
            Some(epoch) => (*epoch)?,
            None => 0,
        },
    })
}

impl<C: KvCache> KvStore<C> {
    /// `key` as the cache names it: as it is, or its digest when it does
    /// not suit memcached (see [`safe`]) or is longer than the cache takes.
    fn name(&self, key: &str) -> String {
        fitted(key, self.0.longest_name().min(LONGEST_NAME))
    }

    /// The counters of `keys` as the cache names them: scope, version,
    /// then the partition's (the only one that expires).
    fn counter_names(&self, keys: &KeySet) -> Vec<String> {
        let mut names = vec![self.name(&keys.scope), self.name(&keys.version)];
        names.extend(keys.partition.as_deref().map(|p| self.name(p)));
        names
    }

    /// The epochs the counters `names` hold now (`get_many`: one round trip).
    fn epochs(&self, names: &[String]) -> Result<Vec<Option<u64>>, StoreError> {
        Ok(self.0.get_many(names)?.iter().map(KvValue::epoch).collect())
    }
}

impl<C: KvCache> SharedStore for KvStore<C> {
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
        let mut names = vec![
            self.name(&keys.data),
            self.name(&keys.scope),
            self.name(&keys.version),
            self.name(&keys.lock),
        ];
        if let Some(partition) = &keys.partition {
            names.push(self.name(partition));
        }
        let mut found = self.0.get_many(&names)?.into_iter();
        let mut next = || found.next().unwrap_or(KvValue::Missing);
        let (data, scope, version, lock, partition) = (next(), next(), next(), next(), next());
        let mut epochs = vec![scope.epoch(), version.epoch()];
        if names.len() > 4 {
            epochs.push(partition.epoch());
        }
        let payload = match data {
            KvValue::Missing => None,
            KvValue::Bytes(bytes) => Some(bytes),
            // A foreign value under our key: a miss, like any bad payload.
            _ => Some(Vec::new()),
        };
        Ok(Fetched {
            payload,
            generations: generations_of(&epochs),
            locked: lock != KvValue::Missing,
        })
    }

    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.0
            .set(&self.name(key), KvWrite::Bytes(payload), timeout(ttl))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.0.delete(&self.name(key))
    }

    /// Deletes the entry and its claims outright: a Django cache cannot
    /// rewrite a key keeping its expiry (as Redis marks the claims), so
    /// here a claim's holder learns of the delete by no longer holding its
    /// claim ([`SharedStore::put_current`]), and another process may take
    /// the lock at once. Three deletes, not atomic with a holder's write:
    /// a write whose check of its claim came just before the delete and
    /// whose set comes just after survives it (a window of one round trip,
    /// where Redis has none).
    fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError> {
        let existed = self.0.delete(&self.name(&keys.data))?;
        self.0.delete(&self.name(&keys.lock))?;
        self.0.delete(&self.name(&keys.refresh))?;
        self.0.delete(&self.name(&keys.fence()))?;
        Ok(existed)
    }

    /// `add` starts the fence; else the token it holds is read and its
    /// timeout renewed (`touch`). Not atomic: a delete between the read
    /// and the `touch` leaves nothing to touch, and the refresh, finding
    /// no token at its write, does not store (as the delete asks).
    fn fence(&self, keys: &KeySet, candidate: &str, ttl: Duration) -> Result<String, StoreError> {
        let name = self.name(&keys.fence());
        let expiry = timeout(Some(ttl));
        if self.0.add(&name, KvWrite::Text(candidate), expiry)? {
            return Ok(candidate.to_owned());
        }
        if let KvValue::Text(held) = self.0.get(&name)? {
            self.0.touch(&name, expiry)?;
            return Ok(held);
        }
        // Gone since the `add`, or garbage: start it.
        self.0.set(&name, KvWrite::Text(candidate), expiry)?;
        Ok(candidate.to_owned())
    }

    fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError> {
        let names = self.counter_names(keys);
        let mut epochs = self.epochs(&names)?;
        for (at, (name, epoch)) in names.iter().zip(epochs.iter_mut()).enumerate() {
            if epoch.is_some() {
                continue;
            }
            // Scope and version counters never expire; the partition's
            // lives `floor` unless an entry written under it extends it.
            let expiry = if at == 2 { timeout(Some(floor)) } else { None };
            let fresh = fresh_epoch();
            // Missing: start it, unless another process just did (then
            // read theirs). Garbage: `add` refuses, so replace it.
            if !self.0.add(name, KvWrite::Int(fresh), expiry)? {
                *epoch = self.0.get(name)?.epoch();
                if epoch.is_some() {
                    continue;
                }
                self.0.set(name, KvWrite::Int(fresh), expiry)?;
            }
            *epoch = Some(fresh);
        }
        generations_of(&epochs).ok_or_else(|| {
            StoreError::Unavailable("could not start a generation counter".to_owned())
        })
    }

    fn put_current(
        &self,
        keys: &KeySet,
        generations: Generations,
        payload: &[u8],
        ttl: Option<Duration>,
        holder: Option<Holder<'_>>,
    ) -> Result<Written, StoreError> {
        let names = self.counter_names(keys);
        let mut read = names.clone();
        read.extend(holder.map(|holder| self.name(holder.parts().0)));
        let mut found = self.0.get_many(&read)?;
        // The holder's claim or fence, read with the counters (one round
        // trip): one no longer holding its token was deleted with the
        // entry ([`SharedStore::delete_entry`]) or outlived by the
        // computation.
        if let Some((_, token)) = holder.map(Holder::parts) {
            let claim = found.pop();
            if !matches!(claim, Some(KvValue::Text(held)) if held == token) {
                return Ok(Written::Refused);
            }
        }
        let epochs: Vec<_> = found.iter().map(KvValue::epoch).collect();
        if generations_of(&epochs) != Some(generations) {
            return Ok(Written::Refused);
        }
        let entry_timeout = timeout(ttl);
        self.0.set(
            &self.name(&keys.data),
            KvWrite::Bytes(payload),
            entry_timeout,
        )?;
        // The partition counter lives as long as its newest entry. (A
        // plain cache cannot read a timeout, so this may shorten it when a
        // callable ttl shrinks: older entries then become misses early.)
        if let Some(partition) = names.get(2) {
            self.0.touch(partition, entry_timeout)?;
        }
        // A plain cache holds no types: a foreign value under the entry's
        // key is read (and counted) as a bad payload by the lookup.
        Ok(Written::Stored)
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.0
            .add(&self.name(key), KvWrite::Text(token), timeout(Some(ttl)))
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let key = self.name(key);
        if matches!(self.0.get(&key)?, KvValue::Text(holder) if holder == token) {
            self.0.delete(&key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A cache in a map, which records the timeouts it was given.
    #[derive(Default)]
    struct Map {
        values: Mutex<HashMap<String, (KvValue, Option<f64>)>>,
    }

    fn owned(value: KvWrite<'_>) -> KvValue {
        match value {
            KvWrite::Bytes(b) => KvValue::Bytes(b.to_vec()),
            KvWrite::Int(n) => KvValue::Int(n),
            KvWrite::Text(t) => KvValue::Text(t.to_owned()),
        }
    }

    impl KvCache for Map {
        fn get_many(&self, names: &[String]) -> Result<Vec<KvValue>, StoreError> {
            names.iter().map(|n| self.get(n)).collect()
        }
        fn get(&self, name: &str) -> Result<KvValue, StoreError> {
            let values = self.values.lock().unwrap();
            Ok(values.get(name).map_or(KvValue::Missing, |v| v.0.clone()))
        }
        fn set(&self, name: &str, value: KvWrite<'_>, t: Option<f64>) -> Result<(), StoreError> {
            let mut values = self.values.lock().unwrap();
            values.insert(name.to_owned(), (owned(value), t));
            Ok(())
        }
        fn add(&self, name: &str, value: KvWrite<'_>, t: Option<f64>) -> Result<bool, StoreError> {
            let mut values = self.values.lock().unwrap();
            if values.contains_key(name) {
                return Ok(false);
            }
            values.insert(name.to_owned(), (owned(value), t));
            Ok(true)
        }
        fn delete(&self, name: &str) -> Result<bool, StoreError> {
            Ok(self.values.lock().unwrap().remove(name).is_some())
        }
        fn touch(&self, name: &str, t: Option<f64>) -> Result<(), StoreError> {
            if let Some(value) = self.values.lock().unwrap().get_mut(name) {
                value.1 = t;
            }
            Ok(())
        }
    }

    fn keys(partition: bool) -> KeySet {
        KeySet {
            data: "p:data key with spaces".into(),
            scope: "p:gen".into(),
            partition: partition.then(|| "p:pgen".into()),
            version: "p:vgen".into(),
            lock: "p:lock".into(),
            refresh: "p:refresh".into(),
        }
    }

    #[test]
    fn an_entry_is_current_until_a_counter_is_retired() {
        let store = KvStore(Map::default());
        let keys = keys(true);
        assert_eq!(store.fetch(&keys).unwrap(), Fetched::default());
        let generations = store.generations(&keys, Duration::from_secs(60)).unwrap();
        assert_eq!(
            store.generations(&keys, Duration::from_secs(60)).unwrap(),
            generations,
            "started once, then read"
        );
        assert!(store
            .put_current(&keys, generations, b"v", Some(Duration::from_secs(5)), None)
            .unwrap()
            .stored());
        let fetched = store.fetch(&keys).unwrap();
        assert_eq!(fetched.payload.as_deref(), Some(&b"v"[..]));
        assert_eq!(fetched.generations, Some(generations));
        // The entry's key has a space: it is stored under its digest.
        assert!(store
            .0
            .values
            .lock()
            .unwrap()
            .contains_key(&safe(&keys.data)));
        assert!(safe(&keys.data).starts_with("restflow:h:"));
        // The partition counter lives as long as the entry (in whole
        // seconds, and one more).
        assert_eq!(store.0.values.lock().unwrap()["p:pgen"].1, Some(6.0));

        assert!(store.delete("p:pgen").unwrap());
        assert_eq!(store.fetch(&keys).unwrap().generations, None);
        assert!(
            !store
                .put_current(&keys, generations, b"w", None, None)
                .unwrap()
                .stored(),
            "an entry computed under a retired counter is not stored"
        );
    }

    #[test]
    fn garbage_under_a_counter_or_the_entry_heals() {
        let store = KvStore(Map::default());
        let keys = keys(false);
        store.0.set("p:gen", KvWrite::Text("junk"), None).unwrap();
        store
            .0
            .set("p:vgen", KvWrite::Int(EPOCH_LIMIT), None)
            .unwrap();
        let generations = store.generations(&keys, Duration::from_secs(1)).unwrap();
        assert_eq!(generations.partition, 0);
        assert!(generations.scope < EPOCH_LIMIT && generations.version < EPOCH_LIMIT);
        store
            .0
            .set(&safe(&keys.data), KvWrite::Int(3), None)
            .unwrap();
        assert_eq!(
            store.fetch(&keys).unwrap().payload,
            Some(Vec::new()),
            "a foreign value is a bad payload"
        );
    }

    #[test]
    fn a_delete_of_the_entry_refuses_the_write_of_its_claim_holders() {
        let store = KvStore(Map::default());
        let keys = keys(false);
        let generations = store.generations(&keys, Duration::from_secs(60)).unwrap();
        let lock = Some(Holder::Claim(keys.lock.as_str(), "a"));
        assert!(store
            .try_lock(&keys.lock, "a", Duration::from_secs(5))
            .unwrap());
        assert!(store
            .put_current(&keys, generations, b"v", None, lock)
            .unwrap()
            .stored());
        assert!(store.delete_entry(&keys).unwrap());
        assert!(!store.fetch(&keys).unwrap().locked, "its claims go with it");
        assert!(
            !store
                .put_current(&keys, generations, b"w", None, lock)
                .unwrap()
                .stored(),
            "the holder of a deleted claim does not store"
        );
        assert_eq!(store.fetch(&keys).unwrap().payload, None);
        let refresh = Some(Holder::Claim(keys.refresh.as_str(), "b"));
        assert!(store
            .try_lock(&keys.refresh, "b", Duration::from_secs(5))
            .unwrap());
        assert!(!store.delete_entry(&keys).unwrap(), "no entry was there");
        assert!(!store
            .put_current(&keys, generations, b"w", None, refresh)
            .unwrap()
            .stored());
        // A writer without a claim or fence is not fenced.
        assert!(store
            .put_current(&keys, generations, b"x", None, None)
            .unwrap()
            .stored());
    }

    #[test]
    fn a_delete_of_the_entry_refuses_the_write_of_its_forced_refreshes() {
        let store = KvStore(Map::default());
        let keys = keys(false);
        let fence = keys.fence();
        let generations = store.generations(&keys, Duration::from_secs(60)).unwrap();
        let ttl = Duration::from_secs(5);
        // Two refreshes under way share the fence's token.
        assert_eq!(store.fence(&keys, "a", ttl).unwrap(), "a");
        assert_eq!(store.fence(&keys, "b", ttl).unwrap(), "a");
        let before = Some(Holder::Fence(fence.as_str(), "a"));
        assert!(store
            .put_current(&keys, generations, b"v", None, before)
            .unwrap()
            .stored());
        assert!(store.delete_entry(&keys).unwrap());
        // One that starts after the delete starts a new token.
        assert_eq!(store.fence(&keys, "c", ttl).unwrap(), "c");
        assert!(
            !store
                .put_current(&keys, generations, b"w", None, before)
                .unwrap()
                .stored(),
            "a refresh that started before the delete does not store"
        );
        assert_eq!(store.fetch(&keys).unwrap().payload, None);
        let after = Some(Holder::Fence(fence.as_str(), "c"));
        assert!(store
            .put_current(&keys, generations, b"x", None, after)
            .unwrap()
            .stored());
        // Garbage under the fence is replaced.
        store.0.set(&fence, KvWrite::Int(3), None).unwrap();
        assert_eq!(store.fence(&keys, "d", ttl).unwrap(), "d");
        assert_eq!(store.0.values.lock().unwrap()[&fence].1, Some(6.0));
    }

    #[test]
    fn a_lock_is_released_only_by_its_holder() {
        let store = KvStore(Map::default());
        assert!(store.try_lock("p:lock", "a", Duration::ZERO).unwrap());
        assert_eq!(
            store.0.values.lock().unwrap()["p:lock"].1,
            Some(1.0),
            "a timeout of 0 is a second, never 'forever' or 'expire now'"
        );
        let half = Duration::from_millis(500);
        assert!(store.try_lock("p:half", "a", half).unwrap());
        assert_eq!(
            store.0.values.lock().unwrap()["p:half"].1,
            Some(2.0),
            "half a second is 2 s: memcached would drop the fraction (expire now)"
        );
        assert!(!store
            .try_lock("p:lock", "b", Duration::from_secs(1))
            .unwrap());
        assert!(store.fetch(&keys(false)).unwrap().locked);
        store.unlock("p:lock", "b").unwrap();
        assert!(store.fetch(&keys(false)).unwrap().locked);
        store.unlock("p:lock", "a").unwrap();
        assert!(!store.fetch(&keys(false)).unwrap().locked);
    }
}
