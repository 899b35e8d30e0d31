//! The lifecycle the crate documentation describes, end to end: serve
//! fresh entries, serve stale ones while one background refresh runs, and
//! compute each missing key once however many callers ask.
//!
//! The engine never blocks on its own: followers wait through a closure the
//! caller supplies (the Python bindings release the GIL in it), and
//! refreshes run on the [`Refresher`]'s threads through its runner.
//!
//! A caller that cannot block (an event loop's task) drives the same
//! lifecycle in steps: [`Engine::start`] makes it the leader (a [`Lead`]
//! token it completes when its computation ends), a follower (a [`Waiter`]
//! it registers a callback on), or serves what a leader just stored; a
//! stale hit's refresh is a [`RefreshClaim`] it completes or drops.

use std::sync::Arc;

use crate::cache::{Cache, Lookup};
use crate::entry::{Entry, Freshness, Lifetime, Stamps};
use crate::fence::{Fences, Ticket};
use crate::flight::{Join, LeaderGuard, Outcome, Owner, SingleFlight, Waiter};
use crate::refresh::Refresher;
use crate::role::Role;
use crate::stats::{Counter, Stats};
use crate::store::Store;
use crate::timestamp::{Span, Timestamp};

/// What a call found in the cache and what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// A fresh entry was served.
    Hit,
    /// No usable entry: the value was computed (by this caller or by the
    /// one it waited on) and stored.
    Miss,
    /// A stale entry was served while one background refresh runs.
    Stale,
    /// The cache was skipped on purpose.
    Bypass,
    /// A forced recompute replaced the entry.
    Refresh,
}

impl Status {
    /// Every status, in the order of [`Status::index`].
    pub const ALL: [Status; 5] = [
        Status::Hit,
        Status::Miss,
        Status::Stale,
        Status::Bypass,
        Status::Refresh,
    ];

    /// The status's position in [`Status::ALL`] (for an embedder's table
    /// of its own status objects).
    pub const fn index(self) -> usize {
        match self {
            Status::Hit => 0,
            Status::Miss => 1,
            Status::Stale => 2,
            Status::Bypass => 3,
            Status::Refresh => 4,
        }
    }

    /// How an entry found without computing (a peek) is served: HIT when
    /// fresh, STALE otherwise (a peek never finds an expired one).
    pub fn of_peek(freshness: crate::Freshness) -> Status {
        match freshness {
            crate::Freshness::Fresh => Status::Hit,
            _ => Status::Stale,
        }
    }

    /// The bare word clients see (`HIT`, `MISS`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Stale => "STALE",
            Status::Bypass => "BYPASS",
            Status::Refresh => "REFRESH",
        }
    }
}

/// A freshly computed value and how long to keep it; `lifetime: None`
/// means "do not store" (the caller's policy turned it away).
pub struct Computed<V> {
    /// The value.
    pub value: V,
    /// How long to keep it, or `None` to not store it.
    pub lifetime: Option<Lifetime>,
}

/// What a call serves.
#[derive(Debug)]
pub struct Served<V> {
    /// The entry served. For a value that was not stored, an entry that
    /// lives only as long as this answer.
    pub entry: Arc<Entry<V>>,
    /// What happened.
    pub status: Status,
    /// Whether the served value is (or was, when computed) in the store.
    pub stored: bool,
    /// Whether this caller claimed the entry's background refresh and must
    /// call [`Engine::schedule_refresh`]: for [`Status::Stale`], and for a
    /// [`Status::Hit`] whose early refresh it drew ([`crate::early`]).
    pub refresh_claimed: bool,
}

impl<V> Served<V> {
    /// `entry` served as `status`; `stored`: whether it is in the store.
    /// Claims no refresh.
    #[inline]
    pub fn new(entry: Arc<Entry<V>>, status: Status, stored: bool) -> Self {
        served(entry, status, stored)
    }

    /// The entry whose instants (`cached_at`, `reset_at`) a report of this
    /// call gives: the one served, when it is in the store; a value that
    /// was not stored has none to report.
    #[inline]
    pub fn reported(&self) -> Option<&Entry<V>> {
        self.stored.then_some(&*self.entry)
    }

    /// Whether every call served like this one reports the same: a HIT of
    /// a stored entry, whose status and instants are fixed for the entry's
    /// life, so an embedder may build that report once per entry and hand
    /// out copies. Anything else (MISS, STALE, a value not stored) is
    /// reported once, when it happens.
    #[inline]
    pub fn report_is_fixed(&self) -> bool {
        self.status == Status::Hit && self.stored
    }
}

/// Why a call did not produce a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetError<E> {
    /// The computation failed; every caller waiting on it gets the error.
    Compute(E),
    /// The computation asked for its own key while computing it; waiting
    /// would never end.
    Recursive,
}

impl<E> GetError<E> {
    /// What to tell the caller of `function` of a [`GetError::Recursive`]:
    /// which call waited on itself, and why it cannot.
    pub fn recursion_message(function: &str) -> String {
        format!(
            "{function}() called itself with the same arguments while computing them; \
             the inner call would wait on the outer one forever"
        )
    }
}

/// The outcome followers share: the entry, whether it is stored, and the
/// status it is served with (MISS, or STALE for a stale-if-error value).
pub type Shared<V> = (Arc<Entry<V>>, bool, Status);

/// What a step lookup served ([`Engine::found_claiming`]), with the claim
/// of the background refresh its caller drew.
pub type Found<V, E, S> = (Served<V>, Option<RefreshClaim<V, E, S>>);

/// A caller's part in the engine's computation of a key, held between
/// steps ([`Engine::join_counted`]).
pub type MemoryRole<'a, V, E, S> = Role<Lead<'a, V, E, S>, Shared<V>, E>;

/// What [`Engine::start`] gave a caller that missed.
pub enum Start<'a, V, E, S> {
    /// A leader finished between the caller's lookup and its join: its
    /// entry, served.
    Served(Served<V>),
    /// The caller computes, then completes the token.
    Lead(Lead<'a, V, E, S>),
    /// Another caller computes: wait on it, or register a callback.
    Follow(Waiter<Shared<V>, E>),
}

/// Held by the caller computing a key (see [`Engine::start`]). Dropped
/// without [`Lead::complete`] (a cancelled task), it abandons the flight:
/// its followers join again and one of them computes.
pub struct Lead<'a, V, E, S> {
    engine: &'a Engine<V, E, S>,
    guard: LeaderGuard<'a, Shared<V>, E>,
    fallback: Option<Arc<Entry<V>>>,
    /// Fences the store of its value against a delete of the key meanwhile.
    ticket: Ticket,
    started: Timestamp,
    /// When the lead was handed out, for the statistics of a computation
    /// the caller runs on its own ([`Lead::complete_counted`]).
    timer: std::time::Instant,
}

/// The claim on a stale (or early-refreshed) entry's background refresh,
/// taken by the caller a lookup chose (or a forced refresh's token, which
/// claims nothing: [`Engine::begin_refresh`]). Completing it stores the new value
/// under the key as it was at claim time (an invalidation meanwhile is not
/// undone), unless the key was deleted since ([`Engine::delete`]); dropping
/// it gives the claim back, so a later read tries again.
pub struct RefreshClaim<V, E, S> {
    engine: Arc<Engine<V, E, S>>,
    /// The key, fencing the store against a delete of it since the claim.
    ticket: Ticket,
    /// The claimed entry; `None` once completed.
    entry: Option<Arc<Entry<V>>>,
    started: Timestamp,
}

/// Store, single-flight and refresher together.
pub struct Engine<V, E, S> {
    cache: Cache<V, S>,
    flights: SingleFlight<Shared<V>, E>,
    /// The computations under way that will store, fenced by a delete of
    /// their key ([`Engine::delete`]).
    fences: Arc<Fences>,
    refresher: Refresher,
}

impl<V, E, S> Engine<V, E, S>
where
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    S: Store<V> + 'static,
{
    /// An engine over `cache` whose refreshes run on `refresher`.
    pub fn new(cache: Cache<V, S>, refresher: Refresher) -> Self {
        Engine {
            cache,
            flights: SingleFlight::new(),
            fences: Arc::new(Fences::new()),
            refresher,
        }
    }

    /// The cache (store and clock).
    pub fn cache(&self) -> &Cache<V, S> {
        &self.cache
    }

    /// The refresh workers.
    pub fn refresher(&self) -> &Refresher {
        &self.refresher
    }

    /// The in-flight computations.
    pub fn flights(&self) -> &SingleFlight<Shared<V>, E> {
        &self.flights
    }

    /// The computations under way that will store (see [`Engine::delete`]).
    pub fn fences(&self) -> &Fences {
        &self.fences
    }

    /// Removes the entry under `key` and fences every computation of the
    /// key under way (a leader's, a background refresh's, a forced
    /// recompute's): each hands its value to its callers but stores
    /// nothing, so the delete is not undone by a value computed from the
    /// data before it. Hands back the entry removed, to be dropped by the
    /// caller.
    pub fn delete(&self, key: &[u8]) -> Option<Arc<Entry<V>>> {
        self.fences.delete(self.cache.store(), key)
    }

    /// Serves `key`: a fresh entry as a hit, a stale one as stale (see
    /// [`Served::refresh_claimed`]), or else computes it once with
    /// `compute` while concurrent callers for the key wait through `wait`.
    pub fn get<C, W>(&self, key: &[u8], compute: C, wait: W) -> Result<Served<V>, GetError<E>>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
        W: FnMut(&Waiter<Shared<V>, E>) -> Outcome<Shared<V>, E>,
    {
        self.resolve(key, self.cache.lookup(key), None, compute, wait)
    }

    /// [`Engine::get`] for a key already looked up (by
    /// [`Cache::lookup_keeping`], say, or before the caller built its
    /// arguments): a miss is computed once, and `fallback`, if given, is
    /// served as STALE should the computation fail.
    #[inline]
    pub fn resolve<C, W>(
        &self,
        key: &[u8],
        lookup: Lookup<V>,
        fallback: Option<Arc<Entry<V>>>,
        compute: C,
        wait: W,
    ) -> Result<Served<V>, GetError<E>>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
        W: FnMut(&Waiter<Shared<V>, E>) -> Outcome<Shared<V>, E>,
    {
        match found(lookup) {
            Some(served) => Ok(served),
            None => self.compute_once(key, fallback, compute, wait),
        }
    }

    /// [`Engine::resolve`] for a function whose statistics are `stats`:
    /// counts what the call served ([`Stats::served`]) and its wait on
    /// another caller's computation. The computation itself is counted by
    /// whoever runs it (`compute`: see [`Stats::count_compute`]).
    pub fn resolve_counted<C, W>(
        &self,
        key: &[u8],
        lookup: Lookup<V>,
        fallback: Option<Arc<Entry<V>>>,
        stats: &Stats,
        compute: C,
        mut wait: W,
    ) -> Result<Served<V>, GetError<E>>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
        W: FnMut(&Waiter<Shared<V>, E>) -> Outcome<Shared<V>, E>,
    {
        let mut led = false;
        let led_here = &mut led;
        let compute = move || {
            *led_here = true;
            compute()
        };
        let wait = |waiter: &Waiter<Shared<V>, E>| {
            stats.add(Counter::SingleFlightWait);
            wait(waiter)
        };
        let served = self.resolve(key, lookup, fallback, compute, wait)?;
        stats.served(served.status, served.refresh_claimed, led);
        Ok(served)
    }

    /// [`Engine::resolve_counted`], queueing the background refresh the
    /// call claimed ([`Served::refresh_claimed`]) with the computation
    /// `refresh` makes from the claimed entry's value (called only then, so
    /// a caller makes its owned copy of the call only for a claimed
    /// refresh): a synchronous caller's whole lifecycle past its lookup.
    ///
    /// `refresh` may decline with `None`: the caller will not use the value
    /// it found (its request is not one the value may answer), so its call
    /// is no call to refresh that value with. The claim is then given back
    /// at once and the entry is left as it is, for a caller it does answer
    /// to refresh.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve_refreshing<C, W, R, F>(
        self: &Arc<Self>,
        key: &[u8],
        lookup: Lookup<V>,
        fallback: Option<Arc<Entry<V>>>,
        stats: &Stats,
        compute: C,
        wait: W,
        refresh: R,
    ) -> Result<Served<V>, GetError<E>>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
        W: FnMut(&Waiter<Shared<V>, E>) -> Outcome<Shared<V>, E>,
        R: FnOnce(&V) -> Option<F>,
        F: FnOnce() -> Result<Computed<V>, E> + Send + 'static,
    {
        let served = self.resolve_counted(key, lookup, fallback, stats, compute, wait)?;
        if served.refresh_claimed {
            match refresh(served.entry.value()) {
                Some(compute) => self.schedule_refresh(key, Arc::clone(&served.entry), compute),
                None => served.entry.release_refresh(),
            }
        }
        Ok(served)
    }

    /// What a lookup serves without computing, counted in `stats`
    /// ([`Stats::served`]); `None` on a miss (then [`Engine::start`]).
    pub fn found_counted(&self, lookup: Lookup<V>, stats: &Stats) -> Option<Served<V>> {
        let served = found(lookup)?;
        stats.served(served.status, served.refresh_claimed, false);
        Some(served)
    }

    /// The first step of a caller that cannot block ([`Engine::start`]
    /// follows on a miss): what `key` serves without computing, counted in
    /// `stats`, with the claim of the background refresh this caller drew
    /// (to complete with the value it computes, or drop); `None` on a miss.
    /// An expired entry within `keep` (the stale-if-error window) stays
    /// in the store, for a failing computation to fall back on.
    pub fn found_claiming(
        self: &Arc<Self>,
        key: &[u8],
        keep: Span,
        stats: &Stats,
    ) -> Option<Found<V, E, S>> {
        let (lookup, _) = self.cache.lookup_keeping(key, keep);
        let served = self.found_counted(lookup, stats)?;
        let claim = served
            .refresh_claimed
            .then(|| self.claim_refresh(key, Arc::clone(&served.entry)));
        Some((served, claim))
    }

    /// What `key` holds, HIT (fresh) or STALE, without computing, claiming
    /// or removing anything; `None` when nothing servable is there.
    pub fn peek_served(&self, key: &[u8]) -> Option<Served<V>> {
        let (entry, freshness) = self.cache.peek(key)?;
        Some(served(entry, Status::of_peek(freshness), true))
    }

    /// Computes `key` once for every concurrent caller. When the
    /// computation fails and `fallback` (an expired entry kept for
    /// stale-if-error) is given, every caller is served that entry as
    /// STALE instead of the error.
    pub fn compute_once<C, W>(
        &self,
        key: &[u8],
        fallback: Option<Arc<Entry<V>>>,
        compute: C,
        mut wait: W,
    ) -> Result<Served<V>, GetError<E>>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
        W: FnMut(&Waiter<Shared<V>, E>) -> Outcome<Shared<V>, E>,
    {
        let mut compute = Some(compute);
        let mut followed = false;
        loop {
            match self.start(key, fallback.clone(), Owner::current_thread(), followed)? {
                Start::Served(served) => return Ok(served),
                Start::Lead(lead) => {
                    let compute = compute.take().expect("a caller leads at most once");
                    return lead.complete(compute());
                }
                Start::Follow(waiter) => match follow(wait(&waiter)) {
                    Some(result) => return result,
                    // The leader vanished: join again, perhaps as leader.
                    None => followed = true,
                },
            }
        }
    }

    /// Joins the computation of `key`, which the caller found missing, as
    /// `owner`: the one step of [`Engine::compute_once`] that a caller who
    /// cannot block takes (see [`Start`]). `fallback` as there;
    /// `followed` says the caller followed a leader that abandoned, so a
    /// value its successor stored is served as the MISS it waited for.
    pub fn start(
        &self,
        key: &[u8],
        fallback: Option<Arc<Entry<V>>>,
        owner: Owner,
        followed: bool,
    ) -> Result<Start<'_, V, E, S>, GetError<E>> {
        match self.flights.join_as(key, owner) {
            Join::Leader(guard) => {
                // A leader that finished between our lookup and our join
                // has stored its value: serve that instead of computing.
                // Read without removing: an expired entry is the fallback
                // kept for stale-if-error, which every read inside its
                // window must still find if this computation fails too.
                if let Some((entry, Freshness::Fresh)) = self.cache.peek(key) {
                    guard.complete(Ok((Arc::clone(&entry), true, Status::Miss)));
                    let status = if followed { Status::Miss } else { Status::Hit };
                    return Ok(Start::Served(served(entry, status, true)));
                }
                Ok(Start::Lead(Lead {
                    engine: self,
                    guard,
                    fallback,
                    ticket: self.fences.enter(key),
                    started: self.cache.clock().now(),
                    timer: std::time::Instant::now(),
                }))
            }
            Join::Follower(waiter) if waiter.is_own_flight() => Err(GetError::Recursive),
            Join::Follower(waiter) => Ok(Start::Follow(waiter)),
        }
    }

    /// [`Engine::start`] for a caller that found `key` missing and holds
    /// its part between steps: the [`Role`] of `owner` (a follower's wait
    /// counted in `stats`), with the expired entry within `keep` (the
    /// stale-if-error window) as the fallback of a failing computation.
    pub fn join_counted(
        &self,
        key: &[u8],
        keep: Span,
        owner: Owner,
        followed: bool,
        stats: &Stats,
    ) -> Result<MemoryRole<'_, V, E, S>, GetError<E>> {
        let (_, fallback) = self.cache.lookup_keeping(key, keep);
        Ok(match self.start(key, fallback, owner, followed)? {
            Start::Lead(lead) => Role::Lead(lead),
            Start::Served(s) => Role::Done((s.entry, s.stored, s.status)),
            Start::Follow(waiter) => {
                stats.add(Counter::SingleFlightWait);
                Role::Follow(waiter)
            }
        })
    }

    /// How many callers follow the computation of `key` now (see
    /// [`SingleFlight::waiters`]).
    pub fn waiters(&self, key: &[u8]) -> usize {
        self.flights.waiters(key)
    }

    /// Takes the refresh of `entry` under `key`, which a lookup claimed for
    /// this caller ([`Lookup::Stale`] with `refresh`, or [`Lookup::Early`]).
    pub fn claim_refresh(
        self: &Arc<Self>,
        key: &[u8],
        entry: Arc<Entry<V>>,
    ) -> RefreshClaim<V, E, S> {
        RefreshClaim {
            engine: Arc::clone(self),
            ticket: self.fences.enter(key),
            entry: Some(entry),
            started: self.cache.clock().now(),
        }
    }

    /// A forced recompute of `key` ([`Engine::refresh`] in steps, for a
    /// caller that computes on its own): nothing is claimed, and the key
    /// is the one at this moment.
    pub fn begin_refresh(self: &Arc<Self>, key: &[u8]) -> RefreshClaim<V, E, S> {
        RefreshClaim {
            engine: Arc::clone(self),
            ticket: self.fences.enter(key),
            entry: None,
            started: self.cache.clock().now(),
        }
    }

    /// Recomputes `key` now and replaces its entry (or removes it, when the
    /// new value is not to be stored).
    pub fn refresh<C>(&self, key: &[u8], compute: C) -> Result<Served<V>, E>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
    {
        let ticket = self.fences.enter(key);
        let (computed, delta) = self.cache.clock().timed(compute);
        let (entry, stored) = self.keep(&ticket, computed?, delta);
        Ok(served(entry, Status::Refresh, stored))
    }

    /// [`Engine::refresh`], counting what it served in `stats` (the
    /// computation is counted by whoever runs it).
    pub fn refresh_counted<C>(&self, key: &[u8], stats: &Stats, compute: C) -> Result<Served<V>, E>
    where
        C: FnOnce() -> Result<Computed<V>, E>,
    {
        let served = self.refresh(key, compute)?;
        stats.served(served.status, false, false);
        Ok(served)
    }

    /// Queues the background refresh of the stale (or early-refreshed)
    /// `entry` under `key`, whose claim the caller holds. When the queue is full, or when
    /// `compute` fails, the claim is released so a later read tries again
    /// and the stale entry keeps being served until its window ends.
    pub fn schedule_refresh<C>(self: &Arc<Self>, key: &[u8], entry: Arc<Entry<V>>, compute: C)
    where
        C: FnOnce() -> Result<Computed<V>, E> + Send + 'static,
    {
        let claim = self.claim_refresh(key, entry);
        let job = Box::new(move || {
            let clock = claim.engine.cache.clock();
            // Timed from here: the time in the queue is not the computation's.
            if let (Ok(computed), delta) = clock.timed(compute) {
                drop(claim.complete_measured(computed, delta));
            } // else: the claim, dropped, is given back
        });
        if let Err(job) = self.refresher.try_spawn(job) {
            drop(job); // and the claim in it with it
        }
    }

    /// Stores a computed value, which took `delta` to compute, under the
    /// key of `ticket` when its policy allows and the key was not deleted
    /// since the ticket was taken ([`Engine::delete`]), or removes the
    /// key's previous entry when the policy says not to keep it; the
    /// entry, and whether it was stored.
    fn keep(&self, ticket: &Ticket, computed: Computed<V>, delta: Span) -> (Arc<Entry<V>>, bool) {
        let key = ticket.key();
        match computed.lifetime {
            Some(lifetime) => {
                let entry = self.cache.entry_measured(computed.value, lifetime, delta);
                let (stored, left) = ticket.store(self.cache.store(), Arc::clone(&entry));
                drop(left); // outside the fence's lock
                (entry, stored)
            }
            None => {
                drop(self.cache.remove(key));
                let stamps = Stamps::new(self.cache.clock().now(), Lifetime::FOREVER);
                (Arc::new(Entry::new(computed.value, stamps)), false)
            }
        }
    }
}

impl<V, E, S> Lead<'_, V, E, S>
where
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    S: Store<V> + 'static,
{
    /// Ends the computation: stores its value (as its policy allows, and
    /// unless the key was deleted since the lead began: [`Engine::delete`])
    /// and hands it to every follower as MISS; or, when it failed, hands them
    /// the error, or the entry kept for stale-if-error as STALE.
    pub fn complete(self, result: Result<Computed<V>, E>) -> Result<Served<V>, GetError<E>> {
        let Lead {
            engine,
            guard,
            fallback,
            ticket,
            started,
            timer: _,
        } = self;
        match (result, fallback) {
            (Ok(computed), _) => {
                let delta = engine.cache.clock().since(started);
                let (entry, stored) = engine.keep(&ticket, computed, delta);
                guard.complete(Ok((Arc::clone(&entry), stored, Status::Miss)));
                Ok(served(entry, Status::Miss, stored))
            }
            (Err(_), Some(old)) => {
                guard.complete(Ok((Arc::clone(&old), true, Status::Stale)));
                Ok(served(old, Status::Stale, true))
            }
            (Err(error), None) => {
                guard.complete(Err(error.clone()));
                Err(GetError::Compute(error))
            }
        }
    }
}

impl<V, E, S> Lead<'_, V, E, S>
where
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    S: Store<V> + 'static,
{
    /// [`Lead::complete`] for a caller that ran the computation on its own
    /// (an event loop's task): counts it in `stats`, timed from
    /// [`Engine::start`], and what it served ([`Stats::served`]).
    pub fn complete_counted(
        self,
        result: Result<Computed<V>, E>,
        stats: &Stats,
    ) -> Result<Served<V>, GetError<E>> {
        let failed = result.is_err();
        stats.computed(self.timer, failed);
        let served = self.complete(result)?;
        stats.served(served.status, false, failed);
        Ok(served)
    }

    /// Gives the computation up (a cancelled task): one follower takes
    /// over. Counted in `stats` as a computation that ran this long.
    pub fn abandon_counted(self, stats: &Stats) {
        stats.computed(self.timer, false);
    }
}

impl<V, E, S> RefreshClaim<V, E, S>
where
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    S: Store<V> + 'static,
{
    /// Stores the refreshed value (or removes the entry, when its policy
    /// says not to keep it), timed from the claim; served as REFRESH.
    pub fn complete(self, computed: Computed<V>) -> Served<V> {
        let delta = self.engine.cache.clock().since(self.started);
        self.complete_measured(computed, delta)
    }

    fn complete_measured(mut self, computed: Computed<V>, delta: Span) -> Served<V> {
        self.entry = None; // replaced, not given back
        let (entry, stored) = self.engine.keep(&self.ticket, computed, delta);
        served(entry, Status::Refresh, stored)
    }
}

impl<V, E, S> Drop for RefreshClaim<V, E, S> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.release_refresh();
        }
    }
}

/// What a follower serves: the leader's outcome, or `None` when the leader
/// abandoned and the follower must join again.
pub fn follow<V, E>(outcome: Outcome<Shared<V>, E>) -> Option<Result<Served<V>, GetError<E>>> {
    match outcome {
        Outcome::Value((entry, stored, status)) => Some(Ok(served(entry, status, stored))),
        Outcome::Error(error) => Some(Err(GetError::Compute(error))),
        Outcome::Abandoned => None,
    }
}

/// What `lookup` serves without computing: a fresh entry as HIT (one
/// whose early refresh this caller drew, claimed), a stale one as STALE
/// (claimed for the one caller the lookup chose); `None` on a miss.
fn found<V>(lookup: Lookup<V>) -> Option<Served<V>> {
    let (entry, status, refresh_claimed) = match lookup {
        Lookup::Fresh(entry) => (entry, Status::Hit, false),
        Lookup::Early(entry) => (entry, Status::Hit, true),
        Lookup::Stale { entry, refresh } => (entry, Status::Stale, refresh),
        Lookup::Miss => return None,
    };
    Some(Served {
        refresh_claimed,
        ..served(entry, status, true)
    })
}

fn served<V>(entry: Arc<Entry<V>>, status: Status, stored: bool) -> Served<V> {
    Served {
        entry,
        status,
        stored,
        refresh_claimed: false,
    }
}
