//! One claim for a caller that computes a shared store's value on its own
//! (an event loop's task awaits it) and then hands it over: a missed key's
//! [`ComputeClaim`] (its computation lock, or a live computation past a
//! failing store), a forced refresh's, or the background refresh a stale
//! read claimed ([`RefreshClaim`]). The embedder holds one type whatever
//! the read gave it, and ends it one way: finished with what it computed
//! (or the error it raised), or dropped to give the claim back.
//!
//! Invariants: a claim is given back exactly once, when it is finished or
//! when it is dropped unfinished (a cancelled task), so another caller (in
//! this process or another) claims it at once rather than after the lock
//! expires; a background refresh's value is stored only under the
//! generations the stale entry was read under (see
//! [`SharedCache::finish_refresh`]).

use std::sync::Arc;

use super::background::{RefreshClaim, Refreshed};
use super::cache::{Produced, SharedCache, SharedError};
use super::codec::Codec;
use super::decode::Served;
use super::steps::OwnedClaim;
use super::store::SharedStore;
use crate::engine::Status;
use crate::stats::Stats;

/// See the module documentation.
pub enum SharedLead<S: SharedStore + 'static, E: Clone + 'static> {
    /// A missed key's computation, or a forced refresh's
    /// ([`SharedCache::begin`], [`SharedCache::begin_refresh`]). Boxed:
    /// it is several times the size of the other.
    Compute(Box<OwnedClaim<S, E>>),
    /// A stale (or early-refreshed) entry's background refresh.
    Refresh(HeldRefresh<S, E>),
}

/// A background refresh's claim with the cache it gives it back to:
/// finished once, or given back when dropped.
pub struct HeldRefresh<S: SharedStore, E: Clone> {
    cache: Arc<SharedCache<S, E>>,
    /// `None` once ended.
    claim: Option<RefreshClaim>,
}

impl<S: SharedStore, E: Clone> HeldRefresh<S, E> {
    /// Ends the claim as `refreshed` says (see [`Refreshed`]) and gives it
    /// back; a store that fails is warned about (the stale
    /// value stays, and nobody waits on this answer).
    fn end(&mut self, refreshed: Refreshed) {
        if let Some(claim) = self.claim.take() {
            if let Err(error) = self.cache.finish_claim(&claim, refreshed) {
                self.cache.warn(&error);
            }
        }
    }
}

impl<S: SharedStore, E: Clone> Drop for HeldRefresh<S, E> {
    fn drop(&mut self) {
        self.end(Refreshed::Nothing);
    }
}

impl<S: SharedStore + 'static, E: Clone + 'static> SharedLead<S, E> {
    /// The background refresh `claim` a read of `cache` took.
    pub fn refresh(cache: &Arc<SharedCache<S, E>>, claim: RefreshClaim) -> Self {
        SharedLead::Refresh(HeldRefresh {
            cache: Arc::clone(cache),
            claim: Some(claim),
        })
    }

    /// A missed key's or a forced refresh's `claim`.
    pub fn compute(claim: OwnedClaim<S, E>) -> Self {
        SharedLead::Compute(Box::new(claim))
    }

    /// Whether this is a background refresh: nobody awaits its answer, so
    /// its failure is the embedder's to log, and it counts no status.
    pub fn is_background(&self) -> bool {
        matches!(self, SharedLead::Refresh(_))
    }

    /// Ends the claim with what its caller computed (`Err`: the computation
    /// failed). A computation's claim answers as
    /// [`super::ComputeClaim::finish_counted`] does (counted in `stats`,
    /// decoding a value kept for stale-if-error with `codec`). A background
    /// refresh stores the value and answers it as REFRESH (counted by
    /// nobody: the read that claimed it was); on a failure it gives the
    /// claim back and answers nothing (the stale value stays).
    pub fn finish_counted<T, C>(
        self,
        produced: Result<Produced<T>, E>,
        codec: &C,
        stats: &Stats,
    ) -> Result<Option<Served<T>>, SharedError<E>>
    where
        T: Clone + Send + Sync + 'static,
        C: Codec<T, Error = E>,
    {
        match (self, produced) {
            (SharedLead::Compute(claim), produced) => {
                claim.finish_counted(produced, codec, stats).map(Some)
            }
            (SharedLead::Refresh(mut held), Ok(produced)) => {
                let (value, refreshed) = produced.into_parts();
                held.end(refreshed);
                Ok(Some(Served::computed(value, Status::Refresh, None)))
            }
            // Dropped: given back.
            (SharedLead::Refresh(_), Err(_)) => Ok(None),
        }
    }
}
