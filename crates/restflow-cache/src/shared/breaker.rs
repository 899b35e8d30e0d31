//! A circuit breaker: while a store is down, calls skip it instead of each
//! paying its connect timeout; one probe now and then finds out when it is
//! back.
//!
//! Its scope is the connection, not the operation: it counts only failures
//! that say the store cannot be reached in time (refused, reset, timed out;
//! see [`StoreError::is_connection_failure`]), and those open it for every
//! function on the store. An error the store *answered* (a write refused
//! under `maxmemory` with `noeviction`, a corrupt counter of one function)
//! fails that operation only and proves the store is reachable: it closes
//! the breaker like any answer, so every read that can succeed goes on
//! succeeding.
//!
//! [`StoreError::is_connection_failure`]: super::StoreError::is_connection_failure

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Closed (calls go through) until `threshold` failures in a row; then open
/// for `cooldown`, after which one call per cooldown may probe.
///
/// The probe is claimed by moving the end of the open period forward, not
/// by a flag: a prober that never reports back (it hung, or its process
/// forked without it) only delays the next probe by one cooldown.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Nanoseconds after `origin` until which the breaker is open; 0 when
    /// closed.
    open_until: AtomicI64,
    origin: Instant,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: AtomicU32::new(0),
            open_until: AtomicI64::new(0),
            origin: Instant::now(),
        }
    }

    fn offset(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.origin).as_nanos() as i64
    }

    /// Whether a call may use the store now. While open, `false`; after the
    /// cooldown, `true` for one probing caller per cooldown.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// [`Breaker::allow`] at a given instant (tests move time by hand).
    pub fn allow_at(&self, at: Instant) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.offset(at);
        if now < until {
            return false;
        }
        // The first caller past the cooldown probes; the rest see it open.
        let next = (now + self.cooldown.as_nanos() as i64).max(1);
        self.open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The store answered: close the breaker.
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
    }

    /// The store could not be reached: count it, and open the breaker at
    /// the threshold (or again, after a failed probe). Returns whether
    /// this failure opened a closed breaker (a trip, for the statistics).
    pub fn failed(&self) -> bool {
        self.failed_at(Instant::now())
    }

    /// [`Breaker::failed`] at a given instant.
    pub fn failed_at(&self, at: Instant) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_open = self.open_until.load(Ordering::Acquire) != 0;
        if failures >= self.threshold || was_open {
            let until = self.offset(at) + self.cooldown.as_nanos() as i64;
            self.open_until.store(until.max(1), Ordering::Release);
            return !was_open;
        }
        false
    }

    /// Whether the breaker is open now.
    pub fn is_open(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && self.offset(Instant::now()) < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        let start = breaker.origin;
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(breaker.allow_at(at(0)));
        assert!(!breaker.failed_at(at(0)), "below the threshold: no trip");
        assert!(
            breaker.allow_at(at(1)),
            "one failure is below the threshold"
        );
        assert!(
            breaker.failed_at(at(1)),
            "the failure that opens it trips it"
        );
        assert!(!breaker.allow_at(at(2)));
        assert!(!breaker.allow_at(at(1000)), "still cooling down");
        assert!(breaker.allow_at(at(1002)), "one probe after the cooldown");
        assert!(!breaker.allow_at(at(1003)), "only one probe at a time");
        assert!(
            !breaker.failed_at(at(1003)),
            "a failed probe is not a new trip"
        );
        assert!(!breaker.allow_at(at(1500)), "a failed probe opens it again");
        assert!(breaker.allow_at(at(2004)));
        assert!(
            breaker.allow_at(at(3005)),
            "a probe that never reports back delays the next by one cooldown"
        );
        breaker.succeeded();
        assert!(
            breaker.allow_at(at(2005)) && breaker.allow_at(at(2005)),
            "closed again"
        );
    }
}
