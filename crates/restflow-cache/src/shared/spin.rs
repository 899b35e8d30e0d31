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
//! - after a busy-wait ends without the answer, the next lookups sleep
//!   straight away: 1 of them after one miss, twice as many after each
//!   further miss in a row, at most [`MAX_PAUSE`]. An answer that arrives
//!   while busy-waiting ends the streak. So a store that answers slower
//!   than the budget (another host, a loaded server) costs one wasted budget
//!   per [`MAX_PAUSE`] + 1 lookups, while a nearby one that misses now and
//!   then (a noisy machine) loses only a few busy-waits to it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The most lookups that sleep straight away after busy-waits that missed.
pub const MAX_PAUSE: u32 = 64;

/// Decides whether a lookup may busy-wait for its answer.
#[derive(Debug)]
pub struct SpinPolicy {
    budget: Duration,
    spinning: AtomicBool,
    /// Lookups left in the current pause.
    skip: AtomicU32,
    /// The length of the last pause; 0 once a busy-wait got its answer.
    streak: AtomicU32,
}

/// The right to busy-wait until a deadline; given back when dropped.
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
            streak: AtomicU32::new(0),
        }
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

    /// Lookups that will still sleep straight away (what the tests check).
    #[cfg(test)]
    pub fn paused_for(&self) -> u32 {
        self.skip.load(Ordering::Relaxed)
    }
}

impl Spin<'_> {
    /// Whether the busy-wait may go on at `now`. A `false` records the
    /// miss and pauses busy-waiting (call it once: the spin is over).
    pub fn may_continue(&self, now: Instant) -> bool {
        if now < self.until {
            return true;
        }
        let policy = self.policy;
        let pause = (policy.streak.load(Ordering::Relaxed) * 2).clamp(1, MAX_PAUSE);
        policy.streak.store(pause, Ordering::Relaxed);
        policy.skip.store(pause, Ordering::Relaxed);
        false
    }

    /// Records that the answer arrived while busy-waiting: the streak of
    /// misses, if any, is over.
    pub fn answered(&self) {
        self.policy.streak.store(0, Ordering::Relaxed);
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

    fn miss(policy: &SpinPolicy) {
        let sent = Instant::now();
        let spin = policy.begin(sent).expect("a spin");
        assert!(!spin.may_continue(sent + Duration::from_millis(1)));
    }

    fn sleeps_before_next_spin(policy: &SpinPolicy) -> u32 {
        let mut slept = 0;
        while policy.begin(Instant::now()).is_none() {
            slept += 1;
            assert!(slept <= MAX_PAUSE, "the pause never ends");
        }
        slept
    }

    #[test]
    fn misses_in_a_row_double_the_pause_up_to_the_cap() {
        let policy = SpinPolicy::new(Duration::from_micros(50));
        let mut pauses = Vec::new();
        for _ in 0..9 {
            miss(&policy);
            pauses.push(sleeps_before_next_spin(&policy));
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn an_answer_while_spinning_ends_the_streak() {
        let policy = SpinPolicy::new(Duration::from_micros(50));
        for _ in 0..4 {
            miss(&policy);
            sleeps_before_next_spin(&policy);
        }
        let sent = Instant::now();
        let spin = policy.begin(sent).unwrap();
        assert!(spin.may_continue(sent));
        spin.answered();
        drop(spin);
        miss(&policy);
        assert_eq!(sleeps_before_next_spin(&policy), 1);
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
