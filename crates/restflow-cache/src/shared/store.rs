//! The trait a store shared between processes implements.

use std::sync::Arc;
use std::time::Duration;

use super::payload::Generations;

/// The keys one lookup reads, in one round trip.
#[derive(Clone, Debug)]
pub struct KeySet {
    /// The entry.
    pub data: String,
    /// The function's generation counter.
    pub scope: String,
    /// The partition's generation counter, for keys with a partition.
    pub partition: Option<String>,
    /// The key constructor version's generation counter.
    pub version: String,
    /// The lock a computation of this key holds.
    pub lock: String,
    /// The lock a background refresh of this key holds.
    pub refresh: String,
}

/// What one lookup found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The raw payload, if any.
    pub payload: Option<Vec<u8>>,
    /// The current generations.
    pub generations: Generations,
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
            StoreError::CircuitOpen => f.write_str("store skipped: circuit breaker open"),
            StoreError::Interrupted => f.write_str("store call interrupted"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A store several processes share (Redis, a Django cache).
///
/// Each method is one round trip. Implementations time out instead of
/// hanging, and never panic on a bad answer.
pub trait SharedStore: Send + Sync {
    /// Reads the entry, the generations and the lock state of `keys`.
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError>;
    /// Stores `payload` under `key`, expiring after `ttl` (never when `None`).
    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError>;
    /// Removes `key`; returns whether it existed.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Increments the counter `key` (from 0); returns the new value.
    fn bump(&self, key: &str) -> Result<u64, StoreError>;
    /// Takes the lock `key` for `token` unless someone holds it.
    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Releases the lock `key` if `token` still holds it (atomically).
    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError>;
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
            fn bump(&self, key: &str) -> Result<u64, StoreError> {
                (**self).bump(key)
            }
            fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
                (**self).try_lock(key, token, ttl)
            }
            fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
                (**self).unlock(key, token)
            }
        }
    )+};
}

forward_shared_store!(Box, Arc);
