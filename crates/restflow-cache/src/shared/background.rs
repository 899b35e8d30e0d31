//! Background refreshes of shared entries, driven by the engine.
//!
//! A read that finds an entry stale (or draws its early refresh) may claim
//! the refresh: it gets the refresh lock's token in
//! [`Answer::Stored`]'s `refresh_token`. Whoever holds a claim must refresh
//! and then give the lock back, however the refresh ends, or every process
//! serves the stale value until the lock expires. This module does that for
//! every caller: [`SharedCache::spawn_refresh`] queues the refresh on a
//! [`Refresher`] and releases the claim when it ends (or at once when the
//! queue is full), and [`SharedCache::get_refreshing`] is the get-or-compute
//! a Rust program calls, which spawns the refresh a read claimed by itself.
//!
//! Invariant: a claim taken from an answer is released exactly once, by
//! the job that ran it or by `spawn_refresh` when no job took it; the value
//! is stored only under the generations the stale entry was read under
//! (so an invalidation while it computes is kept).

use std::sync::Arc;

use super::cache::{Answer, Produced, SharedCache, SharedError};
use super::payload::Generations;
use super::store::{KeySet, SharedStore, StoreError};
use crate::entry::Lifetime;
use crate::refresh::{Job, Refresher};
use crate::timestamp::Span;

/// How a background refresh ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// A value to store: `(serializer flags, bytes, lifetime)`.
    Store(u8, Vec<u8>, Lifetime),
    /// A value computed but not to be stored (its policy or the serializer
    /// turned it away): the stale entry is dropped too, as a forced refresh
    /// drops it and as the memory store does, so the next read computes
    /// instead of serving a value the refresh superseded.
    Unstored,
    /// Nothing computed (the computation failed, or never ran): the stale
    /// entry stays, for the next read to try again.
    Nothing,
}

/// A background refresh a caller claimed: what storing its value and
/// giving the claim back need.
#[derive(Clone, Debug)]
pub struct RefreshClaim {
    /// The keys of the entry.
    pub keys: KeySet,
    /// The refresh lock's owner token.
    pub token: String,
    /// How long past its stale window the new entry is kept (stale-if-error).
    pub keep: Span,
    /// The generations the stale entry was read under.
    pub generations: Generations,
}

impl RefreshClaim {
    /// The claim `answer` carries for `keys`, if the read that gave it took
    /// one.
    pub fn of<T>(answer: &Answer<T>, keys: &KeySet, keep: Span) -> Option<Self> {
        match answer {
            Answer::Stored {
                refresh_token: Some(token),
                generations,
                ..
            } => Some(RefreshClaim {
                keys: keys.clone(),
                token: token.clone(),
                keep,
                generations: *generations,
            }),
            _ => None,
        }
    }
}

impl<S: SharedStore, E: Clone> SharedCache<S, E> {
    /// Ends the refresh `claim` with what its caller computed
    /// ([`SharedCache::finish_refresh`] with the claim's parts): stored
    /// under the claim's generations when there is something to store, and
    /// the claim given back either way.
    pub fn finish_claim(
        &self,
        claim: &RefreshClaim,
        refreshed: Refreshed,
    ) -> Result<(), StoreError> {
        let RefreshClaim {
            keys,
            token,
            keep,
            generations,
        } = claim;
        self.finish_refresh(keys, token, *keep, *generations, refreshed)
    }
}

impl<S, E> SharedCache<S, E>
where
    S: SharedStore + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Queues the refresh `claim` with `spawn` (usually
    /// `|job| refresher.try_spawn(job)`; an embedder may wrap the job to
    /// give it context, as the Python bindings do to run its store calls
    /// without the GIL): `compute` runs on a
    /// worker (timed, for early refresh), what it produced is stored under
    /// the claim's generations, and the claim is released; `finished` then
    /// hears how the store took it. When the queue is full nothing runs
    /// (neither `compute` nor `finished`): the claim is given back at once
    /// (a later read claims it again) and `false` is returned.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        spawn: impl FnOnce(Job) -> Result<(), Job>,
        claim: RefreshClaim,
        compute: impl FnOnce() -> Refreshed + Send + 'static,
        finished: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> bool {
        let cache = Arc::clone(self);
        let job_claim = claim.clone();
        let job: Job = Box::new(move || {
            let RefreshClaim {
                keys,
                token,
                keep,
                generations,
            } = &job_claim;
            let outcome = cache.run_refresh(keys, token, *keep, *generations, compute);
            if let Err(error) = &outcome {
                cache.warn(error);
            }
            finished(outcome);
        });
        match spawn(job) {
            Ok(()) => true,
            Err(job) => {
                // Dropped first: it may own values the caller wants freed
                // before anything else runs (the bindings' Python objects).
                drop(job);
                let _ = self.finish_claim(&claim, Refreshed::Nothing);
                false
            }
        }
    }

    /// Serves `keys` as [`SharedCache::get`] does (a waiter blocks on
    /// another thread's computation of the same key), and when this read
    /// claimed the entry's refresh, queues it on `refresher` with
    /// `compute`: a caller never handles a refresh claim. A refresh whose
    /// computation fails keeps the stale value (and releases the claim).
    pub fn get_refreshing<T, F>(
        self: &Arc<Self>,
        refresher: &Refresher,
        keys: &KeySet,
        keep: Span,
        compute: F,
    ) -> Result<Answer<T>, SharedError<E>>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn() -> Result<Produced<T>, E> + Send + Sync + 'static,
    {
        let compute = Arc::new(compute);
        let inline = Arc::clone(&compute);
        let answer = self.get(keys, keep, move || inline(), |waiter| waiter.wait())?;
        if let Some(claim) = RefreshClaim::of(&answer, keys, keep) {
            let refresh = move || match compute() {
                Ok(produced) => produced.into_refreshed(),
                Err(_) => Refreshed::Nothing,
            };
            self.spawn_refresh(|job| refresher.try_spawn(job), claim, refresh, drop);
        }
        Ok(answer)
    }
}
