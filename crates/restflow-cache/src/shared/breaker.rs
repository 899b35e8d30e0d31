//! A circuit breaker: while a store is down, calls skip it instead of each
//! paying its connect timeout; one probe now and then finds out when it is
//! back.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Closed (calls go through) until `threshold` failures in a row; then open
/// for `cooldown`, after which one call at a time may probe.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Nanoseconds after `origin` until which the breaker is open.
    open_until: AtomicI64,
    probing: AtomicBool,
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
            probing: AtomicBool::new(false),
            origin: Instant::now(),
        }
    }

    fn offset(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.origin).as_nanos() as i64
    }

    /// Whether a call may use the store now. While open, `false`; after the
    /// cooldown, `true` for one probing caller at a time.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// [`Breaker::allow`] at a given instant (tests move time by hand).
    pub fn allow_at(&self, at: Instant) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if self.offset(at) < until {
            return false;
        }
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The store answered: close the breaker.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// The store failed: count it, and open the breaker at the threshold
    /// (or again, after a failed probe).
    pub fn failed(&self) {
        self.failed_at(Instant::now())
    }

    /// [`Breaker::failed`] at a given instant.
    pub fn failed_at(&self, at: Instant) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.threshold || self.probing.load(Ordering::Acquire) {
            let until = self.offset(at) + self.cooldown.as_nanos() as i64;
            self.open_until.store(until.max(1), Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
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
        breaker.failed_at(at(0));
        assert!(
            breaker.allow_at(at(1)),
            "one failure is below the threshold"
        );
        breaker.failed_at(at(1));
        assert!(!breaker.allow_at(at(2)));
        assert!(!breaker.allow_at(at(1000)), "still cooling down");
        assert!(breaker.allow_at(at(1002)), "one probe after the cooldown");
        assert!(!breaker.allow_at(at(1003)), "only one probe at a time");
        breaker.failed_at(at(1003));
        assert!(!breaker.allow_at(at(1500)), "a failed probe opens it again");
        assert!(breaker.allow_at(at(2004)));
        breaker.succeeded();
        assert!(
            breaker.allow_at(at(2005)) && breaker.allow_at(at(2005)),
            "closed again"
        );
    }
}
