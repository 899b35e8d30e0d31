//! The shared-store lifecycle in steps, for a caller that cannot block
//! while the value is computed (an event loop's task).
//!
//! [`SharedCache::begin`] does everything that blocks: the round trips,
//! following another thread of this process that computes the key, taking
//! the store's computation lock and polling while another process holds
//! it. It ends with a served answer ([`Begin::Served`]) or a
//! [`ComputeClaim`] ([`Begin::Lead`]): this caller computes the value, in
//! whatever way it likes (an async caller awaits it in its own task), then
//! hands it to [`ComputeClaim::finish`] (stores it and frees the lock) or
//! its error to [`ComputeClaim::fail`] (the value kept for stale-if-error
//! answers, when there is one). The blocking get-or-compute
//! ([`SharedCache::serve`], [`SharedCache::get`]) is these same steps with
//! the computation run in between: there is one lifecycle.
//!
//! Invariants: a claim that holds the store's computation lock frees it
//! exactly once, when it is finished, failed or dropped (a cancelled task),
//! so another process takes over at once rather than after `lock_timeout`
//! (an unlock the store leaves unanswered is owed and given back once it
//! answers, see [`SharedCache::with_give_backs`]);
//! a claim that leads this process's flight for its key ends that flight
//! with its answer, or abandons it when dropped (a follower then leads).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::cache::{Answer, Handoff, SharedCache, SharedError};
use super::decode::Served;
use super::payload::Generations;
use super::store::{Holder, KeySet, SharedStore, StoreError};
use crate::engine::Status;
use crate::entry::Stamps;
use crate::flight::{Join, LeaderGuard, Owner};
use crate::timestamp::{Span, Timestamp};

/// The cache a claim works on: borrowed by a caller that finishes within
/// the call that began (the blocking get), shared by one that outlives it,
/// with the owner that holds the claim meanwhile.
pub(super) enum Handle<'a, S, E> {
    Borrowed(&'a SharedCache<S, E>),
    Shared(Arc<SharedCache<S, E>>, Owner),
}

/// An owner of its own for a claim that outlives the call that began it
/// and whose holder the caller did not name: a task no other caller is.
pub(super) fn unnamed_owner() -> Owner {
    static CLAIMS: AtomicU64 = AtomicU64::new(0);
    Owner::task(CLAIMS.fetch_add(1, Ordering::Relaxed))
}

impl<S, E> std::ops::Deref for Handle<'_, S, E> {
    type Target = SharedCache<S, E>;

    fn deref(&self) -> &SharedCache<S, E> {
        match self {
            Handle::Borrowed(cache) => cache,
            Handle::Shared(cache, _) => cache,
        }
    }
}

impl<'a, S: SharedStore, E: Clone> Handle<'a, S, E> {
    /// A second handle on the same cache.
    pub(super) fn again(&self) -> Handle<'a, S, E> {
        match self {
            Handle::Borrowed(cache) => Handle::Borrowed(cache),
            Handle::Shared(cache, owner) => Handle::Shared(Arc::clone(cache), *owner),
        }
    }

    /// Joins this process's flight for `key`: as the calling thread when
    /// the claim is finished within this call (it computes on this thread),
    /// else as the claim's owner. A claim that outlives the call is held
    /// by a caller elsewhere (an event loop's task), not by the thread that
    /// began it: that thread (a worker), beginning the same key again while
    /// the claim is held, must follow it, not be refused as waiting on
    /// itself; while the thread of the owner's loop, which would block the
    /// task it waits on, is refused.
    pub(super) fn join(&self, key: &[u8]) -> Join<'a, Handoff, E> {
        match self {
            Handle::Borrowed(cache) => cache.flights().join_as(key, Owner::current_thread()),
            Handle::Shared(cache, owner) => cache.flights().join_shared(key, *owner),
        }
    }
}

/// What [`SharedCache::begin`] found.
pub enum Begin<'a, T, S: SharedStore, E: Clone> {
    /// Served without computing here: HIT, STALE (maybe with the refresh
    /// this read claimed), or what another caller of this process computed.
    Served(Served<T>),
    /// This caller computes the value, then finishes the claim.
    Lead(ComputeClaim<'a, S, E>),
}

/// What finishing a claim does with the value.
pub(super) enum How {
    /// This caller holds the store's computation lock (`token`): the value
    /// is stored under `generations`, read before it was computed.
    Locked {
        token: String,
        generations: Generations,
        /// Just before the lock was asked for (see
        /// [`SharedCache::unlock_or_give_back`]).
        locked_at: Instant,
    },
    /// Another process took too long: the value is served, not stored.
    Unstored,
    /// The store failed: the value is served live (BYPASS).
    Bypassed(StoreError),
    /// Every entry read failed to decode: served live (BYPASS).
    Live,
    /// A forced recompute (REFRESH), stored under `generations` unless a
    /// delete of the entry removed the token `fence` the entry's fence
    /// held when it began ([`super::SharedStore::fence`]).
    Refresh {
        generations: Generations,
        fence: String,
    },
}

/// The right (and duty) to compute one entry's value: see the module
/// documentation. Finish or fail it on any thread; drop it to give up.
pub struct ComputeClaim<'a, S: SharedStore, E: Clone> {
    pub(super) cache: Handle<'a, S, E>,
    pub(super) keys: KeySet,
    pub(super) how: How,
    /// The entry kept for stale-if-error, served if the computation fails.
    pub(super) fallback: Option<Answer<()>>,
    /// How long past its stale window a stored value is kept.
    pub(super) keep: Span,
    /// When the computation started, on the cache's clock (its delta).
    pub(super) started: Timestamp,
    /// This process's flight for the key, when this caller leads it.
    pub(super) flight: Option<LeaderGuard<'a, Handoff, E>>,
    /// Set once the lock was freed (or never held).
    pub(super) ended: bool,
}

/// A claim that owns its cache, as an embedder keeps it across an await.
pub type OwnedClaim<S, E> = ComputeClaim<'static, S, E>;

impl<S: SharedStore, E: Clone> ComputeClaim<'_, S, E> {
    /// Whether the value will be stored (this caller holds the lock).
    pub fn stores(&self) -> bool {
        matches!(self.how, How::Locked { .. } | How::Refresh { .. })
    }

    /// The keys of the entry.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Frees the computation lock, if this claim holds it (once).
    fn unlock(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        if let How::Locked {
            token, locked_at, ..
        } = &self.how
        {
            self.cache
                .unlock_or_give_back(&self.keys.lock, token, *locked_at);
        }
    }

    /// Ends this process's flight with `answer` (its followers share it).
    fn hand_on<T: Clone + Send + Sync + 'static>(
        &mut self,
        answer: &Result<Answer<T>, SharedError<E>>,
    ) {
        let Some(guard) = self.flight.take() else {
            return;
        };
        match answer {
            Err(SharedError::Compute(error)) => guard.complete(Err(error.clone())),
            // Whether or not it was stored (a computed answer claims no
            // refresh, so there is no claim to duplicate).
            Ok(answer) => guard.complete(Ok(Some(Arc::new(answer.clone())))),
            Err(_) => guard.complete(Ok(None)),
        }
    }

    /// The computed `produced` value: stored (when this caller holds the
    /// lock and the generations read before are still current), the lock
    /// freed, and the answer handed to this process's followers.
    pub fn finish<T: Clone + Send + Sync + 'static>(
        mut self,
        produced: super::Produced<T>,
    ) -> Result<Answer<T>, SharedError<E>> {
        let delta = self.cache.clock_since(self.started);
        let answer = match &self.how {
            // A store that fails the write serves the value it was given
            // as BYPASS, with the error to warn about: the computation is
            // not lost, and the caller is not told MISS for a value no
            // process will find.
            How::Locked {
                token, generations, ..
            } => {
                let stored = self.cache.store_produced(
                    &self.keys,
                    &produced,
                    (*generations, Some(Holder::Claim(&self.keys.lock, token))),
                    self.keep,
                    delta,
                );
                computed_or_bypassed(produced.value, stored)
            }
            How::Refresh { generations, fence } => {
                let fence_key = self.keys.fence();
                let stored = self.cache.store_produced(
                    &self.keys,
                    &produced,
                    (*generations, Some(Holder::Fence(&fence_key, fence))),
                    self.keep,
                    delta,
                );
                if produced.serialized.is_none() {
                    let (cache, keys) = (&self.cache, &self.keys);
                    let _ = cache.call(|s| s.delete(&keys.data));
                }
                computed_or_bypassed(produced.value, stored)
            }
            How::Unstored | How::Live => Answer::Computed {
                value: produced.value,
                stamps: None,
            },
            How::Bypassed(error) => Answer::Bypassed {
                value: produced.value,
                error: error.clone(),
            },
        };
        self.unlock();
        let answer = Ok(answer);
        self.hand_on(&answer);
        answer
    }

    /// The computation failed with `error`: the entry kept for
    /// stale-if-error answers (STALE) when there is one and this caller
    /// holds the lock, else the error; the lock is freed either way.
    pub fn fail<T: Clone + Send + Sync + 'static>(
        mut self,
        error: E,
    ) -> Result<Answer<T>, SharedError<E>> {
        let fallback = match self.how {
            How::Locked { .. } => self.fallback.take(),
            _ => None,
        };
        self.unlock();
        let answer = match fallback {
            Some(Answer::Stored {
                status,
                flags,
                value,
                stamps,
                refresh_token,
                generations,
            }) => Ok(Answer::Stored {
                status,
                flags,
                value,
                stamps,
                refresh_token,
                generations,
            }),
            _ => Err(SharedError::Compute(error)),
        };
        self.hand_on(&answer);
        answer
    }

    /// Computes with `compute` (on this thread) and finishes or fails the
    /// claim with its outcome: the blocking lifecycle.
    pub fn run<T: Clone + Send + Sync + 'static>(
        self,
        compute: impl FnOnce() -> Result<super::Produced<T>, E>,
    ) -> Result<Answer<T>, SharedError<E>> {
        match compute() {
            Ok(produced) => self.finish(produced),
            Err(error) => self.fail(error),
        }
    }

    /// Whether this is the claim of a forced recompute (REFRESH).
    pub(super) fn is_forced(&self) -> bool {
        matches!(self.how, How::Refresh { .. })
    }

    /// What a served, decoded answer of a claim that ran out of entries to
    /// decode is: BYPASS rather than MISS.
    pub(super) fn is_live(&self) -> bool {
        matches!(self.how, How::Live)
    }
}

impl<S: SharedStore, E: Clone> Drop for ComputeClaim<'_, S, E> {
    fn drop(&mut self) {
        // Given up (a cancelled task): the lock is freed now, so another
        // process computes at once; the flight's guard, dropped with this,
        // lets a follower of this process lead.
        self.unlock();
    }
}

/// What a computed `value` answers once its write is done: MISS with its
/// instants (`None`: not stored, a counter moved on or nothing to store),
/// or BYPASS with the store's error.
fn computed_or_bypassed<T>(value: T, stored: Result<Option<Stamps>, StoreError>) -> Answer<T> {
    match stored {
        Ok(stamps) => Answer::Computed { value, stamps },
        Err(error) => Answer::Bypassed { value, error },
    }
}

/// The decoded answer of a claim (see [`SharedCache::serve`]).
pub(super) fn served_of<T>(answer: Answer<T>, live: bool) -> Served<T> {
    match answer {
        Answer::Computed { value, stamps } => {
            let status = if live { Status::Bypass } else { Status::Miss };
            Served::computed(value, status, stamps)
        }
        Answer::Bypassed { value, error } => Served {
            bypassed: Some(error),
            ..Served::computed(value, Status::Bypass, None)
        },
        Answer::Stored { .. } => unreachable!("a stored answer is decoded by its caller"),
    }
}
