//! A cached function's statistics, recorded by the lifecycle itself.
//!
//! An embedder keeps a [`Stats`] per cached function (the Python bindings
//! keep one per decorated function) and passes it to the `_counted` entry
//! points; the engine counts what it knows happened, once for every
//! embedder entry point, instead of each entry point reconstructing it from
//! the answer:
//!
//! * the status served ([`Counter::of_status`]);
//! * a wait on another caller of this process computing the key
//!   ([`Counter::SingleFlightWait`]), counted when it starts;
//! * a miss of the near cache the caller looked in first
//!   ([`NearMode::Fill`]: [`Counter::NearMiss`]);
//! * a refresh the read claimed ([`Counter::BackgroundRefresh`], and
//!   [`Counter::EarlyRefresh`] when the entry was still fresh);
//! * a STALE answer after this caller's own computation failed
//!   ([`Counter::StaleIfError`]);
//! * how long a read served from the store without computing here took
//!   (HIT, STALE): the round trips and the decoding, what the caller
//!   waited for ([`Stats::observe_lookup`]).
//!
//! Invariant: every answer is counted exactly once, by the entry point
//! that hands it to the caller; an error is not counted here (the embedder
//! counts the computation's own failure when it runs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::{Handoff, NearMode, Produced, SharedCache, SharedError};
use super::codec::Codec;
use super::decode::{Served, Undecodable};
use super::steps::{Begin, ComputeClaim};
use super::store::{KeySet, SharedStore};
use crate::engine::Status;
use crate::flight::{Outcome, Owner, Waiter};
use crate::stats::{Counter, Stats};
use crate::timestamp::Span;

impl<T> Served<T> {
    /// Counts this answer in `stats` (see the module documentation): `ran`
    /// when the computation ran in this call, `lookup` the time the read
    /// took (counted only for an answer served without computing).
    fn count(&self, stats: &Stats, ran: bool, lookup: Option<Duration>) {
        stats.add(Counter::of_status(self.status));
        match self.status {
            Status::Hit | Status::Stale if !ran => {
                if let Some(took) = lookup {
                    stats.observe_lookup(took);
                }
            }
            // Computed here and failed: the kept value answers.
            Status::Stale => stats.add(Counter::StaleIfError),
            _ => {}
        }
        if self.refresh.is_some() {
            if self.status == Status::Hit {
                // A fresh entry this read drew to refresh early.
                stats.add(Counter::EarlyRefresh);
            }
            stats.add(Counter::BackgroundRefresh);
        }
    }
}

/// Waits on another caller of this process, counted.
fn counted_wait<E: Clone>(stats: &Stats, waiter: &Waiter<Handoff, E>) -> Outcome<Handoff, E> {
    stats.add(Counter::SingleFlightWait);
    waiter.wait()
}

fn count_near_miss(stats: &Stats, mode: NearMode) {
    if mode == NearMode::Fill {
        stats.add(Counter::NearMiss);
    }
}

/// Counts a HIT served from the near cache, or from its hot layer
/// ([`super::hot`]) by an embedder that looked there itself.
pub fn count_near_hit(stats: &Stats) {
    stats.add(Counter::Hit);
    stats.add(Counter::NearHit);
}

impl<S: SharedStore, E: Clone> SharedCache<S, E> {
    /// A fresh entry of the store's near cache for `keys`
    /// ([`SharedCache::near_fresh_seen`]), decoded by `decode`: served as a
    /// HIT without a round trip, counted (see [`count_near_hit`]; the read
    /// timed from `started` when given), and `kept` under the epoch a
    /// decoded copy may be served under ([`super::hot`]). `None` when it
    /// holds none, or the entry does not decode (the read of the store that
    /// follows decides about it); `Err` is `decode`'s fatal error.
    pub fn near_counted<T>(
        &self,
        keys: &KeySet,
        stats: &Stats,
        started: Option<Instant>,
        decode: impl FnOnce(u8, &[u8]) -> Result<T, Undecodable<E>>,
    ) -> Result<Option<Served<T>>, E> {
        let Some((flags, bytes, stamps, seen)) = self.near_fresh_seen(keys) else {
            return Ok(None);
        };
        let value = match decode(flags, &bytes) {
            Ok(value) => value,
            Err(Undecodable::Fatal(error)) => return Err(error),
            Err(Undecodable::Unreadable) => return Ok(None),
        };
        count_near_hit(stats);
        if let Some(started) = started {
            stats.observe_lookup(started.elapsed());
        }
        let mut served = Served::computed(value, Status::Hit, Some(stamps));
        served.kept = Some(seen);
        Ok(Some(served))
    }

    /// [`SharedCache::serve`], decoding with `codec` and counted in `stats`
    /// (see the module documentation). `compute` runs at most once, on the
    /// calling thread.
    pub fn serve_counted<T, C>(
        &self,
        keys: &KeySet,
        (mode, stale_if_error): (NearMode, Span),
        stats: &Arc<Stats>,
        codec: &C,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
    ) -> Result<Served<T>, SharedError<E>>
    where
        T: Clone + Send + Sync + 'static,
        C: Codec<T, Error = E>,
    {
        count_near_miss(stats, mode);
        let started = Instant::now();
        let mut ran = false;
        let served = self.serve_crediting(
            keys,
            (mode, Some(stats)),
            stale_if_error,
            || {
                ran = true;
                compute()
            },
            |flags, bytes| codec.decode(flags, bytes),
            |waiter| counted_wait(stats, waiter),
        )?;
        served.count(stats, ran, Some(started.elapsed()));
        Ok(served)
    }

    /// [`SharedCache::begin`], decoding with `codec` and counted in `stats`:
    /// an answer served here is counted now; a claim is counted when it is
    /// finished ([`ComputeClaim::finish_counted`]).
    pub fn begin_counted<T, C>(
        self: &Arc<Self>,
        owner: Owner,
        keys: &KeySet,
        (mode, stale_if_error): (NearMode, Span),
        stats: &Arc<Stats>,
        codec: &C,
    ) -> Result<Begin<'static, T, S, E>, SharedError<E>>
    where
        T: Clone + Send + Sync + 'static,
        C: Codec<T, Error = E>,
    {
        count_near_miss(stats, mode);
        let started = Instant::now();
        let begun = self.begin_crediting(
            owner,
            keys,
            (mode, Some(stats)),
            stale_if_error,
            |flags, bytes| codec.decode(flags, bytes),
            |waiter| counted_wait(stats, waiter),
        )?;
        if let Begin::Served(served) = &begun {
            served.count(stats, false, Some(started.elapsed()));
        }
        Ok(begun)
    }
}

impl<S: SharedStore, E: Clone> ComputeClaim<'_, S, E> {
    /// Finishes this claim with what its caller computed (`Err`: the
    /// computation failed) as [`ComputeClaim::finish_served`] or
    /// [`ComputeClaim::fail_served`] do, decoding a value kept for
    /// stale-if-error with `codec`, and counts the answer in `stats` (a
    /// forced recompute's, [`SharedCache::begin_refresh`], as REFRESH).
    pub fn finish_counted<T, C>(
        self,
        produced: Result<Produced<T>, E>,
        codec: &C,
        stats: &Stats,
    ) -> Result<Served<T>, SharedError<E>>
    where
        T: Clone + Send + Sync + 'static,
        C: Codec<T, Error = E>,
    {
        let served = match produced {
            Ok(produced) => self.finish_served(produced)?,
            Err(error) => self.fail_served(error, |flags, bytes| codec.decode(flags, bytes))?,
        };
        served.count(stats, true, None);
        Ok(served)
    }
}
