//! The lifecycle of the crate documentation (fresh, stale, expired) on a
//! store shared between processes.
//!
//! * A hit is one round trip: the entry, its generations and the lock state
//!   come back together, and the entry is served only if its signature
//!   checks out and its generations are current.
//! * A miss computes once across every process: one thread per process
//!   leads the in-process single-flight and hands its answer to the others
//!   (even a value that is not stored), and of those leaders one process
//!   takes the store's lock (with an expiry, so a holder that dies frees
//!   it); the others poll the entry with backoff, bounded.
//! * In the stale window the entry is served at once and one process, the
//!   one that takes the refresh lock while the stale entry it read is still
//!   the one stored, refreshes it (once per stale period). An entry stored
//!   with early refresh ([`crate::early`]) is claimed the same way by a
//!   fresh read whose draw says so, and served as a hit.
//! * Every value is written under the generations read *before* it was
//!   computed, and only while they are still current
//!   ([`SharedStore::put_current`]): a value computed before an
//!   invalidation never lands where reads after it find it, on any path
//!   (miss, REFRESH, background refresh).
//! * A store that fails is skipped: the value is computed live and the call
//!   reports BYPASS (or the error, when the caller asks for that), and the
//!   circuit breaker stops asking a store that is down.
//!
//! Call [`SharedCache::get`] without holding any lock of your own: it
//! blocks on the network and on other processes. The `compute` closure is
//! called at most once, on the calling thread.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::background::Refreshed;
use super::breaker::Breaker;
use super::hot::{Hot, HotCache};
use super::keyspace::KeySpace;
use super::near::{Epoch, NearCache, NearEntry};
use super::payload::{Decoded, Generations, Rejected, Signer};
use super::steps::{ComputeClaim, Handle, How};
use super::store::{Fetched, Holder, KeySet, SharedStore, StoreError, Written};
use crate::clock::Clock;
use crate::early::Dice;
use crate::engine::{GetError, Status};
use crate::entry::{Entry, Freshness, Lifetime, Stamps};
use crate::flight::{Join, LeaderGuard, Outcome, SingleFlight};
use crate::stats::{Counter, Stats};
use crate::timestamp::Span;

/// How a shared cache waits and fails.
#[derive(Clone, Debug)]
pub struct SharedOptions {
    /// How long a computation lock lives: the longest a crashed holder can
    /// keep others waiting, and the longest a refresh may take.
    pub lock_timeout: Duration,
    /// How long a process polls another's computation before it computes
    /// the value itself.
    pub wait_timeout: Duration,
    /// Skip a failing store and compute live (`true`), or report the
    /// failure (`false`).
    pub bypass_on_failure: bool,
}

/// A freshly computed value: the value itself, and its serialized form
/// and lifetime when it is to be stored.
pub struct Produced<T> {
    /// The value, handed back to the caller as it is.
    pub value: T,
    /// `(serializer flags, bytes)`, or `None` when the value is not stored.
    pub serialized: Option<(u8, Vec<u8>)>,
    /// How long to keep it.
    pub lifetime: Lifetime,
}

/// What a lookup serves.
#[derive(Clone, Debug)]
pub enum Answer<T> {
    /// An entry from the store, still serialized.
    Stored {
        /// HIT, STALE, or MISS when it was computed by another caller.
        status: Status,
        /// The serializer's flags.
        flags: u8,
        /// The serialized value.
        value: Vec<u8>,
        /// The entry's instants.
        stamps: Stamps,
        /// For STALE, or a HIT that drew its early refresh: the token of
        /// the refresh lock this caller took; it must refresh, then pass
        /// the token to [`SharedCache::run_refresh`] (or
        /// [`SharedCache::finish_refresh`]).
        refresh_token: Option<String>,
        /// The generations the entry was read under: a refresh this caller
        /// claimed is stored under them ([`SharedCache::finish_refresh`]),
        /// so an invalidation while it computes is kept.
        generations: Generations,
    },
    /// Computed by this caller (MISS).
    Computed {
        /// The value.
        value: T,
        /// The stored entry's instants; `None` when it was not stored.
        stamps: Option<Stamps>,
    },
    /// The store failed; the value was computed live (BYPASS).
    Bypassed {
        /// The value.
        value: T,
        /// Why the store was skipped.
        error: StoreError,
    },
}

/// Why a lookup produced no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedError<E> {
    /// The computation failed.
    Compute(E),
    /// The store failed and the caller asked to be told.
    Store(StoreError),
    /// The computation asked for its own key while computing it.
    Recursive,
    /// Decoding a stored value failed fatally (see
    /// [`super::Undecodable::Fatal`]): the caller's own error, as it is.
    Decode(E),
}

impl<E> SharedError<E> {
    /// This error as the memory store's lifecycle reports one
    /// ([`GetError`]), so an embedder raises both alike; a store failure
    /// (which only a shared store has) as `Err`.
    pub fn into_get(self) -> Result<GetError<E>, StoreError> {
        match self {
            SharedError::Compute(error) | SharedError::Decode(error) => {
                Ok(GetError::Compute(error))
            }
            SharedError::Recursive => Ok(GetError::Recursive),
            SharedError::Store(error) => Err(error),
        }
    }
}

/// An entry read without claiming anything: `(flags, value, stamps, freshness)`.
pub type Peeked = (u8, Vec<u8>, Stamps, Freshness);

/// Counters for monitoring.
#[derive(Debug, Default)]
pub struct SharedStats {
    /// Payloads refused (tampered, foreign, unknown version, or a key of
    /// another type where the entry goes, counted when it is replaced).
    pub rejected: AtomicU64,
    /// Store calls that failed.
    pub failures: AtomicU64,
    /// The store's statistics: [`Counter::StoreError`],
    /// [`Counter::BreakerTrip`], [`Counter::LockWait`], and the latency of
    /// the first fetch of every lookup (one round trip).
    pub store: Stats,
}

/// What a leader hands the callers of its key in this process that waited
/// on it: its [`Answer`] (typed per call, since one cache serves values of
/// any type), or `None` when they should look in the store again.
pub type Handoff = Option<Arc<dyn Any + Send + Sync>>;

/// How a lookup uses the store's near cache (see [`SharedCache::get_near`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearMode {
    /// Neither served from it nor kept in it.
    Off,
    /// Served from it when it holds a fresh entry; a fresh entry read from
    /// the store is kept in it.
    Serve,
    /// Not looked up (the caller just did, with
    /// [`SharedCache::near_fresh`]); a fresh entry read is kept in it.
    Fill,
}

impl NearMode {
    /// How a call reads the store past its own near-cache lookup: keeping
    /// what it reads there when it uses the near cache (`near`), else
    /// neither served from nor kept in it.
    pub fn past_lookup(near: bool) -> Self {
        match near {
            true => NearMode::Fill,
            false => NearMode::Off,
        }
    }
}

/// A shared store read through the lifecycle.
pub struct SharedCache<S, E> {
    /// Shared with the give-back jobs ([`SharedCache::with_give_backs`]).
    store: Arc<S>,
    signer: Signer,
    clock: Arc<Clock>,
    breaker: Breaker,
    options: SharedOptions,
    flights: Arc<SingleFlight<Handoff, E>>,
    stats: SharedStats,
    dice: Arc<Dice>,
    /// Where warnings about a failing store go, if anywhere.
    warnings: Option<super::warn::Warnings>,
    /// How the store's keys are named (see [`SharedCache::with_keys`]).
    keys: KeySpace,
    /// Queues the give-back of a lock whose unlock the store left
    /// unanswered (see [`SharedCache::with_give_backs`]); `None`: such a
    /// lock is left to expire.
    give_backs: Option<GiveBacks>,
}

/// Queues the give-back of the lock `key` held by `token`, to be tried
/// until the instant given (the lock's own expiry, at the latest); whether
/// it was queued.
type GiveBacks = Arc<dyn Fn(String, String, Instant) -> bool + Send + Sync>;

/// Whether an unlock that failed with `error` may still be owed: the
/// store was not reached, did not answer in time, was skipped (breaker),
/// was a replica, or the caller was interrupted before it answered. A
/// store that answered garbage is not asked again.
fn unlock_owed(error: &StoreError) -> bool {
    !matches!(error, StoreError::Protocol(_))
}

/// The most locks a process keeps owing one store: past it a lock is left
/// to expire, as without give-backs.
const MAX_OWED: usize = 1024;

/// A lock whose unlock went unanswered.
struct Owed {
    key: String,
    token: String,
    /// Its expiry, at the latest: past it there is nothing of ours to free.
    until: Instant,
}

/// The locks one process owes a store, and whether a job is draining them.
///
/// Invariant: while `owed` is not empty, either `draining` is set and one
/// job (queued or running) will drain it, or `draining` is clear and the
/// next lock owed queues one; one job at a time, so a store that is down
/// holds one refresh worker, not one per lock.
#[derive(Default)]
struct Owing {
    owed: Vec<Owed>,
    draining: bool,
}

/// One process's [`Owing`] for one store (a forked child owes nothing of
/// its parent's, and drains with its own workers).
type OwingCell = crate::fork::PerProcess<std::sync::Mutex<Owing>>;

fn owing(cell: &OwingCell) -> std::sync::MutexGuard<'_, Owing> {
    cell.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Frees the locks `cell` owes, each only if its token still holds it (the
/// unlock script's own check: never another holder's) and only before its
/// expiry, trying again with backoff while the store cannot be reached or
/// answer; ends when nothing is owed.
fn drain_owed<S: SharedStore + ?Sized>(store: &S, cell: &OwingCell) {
    let mut pause = Duration::from_millis(10);
    loop {
        let mut batch = std::mem::take(&mut owing(cell).owed).into_iter();
        let mut left = Vec::new();
        for owed in batch.by_ref() {
            if Instant::now() >= owed.until {
                continue;
            }
            match store.unlock(&owed.key, &owed.token) {
                Err(error) if unlock_owed(&error) => {
                    // Still not answering: the rest waits for the next round.
                    left.push(owed);
                    break;
                }
                _ => {}
            }
        }
        left.extend(batch);
        let mut state = owing(cell);
        state.owed.append(&mut left);
        let now = Instant::now();
        state.owed.retain(|owed| owed.until > now);
        let Some(soonest) = state.owed.iter().map(|owed| owed.until).min() else {
            state.draining = false;
            return;
        };
        drop(state);
        std::thread::sleep(pause.min(soonest.saturating_duration_since(now)));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

impl<S: SharedStore + 'static, E> SharedCache<S, E> {
    /// This cache, queueing with `spawn` (usually
    /// `|job| refresher.try_spawn(job)`, the engine's refresh workers) the
    /// give-back of a computation lock whose unlock the store left
    /// unanswered (the store stalled past its read timeout, could not be
    /// reached, or the breaker skipped it): one job at a time drains the
    /// locks owed, trying again with backoff until the store answers or
    /// each lock expires, and frees a lock only while it holds its holder's
    /// token, so other processes do not wait out `lock_timeout` for a
    /// holder that is done. Bounded: at most 1 024 locks owed per process,
    /// and a job `spawn` refuses is dropped (those locks expire, as without
    /// this).
    pub fn with_give_backs(
        self,
        spawn: impl Fn(crate::refresh::Job) -> Result<(), crate::refresh::Job> + Send + Sync + 'static,
    ) -> Self {
        let store = Arc::clone(&self.store);
        let cell: Arc<OwingCell> = Arc::new(crate::fork::PerProcess::new());
        let give_backs: GiveBacks = Arc::new(move |key, token, until| {
            let mut state = owing(&cell);
            if state.owed.len() >= MAX_OWED {
                return false;
            }
            state.owed.push(Owed { key, token, until });
            if std::mem::replace(&mut state.draining, true) {
                return true; // the job under way takes it
            }
            drop(state);
            let (store, job_cell) = (Arc::clone(&store), Arc::clone(&cell));
            if spawn(Box::new(move || drain_owed(&*store, &job_cell))).is_ok() {
                return true;
            }
            // The queue is full: the next lock owed tries again, and those
            // left owed expire meanwhile.
            owing(&cell).draining = false;
            false
        });
        SharedCache {
            give_backs: Some(give_backs),
            ..self
        }
    }
}

/// What [`SharedCache::begin_near`] found: an answer (and the near
/// cache's epoch it was kept under), or the claim to compute it.
pub(super) enum Begun<'a, T, S: SharedStore, E: Clone> {
    Answered(Answer<T>, Option<Epoch>),
    /// Boxed: a claim is large next to an answer, and only misses make one.
    Compute(Box<ComputeClaim<'a, S, E>>),
}

/// What a claim is made of, before it knows how it ends.
struct Claim<'k, 'a, E> {
    keys: &'k KeySet,
    fallback: Option<Answer<()>>,
    keep: Span,
    flight: Option<LeaderGuard<'a, Handoff, E>>,
}

enum Found<'a> {
    Usable(Decoded<'a>, Freshness),
    Nothing,
}

impl<S: SharedStore, E: Clone> SharedCache<S, E> {
    /// A cache over `store`, signing with `signer`, reading time from `clock`.
    pub fn new(
        store: S,
        signer: Signer,
        clock: Arc<Clock>,
        breaker: Breaker,
        options: SharedOptions,
    ) -> Self {
        SharedCache {
            store: Arc::new(store),
            signer,
            clock,
            breaker,
            options,
            flights: Arc::new(SingleFlight::new()),
            stats: SharedStats::default(),
            dice: Arc::new(Dice::from_entropy()),
            warnings: None,
            keys: KeySpace::new("", false),
            give_backs: None,
        }
    }

    /// This cache, naming keys as `keys` says (unprefixed, single-node
    /// names by default): the names its invalidations
    /// ([`SharedCache::drop_function`] and the like) and its embedder's
    /// calls ([`KeySpace::call`]) use.
    pub fn with_keys(self, keys: KeySpace) -> Self {
        SharedCache { keys, ..self }
    }

    /// How the store's keys are named.
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// This cache, warning through `warnings` (see
    /// [`SharedCache::with_warnings`]).
    pub(super) fn set_warnings(self, warnings: super::warn::Warnings) -> Self {
        SharedCache {
            warnings: Some(warnings),
            ..self
        }
    }

    pub(super) fn warnings(&self) -> Option<&super::warn::Warnings> {
        self.warnings.as_ref()
    }

    /// This cache, drawing its early refreshes from `dice` (which other
    /// caches may share; tests seed it).
    pub fn with_dice(self, dice: Arc<Dice>) -> Self {
        SharedCache { dice, ..self }
    }

    /// How many callers of this process follow the computation of the
    /// entry `data_key` now (see [`SingleFlight::waiters`]).
    pub fn waiters(&self, data_key: &str) -> usize {
        self.flights.waiters(data_key.as_bytes())
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Whether the circuit breaker is open (the store is being skipped).
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Whether a failing store is skipped (else reported).
    pub fn bypasses_failures(&self) -> bool {
        self.options.bypass_on_failure
    }

    /// The counters.
    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }

    /// Runs a store call through the circuit breaker, which only failures
    /// to reach the store open (see [`Breaker`]'s scope).
    pub fn call<T>(&self, run: impl FnOnce(&S) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if !self.breaker.allow() {
            return Err(StoreError::CircuitOpen);
        }
        let result = run(&self.store);
        match &result {
            // The caller was interrupted: nothing was learnt about the store.
            Err(StoreError::Interrupted) => {}
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.stats.store.add(Counter::StoreError);
                if error.is_connection_failure() {
                    if self.breaker.failed() {
                        self.stats.store.add(Counter::BreakerTrip);
                    }
                } else {
                    // It answered: reachable, whatever this operation's fate.
                    self.breaker.succeeded();
                }
            }
            Ok(_) => self.breaker.succeeded(),
        }
        result
    }

    /// Frees the computation lock `key` this caller took with `token` at
    /// `locked_at` (just before it asked for it). When the store leaves
    /// the unlock unanswered (stalled past the read timeout, unreachable,
    /// skipped by the breaker), the lock would keep every other process
    /// waiting until it expires: the give-back is queued
    /// ([`SharedCache::with_give_backs`]) and tried again until the store
    /// answers, never past the lock's expiry, and only while `token` holds
    /// it.
    pub(super) fn unlock_or_give_back(&self, key: &str, token: &str, locked_at: Instant) {
        let Err(error) = self.call(|s| s.unlock(key, token)) else {
            return;
        };
        if !unlock_owed(&error) {
            return;
        }
        if let Some(give_backs) = &self.give_backs {
            let until = locked_at + self.options.lock_timeout;
            // Not queued (the queue is full): the lock expires, as before.
            let _ = give_backs(key.to_owned(), token.to_owned(), until);
        }
    }

    /// Drops the entry of `keys`, in every process; whether it existed.
    pub fn delete(&self, keys: &KeySet) -> Result<bool, StoreError> {
        self.call(|store| store.delete(&keys.data))
    }

    /// Drops the entry on a caller's request (`delete_cache`): as
    /// [`SharedCache::delete`], and a computation of the entry under way
    /// in any process (its lock or refresh claim held) learns of it: its
    /// value, computed from the data before the delete, is handed to its
    /// callers but not stored ([`SharedStore::delete_entry`]).
    ///
    /// Returns whether there was an entry of the current generations
    /// there, as the memory store answers: the bytes of an entry that an
    /// invalidation retired (`invalidate_all`, `delete_by_prefix`, a wipe)
    /// stay under its key until they expire, but no read finds them, so
    /// they are not one. That takes a lookup before the delete (one round
    /// trip more); the two are not atomic, so an entry written between them
    /// is deleted and not reported. A lookup that fails leaves the answer
    /// to the delete alone.
    pub fn delete_fencing(&self, keys: &KeySet) -> Result<bool, StoreError> {
        let current = self
            .call(|store| store.fetch(keys))
            .map(|fetched| self.holds_current(&keys.data, &fetched));
        let existed = self.call(|store| store.delete_entry(keys))?;
        Ok(existed && current.unwrap_or(true))
    }

    /// Whether `fetched`, read from the entry `key`, holds an entry of the
    /// current generations (fresh, stale or expired): one a read of the
    /// key would still examine, not bytes an invalidation retired.
    fn holds_current(&self, key: &str, fetched: &Fetched) -> bool {
        let Some(payload) = &fetched.payload else {
            return false;
        };
        match self.signer.decode(key, payload) {
            Ok(decoded) => fetched.generations == Some(decoded.generations),
            Err(_) => false,
        }
    }

    /// Retires generation counters ([`super::KeySpace::function_counters`],
    /// [`super::KeySpace::partition_counter`],
    /// [`super::KeySpace::version_counters_below`]), in every process: no
    /// entry written under them is served again, and the next computation
    /// starts each counter afresh. Costs the same at any number of entries;
    /// retiring none asks nothing of the store (a partial call that names
    /// no partition drops nothing, even with the store down).
    pub fn retire(&self, counters: &[String]) -> Result<(), StoreError> {
        if counters.is_empty() {
            return Ok(());
        }
        self.call(|store| store.delete_many(counters)).map(drop)
    }

    /// What `fetched`, read from the entry `key`, holds that may be served.
    fn examine<'a>(&self, key: &str, fetched: &'a Fetched, fallback: Span) -> Found<'a> {
        let Some(payload) = &fetched.payload else {
            return Found::Nothing;
        };
        let decoded = match self.signer.decode(key, payload) {
            Ok(decoded) => decoded,
            Err(
                Rejected::Truncated
                | Rejected::Foreign
                | Rejected::UnknownVersion
                | Rejected::BadSignature,
            ) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Found::Nothing;
            }
        };
        if fetched.generations != Some(decoded.generations) {
            return Found::Nothing;
        }
        let now = self.clock.now_judging(decoded.stamps.fresh_until);
        match decoded.stamps.freshness(now) {
            Freshness::Expired => {
                // Past the stale window, but maybe inside stale-if-error.
                if decoded
                    .stamps
                    .kept_until(fallback)
                    .is_some_and(|until| now < until)
                {
                    Found::Usable(decoded, Freshness::Expired)
                } else {
                    Found::Nothing
                }
            }
            freshness => Found::Usable(decoded, freshness),
        }
    }

    fn stored<T>(
        decoded: &Decoded<'_>,
        status: Status,
        refresh_token: Option<String>,
    ) -> Answer<T> {
        Answer::Stored {
            status,
            flags: decoded.flags,
            value: decoded.value.to_vec(),
            stamps: decoded.stamps,
            refresh_token,
            generations: decoded.generations,
        }
    }

    /// The claim to compute live, past a store that failed with
    /// `error`; or the error, when the caller asked to be told (or was
    /// interrupted).
    fn bypass<'a>(
        &self,
        handle: Handle<'a, S, E>,
        keys: &KeySet,
        error: StoreError,
        flight: Option<LeaderGuard<'a, Handoff, E>>,
    ) -> Result<ComputeClaim<'a, S, E>, SharedError<E>> {
        if !self.options.bypass_on_failure || error == StoreError::Interrupted {
            if let Some(guard) = flight {
                guard.complete(Ok(None));
            }
            return Err(SharedError::Store(error));
        }
        let claim = Claim {
            keys,
            fallback: None,
            keep: Span::ZERO,
            flight,
        };
        Ok(self.claim(handle, claim, How::Bypassed(error)))
    }

    /// The claim to compute `keys` live (BYPASS), storing nothing: its
    /// entries would not decode.
    pub(super) fn live<'a>(
        &self,
        handle: Handle<'a, S, E>,
        keys: &KeySet,
    ) -> ComputeClaim<'a, S, E> {
        let claim = Claim {
            keys,
            fallback: None,
            keep: Span::ZERO,
            flight: None,
        };
        self.claim(handle, claim, How::Live)
    }

    /// A claim to compute `keys` as `how` says, starting now.
    fn claim<'a>(
        &self,
        cache: Handle<'a, S, E>,
        claim: Claim<'_, 'a, E>,
        how: How,
    ) -> ComputeClaim<'a, S, E> {
        ComputeClaim {
            cache,
            keys: claim.keys.clone(),
            how,
            fallback: claim.fallback,
            keep: claim.keep,
            started: self.clock.now(),
            flight: claim.flight,
            ended: false,
        }
    }

    /// Serves `keys`: see the module documentation. `stale_if_error` is
    /// how long past its stale window an entry may still be served when the
    /// recompute fails; `wait` blocks a caller on another thread's
    /// computation of the same key, whose answer it then shares.
    pub fn get<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        stale_if_error: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
        wait: impl FnMut(&crate::flight::Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Answer<T>, SharedError<E>> {
        self.get_near(keys, NearMode::Serve, stale_if_error, compute, wait)
    }

    /// [`SharedCache::get`], using the store's near cache (if it keeps
    /// one) as `mode` says: a fresh entry in it is served as a HIT without
    /// a round trip, and a fresh entry read from the store is kept in it.
    /// Anything else (stale, expired, absent) goes to the store.
    pub fn get_near<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        mode: NearMode,
        stale_if_error: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
        wait: impl FnMut(&crate::flight::Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Answer<T>, SharedError<E>> {
        self.get_near_kept(keys, mode, stale_if_error, compute, wait)
            .map(|(answer, _)| answer)
    }

    /// [`SharedCache::get_near`], also saying whether the answer is an
    /// entry the near cache served or kept: then the near cache's epoch
    /// read before (see [`NearCache::epoch`]), under which a copy of it
    /// may be served ([`super::hot`]). The steps of [`SharedCache::begin`]
    /// (before decoding), with `compute` run in between.
    pub fn get_near_kept<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        mode: NearMode,
        stale_if_error: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
        wait: impl FnMut(&crate::flight::Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<(Answer<T>, Option<Epoch>), SharedError<E>> {
        let near = (mode, None);
        match self.begin_near(Handle::Borrowed(self), keys, near, stale_if_error, wait)? {
            Begun::Answered(answer, kept) => Ok((answer, kept)),
            Begun::Compute(claim) => Ok((claim.run(compute)?, None)),
        }
    }

    /// The flights of this process, by entry key.
    pub(super) fn flights(&self) -> &Arc<SingleFlight<Handoff, E>> {
        &self.flights
    }

    /// How long since `started` on this cache's clock.
    pub(super) fn clock_since(&self, started: crate::timestamp::Timestamp) -> Span {
        self.clock.since(started)
    }

    /// Everything of a lookup that blocks (see [`super::steps`]): an
    /// answer, or the claim to compute it. An entry it keeps near credits
    /// `credit` (a cached function's statistics) when an invalidation
    /// drops it.
    pub(super) fn begin_near<'a, T: Clone + Send + Sync + 'static>(
        &self,
        handle: Handle<'a, S, E>,
        keys: &KeySet,
        (mode, credit): (NearMode, Option<&Arc<Stats>>),
        stale_if_error: Span,
        mut wait: impl FnMut(&crate::flight::Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Begun<'a, T, S, E>, SharedError<E>> {
        let near = match mode {
            NearMode::Off => None,
            NearMode::Serve | NearMode::Fill => self.store.near(),
        };
        if let (Some(near), NearMode::Serve) = (near, mode) {
            let seen = near.epoch();
            if let Some(answer) = self.near_hit(near, keys) {
                return Ok(Begun::Answered(answer, Some(seen)));
            }
        }
        let mut waited = false;
        loop {
            let seen = near.map(NearCache::epoch);
            let ticket = near.and_then(NearCache::ticket);
            let started = Instant::now();
            let fetched = self.call(|s| s.fetch(keys));
            if fetched.is_ok() {
                self.stats.store.observe_lookup(started.elapsed());
            }
            let fetched = match fetched {
                Ok(fetched) => fetched,
                Err(error) => {
                    return self
                        .bypass(handle, keys, error, None)
                        .map(|claim| Begun::Compute(Box::new(claim)))
                }
            };
            let fallback = match self.examine(&keys.data, &fetched, stale_if_error) {
                Found::Usable(decoded, Freshness::Fresh) if waited => {
                    let answer = Self::stored(&decoded, Status::Miss, None);
                    return Ok(Begun::Answered(answer, None));
                }
                Found::Usable(decoded, Freshness::Fresh) => {
                    let claimed = if decoded.stamps.early.is_some() && self.draws_early(&decoded) {
                        self.claim_refresh(keys, &fetched)
                    } else {
                        None
                    };
                    // An entry that refreshes early is never kept near: each
                    // read of it must reach the store to draw its refresh.
                    let kept = match (near, ticket, decoded.stamps.early) {
                        (Some(near), Some(ticket), None) => {
                            near.insert(ticket, keys, NearEntry::from(&decoded), credit)
                        }
                        _ => false,
                    };
                    let answer = Self::stored(&decoded, Status::Hit, claimed);
                    return Ok(Begun::Answered(answer, seen.filter(|_| kept)));
                }
                Found::Usable(decoded, Freshness::Stale) => {
                    let claimed = self.claim_refresh(keys, &fetched);
                    let answer = Self::stored(&decoded, Status::Stale, claimed);
                    return Ok(Begun::Answered(answer, None));
                }
                Found::Usable(decoded, Freshness::Expired) => {
                    Some(Self::stored::<()>(&decoded, Status::Stale, None))
                }
                Found::Nothing => None,
            };
            match handle.join(keys.data.as_bytes()) {
                Join::Follower(waiter) => {
                    if waiter.is_own_flight() {
                        return Err(SharedError::Recursive);
                    }
                    match wait(&waiter) {
                        Outcome::Value(Some(handed)) => {
                            if let Some(answer) = handed.downcast_ref::<Answer<T>>() {
                                return Ok(Begun::Answered(answer.clone(), None));
                            }
                            // A caller of another type led: look again.
                            waited = true;
                        }
                        Outcome::Value(None) | Outcome::Abandoned => waited = true,
                        Outcome::Error(error) => return Err(SharedError::Compute(error)),
                    }
                }
                Join::Leader(guard) => {
                    let claim = Claim {
                        keys,
                        fallback,
                        keep: stale_if_error,
                        flight: Some(guard),
                    };
                    return self.lead(handle, &fetched, claim);
                }
            }
        }
    }

    /// Whether this fresh read of an entry that refreshes early draws its
    /// refresh (see [`crate::early`]).
    #[cold]
    fn draws_early(&self, decoded: &Decoded<'_>) -> bool {
        let now = self.clock.now_judging(decoded.stamps.fresh_until);
        decoded.stamps.refreshes_early(now, &self.dice)
    }

    /// A fresh entry of the near cache, served as a HIT; `None` when it
    /// has none for `keys` or it is no longer fresh (a stale one goes
    /// through the store, so that one refresh runs across processes).
    fn near_hit<T>(&self, near: &NearCache, keys: &KeySet) -> Option<Answer<T>> {
        let served = near.get(keys).and_then(|entry| {
            let now = self.clock.now_judging(entry.stamps.fresh_until);
            (entry.stamps.freshness(now) == Freshness::Fresh).then(|| Answer::Stored {
                status: Status::Hit,
                flags: entry.flags,
                value: entry.value.clone(),
                stamps: entry.stamps,
                refresh_token: None,
                generations: entry.generations,
            })
        });
        near.record(served.is_some());
        served
    }

    /// A fresh entry of the store's near cache for `keys`, without a round
    /// trip: `(flags, value, stamps)`, or `None` (then ask
    /// [`SharedCache::get_near`]). For callers that must not block (an
    /// event loop).
    pub fn near_fresh(&self, keys: &KeySet) -> Option<(u8, Vec<u8>, Stamps)> {
        self.near_fresh_seen(keys)
            .map(|(flags, value, stamps, _)| (flags, value, stamps))
    }

    /// [`SharedCache::near_fresh`], with the near cache's epoch read before
    /// the lookup: a copy of the value may be served while it holds (see
    /// [`super::hot`]).
    pub fn near_fresh_seen(&self, keys: &KeySet) -> Option<(u8, Vec<u8>, Stamps, Epoch)> {
        let near = self.store.near()?;
        let seen = near.epoch();
        match self.near_hit::<()>(near, keys)? {
            Answer::Stored {
                flags,
                value,
                stamps,
                ..
            } => Some((flags, value, stamps, seen)),
            _ => None,
        }
    }

    /// The copy under the call key `key` in `hot` if it may be served as a
    /// HIT now (see [`super::hot`]), counted as a near hit. Needs this
    /// process's near cache started: a forked child's copies from its
    /// parent are never served.
    #[inline]
    pub fn hot_hit<V: Send + Sync>(
        &self,
        hot: &HotCache<V>,
        key: &[u8],
    ) -> Option<Arc<Entry<Hot<V>>>> {
        let near = self.store.near_if_started()?;
        let hit = hot.get(key, near, &self.clock)?;
        near.record(true);
        Some(hit)
    }

    /// Claims the background refresh of the stale entry in `read`: takes
    /// the refresh lock, then keeps it (returning its token) only if the
    /// entry stored is still the one read.
    ///
    /// Why the second look: between this caller's fetch and its claim,
    /// another process may have claimed the refresh, stored the new entry
    /// and freed the lock; taking the free lock then would refresh a second
    /// time in one stale period (the lifecycle promises one per cluster). The
    /// look after taking the lock is conclusive: a refresh stores while it
    /// holds the lock, so one that stored before this claim shows in the
    /// look, and none stores after it until this holder is done (within
    /// `lock_timeout`). Checked here rather than by keeping the lock past a
    /// refresh until its entry goes stale: a lock's expiry runs on the
    /// store's clock, not the engine's (frozen in tests, skewed between
    /// hosts), and the next stale period must be claimable at once.
    /// Costs one more round trip, only for the one caller that takes the
    /// lock. A store that fails the look gets no refresh (it would fail to
    /// store it too).
    fn claim_refresh(&self, keys: &KeySet, read: &Fetched) -> Option<String> {
        let token = self.token();
        let locked_at = Instant::now();
        let locked = self
            .call(|s| s.try_lock(&keys.refresh, &token, self.options.lock_timeout))
            .unwrap_or(false);
        if !locked {
            return None;
        }
        let unchanged = self.call(|s| s.fetch(keys)).is_ok_and(|again| {
            again.payload == read.payload && again.generations == read.generations
        });
        if unchanged {
            return Some(token);
        }
        // A store that failed the look may fail this too: owed, then.
        self.unlock_or_give_back(&keys.refresh, &token, locked_at);
        None
    }

    /// The one caller in this process that must produce the value: takes
    /// the store's lock and claims the computation, or polls while another
    /// process computes (and serves what it stored).
    fn lead<'a, T: Clone + Send + Sync + 'static>(
        &self,
        handle: Handle<'a, S, E>,
        fetched: &Fetched,
        mut claim: Claim<'_, 'a, E>,
    ) -> Result<Begun<'a, T, S, E>, SharedError<E>> {
        let keys = claim.keys;
        let token = self.token();
        let deadline = Instant::now() + self.options.wait_timeout;
        // The payload this caller last read and found no use for: read
        // again unchanged, it is not examined (nor its refusal counted)
        // a second time.
        let mut seen = fetched.payload.clone();
        let mut backoff = Duration::from_millis(2);
        let mut waiting = false;
        loop {
            // Before asking: the lock expires no earlier than this plus
            // its timeout, on any clock that runs at our pace.
            let locked_at = Instant::now();
            let locked =
                match self.call(|s| s.try_lock(&keys.lock, &token, self.options.lock_timeout)) {
                    Ok(locked) => locked,
                    Err(error) => {
                        return self
                            .bypass(handle, keys, error, claim.flight)
                            .map(|claim| Begun::Compute(Box::new(claim)))
                    }
                };
            if locked {
                // Another process may have stored the entry and freed its
                // lock since this caller last read it (before its first
                // try, or between a poll and this try): read it again under
                // the lock, so that the value is computed once.
                let again = match self.call(|s| s.fetch(keys)) {
                    Ok(again) => again,
                    Err(error) => {
                        self.unlock_or_give_back(&keys.lock, &token, locked_at);
                        let claim = self.bypass(handle, keys, error, claim.flight);
                        return claim.map(|claim| Begun::Compute(Box::new(claim)));
                    }
                };
                if again.payload != seen {
                    if let Some(answer) = self.computed_elsewhere(keys, &again, &mut claim) {
                        self.unlock_or_give_back(&keys.lock, &token, locked_at);
                        return Ok(answer);
                    }
                }
                // Stored under what was current before it is computed.
                let generations = match self.current(keys, again.generations) {
                    Ok(generations) => generations,
                    Err(error) => {
                        self.unlock_or_give_back(&keys.lock, &token, locked_at);
                        let claim = self.bypass(handle, keys, error, claim.flight);
                        return claim.map(|claim| Begun::Compute(Box::new(claim)));
                    }
                };
                let how = How::Locked {
                    token,
                    generations,
                    locked_at,
                };
                return Ok(Begun::Compute(Box::new(self.claim(handle, claim, how))));
            }
            // Another process computes: wait for its entry, or its lock to go.
            if !waiting {
                waiting = true; // counted once per wait, not per poll
                self.stats.store.add(Counter::LockWait);
            }
            if Instant::now() >= deadline {
                // It is taking too long: compute here, without storing over it.
                claim.fallback = None;
                return Ok(Begun::Compute(Box::new(self.claim(
                    handle,
                    claim,
                    How::Unstored,
                ))));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
            let again = match self.call(|s| s.fetch(keys)) {
                Ok(again) => again,
                Err(error) => {
                    return self
                        .bypass(handle, keys, error, claim.flight)
                        .map(|claim| Begun::Compute(Box::new(claim)))
                }
            };
            if let Some(answer) = self.computed_elsewhere(keys, &again, &mut claim) {
                return Ok(answer);
            }
            seen = again.payload;
        }
    }

    /// The fresh entry another process computed while this caller waited
    /// for the lock, as this caller's MISS (handed to its in-process
    /// followers too), or `None` when `fetched` holds none.
    fn computed_elsewhere<'a, T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        fetched: &Fetched,
        claim: &mut Claim<'_, 'a, E>,
    ) -> Option<Begun<'a, T, S, E>> {
        let Found::Usable(decoded, Freshness::Fresh) =
            self.examine(&keys.data, fetched, Span::ZERO)
        else {
            return None;
        };
        let answer = Self::stored(&decoded, Status::Miss, None);
        if let Some(guard) = claim.flight.take() {
            guard.complete(Ok(Some(Arc::new(answer.clone()))));
        }
        Some(Begun::Answered(answer, None))
    }

    /// `read`, or else (a counter was missing or unreadable) the
    /// generations with fresh epochs started for what was missing. Called
    /// before computing: a value is stored under what was current before
    /// it was computed.
    fn current(&self, keys: &KeySet, read: Option<Generations>) -> Result<Generations, StoreError> {
        match read {
            Some(generations) => Ok(generations),
            None => self.call(|s| s.generations(keys, self.counter_floor())),
        }
    }

    /// How long a partition counter started for a computation lives if no
    /// entry extends it: as long as a computation may wait and then hold
    /// its lock, so the counter outlives the computation it was read for.
    fn counter_floor(&self) -> Duration {
        self.options.lock_timeout + self.options.wait_timeout
    }

    /// Signs and stores a produced value, which took `delta` to compute, if
    /// it is to be stored, keeping it `keep` past its stale window (for
    /// stale-if-error), by the holder of `holder`'s claim, if any; its
    /// instants, or `None` when it was not stored (the store refused it,
    /// the entry was deleted since the claim was taken, or the policy kept
    /// it out; the value is served either way).
    pub(super) fn store_produced<T>(
        &self,
        keys: &KeySet,
        produced: &Produced<T>,
        (generations, holder): (Generations, Option<Holder<'_>>),
        keep: Span,
        delta: Span,
    ) -> Result<Option<Stamps>, StoreError> {
        let Some((flags, bytes)) = produced.serialized.as_ref() else {
            return Ok(None);
        };
        let lifetime = produced.lifetime;
        let under = (generations, holder);
        self.put_signed(keys, *flags, bytes, (lifetime, delta), under, keep)
    }

    /// Signs `bytes` with instants taken now (for a value of `lifetime`
    /// that took `delta` to compute) and puts them under
    /// `keys.data` while `generations` are current, for the store to
    /// forget once nothing may serve them: `keep` past the stale window;
    /// written by the holder of `holder`'s claim, if any. Returns the
    /// instants, or `None` when a counter moved on or a delete of the entry
    /// marked the claim (the value predates an invalidation or the delete
    /// and is not stored).
    fn put_signed(
        &self,
        keys: &KeySet,
        flags: u8,
        bytes: &[u8],
        (lifetime, delta): (Lifetime, Span),
        (generations, holder): (Generations, Option<Holder<'_>>),
        keep: Span,
    ) -> Result<Option<Stamps>, StoreError> {
        let stamps = Stamps::new(self.clock.now(), lifetime).measured(delta);
        let payload = self
            .signer
            .encode(&keys.data, flags, &stamps, generations, bytes);
        let ttl = stamps.kept_until(keep).map(|until| {
            let micros = until.as_micros() - stamps.cached_at.as_micros();
            Duration::from_micros(micros.max(1) as u64)
        });
        let written = self.call(|s| s.put_current(keys, generations, &payload, ttl, holder))?;
        if written == Written::Replaced {
            // A key of another type stood where the entry goes: refused as
            // a payload, counted here, the one place it shows.
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(written.stored().then_some(stamps))
    }

    /// The usable entry under `keys`, if any, without claiming or
    /// computing anything: `(flags, value, stamps, freshness)`.
    pub fn peek(&self, keys: &KeySet) -> Result<Option<Peeked>, StoreError> {
        let fetched = self.call(|s| s.fetch(keys))?;
        Ok(match self.examine(&keys.data, &fetched, Span::ZERO) {
            Found::Usable(decoded, freshness) => Some((
                decoded.flags,
                decoded.value.to_vec(),
                decoded.stamps,
                freshness,
            )),
            Found::Nothing => None,
        })
    }

    /// The fresh entry in a lookup's answer for the entry `key`, if it has
    /// one and it checks out: `(flags, value, stamps)`. For callers that
    /// fetch on their own (an event loop's socket); anything but a fresh
    /// hit goes through [`SharedCache::get`], and so does an entry that
    /// refreshes early, whose read must draw (and maybe claim) there, once.
    pub fn fresh_in(&self, key: &str, fetched: &Fetched) -> Option<(u8, Vec<u8>, Stamps)> {
        match self.examine(key, fetched, Span::ZERO) {
            Found::Usable(decoded, Freshness::Fresh) if decoded.stamps.early.is_none() => {
                Some((decoded.flags, decoded.value.to_vec(), decoded.stamps))
            }
            _ => None,
        }
    }

    /// Computes and overwrites the entry (REFRESH), under the generations
    /// current before it computes: [`SharedCache::begin_refresh`] and
    /// its claim, with `compute` run in between.
    pub fn refresh<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        keep: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
    ) -> Result<Answer<T>, SharedError<E>> {
        self.begin_refresh_in(Handle::Borrowed(self), keys, keep)?
            .run(compute)
    }

    /// The claim of a forced recompute (REFRESH) of `keys`: the token of
    /// the entry's fence, joined now ([`SharedStore::fence`]), so that a
    /// delete of the entry while it computes keeps its value out of the
    /// store, as it does a miss's; and the generations read now, for the
    /// value to be stored under. The fence is joined first: whatever the
    /// computation reads comes after it, so a delete either came before
    /// (and the value is computed from the data after it) or removes the
    /// token.
    pub(super) fn begin_refresh_in<'a>(
        &self,
        handle: Handle<'a, S, E>,
        keys: &KeySet,
        keep: Span,
    ) -> Result<ComputeClaim<'a, S, E>, SharedError<E>> {
        let begun = self
            .call(|s| s.fence(keys, &self.token(), self.options.lock_timeout))
            .and_then(|fence| {
                let fetched = self.call(|s| s.fetch(keys))?;
                let generations = self.current(keys, fetched.generations)?;
                Ok(How::Refresh { generations, fence })
            });
        let claim = Claim {
            keys,
            fallback: None,
            keep,
            flight: None,
        };
        match begun {
            Ok(how) => Ok(self.claim(handle, claim, how)),
            Err(error) => self.bypass(handle, keys, error, None),
        }
    }

    /// Ends a background refresh this caller claimed with `token` (the
    /// `refresh_token` of its [`Answer::Stored`]) as `produced` says:
    /// a value stored under `generations`, the ones the stale entry was
    /// read under when the refresh was claimed (the same answer's
    /// `generations`), or the stale entry dropped when the value is not
    /// to be stored, or kept when nothing was computed (see
    /// [`Refreshed`]); and frees the refresh lock if it still holds it (a
    /// refresh that outlived its lock must not free the next holder's). If
    /// an invalidation or a delete of the entry came in between, the value
    /// (computed, maybe, from data from before it) is not stored. Reports
    /// a store that failed to take the new value (the stale one stays).
    pub fn finish_refresh(
        &self,
        keys: &KeySet,
        token: &str,
        keep: Span,
        generations: Generations,
        produced: Refreshed,
    ) -> Result<(), StoreError> {
        // Computed by the caller, untimed: an early refresh's delta of 0.
        self.run_refresh(keys, token, keep, generations, || produced)
    }

    /// Runs a background refresh this caller claimed with `token`:
    /// [`SharedCache::finish_refresh`] with what `compute` produces, timed
    /// (an early refresh's delta).
    pub fn run_refresh(
        &self,
        keys: &KeySet,
        token: &str,
        keep: Span,
        generations: Generations,
        compute: impl FnOnce() -> Refreshed,
    ) -> Result<(), StoreError> {
        let (produced, delta) = self.clock.timed(compute);
        let outcome = match produced {
            Refreshed::Store(flags, bytes, lifetime) => {
                let under = (generations, Some(Holder::Claim(&keys.refresh, token)));
                self.put_signed(keys, flags, &bytes, (lifetime, delta), under, keep)
                    .map(drop)
            }
            Refreshed::Unstored => self.call(|s| s.delete(&keys.data)).map(drop),
            Refreshed::Nothing => Ok(()),
        };
        let released = self.call(|s| s.unlock(&keys.refresh, token));
        outcome.and(released)
    }

    fn token(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "{}:{}:{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            self.clock.now().as_micros()
        )
    }
}
