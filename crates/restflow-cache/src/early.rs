//! Probabilistic early refresh ("XFetch", Vattani, Chierichetti and
//! Lowenstein, VLDB 2015): a read of a fresh entry refreshes it in the
//! background when
//!
//! ```text
//! now − delta · beta · ln(u) ≥ expiry,   u uniform in (0, 1]
//! ```
//!
//! where `delta` is how long the value took to compute. The closer expiry
//! and the slower the computation, the likelier a read is to refresh, so a
//! hot key is recomputed before it expires and its readers never meet a
//! MISS; a cold key is left to expire.
//!
//! The draw comes from a [`Dice`], which tests seed so outcomes are exact.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::timestamp::{Span, Timestamp};

/// How strongly compute time pulls refreshes early: above 1 refreshes
/// earlier, below 1 later. Finite and positive by construction.
#[derive(Clone, Copy, Debug)]
pub struct Beta(f64);

impl Beta {
    /// The paper's default, which it shows to be near optimal.
    pub const DEFAULT: Beta = Beta(1.0);

    /// `beta`, if it is finite and positive; else a message saying what to
    /// change.
    pub fn new(beta: f64) -> Result<Beta, String> {
        if beta.is_finite() && beta > 0.0 {
            Ok(Beta(beta))
        } else {
            Err(format!(
                "beta must be a finite number greater than 0 (1.0 is the usual choice); got {beta}"
            ))
        }
    }

    /// The number.
    pub const fn get(self) -> f64 {
        self.0
    }
}

// Finite and positive, so bit equality is value equality (no NaN, no -0.0).
impl PartialEq for Beta {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Beta {}

/// What an entry that refreshes early carries: the time its value took to
/// compute and the beta it was stored with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Early {
    /// How long the computation of the value took (the paper's delta).
    pub delta: Span,
    /// How strongly `delta` pulls the refresh early.
    pub beta: Beta,
}

/// The largest `−ln(u)` a [`Dice`] draw can give (`u = 2⁻⁵³`): no read
/// further than `delta · beta ·` this from expiry can refresh, so such a
/// read draws nothing.
const MAX_REACH: f64 = 53.0 * std::f64::consts::LN_2;

impl Early {
    /// Whether a read at `now` of an entry that stops being fresh at
    /// `expiry` refreshes it, drawing from `dice` only when it could.
    #[inline]
    pub fn due(&self, now: Timestamp, expiry: Timestamp, dice: &Dice) -> bool {
        let gap = expiry.as_micros().saturating_sub(now.as_micros()) as f64;
        let weight = self.delta.as_micros() as f64 * self.beta.get();
        if gap > weight * MAX_REACH {
            return false;
        }
        weight * -dice.draw().ln() >= gap
    }
}

/// A lock-free, seedable source of uniform draws in `(0, 1]`.
///
/// Written here rather than taken from a crate because it must be shared
/// by every thread without a lock (one engine serves them all, and a lock
/// held by a thread that a fork leaves behind would stay held in the
/// child), and be re-seeded in place by tests. SplitMix64 (Steele, Lea and
/// Flood, 2014) is exactly a counter advanced atomically and a mixing
/// function, so it is both; its quality is ample for this use.
#[derive(Debug)]
pub struct Dice {
    state: AtomicU64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Dice {
    /// A source whose draws follow from `seed`: the same seed, the same
    /// sequence.
    pub const fn seeded(seed: u64) -> Self {
        Dice {
            state: AtomicU64::new(seed),
        }
    }

    /// A source seeded from the operating system's entropy.
    pub fn from_entropy() -> Self {
        // No entropy (never seen on a supported system): any seed will do,
        // the draws only spread refreshes out.
        Dice::seeded(getrandom::u64().unwrap_or(GOLDEN_GAMMA))
    }

    /// Restarts the sequence from `seed`.
    pub fn reseed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }

    /// Restarts the sequence from the operating system's entropy.
    pub fn reseed_from_entropy(&self) {
        self.reseed(Dice::from_entropy().state.into_inner());
    }

    /// Restarts the sequence from `seed`, so a test's draws are exact, or
    /// (`None`) from the operating system's entropy again.
    pub fn restart(&self, seed: Option<u64>) {
        match seed {
            Some(seed) => self.reseed(seed),
            None => self.reseed_from_entropy(),
        }
    }

    /// The next draw, uniform in `(0, 1]` (never 0, whose logarithm is
    /// infinite).
    pub fn draw(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Dice {
    fn default() -> Self {
        Dice::from_entropy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_micros(secs * 1_000_000)
    }

    #[test]
    fn beta_must_be_finite_and_positive() {
        assert_eq!(Beta::new(2.5).unwrap().get(), 2.5);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let message = Beta::new(bad).unwrap_err();
            assert!(
                message.contains("finite number greater than 0"),
                "{message}"
            );
        }
    }

    #[test]
    fn draws_are_in_the_unit_interval_and_follow_the_seed() {
        let (a, b) = (Dice::seeded(7), Dice::seeded(7));
        for _ in 0..10_000 {
            let x = a.draw();
            assert!(x > 0.0 && x <= 1.0);
            assert_eq!(x.to_bits(), b.draw().to_bits());
        }
        a.reseed(7);
        b.restart(Some(7));
        assert_eq!(a.draw().to_bits(), b.draw().to_bits());
        // Unseeded again: off the seed's sequence (a 2^-64 chance aside).
        b.restart(None);
        let c = Dice::seeded(7);
        c.draw();
        assert_ne!(b.draw().to_bits(), c.draw().to_bits());
    }

    #[test]
    fn the_rule_is_the_papers() {
        let early = Early {
            delta: Span::from_secs(2),
            beta: Beta::DEFAULT,
        };
        let dice = Dice::seeded(1);
        let expiry = at(100);
        // Replay the draws to check each decision against the formula.
        let replay = Dice::seeded(1);
        for now in [at(40), at(90), at(95), at(98), at(99)] {
            let gap = (expiry.as_micros() - now.as_micros()) as f64;
            let decided = early.due(now, expiry, &dice);
            if gap > 2e6 * MAX_REACH {
                assert!(!decided);
                continue;
            }
            let u = replay.draw();
            assert_eq!(decided, 2e6 * -u.ln() >= gap, "at {now}");
        }
        // At or past expiry it is always due; with no compute time, never
        // before it.
        assert!(early.due(expiry, expiry, &dice));
        let instant = Early {
            delta: Span::ZERO,
            ..early
        };
        assert!(!instant.due(at(99), expiry, &dice));
    }
}
