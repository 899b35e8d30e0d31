//! What the near cache's topology-following threads share (a cluster's
//! slot map, a Sentinel's master): a wake-up every period or on a prompt,
//! and a stop.
//!
//! Invariant: its lock is a leaf (nothing else is taken under it), so it
//! may be prompted under any other lock.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::near::NearCache;
use crate::fork::PerProcess;

#[derive(Default)]
struct Flags {
    stopped: bool,
    prompted: bool,
}

/// Wakes a thread that looks again every period, sooner when prompted.
#[derive(Default)]
pub struct Prompt {
    flags: Mutex<Flags>,
    woken: Condvar,
}

impl Prompt {
    fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the thread to look again now.
    pub fn prompt(&self) {
        let mut flags = self.flags();
        if !flags.prompted {
            flags.prompted = true;
            self.woken.notify_all();
        }
    }

    /// Asks the thread to end.
    pub fn stop(&self) {
        self.flags().stopped = true;
        self.woken.notify_all();
    }

    /// Waits for `period` or a prompt; `false` once stopped.
    pub fn wait(&self, period: Duration) -> bool {
        let flags = self.flags();
        let (mut flags, _) = self
            .woken
            .wait_timeout_while(flags, period, |f| !f.stopped && !f.prompted)
            .unwrap_or_else(PoisonError::into_inner);
        flags.prompted = false;
        !flags.stopped
    }
}

/// A store's per-process near cache that follows a topology.
pub trait Follows {
    /// Its near cache.
    fn cache(&self) -> &NearCache;
}

/// The near cache in `cell` if this process started it.
pub fn started<T: Follows>(cell: &PerProcess<Option<T>>) -> Option<&NearCache> {
    cell.get().and_then(Option::as_ref).map(T::cache)
}
