//! The one clock every lifecycle decision reads.
//!
//! Tests (the engine's and its users') freeze and advance it instead of
//! sleeping, so expiry and stale windows are checked in microseconds of
//! real time.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::timestamp::{Span, Timestamp};

/// What `Clock::frozen_at` holds while the clock follows the system time.
const RUNNING: i64 = i64::MIN;

/// Wall-clock time that can be frozen and moved by hand.
///
/// Invariant: while frozen, `now()` returns exactly the stored instant, and
/// only `freeze`/`advance` change it. Frozen or not is one atomic word, so a
/// reader never sees a frozen flag without its instant.
#[derive(Debug)]
pub struct Clock {
    /// The frozen instant in microseconds, or [`RUNNING`].
    frozen_at: AtomicI64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// How close to a deadline the coarse clock stops being trusted.
///
/// The coarse clock is the time of the kernel's last tick, normally at most
/// a tick or two (4-8 ms) behind, but a loaded VM whose vCPU was descheduled
/// can leave it further behind: tens of milliseconds were seen on the
/// 2-core CI machine, where a 3 ms entry was then served fresh past its
/// deadline. One second is far past any lag short of a stalled machine and
/// still leaves the coarse clock every hit but those in an entry's last
/// second. Never less than two ticks.
pub const JUDGING_MARGIN: Span = Span::from_secs(1);

impl Clock {
    /// A clock that follows the system time.
    pub const fn system() -> Self {
        Clock {
            frozen_at: AtomicI64::new(RUNNING),
        }
    }

    /// A clock frozen at `at`.
    pub fn frozen(at: Timestamp) -> Self {
        let clock = Clock::system();
        clock.freeze(at);
        clock
    }

    #[inline]
    fn frozen_at(&self) -> Option<Timestamp> {
        match self.frozen_at.load(Ordering::Acquire) {
            RUNNING => None,
            micros => Some(Timestamp::from_micros(micros)),
        }
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Timestamp {
        self.frozen_at().unwrap_or_else(Timestamp::now_system)
    }

    /// The current instant at the coarse clock's resolution (see
    /// [`Timestamp::now_coarse`]); exact when frozen.
    #[inline]
    pub fn now_coarse(&self) -> Timestamp {
        self.frozen_at().unwrap_or_else(Timestamp::now_coarse)
    }

    /// The instant to judge an entry that stops being fresh at
    /// `fresh_until` by: the coarse clock while that is more than
    /// `JUDGING_MARGIN` away, so the entry is fresh on the precise clock
    /// too; the precise clock otherwise.
    ///
    /// So a deadline is never judged late: an entry with a ttl shorter than
    /// a tick is never served fresh past it, and a lookup agrees with a
    /// [`Clock::now`] reading at the boundary. Costs a hit one comparison,
    /// and a precise clock read (~20 ns) in the last second of an entry's
    /// life.
    #[inline]
    pub fn now_judging(&self, fresh_until: Option<Timestamp>) -> Timestamp {
        let coarse = self.now_coarse();
        match fresh_until {
            Some(deadline) if coarse.saturating_add(JUDGING_MARGIN) >= deadline => self.now(),
            _ => coarse,
        }
    }

    /// Stops the clock at `at`.
    pub fn freeze(&self, at: Timestamp) {
        self.frozen_at
            .store(at.as_micros().max(RUNNING + 1), Ordering::Release);
    }

    /// Stops the clock at `at` seconds since the epoch, or (`None`) at the
    /// current system time. NaN names no instant: refused with the message
    /// to show, and the clock left as it was (it froze at the epoch).
    pub fn freeze_at_secs(&self, at: Option<f64>) -> Result<(), String> {
        let at = match at {
            None => Timestamp::now_system(),
            Some(secs) if secs.is_nan() => {
                return Err(format!(
                    "freeze the clock at a number of seconds since the epoch, got {secs}"
                ))
            }
            Some(secs) => Timestamp::from_secs_f64(secs),
        };
        self.freeze(at);
        Ok(())
    }

    /// Moves a frozen clock forward by `by`; a running clock is first
    /// frozen at the current system time.
    pub fn advance(&self, by: Span) -> Timestamp {
        let mut current = self.frozen_at.load(Ordering::Acquire);
        loop {
            let base = match current {
                RUNNING => Timestamp::now_system().as_micros(),
                micros => micros,
            };
            let next = base.saturating_add(by.as_micros()).max(RUNNING + 1);
            match self.frozen_at.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Timestamp::from_micros(next),
                Err(seen) => current = seen,
            }
        }
    }

    /// [`Clock::advance`] by `seconds`, refused unless they are a number
    /// >= 0 (the clock only moves forward).
    pub fn advance_secs(&self, seconds: f64) -> Result<Timestamp, String> {
        let by = Span::from_secs_f64(seconds).ok_or_else(|| {
            format!("the clock only moves forward: advance by seconds >= 0, got {seconds}")
        })?;
        Ok(self.advance(by))
    }

    /// Lets the clock follow the system time again.
    pub fn unfreeze(&self) {
        self.frozen_at.store(RUNNING, Ordering::Release);
    }

    /// Whether the clock is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen_at.load(Ordering::Acquire) != RUNNING
    }

    /// Runs `work` and says how long it took on this clock (an early
    /// refresh's delta: see [`crate::early`]). A frozen clock that `work`
    /// advances measures exactly that advance, which is how tests give a
    /// computation a known duration.
    pub fn timed<T>(&self, work: impl FnOnce() -> T) -> (T, Span) {
        let started = self.now();
        let result = work();
        (result, self.since(started))
    }

    /// How long since `started` on this clock (0 if the clock went back).
    pub fn since(&self, started: Timestamp) -> Span {
        let took = self.now().as_micros().saturating_sub(started.as_micros());
        Span::from_micros(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_in_seconds_moves_only_forward() {
        let clock = Clock::frozen(Timestamp::from_secs_f64(10.5));
        assert_eq!(clock.now(), Timestamp::from_micros(10_500_000));
        assert_eq!(clock.advance_secs(0.25).unwrap().as_secs_f64(), 10.75);
        assert_eq!(
            clock.advance_secs(-1.0).unwrap_err(),
            "the clock only moves forward: advance by seconds >= 0, got -1"
        );
        assert_eq!(clock.now().as_secs_f64(), 10.75);
        clock.freeze_at_secs(Some(3.5)).unwrap();
        assert_eq!(clock.now(), Timestamp::from_micros(3_500_000));
        assert_eq!(
            clock.freeze_at_secs(Some(f64::NAN)).unwrap_err(),
            "freeze the clock at a number of seconds since the epoch, got NaN"
        );
        assert_eq!(
            clock.now(),
            Timestamp::from_micros(3_500_000),
            "left as it was"
        );
        let before = Timestamp::now_system();
        clock.freeze_at_secs(None).unwrap();
        assert!(clock.is_frozen());
        assert!(clock.now() >= before && clock.now() <= Timestamp::now_system());
    }

    #[test]
    fn frozen_clock_moves_only_when_advanced() {
        let clock = Clock::frozen(Timestamp::from_micros(1_000));
        assert_eq!(clock.now(), Timestamp::from_micros(1_000));
        assert_eq!(clock.now(), Timestamp::from_micros(1_000));
        assert_eq!(
            clock.advance(Span::from_secs(2)),
            Timestamp::from_micros(2_001_000)
        );
        assert_eq!(clock.now(), Timestamp::from_micros(2_001_000));
    }

    #[test]
    fn near_a_deadline_the_precise_clock_judges() {
        let clock = Clock::system();
        let lag = Timestamp::coarse_lag();
        // A deadline just passed on the precise clock is judged passed,
        // whatever the coarse clock says.
        for _ in 0..10_000 {
            let deadline = Timestamp::now_system();
            assert!(clock.now_judging(Some(deadline)) >= deadline);
        }
        // A deadline within the margin is judged on the precise clock:
        // never behind a precise reading taken before.
        for _ in 0..1_000 {
            let before = Timestamp::now_system();
            let near = before.saturating_add(Span::from_micros(500_000));
            assert!(clock.now_judging(Some(near)) >= before);
        }
        // A far deadline is judged on the coarse clock, which is within
        // the lag of the precise one.
        let far = Timestamp::now_system().saturating_add(Span::from_secs(60));
        let judged = clock.now_judging(Some(far));
        assert!(judged.saturating_add(lag) >= Timestamp::now_system());
        // Frozen, it is the frozen instant either way.
        let frozen = Clock::frozen(Timestamp::from_micros(5));
        assert_eq!(
            frozen.now_judging(Some(Timestamp::from_micros(5))),
            Timestamp::from_micros(5)
        );
        assert_eq!(frozen.now_judging(None), Timestamp::from_micros(5));
    }

    #[test]
    fn a_default_clock_runs() {
        let clock = Clock::default();
        assert!(!clock.is_frozen());
        assert!(clock.now() > Timestamp::from_micros(1_600_000_000_000_000));
    }

    #[test]
    fn unfrozen_clock_follows_system_time() {
        let clock = Clock::frozen(Timestamp::EPOCH);
        clock.unfreeze();
        assert!(clock.now() > Timestamp::from_micros(1_600_000_000_000_000));
        // Advancing a running clock freezes it first.
        let before = Timestamp::now_system();
        let after = clock.advance(Span::from_secs(60));
        assert!(clock.is_frozen());
        assert!(after >= before.saturating_add(Span::from_secs(60)));
    }
}
