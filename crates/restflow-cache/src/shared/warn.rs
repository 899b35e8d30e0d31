//! Warnings about a failing store, logged by the lifecycle itself.
//!
//! A store that fails never fails the call (unless the caller asked for
//! that): the value is computed live and served as BYPASS. The operator
//! still needs to hear about it, but not once per call: a store that is down
//! would flood the log. So the engine warns at most once a minute per store
//! ([`WarnLimit`], on the cache's clock), with a message saying whether one
//! operation was refused or the store is failing
//! ([`super::settings::warning`]), through the embedder's `log` (the Python
//! bindings hand it to the `restflow` logger).
//!
//! Invariant: `log` is called with none of this crate's locks held (the
//! bindings attach to Python in it), after the operation that failed.

use super::cache::SharedCache;
use super::decode::Served;
use super::settings::{warning, WarnLimit};
use super::store::{SharedStore, StoreError};
use crate::timestamp::Timestamp;

/// Where warnings about a store go: one formatted line at a time.
pub type WarnLog = Box<dyn Fn(String) + Send + Sync>;

/// The store's name in warnings, when warnings are logged, and how often.
pub(super) struct Warnings {
    url: String,
    limit: WarnLimit,
    log: WarnLog,
}

impl<S: SharedStore, E: Clone> SharedCache<S, E> {
    /// This cache, logging a warning with `log` when a call is computed
    /// live past a failing store (BYPASS), or a background refresh could
    /// not store its value: at most once a minute, naming the store by
    /// `url`.
    pub fn with_warnings(self, url: String, log: WarnLog) -> Self {
        let warnings = Warnings {
            url,
            limit: WarnLimit::default(),
            log,
        };
        self.set_warnings(warnings)
    }

    /// Warns about `error` (see [`SharedCache::with_warnings`]) unless a
    /// warning was logged less than a minute ago; for an embedder that
    /// skipped a failing store on its own (a read that only inspects).
    pub fn warn(&self, error: &StoreError) {
        let Some(warnings) = self.warnings() else {
            return;
        };
        // Wall time, not the cache's clock: the limit is on the operator's
        // log, and a test's frozen clock may go back between tests.
        if warnings.limit.allow(Timestamp::now_coarse().as_micros()) {
            (warnings.log)(warning(&warnings.url, error));
        }
    }

    /// `served`, warned about when it was computed live past a store that
    /// failed (it carries the error).
    pub(super) fn warned<T>(&self, served: Served<T>) -> Served<T> {
        if let Some(error) = &served.bypassed {
            self.warn(error);
        }
        served
    }
}
