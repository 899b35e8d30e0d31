//! The trait a store shared between processes implements.
//!
//! Generation counters hold *epochs*, not counts: a counter that is missing
//! or unreadable (evicted, expired, deleted by an invalidation, overwritten
//! with garbage) starts again at a fresh random epoch, which no entry was
//! written under. So an invalidation deletes the counter, an eviction of a
//! counter retires the entries written under it instead of bringing older
//! ones back, a corrupt counter heals at the next computation, and there is
//! no count to overflow. Invariants every store keeps:
//!
//! - an entry is written only while every counter it was computed under
//!   still holds that epoch ([`SharedStore::put_current`]), so a value
//!   computed before an invalidation never lands where later reads find it;
//! - a missing or unreadable counter is never read as an epoch
//!   ([`Fetched::generations`] is `None`), so nothing is served under it.

use std::sync::Arc;
use std::time::Duration;

use super::near::NearCache;
use super::payload::Generations;

/// The keys one lookup reads, in one round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    /// The entry.
    pub data: String,
    /// The function's generation counter (never expires: one per function).
    pub scope: String,
    /// The partition's generation counter, for keys with a partition. It
    /// expires: it lives as long as the longest-lived entry written under
    /// it, and at least [`SharedStore::generations`]'s `floor`.
    pub partition: Option<String>,
    /// The key constructor version's generation counter (never expires:
    /// one per key constructor version).
    pub version: String,
    /// The lock a computation of this key holds.
    pub lock: String,
    /// The lock a background refresh of this key holds.
    pub refresh: String,
}

impl KeySet {
    /// The fence of this entry's forced refreshes (see
    /// [`SharedStore::fence`]): named after the refresh lock, so it shares
    /// the entry's hash tag (one slot on a cluster) and prefix.
    pub fn fence(&self) -> String {
        format!("{}:forced", self.refresh)
    }
}

/// What a writer holds on an entry's computation, which a delete of the
/// entry since it started must make refuse its write
/// ([`SharedStore::put_current`], [`SharedStore::delete_entry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder<'a> {
    /// A claim: the key ([`KeySet::lock`] or [`KeySet::refresh`]) the
    /// writer locked, and its token. The write is refused once a delete
    /// marked the claim (or, where a delete removes claims, once the claim
    /// no longer holds the token).
    Claim(&'a str, &'a str),
    /// A forced refresh's fence ([`KeySet::fence`]) and the token it held
    /// when the refresh started ([`SharedStore::fence`]). The write is
    /// refused unless the fence still holds that token: a delete removes
    /// it, and so does its expiry (a refresh that outlived the lock
    /// timeout).
    Fence(&'a str, &'a str),
}

impl<'a> Holder<'a> {
    /// The key the writer holds and its token.
    pub fn parts(self) -> (&'a str, &'a str) {
        match self {
            Holder::Claim(key, token) | Holder::Fence(key, token) => (key, token),
        }
    }
}

/// What [`SharedStore::put_current`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// It stored the entry.
    Stored,
    /// It stored the entry over a key of another type (a Redis list, hash,
    /// set...: not a payload, and not one a lookup can tell from a missing
    /// entry), which the caller counts as a refused payload.
    Replaced,
    /// It stored nothing: a counter moved on, or the writer's claim or
    /// fence was deleted with the entry.
    Refused,
}

impl Written {
    /// Whether the entry was stored.
    pub fn stored(self) -> bool {
        !matches!(self, Written::Refused)
    }
}

/// What one lookup found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The raw payload, if any.
    pub payload: Option<Vec<u8>>,
    /// The current generations; `None` when a counter is missing or
    /// unreadable (then no entry is current, and the next computation
    /// starts the counter at a fresh epoch).
    pub generations: Option<Generations>,
    /// Whether some process holds the computation lock.
    pub locked: bool,
}

/// A store that failed to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// It could not be reached (refused, reset, no connection to be had).
    Unavailable(String),
    /// It did not answer within the timeout.
    Timeout(String),
    /// It answered something this client does not understand.
    Protocol(String),
    /// It refused a write because it is a replica (`READONLY`): a master
    /// demoted by a failover, or a URL that names a replica. The write
    /// was not made, so it may be sent again to the master.
    ReadOnly(String),
    /// It made a delete (an invalidation), but fewer of its replicas than
    /// asked for acknowledged it in time (`WAIT`, see
    /// [`super::RedisConfig::invalidation_replicas`]): should the master
    /// fail now, a promoted replica may still hold what was deleted. The
    /// store answered, so it is not down (never a connection failure).
    Unreplicated(String),
    /// The circuit breaker is open: the store was not asked.
    CircuitOpen,
    /// The caller was interrupted during the call (a signal, such as Ctrl-C
    /// in Python): not a fault of the store. It is never counted against
    /// the store and never answered by computing without it: the caller
    /// wants to stop.
    Interrupted,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Timeout(why) => write!(f, "store timed out: {why}"),
            StoreError::Protocol(why) => write!(f, "store answered garbage: {why}"),
            StoreError::ReadOnly(why) => write!(f, "store is a read-only replica: {why}"),
            StoreError::Unreplicated(why) => write!(f, "store did not replicate a delete: {why}"),
            StoreError::CircuitOpen => f.write_str("store skipped: circuit breaker open"),
            StoreError::Interrupted => f.write_str("store call interrupted"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Whether the store could not be reached in time (refused, reset,
    /// timed out, no connection free), as opposed to an answer it gave for
    /// one operation. Only these open the circuit breaker.
    pub fn is_connection_failure(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }

    /// The same failure, its reason prefixed with `server` (`master
    /// 10.0.0.5:6379`): for a store whose URL does not name the server
    /// that failed (Sentinel's master), so the log does.
    pub(super) fn on(self, server: &str) -> Self {
        match self {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!("{server}: {why}")),
            StoreError::Timeout(why) => StoreError::Timeout(format!("{server}: {why}")),
            StoreError::Protocol(why) => StoreError::Protocol(format!("{server}: {why}")),
            StoreError::ReadOnly(why) => StoreError::ReadOnly(format!("{server}: {why}")),
            StoreError::Unreplicated(why) => StoreError::Unreplicated(format!("{server}: {why}")),
            StoreError::CircuitOpen | StoreError::Interrupted => self,
        }
    }
}

/// A store several processes share (Redis, a Django cache).
///
/// Each method is one round trip. Implementations time out instead of
/// hanging, and never panic on a bad answer.
pub trait SharedStore: Send + Sync {
    /// Reads the entry, the generations and the lock state of `keys`.
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError>;
    /// Stores `payload` under `key`, expiring after `ttl` (never when `None`).
    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError>;
    /// Removes `key`; returns whether it existed. Removing a generation
    /// counter retires every entry written under it (an invalidation).
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes the entry `keys.data` (returns whether it existed) and
    /// marks the claims of its computations under way (`keys.lock`,
    /// `keys.refresh`) as deleted, and removes the fence of its forced
    /// refreshes ([`KeySet::fence`]), so that the holder of such a claim
    /// or fence, which computed from the data before the delete, does not
    /// store ([`SharedStore::put_current`] with its [`Holder`]); the claims
    /// still hold their keys locked until freed or expired. Atomic where
    /// the store can (Redis); on a Django cache, see `kv.rs`.
    fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError>;
    /// Removes every key of `keys` (an invalidation that retires several
    /// counters: a Redis Cluster keeps one copy per shard); returns how many
    /// existed. One [`SharedStore::delete`] per key unless the store can
    /// batch them.
    fn delete_many(&self, keys: &[String]) -> Result<u64, StoreError> {
        keys.iter()
            .try_fold(0, |removed, key| Ok(removed + u64::from(self.delete(key)?)))
    }
    /// The generations of `keys`, starting every counter that is missing or
    /// unreadable at a [`fresh_epoch`] (atomically where the store can: two
    /// processes then read one epoch). A partition counter made here
    /// expires after `floor` unless an entry written under it extends it.
    fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError>;
    /// Stores `payload` under `keys.data`, expiring after `ttl` (never when
    /// `None`), only if the counters of `keys` still hold `generations`
    /// (atomically where the store can), and, for a writer that holds a
    /// claim or a fence (`holder`), only if no delete of the entry marked
    /// that claim or removed that fence since
    /// ([`SharedStore::delete_entry`]); makes the partition counter
    /// live at least as long as the entry. Returns whether it stored, and
    /// whether over a key of another type (where the store can tell).
    fn put_current(
        &self,
        keys: &KeySet,
        generations: Generations,
        payload: &[u8],
        ttl: Option<Duration>,
        holder: Option<Holder<'_>>,
    ) -> Result<Written, StoreError>;
    /// Joins the fence of the forced refreshes of `keys`'s entry
    /// ([`KeySet::fence`]) before such a refresh computes: the token the
    /// fence holds, started at `candidate` if it holds none (missing,
    /// expired, removed by a delete, or garbage), and made to live at least
    /// `ttl` (the longest a refresh may take). Every forced refresh under
    /// way shares the token; a delete of the entry removes it
    /// ([`SharedStore::delete_entry`]), so none of them stores
    /// ([`Holder::Fence`]), while a refresh that starts after the delete
    /// starts a new one. Unlike a lock, nobody waits on a fence: a forced
    /// refresh always computes, and the fence is left to expire.
    fn fence(&self, keys: &KeySet, candidate: &str, ttl: Duration) -> Result<String, StoreError>;
    /// Takes the lock `key` for `token` unless someone holds it.
    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Releases the lock `key` if `token` still holds it, or holds it
    /// marked by a delete of its entry (atomically where the store can).
    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError>;
    /// Facts about the server for a health check (`redis_version`,
    /// `maxmemory_policy`, …), read in one round trip; none by default.
    fn server_info(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }
    /// This process's near cache, for a store that keeps one coherent
    /// (see [`super::near`]): [`SharedStore::fetch`] answers are then
    /// reported to it by the store's invalidation channel, and the store's
    /// own writes forget what they change in it before they return. Made
    /// (and its channel started) on first call in each process.
    fn near(&self) -> Option<&NearCache> {
        None
    }
    /// This process's near cache if [`SharedStore::near`] made it; never
    /// makes it.
    fn near_if_started(&self) -> Option<&NearCache> {
        None
    }
    /// Waits, at most `timeout`, until every change the store made before
    /// this call has reached this process's near cache (a write of a sync
    /// key, then its invalidation on the channel). Whether it did; `false`
    /// without a near cache.
    fn near_sync(&self, timeout: Duration) -> Result<bool, StoreError> {
        let _ = timeout;
        Ok(false)
    }
}

/// Epochs are below 10^19: nineteen decimal digits at most, so every
/// store (and a Lua script) can tell a counter from garbage by its text.
pub const EPOCH_LIMIT: u64 = 10_000_000_000_000_000_000;

/// A new random epoch for a generation counter, below [`EPOCH_LIMIT`].
/// Random, so that a counter started again after it was lost never takes
/// a value an entry was written under (one chance in ~2^63).
pub fn fresh_epoch() -> u64 {
    let random = getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness (very early boot, a sandbox): std's hasher keys
        // are random per process where any source exists; mixed with the
        // time and pid, still unique in practice.
        use std::hash::BuildHasher;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::collections::hash_map::RandomState::new().hash_one((now, std::process::id()))
    });
    random % EPOCH_LIMIT
}

/// Reads a counter's text: a number below [`EPOCH_LIMIT`] in canonical
/// decimal (no sign, no leading zero), else `None` (negative, too large,
/// not a number). Canonical, because the scripts that write under a
/// counter compare its text.
pub fn parse_epoch(text: &[u8]) -> Option<u64> {
    let canonical = text == b"0"
        || (matches!(text.first(), Some(b'1'..=b'9'))
            && text.len() <= 19
            && text.iter().all(u8::is_ascii_digit));
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Forwards every [`SharedStore`] method through a smart pointer, so a
/// boxed store (chosen at run time) and a shared handle (`Arc`) are stores.
macro_rules! forward_shared_store {
    ($($pointer:ident),+) => {$(
        impl<S: SharedStore + ?Sized> SharedStore for $pointer<S> {
            fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
                (**self).fetch(keys)
            }
            fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
                (**self).put(key, payload, ttl)
            }
            fn delete(&self, key: &str) -> Result<bool, StoreError> {
                (**self).delete(key)
            }
            fn delete_many(&self, keys: &[String]) -> Result<u64, StoreError> {
                (**self).delete_many(keys)
            }
            fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError> {
                (**self).delete_entry(keys)
            }
            fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError> {
                (**self).generations(keys, floor)
            }
            fn put_current(
                &self,
                keys: &KeySet,
                generations: Generations,
                payload: &[u8],
                ttl: Option<Duration>,
                holder: Option<Holder<'_>>,
            ) -> Result<Written, StoreError> {
                (**self).put_current(keys, generations, payload, ttl, holder)
            }
            fn fence(&self, keys: &KeySet, candidate: &str, ttl: Duration) -> Result<String, StoreError> {
                (**self).fence(keys, candidate, ttl)
            }
            fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
                (**self).try_lock(key, token, ttl)
            }
            fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
                (**self).unlock(key, token)
            }
            fn server_info(&self) -> Result<Vec<(String, String)>, StoreError> {
                (**self).server_info()
            }
            fn near(&self) -> Option<&NearCache> {
                (**self).near()
            }
            fn near_if_started(&self) -> Option<&NearCache> {
                (**self).near_if_started()
            }
            fn near_sync(&self, timeout: Duration) -> Result<bool, StoreError> {
                (**self).near_sync(timeout)
            }
        }
    )+};
}

forward_shared_store!(Box, Arc);
