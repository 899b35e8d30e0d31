//! The one clock every lifecycle decision reads.
//!
//! Tests (the engine's and its users') freeze and advance it instead of
//! sleeping, so expiry and stale windows are checked in microseconds of
//! real time.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::timestamp::{Span, Timestamp};

/// Wall-clock time that can be frozen and moved by hand.
///
/// Invariant: while `frozen` is set, `now()` returns exactly the stored
/// instant, and only `freeze`/`advance` change it.
#[derive(Debug, Default)]
pub struct Clock {
    frozen: AtomicBool,
    frozen_at: AtomicI64,
}

impl Clock {
    /// A clock that follows the system time.
    pub const fn system() -> Self {
        Clock {
            frozen: AtomicBool::new(false),
            frozen_at: AtomicI64::new(0),
        }
    }

    /// A clock frozen at `at`.
    pub fn frozen(at: Timestamp) -> Self {
        let clock = Clock::system();
        clock.freeze(at);
        clock
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Timestamp {
        if self.frozen.load(Ordering::Acquire) {
            Timestamp::from_micros(self.frozen_at.load(Ordering::Acquire))
        } else {
            Timestamp::now_system()
        }
    }

    /// The current instant at the coarse clock's resolution (see
    /// [`Timestamp::now_coarse`]); exact when frozen.
    #[inline]
    pub fn now_coarse(&self) -> Timestamp {
        if self.frozen.load(Ordering::Acquire) {
            Timestamp::from_micros(self.frozen_at.load(Ordering::Acquire))
        } else {
            Timestamp::now_coarse()
        }
    }

    /// Stops the clock at `at`.
    pub fn freeze(&self, at: Timestamp) {
        self.frozen_at.store(at.as_micros(), Ordering::Release);
        self.frozen.store(true, Ordering::Release);
    }

    /// Moves a frozen clock forward by `by`; a running clock is first
    /// frozen at the current system time.
    pub fn advance(&self, by: Span) -> Timestamp {
        if !self.is_frozen() {
            self.freeze(Timestamp::now_system());
        }
        let micros = self
            .frozen_at
            .fetch_add(by.as_micros(), Ordering::AcqRel)
            .saturating_add(by.as_micros());
        Timestamp::from_micros(micros)
    }

    /// Lets the clock follow the system time again.
    pub fn unfreeze(&self) {
        self.frozen.store(false, Ordering::Release);
    }

    /// Whether the clock is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
