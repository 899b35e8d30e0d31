//! The near cache of a Sentinel-managed Redis: one invalidation channel,
//! to whichever server the sentinels name as master.
//!
//! One thread per process asks the sentinels for the master when the near
//! cache starts, every [`REFRESH`], and at once when the channel goes down
//! or the store could not reach the master (or found it demoted). When the
//! answer changes (a failover), in this order:
//!
//! 1. the store forgets its master, so that calls ask the sentinels again
//!    and reach the new one;
//! 2. the near cache goes down ([`NearCache::set_live`]`(false)`: emptied,
//!    reads in flight not kept, nothing served);
//! 3. a channel to the new master starts; the near cache serves again once
//!    it is up (which empties it once more).
//!
//! A failover that leaves the old master running (demoted to a replica) is
//! seen at the next sentinel read, at most [`REFRESH`] later, or as soon as
//! this process writes to it (`READONLY`); until then entries are served
//! under the old master's channel.
//!
//! Invariants: the near cache is live only while the channel to the master
//! the sentinels named last is up (a channel's report counts only if it is
//! still the current one: `id`); lock order: this module's, then the near
//! cache's; the thread and channel belong to one process (kept in a
//! [`crate::fork::PerProcess`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use ::redis::IntoConnectionInfo;

use super::follow::{Follows, Prompt};
use super::near::NearCache;
use super::sentinel::{ask_sentinels, Current, Parts};
use super::tracking::Tracking;

/// How often the sentinels are asked again when nothing prompted it.
pub const REFRESH: Duration = Duration::from_secs(1);

struct State {
    /// The current channel's number.
    id: u64,
    /// The master's URL the channel is to.
    master: Option<String>,
    channel: Option<Tracking>,
}

struct Follow {
    state: Mutex<State>,
    /// Wakes the thread that asks the sentinels.
    prompt: Prompt,
    near: Arc<NearCache>,
    prefixes: Vec<String>,
    parts: Parts,
    /// Connect and read timeouts.
    timeouts: (Duration, Duration),
    current: Arc<Current>,
}

impl Follow {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(self: Arc<Self>) {
        loop {
            let (connect, read) = self.timeouts;
            if let Ok(url) = ask_sentinels(&self.parts, connect, read) {
                if self.state().master.as_ref() != Some(&url) {
                    self.switch(url);
                }
            }
            if !self.prompt.wait(REFRESH) {
                return;
            }
        }
    }

    /// Follows a new master (see the module documentation for the order).
    fn switch(self: &Arc<Self>, url: String) {
        let forgotten = {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            match &*current {
                Some((at, _)) if *at != url => current.take(),
                _ => None,
            }
        };
        // Closes its connections, outside the lock.
        drop(forgotten);
        let mut state = self.state();
        state.id += 1;
        let id = state.id;
        let old = state.channel.take();
        self.near.set_live(false);
        state.master = Some(url.clone());
        let follow = Arc::downgrade(self);
        state.channel = url.as_str().into_connection_info().ok().and_then(|info| {
            Tracking::start_with(
                info,
                self.timeouts.0.max(self.timeouts.1),
                self.prefixes.clone(),
                Arc::clone(&self.near),
                move |live| report(&follow, id, live),
            )
            .ok()
        });
        drop(state);
        // Only signals the old channel's thread to stop.
        drop(old);
    }
}

/// A channel's report, applied only if it is still the current channel.
fn report(follow: &Weak<Follow>, id: u64, live: bool) {
    let Some(follow) = follow.upgrade() else {
        return;
    };
    let state = follow.state();
    if state.id != id {
        return;
    }
    follow.near.set_live(live);
    if !live {
        // The master may be gone: ask the sentinels at once.
        follow.prompt.prompt();
    }
    drop(state);
}

/// One process's near cache on a Sentinel-managed Redis, and the thread
/// that keeps its channel on the master. Dropping it stops both.
pub struct SentinelNear {
    follow: Arc<Follow>,
}

impl SentinelNear {
    /// Starts following the master `parts`' sentinels name with `near`'s
    /// channel, for keys starting with one of `prefixes`; `current` is the
    /// store's master, forgotten on a failover. `None` when no thread can
    /// be started.
    pub fn start(
        near: NearCache,
        prefixes: Vec<String>,
        parts: Parts,
        timeouts: (Duration, Duration),
        current: Arc<Current>,
    ) -> Option<Self> {
        let follow = Arc::new(Follow {
            state: Mutex::new(State {
                id: 0,
                master: None,
                channel: None,
            }),
            prompt: Prompt::default(),
            near: Arc::new(near),
            prefixes,
            parts,
            timeouts,
            current,
        });
        let runner = Arc::clone(&follow);
        std::thread::Builder::new()
            .name("restflow-near-sentinel".into())
            .spawn(move || runner.run())
            .ok()?;
        Some(SentinelNear { follow })
    }

    /// Asks the sentinels again soon: the master could not be reached.
    pub fn prompt(&self) {
        self.follow.prompt.prompt();
    }
}

impl Follows for SentinelNear {
    fn cache(&self) -> &NearCache {
        &self.follow.near
    }
}

impl Drop for SentinelNear {
    fn drop(&mut self) {
        self.follow.prompt.stop();
        let channel = self.follow.state().channel.take();
        // Only signals its thread to stop, outside the lock.
        drop(channel);
    }
}
