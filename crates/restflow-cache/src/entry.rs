//! A stored value and the three instants that decide how it is served.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::early::{Beta, Dice, Early};
use crate::timestamp::{Span, Timestamp};

/// How long a new entry is fresh, how long after that it may still be
/// served stale while one refresh runs, and whether reads refresh it early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Time to live; `None` never expires.
    pub ttl: Option<Span>,
    /// The stale-while-revalidate window that follows the ttl.
    pub stale: Span,
    /// Refresh early, with this beta, while fresh (see [`crate::early`]);
    /// `None` waits for the ttl.
    pub early: Option<Beta>,
}

impl Lifetime {
    /// An entry that never expires.
    pub const FOREVER: Lifetime = Lifetime {
        ttl: None,
        stale: Span::ZERO,
        early: None,
    };

    /// Fresh for `ttl`, then stale for `stale`.
    pub const fn new(ttl: Span, stale: Span) -> Self {
        Lifetime {
            ttl: Some(ttl),
            stale,
            early: None,
        }
    }

    /// This lifetime, with reads refreshing the entry early (XFetch).
    pub const fn refreshing_early(self, beta: Beta) -> Self {
        Lifetime {
            early: Some(beta),
            ..self
        }
    }
}

/// What an entry is at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// `now < fresh_until`: serve as a hit.
    Fresh,
    /// `fresh_until <= now < stale_until`: serve, and refresh in the background.
    Stale,
    /// `now >= stale_until`: unusable.
    Expired,
}

/// The instants of an entry, fixed when it is stored.
///
/// Invariant: `cached_at <= fresh_until <= stale_until` whenever they are set,
/// and `fresh_until` and `stale_until` are both `None` or both `Some`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    /// When the value was stored.
    pub cached_at: Timestamp,
    /// When it stops being fresh; `None` for an entry that never expires.
    pub fresh_until: Option<Timestamp>,
    /// When it stops being servable at all; `None` for an entry that never expires.
    pub stale_until: Option<Timestamp>,
    /// For an entry that refreshes early: its compute time and beta.
    /// `None` for one that never expires.
    pub early: Option<Early>,
}

impl Stamps {
    /// `cached_at` and, for an entry that expires, `fresh_until`, as
    /// ISO-8601 texts (what metadata reports as `cached_at`/`reset_at`).
    pub fn iso(&self) -> (String, Option<String>) {
        (
            self.cached_at.to_isoformat(),
            self.fresh_until.map(Timestamp::to_isoformat),
        )
    }

    /// The instants of a value stored at `cached_at` with `lifetime`.
    pub fn new(cached_at: Timestamp, lifetime: Lifetime) -> Self {
        match lifetime.ttl {
            None => Stamps {
                cached_at,
                fresh_until: None,
                stale_until: None,
                early: None,
            },
            Some(ttl) => {
                let fresh_until = cached_at.saturating_add(ttl);
                Stamps {
                    cached_at,
                    fresh_until: Some(fresh_until),
                    stale_until: Some(fresh_until.saturating_add(lifetime.stale)),
                    early: lifetime.early.map(|beta| Early {
                        delta: Span::ZERO,
                        beta,
                    }),
                }
            }
        }
    }

    /// These instants, for a value that took `delta` to compute (what an
    /// early refresh is weighted by).
    pub fn measured(self, delta: Span) -> Self {
        Stamps {
            early: self.early.map(|early| Early { delta, ..early }),
            ..self
        }
    }

    /// Whether a fresh read at `now` refreshes the entry early, drawing
    /// from `dice` (see [`crate::early`]). Always `false` for an entry
    /// stored without early refresh.
    #[inline]
    pub fn refreshes_early(&self, now: Timestamp, dice: &Dice) -> bool {
        match (self.early, self.fresh_until) {
            (Some(early), Some(expiry)) => early.due(now, expiry, dice),
            _ => false,
        }
    }

    /// When the entry stops being servable even as a fallback: `keep` past
    /// its stale window (stale-if-error). `None` for an entry that never
    /// expires.
    #[inline]
    pub fn kept_until(&self, keep: Span) -> Option<Timestamp> {
        self.stale_until.map(|until| until.saturating_add(keep))
    }

    /// What the entry is at `now`.
    ///
    /// An entry stored with a ttl of zero (`fresh_until == cached_at`) is
    /// never fresh, whatever `now` says: a clock reading behind the stamp
    /// (a coarse clock that fell behind on a loaded VM, a wall clock stepped
    /// back) must not turn "never fresh" into a hit. Likewise an empty stale
    /// window (`stale_until == fresh_until`) is never stale.
    #[inline]
    pub fn freshness(&self, now: Timestamp) -> Freshness {
        match (self.fresh_until, self.stale_until) {
            (Some(fresh), _) if now < fresh && fresh > self.cached_at => Freshness::Fresh,
            (Some(fresh), Some(stale)) if now < stale && stale > fresh => Freshness::Stale,
            (Some(_), _) => Freshness::Expired,
            (None, _) => Freshness::Fresh,
        }
    }
}

/// A value with its instants and its refresh claim.
///
/// Entries are immutable once stored except for the claim, which makes sure
/// at most one background refresh runs per stored entry: a refresh replaces
/// the entry with a new one, whose claim starts free.
#[derive(Debug)]
pub struct Entry<V> {
    value: V,
    stamps: Stamps,
    refresh_claimed: AtomicBool,
}

impl<V> Entry<V> {
    /// A new entry.
    pub fn new(value: V, stamps: Stamps) -> Self {
        Entry {
            value,
            stamps,
            refresh_claimed: AtomicBool::new(false),
        }
    }

    /// The stored value.
    #[inline]
    pub fn value(&self) -> &V {
        &self.value
    }

    /// The entry's instants.
    #[inline]
    pub fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    /// Takes the right to refresh this entry. Returns `true` for exactly one
    /// caller until [`Entry::release_refresh`] is called.
    #[inline]
    pub fn claim_refresh(&self) -> bool {
        !self.refresh_claimed.swap(true, Ordering::AcqRel)
    }

    /// Gives the refresh claim back, after a refresh that failed or could
    /// not be scheduled, so a later stale read can try again.
    pub fn release_refresh(&self) {
        self.refresh_claimed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_micros(secs * 1_000_000)
    }

    #[test]
    fn stamps_in_metadata_are_iso_texts_and_status_follows_freshness() {
        let stamps = Stamps::new(at(0), Lifetime::new(Span::from_secs(60), Span::ZERO));
        assert_eq!(
            stamps.iso(),
            (
                "1970-01-01T00:00:00+00:00".to_owned(),
                Some("1970-01-01T00:01:00+00:00".to_owned())
            )
        );
        assert_eq!(Stamps::new(at(0), Lifetime::FOREVER).iso().1, None);
        use crate::Status;
        assert_eq!(Status::of_peek(Freshness::Fresh), Status::Hit);
        assert_eq!(Status::of_peek(Freshness::Stale), Status::Stale);
        for (n, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(status.index(), n);
        }
    }

    #[test]
    fn a_zero_ttl_is_never_fresh_even_on_a_clock_behind_its_stamp() {
        let at = Timestamp::from_micros(1_000_000);
        let stamps = Stamps::new(at, Lifetime::new(Span::ZERO, Span::from_secs(10)));
        let behind = Timestamp::from_micros(999_999);
        assert_eq!(stamps.freshness(behind), Freshness::Stale);
        assert_eq!(stamps.freshness(at), Freshness::Stale);
        let no_window = Stamps::new(at, Lifetime::new(Span::ZERO, Span::ZERO));
        assert_eq!(no_window.freshness(behind), Freshness::Expired);
    }

    #[test]
    fn freshness_follows_the_lifecycle() {
        let stamps = Stamps::new(
            at(100),
            Lifetime::new(Span::from_secs(10), Span::from_secs(5)),
        );
        assert_eq!(stamps.freshness(at(100)), Freshness::Fresh);
        assert_eq!(
            stamps.freshness(Timestamp::from_micros(at(110).as_micros() - 1)),
            Freshness::Fresh
        );
        assert_eq!(stamps.freshness(at(110)), Freshness::Stale);
        assert_eq!(
            stamps.freshness(Timestamp::from_micros(at(115).as_micros() - 1)),
            Freshness::Stale
        );
        assert_eq!(stamps.freshness(at(115)), Freshness::Expired);
    }

    #[test]
    fn no_stale_window_goes_straight_to_expired() {
        let stamps = Stamps::new(at(0), Lifetime::new(Span::from_secs(1), Span::ZERO));
        assert_eq!(stamps.freshness(at(1)), Freshness::Expired);
    }

    #[test]
    fn forever_never_expires() {
        let stamps = Stamps::new(at(0), Lifetime::FOREVER);
        assert_eq!(stamps.fresh_until, None);
        assert_eq!(
            stamps.freshness(Timestamp::from_micros(i64::MAX)),
            Freshness::Fresh
        );
    }

    #[test]
    fn refresh_claim_is_exclusive_until_released() {
        let entry = Entry::new((), Stamps::new(at(0), Lifetime::FOREVER));
        assert!(entry.claim_refresh());
        assert!(!entry.claim_refresh());
        entry.release_refresh();
        assert!(entry.claim_refresh());
    }
}
