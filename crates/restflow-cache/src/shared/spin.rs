//! When a thread waiting for a store's answer may busy-wait instead of
//! sleeping.
//!
//! On a virtual machine, a thread that sleeps in `recv` until the answer
//! arrives pays for its idle vCPU to halt and be woken again. On the 2-core
//! VM restflow is benchmarked on that costs ~40 µs, twice the loopback round
//! trip itself (~22 µs). Polling the socket for a short, bounded time avoids
//! it when the store answers quickly, and wastes CPU when it does not; a
//! [`SpinPolicy`] decides, per lookup, whether polling is worth it.
//!
//! Invariants:
//! - at most one thread per policy busy-waits at a time (the others sleep),
//!   so a busy process spends at most one core on it;
//! - a busy-wait lasts at most the budget;
//! - after a busy-wait ends without the answer, the next
//!   [`SKIP_AFTER_MISS`] lookups sleep straight away: a store that answers
//!   slower than the budget (another host, a loaded server) costs one wasted
//!   budget per [`SKIP_AFTER_MISS`] + 1 lookups, not one per lookup.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Lookups that sleep straight away after a busy-wait that missed.
pub const SKIP_AFTER_MISS: u32 = 64;

/// Decides whether a lookup may busy-wait for its answer.
#[derive(Debug)]
pub struct SpinPolicy {
    budget: Duration,
    spinning: AtomicBool,
    skip: AtomicU32,
}

/// The right to busy-wait until [`Spin::until`]; given back when dropped.
#[derive(Debug)]
pub struct Spin<'a> {
    policy: &'a SpinPolicy,
    until: Instant,
}

impl SpinPolicy {
    /// A policy that lets one thread busy-wait up to `budget` per lookup
    /// (`Duration::ZERO`: never).
    pub fn new(budget: Duration) -> Self {
        SpinPolicy {
            budget,
            spinning: AtomicBool::new(false),
            skip: AtomicU32::new(0),
        }
    }

    /// The longest busy-wait per lookup.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The right to busy-wait for an answer sent at `sent`, or `None` when
    /// this lookup should sleep: busy-waiting is off, another thread is
    /// busy-waiting, or a recent busy-wait missed.
    pub fn begin(&self, sent: Instant) -> Option<Spin<'_>> {
        if self.budget.is_zero() {
            return None;
        }
        if self.skip.load(Ordering::Relaxed) > 0 {
            // A lost decrement race only shortens the pause by one lookup.
            let _ = self
                .skip
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            return None;
        }
        if self.spinning.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Spin {
            policy: self,
            until: sent + self.budget,
        })
    }

    /// Lookups that will still sleep straight away.
    pub fn paused_for(&self) -> u32 {
        self.skip.load(Ordering::Relaxed)
    }
}

impl Spin<'_> {
    /// Whether the busy-wait may go on at `now`. The first `false` records
    /// the miss: the policy pauses busy-waiting for [`SKIP_AFTER_MISS`]
    /// lookups.
    pub fn may_continue(&self, now: Instant) -> bool {
        if now < self.until {
            return true;
        }
        self.policy.skip.store(SKIP_AFTER_MISS, Ordering::Relaxed);
        false
    }
}

impl Drop for Spin<'_> {
    fn drop(&mut self) {
        self.policy.spinning.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_budget_never_spins() {
        let policy = SpinPolicy::new(Duration::ZERO);
        assert!(policy.begin(Instant::now()).is_none());
    }

    #[test]
    fn one_thread_spins_at_a_time() {
        let policy = SpinPolicy::new(Duration::from_micros(50));
        let now = Instant::now();
        let first = policy.begin(now).expect("the first lookup spins");
        assert!(policy.begin(now).is_none(), "a second spinner was let in");
        drop(first);
        assert!(policy.begin(now).is_some(), "the spin was not given back");
    }

    #[test]
    fn spin_ends_at_the_budget() {
        let policy = SpinPolicy::new(Duration::from_micros(50));
        let sent = Instant::now();
        let spin = policy.begin(sent).unwrap();
        assert!(spin.may_continue(sent + Duration::from_micros(49)));
        assert_eq!(policy.paused_for(), 0);
        assert!(!spin.may_continue(sent + Duration::from_micros(50)));
    }

    #[test]
    fn a_miss_pauses_spinning_for_the_next_lookups() {
        let policy = SpinPolicy::new(Duration::from_micros(50));
        let sent = Instant::now();
        {
            let spin = policy.begin(sent).unwrap();
            assert!(!spin.may_continue(sent + Duration::from_millis(1)));
        }
        for n in 0..SKIP_AFTER_MISS {
            assert!(
                policy.begin(sent).is_none(),
                "lookup {n} spun during the pause"
            );
        }
        assert!(policy.begin(sent).is_some(), "spinning did not resume");
    }

    #[test]
    fn an_answer_within_the_budget_keeps_spinning_on() {
        let policy = SpinPolicy::new(Duration::from_micros(50));
        let sent = Instant::now();
        for _ in 0..3 {
            let spin = policy.begin(sent).unwrap();
            assert!(spin.may_continue(sent + Duration::from_micros(10)));
        }
        assert_eq!(policy.paused_for(), 0);
    }
}
