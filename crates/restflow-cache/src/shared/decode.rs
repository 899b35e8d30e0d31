//! Serving decoded values: the lifecycle of a payload that is signed by
//! this cache yet no longer turns back into a value.
//!
//! The signature proves an entry is ours, not that it still decodes: a
//! value's class may have moved or been renamed since a previous release
//! stored it. Such an entry is a miss, and one that would stay a miss for
//! every caller until it expires, so [`SharedCache::serve`] drops it and
//! recomputes. It does that at most once per call: a value that does not
//! survive its own round trip (or a store that keeps handing back entries
//! that do not decode) is computed live and served as BYPASS rather than
//! looped on.
//!
//! Invariants: `decode` runs with no lock of this crate held (an embedder
//! may run foreign code in it: the bindings attach to Python there); an
//! entry is deleted only after `decode` said it is unreadable, never after
//! a fatal error; a refresh claim read with an entry that does not decode
//! is given back at once (nobody will refresh from it).

use super::background::{RefreshClaim, Refreshed};
use std::sync::Arc;

use super::cache::{Answer, Begun, Handoff, NearMode, Produced, SharedCache, SharedError};
use super::near::Epoch;
use super::steps::{served_of, unnamed_owner, Begin, ComputeClaim, Handle};
use super::store::{KeySet, SharedStore, StoreError};
use crate::engine::Status;
use crate::entry::{Freshness, Stamps};
use crate::flight::{Outcome, Owner, Waiter};
use crate::stats::Stats;
use crate::timestamp::Span;

/// How many times a call reads the store before it gives up on entries
/// that do not decode and computes live: the entry read first, then the
/// one stored after it was dropped.
const READS: usize = 2;

/// Why `decode` gave no value for a payload signed by this cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undecodable<E> {
    /// It cannot be read now (its class moved, say): the entry is dropped
    /// and computed again ([`SharedCache::serve`]), or not served
    /// ([`SharedCache::peek_decoded`]).
    Unreadable,
    /// Decoding must stop and this error reach the caller as it is, as
    /// [`SharedError::Decode`] (the bindings' `KeyboardInterrupt`); the
    /// entry is left alone.
    Fatal(E),
}

/// A decoded answer of [`SharedCache::serve`].
#[derive(Clone, Debug)]
pub struct Served<T> {
    /// HIT, STALE, MISS, or BYPASS (the store failed, or its entries did
    /// not decode twice).
    pub status: Status,
    /// The value, decoded or computed.
    pub value: T,
    /// The entry's instants; `None` when nothing was stored.
    pub stamps: Option<Stamps>,
    /// The background refresh this read claimed (a STALE read, or a HIT
    /// that drew its early refresh): the caller must run it, usually with
    /// [`SharedCache::spawn_refresh`], which gives the claim back.
    pub refresh: Option<RefreshClaim>,
    /// For an entry the near cache kept: its epoch read before (see
    /// [`SharedCache::get_near_kept`]), under which a decoded copy may be
    /// served ([`super::hot`]).
    pub kept: Option<Epoch>,
    /// Why the store was skipped, for a BYPASS caused by a store failure
    /// (to be logged).
    pub bypassed: Option<StoreError>,
}

impl<T> Served<T> {
    pub(super) fn computed(value: T, status: Status, stamps: Option<Stamps>) -> Self {
        Served {
            status,
            value,
            stamps,
            refresh: None,
            kept: None,
            bypassed: None,
        }
    }
}

impl<S: SharedStore, E: Clone> ComputeClaim<'_, S, E> {
    /// [`ComputeClaim::finish`], decoded as [`SharedCache::serve`] answers;
    /// the value of a forced recompute ([`SharedCache::begin_refresh`]) is
    /// served as REFRESH, and a value the store failed to take is warned
    /// about ([`SharedCache::with_warnings`]).
    pub fn finish_served<T: Clone + Send + Sync + 'static>(
        self,
        produced: Produced<T>,
    ) -> Result<Served<T>, SharedError<E>> {
        let (live, forced) = (self.is_live(), self.is_forced());
        let cache = self.cache.again();
        let mut served = served_of(self.finish(produced)?, live);
        if forced && served.status == Status::Miss {
            served.status = Status::Refresh;
        }
        Ok(cache.warned(served))
    }

    /// [`ComputeClaim::fail`], decoded as [`SharedCache::serve`] answers:
    /// the value kept for stale-if-error, decoded by `decode` (STALE), or
    /// the error (also when the kept value no longer decodes).
    pub fn fail_served<T: Clone + Send + Sync + 'static>(
        self,
        error: E,
        mut decode: impl FnMut(u8, &[u8]) -> Result<T, Undecodable<E>>,
    ) -> Result<Served<T>, SharedError<E>> {
        let live = self.is_live();
        match self.fail::<T>(error.clone())? {
            Answer::Stored {
                status,
                flags,
                value,
                stamps,
                ..
            } => match decode(flags, &value) {
                Ok(value) => Ok(Served {
                    status,
                    value,
                    stamps: Some(stamps),
                    refresh: None,
                    kept: None,
                    bypassed: None,
                }),
                Err(Undecodable::Fatal(fatal)) => Err(SharedError::Decode(fatal)),
                Err(Undecodable::Unreadable) => Err(SharedError::Compute(error)),
            },
            computed => Ok(served_of(computed, live)),
        }
    }
}

impl<S: SharedStore, E: Clone> SharedCache<S, E> {
    /// [`SharedCache::get_near_kept`], with the answer decoded by `decode`
    /// (`(serializer flags, bytes)` to a value): an entry that does not
    /// decode is dropped and computed again, at most once; then the value
    /// is computed live (BYPASS). See the module documentation. `compute`
    /// runs at most once, on the calling thread, between the steps of
    /// [`SharedCache::begin`].
    pub fn serve<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        mode: NearMode,
        stale_if_error: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
        decode: impl FnMut(u8, &[u8]) -> Result<T, Undecodable<E>>,
        wait: impl FnMut(&Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Served<T>, SharedError<E>> {
        self.serve_crediting(keys, (mode, None), stale_if_error, compute, decode, wait)
    }

    /// [`SharedCache::serve`], an entry it keeps near crediting `credit`
    /// (a cached function's statistics) when an invalidation drops it.
    pub(super) fn serve_crediting<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        (mode, credit): (NearMode, Option<&Arc<Stats>>),
        stale_if_error: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
        mut decode: impl FnMut(u8, &[u8]) -> Result<T, Undecodable<E>>,
        wait: impl FnMut(&Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Served<T>, SharedError<E>> {
        let handle = Handle::Borrowed(self);
        let near = (mode, credit);
        match self.begin_in(handle, keys, near, stale_if_error, &mut decode, wait)? {
            Begin::Served(served) => Ok(served),
            Begin::Lead(claim) => match compute() {
                Ok(produced) => claim.finish_served(produced),
                Err(error) => claim.fail_served(error, decode),
            },
        }
    }

    /// [`SharedCache::refresh`], served as [`SharedCache::serve`] serves:
    /// REFRESH with the value computed by `compute`, BYPASS (with the
    /// error) when the store failed; the computation's error as it is.
    pub fn refresh_served<T: Clone + Send + Sync + 'static>(
        &self,
        keys: &KeySet,
        keep: Span,
        compute: impl FnOnce() -> Result<Produced<T>, E>,
    ) -> Result<Served<T>, SharedError<E>> {
        let claim = self.begin_refresh_in(Handle::Borrowed(self), keys, keep)?;
        // A forced recompute keeps no value for stale-if-error.
        claim.finish_served(compute().map_err(SharedError::Compute)?)
    }

    /// Everything of [`SharedCache::serve`] that blocks, for a caller that
    /// computes the value itself, without blocking (see [`super::steps`]):
    /// the decoded answer, or the claim to compute it, which then takes
    /// the value ([`ComputeClaim::finish_served`]) or the error
    /// ([`ComputeClaim::fail_served`]). Run it on a thread that may block
    /// (not an event loop's); `wait` blocks on another thread of this
    /// process computing the key. `owner` holds the claim while it is
    /// computed: [`Owner::task`] of the event loop's task that awaits the
    /// value, made on the loop's thread, so that a call on that thread
    /// which would wait for the claim is refused
    /// ([`SharedError::Recursive`]) instead of blocking the loop forever.
    pub fn begin<T: Clone + Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: Owner,
        keys: &KeySet,
        mode: NearMode,
        stale_if_error: Span,
        decode: impl FnMut(u8, &[u8]) -> Result<T, Undecodable<E>>,
        wait: impl FnMut(&Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Begin<'static, T, S, E>, SharedError<E>> {
        self.begin_crediting(owner, keys, (mode, None), stale_if_error, decode, wait)
    }

    /// [`SharedCache::begin`], an entry it keeps near crediting `credit`
    /// (a cached function's statistics) when an invalidation drops it.
    pub(super) fn begin_crediting<T: Clone + Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: Owner,
        keys: &KeySet,
        near: (NearMode, Option<&Arc<Stats>>),
        stale_if_error: Span,
        mut decode: impl FnMut(u8, &[u8]) -> Result<T, Undecodable<E>>,
        wait: impl FnMut(&Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Begin<'static, T, S, E>, SharedError<E>> {
        let handle = Handle::Shared(Arc::clone(self), owner);
        self.begin_in(handle, keys, near, stale_if_error, &mut decode, wait)
    }

    /// The claim of a forced recompute (REFRESH) of `keys` (see
    /// [`SharedCache::refresh`]), for a caller that computes the value
    /// itself: finish it with the value.
    pub fn begin_refresh(
        self: &Arc<Self>,
        keys: &KeySet,
        keep: Span,
    ) -> Result<ComputeClaim<'static, S, E>, SharedError<E>> {
        let handle = Handle::Shared(Arc::clone(self), unnamed_owner());
        self.begin_refresh_in(handle, keys, keep)
    }

    fn begin_in<'a, T: Clone + Send + Sync + 'static>(
        &self,
        handle: Handle<'a, S, E>,
        keys: &KeySet,
        near: (NearMode, Option<&Arc<Stats>>),
        stale_if_error: Span,
        decode: &mut impl FnMut(u8, &[u8]) -> Result<T, Undecodable<E>>,
        mut wait: impl FnMut(&Waiter<Handoff, E>) -> Outcome<Handoff, E>,
    ) -> Result<Begin<'a, T, S, E>, SharedError<E>> {
        for _ in 0..READS {
            let begun = self.begin_near(handle.again(), keys, near, stale_if_error, &mut wait)?;
            let (answer, kept) = match begun {
                Begun::Compute(claim) => return Ok(Begin::Lead(*claim)),
                Begun::Answered(answer, kept) => (answer, kept),
            };
            let (status, flags, bytes, stamps, refresh) = match answer {
                Answer::Stored {
                    status,
                    flags,
                    value,
                    stamps,
                    refresh_token,
                    generations,
                } => {
                    let refresh = refresh_token.map(|token| RefreshClaim {
                        keys: keys.clone(),
                        token,
                        keep: stale_if_error,
                        generations,
                    });
                    (status, flags, value, stamps, refresh)
                }
                // Computed by another caller of this process.
                computed => return Ok(Begin::Served(self.warned(served_of(computed, false)))),
            };
            match decode(flags, &bytes) {
                Ok(value) => {
                    return Ok(Begin::Served(Served {
                        status,
                        value,
                        stamps: Some(stamps),
                        refresh,
                        kept,
                        bypassed: None,
                    }))
                }
                Err(Undecodable::Fatal(error)) => {
                    self.give_back(refresh);
                    return Err(SharedError::Decode(error));
                }
                Err(Undecodable::Unreadable) => {
                    self.give_back(refresh);
                    // Best effort: a store that fails here fails the next
                    // read too, which then bypasses it. An interrupted
                    // caller stops here, as on every other store call.
                    if let Err(StoreError::Interrupted) = self.delete(keys) {
                        return Err(SharedError::Store(StoreError::Interrupted));
                    }
                }
            }
        }
        // Unreadable every time: serve a live value rather than loop.
        Ok(Begin::Lead(self.live(handle, keys)))
    }

    /// [`SharedCache::peek`], decoded by `decode` with
    /// [`SharedCache::serve`]'s contract: an entry that does not decode is
    /// not served (`None`), and a fatal error reaches the caller. Unlike
    /// `serve`, a peek leaves the entry where it is: it only reads (the
    /// next computing read drops it). A store that fails is skipped as
    /// `serve` skips it (nothing there, warned about) unless failures are
    /// reported ([`SharedCache::bypasses_failures`]).
    pub fn peek_decoded<T>(
        &self,
        keys: &KeySet,
        decode: impl FnOnce(u8, &[u8]) -> Result<T, Undecodable<E>>,
    ) -> Result<Option<(T, Stamps, Freshness)>, SharedError<E>> {
        let peeked = match self.peek(keys) {
            Ok(peeked) => peeked,
            Err(error) if self.bypasses_failures() && error != StoreError::Interrupted => {
                self.warn(&error);
                None
            }
            Err(error) => return Err(SharedError::Store(error)),
        };
        let Some((flags, bytes, stamps, freshness)) = peeked else {
            return Ok(None);
        };
        match decode(flags, &bytes) {
            Ok(value) => Ok(Some((value, stamps, freshness))),
            Err(Undecodable::Unreadable) => Ok(None),
            Err(Undecodable::Fatal(error)) => Err(SharedError::Decode(error)),
        }
    }

    /// Gives back a refresh claim read with an entry that did not decode:
    /// no refresh follows from it, and holding it would keep every process
    /// from refreshing the entry until the lock expires.
    fn give_back(&self, refresh: Option<RefreshClaim>) {
        if let Some(claim) = refresh {
            let _ = self.finish_claim(&claim, Refreshed::Nothing);
        }
    }
}
