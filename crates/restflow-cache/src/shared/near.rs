//! The near cache: a bounded, per-process copy (L1) of entries read from a
//! shared store, kept coherent by the store's invalidation messages (Redis
//! server-assisted client-side caching: the store's invalidation channel).
//!
//! An L1 entry is the *verified* entry (signature checked, generations
//! current when read) together with the epochs of the generation counters
//! it was read under. It is served only while:
//!
//! - the invalidation channel that reports its key is up
//!   ([`NearCache::set_live`]; per lane, [`NearCache::set_lanes_live`]):
//!   while it is down nothing it covers is served or kept, because a
//!   change made meanwhile would go unnoticed;
//! - no invalidation of its key arrived since it was read;
//! - every counter it was read under is still known here at the same epoch
//!   (an invalidation of a counter forgets it, retiring every L1 entry
//!   written under it at once, as in the store).
//!
//! An entry dropped because the store reported a change (its key, or a
//! counter it was read under) is counted for the cached function whose
//! read kept it (`near_invalidations` in that function's [`Stats`]), once:
//! each known counter lists the entries kept under it, so its invalidation
//! finds them without a scan of L1.
//!
//! Lanes: a store whose keys are reported by several channels (a Redis
//! Cluster: one per master) splits its keys into lanes ([`NearCache::with_lanes`],
//! a lane per slot), each live or down on its own, so a dead master stops
//! only its own keys' near hits. A single server is one lane.
//!
//! Invariants:
//! - every change of what the store holds for a key that was *read* into
//!   L1 reaches [`NearCache::invalidate`] (or a flush) on this process's
//!   channel, in the order the store made it;
//! - an entry is kept only if nothing that concerns its keys was
//!   invalidated between the moment before its read was sent
//!   ([`NearCache::ticket`]) and its insertion ([`NearCache::insert`]):
//!   otherwise the read may have been answered before the change, and its
//!   invalidation already consumed, leaving the old value in L1 for good;
//! - every event that makes entries unservable (an invalidation, a flush,
//!   a lane or channel going up or down) is a method of [`NearCache`];
//! - [`NearCache::epoch`] changes, under the state's lock and after the
//!   change it announces, with every event that can make an entry
//!   unservable (an invalidation, a flush, the channel going up or down,
//!   the counters forgotten); epochs of different near caches of one
//!   process lineage never coincide (a forked child makes its own). So a
//!   copy made from an entry served or kept after the epoch was read is
//!   as good as the entry while the epoch is unchanged (see
//!   [`super::hot`]);
//! - every entry held is listed under each of its counters, and each of
//!   them is known at the entry's epoch: what retires an entry (a counter
//!   forgotten or read at another epoch) removes it, so an entry held is
//!   one no invalidation retired yet, and an invalidation that removes it
//!   credits its function exactly once (a listed entry no longer held, or
//!   held anew under its key, is skipped);
//! - the state lives behind one `std` mutex (see [`crate::fork`]: never a
//!   `parking_lot` lock on a path used without the GIL); nothing that can
//!   run foreign code (Python) is done under it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use quick_cache::unsync::Cache as Bounded;

use super::payload::Generations;
use super::store::KeySet;
use crate::entry::Stamps;
use crate::stats::{Counter, Stats};

/// How many invalidated keys are remembered for reads in flight. A read
/// whose ticket is older than the oldest one remembered is not kept (it
/// cannot be told safe), which only costs a later round trip.
const RECENT: usize = 4096;

/// An entry as kept in L1: what [`super::SharedCache`] verified.
#[derive(Debug)]
pub struct NearEntry {
    /// The serializer's flags.
    pub flags: u8,
    /// The serialized value.
    pub value: Vec<u8>,
    /// The entry's instants.
    pub stamps: Stamps,
    /// The generations it was written (and read) under.
    pub generations: Generations,
}

impl From<&super::payload::Decoded<'_>> for NearEntry {
    fn from(decoded: &super::payload::Decoded<'_>) -> Self {
        NearEntry {
            flags: decoded.flags,
            value: decoded.value.to_vec(),
            stamps: decoded.stamps,
            generations: decoded.generations,
        }
    }
}

/// Taken before a read is sent: [`NearCache::insert`] keeps its answer
/// only if nothing that concerns it was invalidated since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
}

/// What [`NearCache::epoch`] reads: equal epochs mean nothing that can make
/// an entry unservable happened in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch(u64);

/// Where the next near cache's epochs start. Each takes 2^32 epochs of its
/// own, so a near cache made later in this process (or in a forked child,
/// which inherits the counter) never reads an epoch an earlier one read: a
/// copy made under the parent's cache is never valid under the child's.
static NEXT_EPOCH_BASE: AtomicU64 = AtomicU64::new(0);

/// Counters for monitoring (plain relaxed counters).
#[derive(Debug, Default)]
pub struct NearStats {
    /// Lookups served from L1.
    pub hits: AtomicU64,
    /// Lookups L1 could not serve (absent, invalidated, not fresh, channel down).
    pub misses: AtomicU64,
    /// Names (entry keys and counters) invalidated by the store's messages
    /// or by this process's writes, whether L1 held anything under them or
    /// not: a write of this process is counted when it forgets its keys
    /// and again when the store's message about it arrives. (The entries
    /// actually dropped are counted per cached function, see the module
    /// documentation.)
    pub invalidations: AtomicU64,
    /// Times L1 was emptied (channel lost or re-established, FLUSHALL/FLUSHDB).
    pub flushes: AtomicU64,
}

/// A snapshot of [`NearStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NearCounts {
    /// See [`NearStats::hits`].
    pub hits: u64,
    /// See [`NearStats::misses`].
    pub misses: u64,
    /// See [`NearStats::invalidations`].
    pub invalidations: u64,
    /// See [`NearStats::flushes`].
    pub flushes: u64,
}

/// An entry as L1 holds it.
struct Held {
    entry: Arc<NearEntry>,
    /// Which insertion kept it (see [`State::kept`]): tells it from an
    /// entry kept under the same key before or after it.
    serial: u64,
    /// The statistics of the function whose read kept it, credited when
    /// an invalidation drops it.
    owner: Option<Arc<Stats>>,
}

impl Held {
    /// Counts it as dropped by an invalidation.
    fn credit(&self) {
        if let Some(owner) = &self.owner {
            owner.add(Counter::NearInvalidation);
        }
    }
}

/// A counter known here: the epoch it was read at, and the entries kept
/// under it, by key and serial (since perhaps replaced, evicted or
/// dropped: a reference counts only while the entry held under its key
/// has its serial).
struct Known {
    epoch: u64,
    kept: Vec<(Arc<str>, u64)>,
    /// When `kept` grows to this length, references to entries no longer
    /// held are pruned (amortized: the bound doubles what is left).
    prune_at: usize,
}

/// The least [`Known::prune_at`].
const PRUNE_AT: usize = 8;

impl Known {
    fn new(epoch: u64) -> Self {
        Known {
            epoch,
            kept: Vec::new(),
            prune_at: PRUNE_AT,
        }
    }
}

/// Whether `entries` holds the entry kept as `serial` under `key`.
fn holds(entries: &Bounded<Arc<str>, Held>, key: &str, serial: u64) -> bool {
    entries.peek(key).is_some_and(|held| held.serial == serial)
}

/// Which lane a key belongs to (see [`NearCache::with_lanes`]).
pub type LaneOf = fn(&str) -> usize;

/// One lane: the keys one invalidation channel reports.
#[derive(Clone, Copy, Default)]
struct Lane {
    /// Whether its invalidations are being received.
    live: bool,
    /// The `seq` of its last flush: tickets from before it are void for it.
    flushed_at: u64,
}

struct State {
    /// Lanes whose invalidations are being received.
    live_lanes: usize,
    lanes: Vec<Lane>,
    /// Bumped by every invalidation and flush.
    seq: u64,
    /// The last flush's `seq`: tickets from before it are void.
    flushed_at: u64,
    /// `(seq, key hash)` of the last [`RECENT`] invalidated keys, oldest first.
    recent: VecDeque<(u64, u64)>,
    entries: Bounded<Arc<str>, Held>,
    /// Entries kept so far: the next one's serial.
    kept: u64,
    /// Each known counter: the epoch it held when last read, and the
    /// entries kept under it.
    counters: HashMap<String, Known>,
    /// Hashes of the last sync keys whose invalidation arrived.
    synced: VecDeque<u64>,
}

/// A bounded L1 in front of a shared store. See the module documentation.
pub struct NearCache {
    capacity: usize,
    lane_of: LaneOf,
    /// Keys starting with it are sync keys (see [`NearCache::wait_synced`]).
    sync_marker: String,
    state: Mutex<State>,
    /// Notified when the channel goes up or down and when a sync key's
    /// invalidation arrives.
    changed: Condvar,
    stats: NearStats,
    /// See [`NearCache::epoch`]; bumped only under `state`'s lock.
    epoch: AtomicU64,
}

/// Key hashes are only compared in this process; a collision makes a read
/// not kept, never a wrong value served.
fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// Drops the entries `known` lists that `state` still holds, crediting
/// their functions (see the module documentation): its counter was
/// invalidated, or read at another epoch.
fn retire(state: &mut State, known: Known) {
    for (key, serial) in known.kept {
        let listed = |held: &Held| held.serial == serial;
        if let Some((_, held)) = state.entries.remove_if(&*key, listed) {
            held.credit();
        }
    }
}

/// The counters of `keys` with the epochs `generations` gives them.
fn counters_of(keys: &KeySet, generations: Generations) -> impl Iterator<Item = (&str, u64)> {
    [
        Some((keys.scope.as_str(), generations.scope)),
        Some((keys.version.as_str(), generations.version)),
        keys.partition
            .as_deref()
            .map(|partition| (partition, generations.partition)),
    ]
    .into_iter()
    .flatten()
}

impl NearCache {
    /// An L1 of at most `capacity` entries (at least one), down until
    /// [`NearCache::set_live`]. Invalidations of keys that start with
    /// `sync_marker` are sync keys' (see [`NearCache::wait_synced`]).
    pub fn new(capacity: usize, sync_marker: String) -> Self {
        Self::with_lanes(capacity, sync_marker, 1, |_| 0)
    }

    /// [`NearCache::new`] for a store whose keys are reported by several
    /// channels: `lane_of` maps a key to one of `lanes` lanes (below it),
    /// each up or down on its own ([`NearCache::set_lanes_live`]). Every
    /// key a [`KeySet`] names must be in its entry's lane (a Redis
    /// Cluster's hash tags make them one slot).
    pub fn with_lanes(capacity: usize, sync_marker: String, lanes: usize, lane_of: LaneOf) -> Self {
        let capacity = capacity.max(1);
        NearCache {
            capacity,
            lane_of,
            sync_marker,
            changed: Condvar::new(),
            state: Mutex::new(State {
                synced: VecDeque::new(),
                live_lanes: 0,
                lanes: vec![Lane::default(); lanes.max(1)],
                seq: 0,
                flushed_at: 0,
                recent: VecDeque::with_capacity(RECENT),
                entries: Bounded::new(capacity),
                kept: 0,
                counters: HashMap::new(),
            }),
            stats: NearStats::default(),
            epoch: AtomicU64::new(NEXT_EPOCH_BASE.fetch_add(1 << 32, Ordering::Relaxed)),
        }
    }

    /// The current epoch. Read it *before* a lookup ([`NearCache::get`])
    /// or a read's [`NearCache::ticket`]: if that entry was served or kept,
    /// a copy of it may be served for as long as the epoch reads the same.
    #[inline]
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Announces a change made under the state's lock (held: `_state`).
    fn bump(&self, _state: &mut State) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it: a poisoned lock holds good data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bound on the number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters.
    pub fn stats(&self) -> &NearStats {
        &self.stats
    }

    /// A snapshot of the counters.
    pub fn counts(&self) -> NearCounts {
        NearCounts {
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            invalidations: self.stats.invalidations.load(Ordering::Relaxed),
            flushes: self.stats.flushes.load(Ordering::Relaxed),
        }
    }

    /// The counters and the entries held now, by the names monitoring
    /// reads them under (the Python bindings' `near_stats`).
    pub fn report(&self) -> [(&'static str, u64); 5] {
        let counts = self.counts();
        [
            ("hits", counts.hits),
            ("misses", counts.misses),
            ("invalidations", counts.invalidations),
            ("flushes", counts.flushes),
            ("entries", self.len() as u64),
        ]
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether invalidations are being received (entries are served), on
    /// every lane.
    pub fn is_live(&self) -> bool {
        let state = self.state();
        state.live_lanes == state.lanes.len()
    }

    /// How many lanes there are, and how many are live.
    pub fn lanes_live(&self) -> (usize, usize) {
        let state = self.state();
        (state.lanes.len(), state.live_lanes)
    }

    /// The lane of `key`'s (clamped, so a bad `lane_of` cannot panic).
    fn lane(&self, state: &State, key: &str) -> usize {
        (self.lane_of)(key).min(state.lanes.len() - 1)
    }

    /// The entry for `keys` if L1 may serve it: present, not invalidated,
    /// read under the counters' current epochs, and the channel up. Its
    /// freshness is the caller's to judge, and so is counting the lookup
    /// ([`NearCache::record`]).
    pub fn get(&self, keys: &KeySet) -> Option<Arc<NearEntry>> {
        let state = self.state();
        if !state.lanes[self.lane(&state, &keys.data)].live {
            return None;
        }
        let entry = &state.entries.get(keys.data.as_str())?.entry;
        counters_of(keys, entry.generations)
            .all(|(name, epoch)| state.counters.get(name).map(|known| known.epoch) == Some(epoch))
            .then(|| Arc::clone(entry))
    }

    /// Counts a lookup as served from L1 (`true`) or not.
    pub fn record(&self, served: bool) {
        let counter = if served {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Taken before sending a read whose answer may be kept; `None` while
    /// every channel is down (nothing read then may be kept).
    pub fn ticket(&self) -> Option<Ticket> {
        let state = self.state();
        (state.live_lanes > 0).then_some(Ticket { seq: state.seq })
    }

    /// Keeps `entry`, read for `keys` after `ticket` was taken, unless
    /// something that concerns them was invalidated since (or the channel
    /// went down). Returns whether it was kept. `owner`: the statistics of
    /// the cached function that read it, credited with a
    /// [`Counter::NearInvalidation`] when an invalidation drops it.
    pub fn insert(
        &self,
        ticket: Ticket,
        keys: &KeySet,
        entry: NearEntry,
        owner: Option<&Arc<Stats>>,
    ) -> bool {
        let entry = Arc::new(entry);
        let mut state = self.state();
        let lane = state.lanes[self.lane(&state, &keys.data)];
        if !lane.live || ticket.seq < state.flushed_at.max(lane.flushed_at) {
            return false;
        }
        if ticket.seq != state.seq {
            // Only the invalidations since the ticket matter; if the oldest
            // remembered is newer than that, some were forgotten.
            let covered = state
                .recent
                .front()
                .is_some_and(|&(oldest, _)| oldest <= ticket.seq + 1);
            if !covered {
                return false;
            }
            let mut names = counters_of(keys, entry.generations)
                .map(|(name, _)| name)
                .chain([keys.data.as_str()]);
            let touched = names.any(|name| {
                let hash = key_hash(name);
                state
                    .recent
                    .iter()
                    .rev()
                    .take_while(|&&(seq, _)| seq > ticket.seq)
                    .any(|&(_, h)| h == hash)
            });
            if touched {
                return false;
            }
        }
        // Counters are few (a function, a version, its partitions); bounded
        // all the same: forgetting them all, with the entries read under
        // them, only makes L1 read again.
        if state.counters.len() >= 4 * self.capacity + 64 {
            state.counters.clear();
            state.entries.clear();
            self.bump(&mut state);
        }
        let key: Arc<str> = keys.data.as_str().into();
        let serial = state.kept;
        state.kept += 1;
        for (name, epoch) in counters_of(keys, entry.generations) {
            if state.counters.get(name).map(|known| known.epoch) != Some(epoch) {
                // Read at another epoch than the one known: the store
                // changed the counter, and what was read under the old
                // epoch is retired (as its message, still on its way, would
                // retire it).
                if let Some(stale) = state.counters.insert(name.to_owned(), Known::new(epoch)) {
                    retire(&mut state, stale);
                    self.bump(&mut state);
                }
            }
            let State {
                counters, entries, ..
            } = &mut *state;
            if let Some(known) = counters.get_mut(name) {
                if known.kept.len() >= known.prune_at {
                    known
                        .kept
                        .retain(|(key, serial)| holds(entries, key, *serial));
                    known.prune_at = (2 * known.kept.len()).max(PRUNE_AT);
                }
                known.kept.push((Arc::clone(&key), serial));
            }
        }
        let owner = owner.cloned();
        state.entries.insert(
            key,
            Held {
                entry,
                serial,
                owner,
            },
        );
        true
    }

    /// Forgets `names` (entries or counters): the store changed them.
    pub fn invalidate<'a>(&self, names: impl IntoIterator<Item = &'a [u8]>) {
        let mut state = self.state();
        let mut count = 0;
        for name in names {
            count += 1;
            state.seq += 1;
            let seq = state.seq;
            if state.recent.len() == RECENT {
                state.recent.pop_front();
            }
            let Ok(name) = std::str::from_utf8(name) else {
                // Not a key this cache wrote: nothing to forget, but the
                // sequence moved on, so reads in flight are still checked.
                state.recent.push_back((seq, 0));
                continue;
            };
            let hash = key_hash(name);
            state.recent.push_back((seq, hash));
            if let Some((_, held)) = state.entries.remove(name) {
                held.credit();
            }
            if let Some(known) = state.counters.remove(name) {
                retire(&mut state, known);
            }
            if name.starts_with(&self.sync_marker) {
                if state.synced.len() == 64 {
                    state.synced.pop_front();
                }
                state.synced.push_back(hash);
                self.changed.notify_all();
            }
        }
        self.bump(&mut state);
        drop(state);
        self.stats.invalidations.fetch_add(count, Ordering::Relaxed);
    }

    /// Forgets everything (FLUSHALL/FLUSHDB, or the channel changed state).
    pub fn flush(&self) {
        let mut state = self.state();
        Self::flush_locked(&mut state);
        self.bump(&mut state);
        drop(state);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
    }

    fn flush_locked(state: &mut State) {
        state.seq += 1;
        state.flushed_at = state.seq;
        state.recent.clear();
        state.entries.clear();
        state.counters.clear();
    }

    /// Records whether invalidations are being received. Both ways it
    /// empties L1: going down, because changes will go unseen; coming up,
    /// because changes made while it was down went unseen.
    pub fn set_live(&self, live: bool) {
        let mut state = self.state();
        Self::flush_locked(&mut state);
        for lane in &mut state.lanes {
            lane.live = live;
        }
        state.live_lanes = if live { state.lanes.len() } else { 0 };
        self.bump(&mut state);
        drop(state);
        self.changed.notify_all();
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether invalidations are being received for `lanes` (one
    /// channel's: a master's slots). Like [`NearCache::set_live`] for them
    /// alone: their entries and counters are forgotten, and reads of them
    /// in flight are not kept; the other lanes go on serving. Also what a
    /// lane that changed channel (a slot moved to another master) goes
    /// through, with the new channel's state.
    pub fn set_lanes_live(&self, lanes: &[usize], live: bool) {
        let mut state = self.state();
        let count = state.lanes.len();
        let mut chosen = vec![false; count];
        for &lane in lanes {
            chosen[lane.min(count - 1)] = true;
        }
        state.seq += 1;
        let seq = state.seq;
        // Remembered like an invalidation of no key, so that reads in
        // flight for the other lanes can still be told safe.
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back((seq, 0));
        for (lane, _) in state.lanes.iter_mut().zip(&chosen).filter(|(_, c)| **c) {
            lane.flushed_at = seq;
            lane.live = live;
        }
        state.live_lanes = state.lanes.iter().filter(|lane| lane.live).count();
        let lane_of = |key: &str| (self.lane_of)(key).min(count - 1);
        state.entries.retain(|key, _| !chosen[lane_of(key)]);
        state.counters.retain(|key, _| !chosen[lane_of(key)]);
        self.bump(&mut state);
        drop(state);
        self.changed.notify_all();
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until a channel is up, at most until `deadline`; returns
    /// its ticket then (`None`: still down).
    pub fn wait_live(&self, deadline: Instant) -> Option<Ticket> {
        self.wait_lanes(deadline, 1)
    }

    /// Waits until every lane is live (every channel up), at most until
    /// `deadline`; returns its ticket then (`None`: some still down).
    pub fn wait_all_live(&self, deadline: Instant) -> Option<Ticket> {
        self.wait_lanes(deadline, usize::MAX)
    }

    /// Waits until `wanted` lanes (at most all) are live.
    fn wait_lanes(&self, deadline: Instant, wanted: usize) -> Option<Ticket> {
        let mut state = self.state();
        while state.live_lanes < wanted.min(state.lanes.len()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(Ticket { seq: state.seq })
    }

    /// Waits until the invalidation of the sync key `key` (one starting
    /// with the sync marker, written after `ticket` was taken) arrives on
    /// the channel that was up at `ticket`, at most until `deadline`.
    /// True: every change the store made before it wrote `key` has reached
    /// this cache. False: timed out, or the channel went down meanwhile
    /// (then try again: coming up empties the cache).
    pub fn wait_synced(&self, ticket: Ticket, key: &str, deadline: Instant) -> bool {
        let hash = key_hash(key);
        let mut state = self.state();
        loop {
            let lane = state.lanes[self.lane(&state, key)];
            if !lane.live || state.flushed_at.max(lane.flushed_at) > ticket.seq {
                return false;
            }
            if state.synced.contains(&hash) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The prefix of sync keys.
    pub fn sync_marker(&self) -> &str {
        &self.sync_marker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Lifetime;
    use crate::timestamp::Timestamp;

    fn keys(data: &str, partition: Option<&str>) -> KeySet {
        KeySet {
            data: data.into(),
            scope: "gen".into(),
            partition: partition.map(Into::into),
            version: "vgen".into(),
            lock: "lock".into(),
            refresh: "refresh".into(),
        }
    }

    fn entry(value: &str, scope: u64) -> NearEntry {
        NearEntry {
            flags: 0,
            value: value.as_bytes().to_vec(),
            stamps: Stamps::new(Timestamp::EPOCH, Lifetime::FOREVER),
            generations: Generations {
                scope,
                version: 1,
                partition: 0,
            },
        }
    }

    fn live(capacity: usize) -> NearCache {
        let near = NearCache::new(capacity, "sync:".into());
        near.set_live(true);
        near
    }

    #[test]
    fn serves_what_it_kept_until_the_key_is_invalidated() {
        let near = live(10);
        let k = keys("a", None);
        assert!(near.insert(near.ticket().unwrap(), &k, entry("x", 1), None));
        assert_eq!(near.get(&k).unwrap().value, b"x");
        near.invalidate([b"a".as_slice()]);
        assert!(near.get(&k).is_none());
        near.record(true);
        near.record(false);
        assert_eq!(
            near.counts(),
            NearCounts {
                hits: 1,
                misses: 1,
                invalidations: 1,
                flushes: 1
            }
        );
        assert!(near.insert(
            near.ticket().unwrap(),
            &keys("b", None),
            entry("y", 1),
            None
        ));
        let report = [
            ("hits", 1),
            ("misses", 1),
            ("invalidations", 1),
            ("flushes", 1),
            ("entries", 1),
        ];
        assert_eq!(near.report(), report);
    }

    #[test]
    fn a_counter_invalidation_retires_every_entry_under_it() {
        let near = live(10);
        let (a, b) = (keys("a", Some("p1")), keys("b", Some("p2")));
        assert!(near.insert(near.ticket().unwrap(), &a, entry("x", 1), None));
        assert!(near.insert(near.ticket().unwrap(), &b, entry("y", 1), None));
        near.invalidate([b"p1".as_slice()]);
        assert!(near.get(&a).is_none(), "its partition was invalidated");
        assert!(near.get(&b).is_some(), "another partition is untouched");
        near.invalidate([b"gen".as_slice()]);
        assert!(near.get(&b).is_none(), "the function was invalidated");
    }

    #[test]
    fn a_read_in_flight_during_an_invalidation_of_its_keys_is_not_kept() {
        let near = live(10);
        let k = keys("a", Some("p"));
        for touched in ["a", "gen", "vgen", "p"] {
            let ticket = near.ticket().unwrap();
            near.invalidate([touched.as_bytes()]);
            assert!(!near.insert(ticket, &k, entry("old", 1), None), "{touched}");
            assert!(near.get(&k).is_none());
        }
        // An invalidation of another key does not stop it.
        let ticket = near.ticket().unwrap();
        near.invalidate([b"other".as_slice()]);
        assert!(near.insert(ticket, &k, entry("new", 1), None));
    }

    #[test]
    fn a_ticket_older_than_the_remembered_invalidations_is_not_kept() {
        let near = live(10);
        let ticket = near.ticket().unwrap();
        let others: Vec<String> = (0..=RECENT).map(|i| format!("o{i}")).collect();
        near.invalidate(others.iter().map(|o| o.as_bytes()));
        assert!(!near.insert(ticket, &keys("a", None), entry("x", 1), None));
    }

    #[test]
    fn nothing_is_served_or_kept_while_down_and_coming_up_starts_empty() {
        let near = live(10);
        let k = keys("a", None);
        let ticket = near.ticket().unwrap();
        assert!(near.insert(ticket, &k, entry("x", 1), None));
        near.set_live(false);
        assert!(near.ticket().is_none());
        assert!(!near.insert(ticket, &k, entry("x", 1), None));
        assert!(near.get(&k).is_none());
        near.set_live(true);
        assert!(near.get(&k).is_none(), "up again, but empty");
        assert!(
            !near.insert(ticket, &k, entry("x", 1), None),
            "a ticket from before"
        );
    }

    #[test]
    fn a_flush_forgets_everything_and_voids_tickets() {
        let near = live(10);
        let k = keys("a", None);
        let ticket = near.ticket().unwrap();
        assert!(near.insert(ticket, &k, entry("x", 1), None));
        near.flush();
        assert!(near.get(&k).is_none());
        assert!(!near.insert(ticket, &k, entry("x", 1), None));
    }

    #[test]
    fn a_sync_key_is_seen_only_on_the_channel_it_was_written_under() {
        let near = live(10);
        let soon = Instant::now() + std::time::Duration::from_secs(5);
        let ticket = near.wait_live(soon).unwrap();
        near.invalidate([b"sync:1".as_slice()]);
        assert!(near.wait_synced(ticket, "sync:1", soon));
        let ticket = near.ticket().unwrap();
        near.set_live(false);
        near.set_live(true);
        near.invalidate([b"sync:2".as_slice()]);
        assert!(
            !near.wait_synced(ticket, "sync:2", soon),
            "the channel changed"
        );
        let past = Instant::now();
        let ticket = near.ticket().unwrap();
        assert!(!near.wait_synced(ticket, "sync:3", past), "never written");
    }

    fn slot_lanes(capacity: usize) -> NearCache {
        // Keys "<lane>:..." in lane <lane>, as a slot's keys share a tag.
        let near = NearCache::with_lanes(capacity, "sync:".into(), 3, |key| {
            key.split(':')
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0)
        });
        near.set_lanes_live(&[0, 1, 2], true);
        near
    }

    fn lane_keys(lane: usize) -> KeySet {
        KeySet {
            data: format!("{lane}:data"),
            scope: format!("{lane}:gen"),
            partition: None,
            version: format!("{lane}:vgen"),
            lock: format!("{lane}:lock"),
            refresh: format!("{lane}:refresh"),
        }
    }

    #[test]
    fn a_lane_going_down_stops_only_its_own_entries() {
        let near = slot_lanes(10);
        let (a, b) = (lane_keys(1), lane_keys(2));
        assert!(near.insert(near.ticket().unwrap(), &a, entry("x", 1), None));
        let ticket = near.ticket().unwrap();
        assert!(near.insert(ticket, &b, entry("y", 1), None));
        near.set_lanes_live(&[1], false);
        assert!(near.get(&a).is_none(), "its channel is down");
        assert_eq!(near.get(&b).unwrap().value, b"y", "another lane serves");
        assert!(!near.insert(near.ticket().unwrap(), &a, entry("x", 1), None));
        assert_eq!(near.lanes_live(), (3, 2));
        assert!(!near.is_live());
        // Up again: empty, and reads from before the flush are not kept.
        near.set_lanes_live(&[1], true);
        assert!(near.get(&a).is_none());
        assert!(
            !near.insert(ticket, &a, entry("x", 1), None),
            "a ticket from before"
        );
        assert!(
            near.insert(ticket, &b, entry("y2", 1), None),
            "another lane's"
        );
        assert!(near.insert(near.ticket().unwrap(), &a, entry("x2", 1), None));
        assert_eq!(near.get(&a).unwrap().value, b"x2");
        assert_eq!(near.len(), 2);
    }

    #[test]
    fn a_sync_key_needs_its_own_lane_live() {
        let near = slot_lanes(10);
        let soon = Instant::now() + std::time::Duration::from_secs(5);
        let ticket = near.ticket().unwrap();
        near.set_lanes_live(&[2], false);
        near.invalidate([b"sync:1".as_slice(), b"2:sync:1".as_slice()]);
        assert!(near.wait_synced(ticket, "sync:1", soon), "lane 0 is up");
        assert!(
            !near.wait_synced(ticket, "2:sync:1", soon),
            "lane 2 is down"
        );
        near.set_lanes_live(&[0, 1, 2], false);
        assert!(near.ticket().is_none());
        assert!(near.wait_live(Instant::now()).is_none());
    }

    #[test]
    fn bounded() {
        let near = live(50);
        for i in 0..500 {
            let k = keys(&format!("k{i}"), None);
            near.insert(near.ticket().unwrap(), &k, entry("x", 1), None);
        }
        assert!(near.len() <= 50, "{}", near.len());
    }

    fn dropped(stats: &Stats) -> u64 {
        stats.snapshot().get(Counter::NearInvalidation)
    }

    #[test]
    fn an_invalidation_credits_each_entry_it_drops_to_its_function_once() {
        let near = live(10);
        let (f, g) = (Arc::new(Stats::new()), Arc::new(Stats::new()));
        let (a, b, c) = (
            keys("a", Some("p1")),
            keys("b", Some("p1")),
            keys("c", None),
        );
        let keep = |k: &KeySet, owner: &Arc<Stats>| {
            assert!(near.insert(near.ticket().unwrap(), k, entry("x", 1), Some(owner)));
        };
        keep(&a, &f);
        keep(&b, &g);
        keep(&c, &f);
        // A key and a counter of one entry in one message: dropped once.
        near.invalidate([b"a".as_slice(), b"p1".as_slice()]);
        assert_eq!((dropped(&f), dropped(&g)), (1, 1));
        assert_eq!(near.len(), 1);
        // The function's counter: only what is still held.
        near.invalidate([b"gen".as_slice(), b"vgen".as_slice()]);
        assert_eq!((dropped(&f), dropped(&g)), (2, 1));
        assert!(near.is_empty());
        // Kept without an owner: dropped, credited to nobody.
        assert!(near.insert(near.ticket().unwrap(), &c, entry("x", 1), None));
        near.invalidate([b"c".as_slice()]);
        assert_eq!((dropped(&f), dropped(&g)), (2, 1));
        // Flushes and lanes going down are no invalidations.
        keep(&a, &f);
        near.flush();
        keep(&a, &f);
        near.set_live(false);
        assert_eq!(dropped(&f), 2);
        assert_eq!(near.counts().invalidations, 5, "names reported");
    }

    #[test]
    fn a_counter_read_at_a_new_epoch_retires_and_credits_what_was_read_under_the_old() {
        let near = live(10);
        let f = Arc::new(Stats::new());
        let (a, b) = (keys("a", None), keys("b", None));
        assert!(near.insert(near.ticket().unwrap(), &a, entry("x", 1), Some(&f)));
        let epoch = near.epoch();
        // `b` read after the function's counter changed in the store,
        // before its message arrived: `a` was written under the old one.
        assert!(near.insert(near.ticket().unwrap(), &b, entry("y", 2), Some(&f)));
        assert_ne!(near.epoch(), epoch, "hot copies of `a` go too");
        assert!(near.get(&a).is_none());
        assert_eq!((near.len(), dropped(&f)), (1, 1));
        // The message then arrives: it retires `b`, read under the new
        // epoch (as before: the message cannot tell), once.
        near.invalidate([b"gen".as_slice()]);
        assert_eq!((near.len(), dropped(&f)), (0, 2));
    }

    #[test]
    fn a_counters_list_of_entries_stays_bounded_by_what_is_held() {
        let near = live(4);
        let f = Arc::new(Stats::new());
        for i in 0..1000 {
            // The same keys read again and again, and others evicted.
            let k = keys(&format!("k{}", i % 40), None);
            near.insert(near.ticket().unwrap(), &k, entry("x", 1), Some(&f));
        }
        let listed = near.state().counters["gen"].kept.len();
        assert!(listed <= 2 * near.len().max(PRUNE_AT), "{listed}");
        // What is held is still found through the list.
        let held = near.len() as u64;
        near.invalidate([b"gen".as_slice()]);
        assert_eq!((near.len(), dropped(&f)), (0, held));
    }

    #[test]
    fn too_many_counters_forget_the_entries_under_them_uncredited() {
        let near = live(1);
        let f = Arc::new(Stats::new());
        // 4 * capacity + 64 counters (two shared, one partition each): the
        // next insertion forgets them all.
        for i in 0..66 {
            let k = keys(&format!("k{i}"), Some(&format!("p{i}")));
            near.insert(near.ticket().unwrap(), &k, entry("x", 1), Some(&f));
        }
        assert_eq!(near.state().counters.len(), 68);
        let k = keys("last", Some("p-last"));
        near.insert(near.ticket().unwrap(), &k, entry("x", 1), Some(&f));
        assert_eq!(near.state().counters.len(), 3);
        assert_eq!((near.len(), dropped(&f)), (1, 0));
    }
}
