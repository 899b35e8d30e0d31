//! Whether, and how long, a computed value is kept: a function's fixed
//! lifetime, or what its cache policy decided for one value.

use crate::early::Beta;
use crate::entry::Lifetime;
use crate::settings::seconds;
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

/// The lifetimes a function's decorator chose, each `None` when it chose
/// none (the settings' value then applies, read per call since settings
/// can change): its ttl, stale window, stale-if-error window and early
/// refresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetimes {
    /// The same for every value; `None` never expires.
    pub ttl: Option<Span>,
    /// `None`: the `STALE_WHILE_REVALIDATE` setting.
    pub stale: Option<Span>,
    /// `None`: the `STALE_IF_ERROR` setting.
    pub stale_if_error: Option<Span>,
    /// Early refresh (XFetch) with this beta; `None` waits for the ttl.
    pub early: Option<Beta>,
}

impl Lifetimes {
    /// The decorator's numbers checked: seconds >= 0 and a finite beta
    /// above 0, or the message saying which argument to change.
    pub fn from_secs(
        ttl: Option<f64>,
        stale: Option<f64>,
        stale_if_error: Option<f64>,
        beta: Option<f64>,
    ) -> Result<Lifetimes, String> {
        let span = |what: &str, secs: Option<f64>| secs.map(|s| seconds(what, s)).transpose();
        Ok(Lifetimes {
            ttl: span("ttl", ttl)?,
            stale: span("stale_while_revalidate", stale)?,
            stale_if_error: span("stale_if_error", stale_if_error)?,
            early: beta.map(Beta::new).transpose()?,
        })
    }

    /// The lifetime a policy's answer (`None`: no policy, the fixed ttl;
    /// else `(store, ttl_seconds_or_none)`) gives a value, `None` when it
    /// is not stored; `default_stale` is the stale window of a function
    /// that chose none.
    pub fn decide(
        &self,
        answer: Option<(bool, Option<f64>)>,
        default_stale: Span,
    ) -> Result<Option<Lifetime>, BadTtl> {
        let rule = LifetimeRule {
            ttl: self.ttl,
            stale: self.stale.unwrap_or(default_stale),
            early: self.early,
        };
        rule.decide(Decision::of_answer(answer))
    }

    /// How long past its stale window an entry is kept for stale-if-error;
    /// `default` for a function that chose no window.
    pub fn stale_if_error_window(&self, default: Span) -> Span {
        self.stale_if_error.unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_functions_lifetimes_fall_back_on_the_settings_and_refuse_bad_numbers() {
        let own = Lifetimes::from_secs(Some(60.0), Some(5.0), Some(30.0), Some(1.0)).unwrap();
        let early = Lifetime::new(Span::from_secs(60), Span::from_secs(5))
            .refreshing_early(Beta::new(1.0).unwrap());
        assert_eq!(own.decide(None, Span::from_secs(99)), Ok(Some(early)));
        assert_eq!(own.decide(Some((false, None)), Span::ZERO), Ok(None));
        assert_eq!(own.stale_if_error_window(Span::ZERO), Span::from_secs(30));
        let chose_nothing = Lifetimes::from_secs(Some(60.0), None, None, None).unwrap();
        assert_eq!(
            chose_nothing.decide(None, Span::from_secs(7)),
            Ok(Some(Lifetime::new(Span::from_secs(60), Span::from_secs(7))))
        );
        assert_eq!(
            chose_nothing.stale_if_error_window(Span::from_secs(3)),
            Span::from_secs(3)
        );
        assert_eq!(
            chose_nothing.decide(Some((true, Some(-2.0))), Span::ZERO),
            Err(BadTtl(-2.0))
        );
        assert_eq!(
            Lifetimes::from_secs(None, Some(-1.0), None, None),
            Err("stale_while_revalidate must be a number of seconds >= 0, got -1".to_owned())
        );
        assert!(Lifetimes::from_secs(None, None, None, Some(0.0))
            .unwrap_err()
            .starts_with("beta must be a finite number greater than 0"));
        assert!(Lifetimes::from_secs(Some(f64::NAN), None, None, None)
            .unwrap_err()
            .starts_with("ttl must be"));
    }

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
