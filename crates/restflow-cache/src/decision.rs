//! Whether, and how long, a computed value is kept: a function's fixed
//! lifetime, or what its cache policy decided for one value.

use crate::early::Beta;
use crate::entry::Lifetime;
use crate::timestamp::Span;

/// How long a function's values live when nothing else is decided: a
/// fixed ttl, the stale window after it, and early refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimeRule {
    /// The function's ttl; `None` never expires.
    pub ttl: Option<Span>,
    /// The stale-while-revalidate window after a ttl.
    pub stale: Span,
    /// Early refresh (XFetch) with this beta; `None` waits for the ttl.
    pub early: Option<Beta>,
}

/// What a cache policy (a predicate, a callable ttl) said of one value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Nothing: the function's fixed lifetime.
    Default,
    /// Not stored.
    Skip,
    /// Stored, never expiring.
    Forever,
    /// Stored for this many seconds (then stale as the rule says).
    Seconds(f64),
}

impl Decision {
    /// A policy's answer as `(store, ttl_seconds_or_none)`.
    pub fn of(store: bool, ttl_seconds: Option<f64>) -> Self {
        match (store, ttl_seconds) {
            (false, _) => Decision::Skip,
            (true, None) => Decision::Forever,
            (true, Some(secs)) => Decision::Seconds(secs),
        }
    }

    /// A policy's answer when there may be none: `None` is the function's
    /// fixed lifetime ([`Decision::Default`]).
    pub fn of_answer(answer: Option<(bool, Option<f64>)>) -> Self {
        answer.map_or(Decision::Default, |(store, ttl)| Decision::of(store, ttl))
    }
}

/// A ttl a policy computed that is no number of seconds >= 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BadTtl(pub f64);

impl BadTtl {
    /// The error message for `function`'s policy having returned it.
    pub fn message(&self, function: &str) -> String {
        format!(
            "the ttl of {function}() came out as {}: return a number of seconds >= 0, \
             a timedelta, or None",
            self.0
        )
    }
}

impl LifetimeRule {
    /// The lifetime of a value kept for `ttl`: stale and refreshed early
    /// as the rule says; without a ttl, forever (no stale window, nothing
    /// to refresh early).
    pub fn with_ttl(&self, ttl: Option<Span>) -> Lifetime {
        match (ttl, self.early) {
            (Some(ttl), Some(beta)) => Lifetime::new(ttl, self.stale).refreshing_early(beta),
            (Some(ttl), None) => Lifetime::new(ttl, self.stale),
            (None, _) => Lifetime::FOREVER,
        }
    }

    /// The lifetime `decision` gives a value; `None` when it is not stored.
    pub fn decide(&self, decision: Decision) -> Result<Option<Lifetime>, BadTtl> {
        Ok(match decision {
            Decision::Default => Some(self.with_ttl(self.ttl)),
            Decision::Skip => None,
            Decision::Forever => Some(Lifetime::FOREVER),
            Decision::Seconds(secs) => {
                Some(self.with_ttl(Some(Span::from_secs_f64(secs).ok_or(BadTtl(secs))?)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_keeps_the_rules_stale_window_and_early_refresh() {
        let beta = Beta::new(1.0).unwrap();
        let rule = LifetimeRule {
            ttl: Some(Span::from_secs(60)),
            stale: Span::from_secs(5),
            early: Some(beta),
        };
        let early =
            |ttl| Lifetime::new(Span::from_secs(ttl), Span::from_secs(5)).refreshing_early(beta);
        assert_eq!(rule.decide(Decision::Default), Ok(Some(early(60))));
        assert_eq!(
            rule.decide(Decision::of(true, Some(2.0))),
            Ok(Some(early(2)))
        );
        assert_eq!(rule.decide(Decision::of(false, Some(2.0))), Ok(None));
        assert_eq!(
            rule.decide(Decision::of(true, None)),
            Ok(Some(Lifetime::FOREVER))
        );
        assert_eq!(rule.decide(Decision::Seconds(-1.0)), Err(BadTtl(-1.0)));
        assert!(rule.decide(Decision::Seconds(f64::NAN)).is_err());
        assert_eq!(Decision::of_answer(None), Decision::Default);
        assert_eq!(Decision::of_answer(Some((false, None))), Decision::Skip);
        assert_eq!(
            BadTtl(-1.0).message("app.f"),
            "the ttl of app.f() came out as -1: return a number of seconds >= 0, \
             a timedelta, or None"
        );
        let forever = LifetimeRule { ttl: None, ..rule };
        assert_eq!(
            forever.decide(Decision::Default),
            Ok(Some(Lifetime::FOREVER))
        );
        let plain = LifetimeRule {
            early: None,
            ..rule
        };
        assert_eq!(
            plain.decide(Decision::Default),
            Ok(Some(Lifetime::new(Span::from_secs(60), Span::from_secs(5))))
        );
    }
}
