//! Single-flight: one computation per key, however many callers miss at once.
//!
//! The first caller to miss a key becomes its *leader* and computes; every
//! caller that misses the same key while the leader runs becomes a
//! *follower* and waits for the leader's outcome, value or error alike.
//!
//! Waiting is split from joining ([`Join::Follower`] hands back a
//! [`Waiter`]) so that a caller can give up other locks first, such as
//! Python's GIL, before it blocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

type Hasher = foldhash::fast::RandomState;

enum State<T, E> {
    Running,
    Done(Result<T, E>),
    Abandoned,
}

struct Flight<T, E> {
    leader: ThreadId,
    state: Mutex<State<T, E>>,
    finished: Condvar,
}

/// What a follower learns when its leader finishes.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T, E> {
    /// The leader's value.
    Value(T),
    /// The leader's error.
    Error(E),
    /// The leader went away without an outcome (it panicked or was torn
    /// down); the follower should join again, and may lead this time.
    Abandoned,
}

/// The in-flight computations, by key.
///
/// Invariant: a key is in the map exactly while its leader's
/// [`LeaderGuard`] is alive; the guard removes it when it completes or drops.
pub struct SingleFlight<T, E> {
    flights: Mutex<FlightMap<T, E>>,
}

type FlightMap<T, E> = HashMap<Box<[u8]>, Arc<Flight<T, E>>, Hasher>;

/// The result of [`SingleFlight::join`].
pub enum Join<'a, T, E> {
    /// This caller computes, then calls [`LeaderGuard::complete`].
    Leader(LeaderGuard<'a, T, E>),
    /// Another caller computes; wait on this.
    Follower(Waiter<T, E>),
}

/// Held by the one caller computing a key.
pub struct LeaderGuard<'a, T, E> {
    group: &'a SingleFlight<T, E>,
    key: Box<[u8]>,
    flight: Arc<Flight<T, E>>,
    completed: bool,
}

/// Held by a caller waiting on a leader.
pub struct Waiter<T, E> {
    flight: Arc<Flight<T, E>>,
}

impl<T, E> Default for SingleFlight<T, E> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::default()),
        }
    }
}

impl<T: Clone, E: Clone> SingleFlight<T, E> {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Becomes the leader for `key`, or a follower of its current leader.
    pub fn join(&self, key: &[u8]) -> Join<'_, T, E> {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(key) {
            return Join::Follower(Waiter {
                flight: Arc::clone(flight),
            });
        }
        let flight = Arc::new(Flight {
            leader: thread::current().id(),
            state: Mutex::new(State::Running),
            finished: Condvar::new(),
        });
        let key: Box<[u8]> = key.into();
        flights.insert(key.clone(), Arc::clone(&flight));
        Join::Leader(LeaderGuard {
            group: self,
            key,
            flight,
            completed: false,
        })
    }

    /// How many keys are being computed now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }

    /// Forgets every flight without touching it.
    ///
    /// For a process that was just forked: the leaders live in the parent,
    /// so their flights will never finish here, and their locks may have
    /// been copied in a held state. The old map is leaked, not dropped.
    ///
    /// # Safety
    /// Call only in a child right after `fork`, before any other thread
    /// exists in it.
    pub unsafe fn forget_all(&self) {
        let fresh = HashMap::default();
        // After a fork only this thread exists; a lock held by a parent
        // thread at the fork would never be released here.
        if self.flights.is_locked() {
            // SAFETY: per the contract, the thread that held the lock does
            // not exist in this process.
            unsafe { self.flights.force_unlock() };
        }
        let old = std::mem::replace(&mut *self.flights.lock(), fresh);
        std::mem::forget(old);
    }
}

impl<T: Clone, E: Clone> LeaderGuard<'_, T, E> {
    /// Publishes the outcome to every follower and leaves the group.
    ///
    /// The flight is removed from the map before followers wake, so a caller
    /// that misses after this point starts a new flight (and will usually
    /// find the leader's stored value first).
    pub fn complete(mut self, outcome: Result<T, E>) {
        self.finish(State::Done(outcome));
    }
}

impl<T, E> LeaderGuard<'_, T, E> {
    fn finish(&mut self, state: State<T, E>) {
        self.completed = true;
        let removed = {
            let mut flights = self.group.flights.lock();
            match flights.get(&self.key) {
                Some(current) if Arc::ptr_eq(current, &self.flight) => flights.remove(&self.key),
                _ => None,
            }
        };
        // Dropped outside the map lock: the flight may hold the last
        // reference to a value whose drop runs foreign code.
        drop(removed);
        let previous = std::mem::replace(&mut *self.flight.state.lock(), state);
        self.flight.finished.notify_all();
        drop(previous);
    }
}

impl<T, E> Drop for LeaderGuard<'_, T, E> {
    fn drop(&mut self) {
        if !self.completed {
            self.finish(State::Abandoned);
        }
    }
}

impl<T: Clone, E: Clone> Waiter<T, E> {
    /// Whether the leader is the calling thread: a function that calls
    /// itself with the same arguments would otherwise wait on itself forever.
    pub fn is_own_flight(&self) -> bool {
        self.flight.leader == thread::current().id()
    }

    /// Blocks until the leader finishes.
    pub fn wait(&self) -> Outcome<T, E> {
        self.wait_inner(None)
            .expect("an untimed wait always ends with an outcome")
    }

    /// Blocks until the leader finishes or `timeout` passes (`None` then).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Outcome<T, E>> {
        self.wait_inner(Some(timeout))
    }

    fn wait_inner(&self, timeout: Option<Duration>) -> Option<Outcome<T, E>> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut state = self.flight.state.lock();
        loop {
            match &*state {
                State::Running => match deadline {
                    None => self.flight.finished.wait(&mut state),
                    Some(deadline) => {
                        if self
                            .flight
                            .finished
                            .wait_until(&mut state, deadline)
                            .timed_out()
                        {
                            return None;
                        }
                    }
                },
                State::Done(Ok(value)) => return Some(Outcome::Value(value.clone())),
                State::Done(Err(error)) => return Some(Outcome::Error(error.clone())),
                State::Abandoned => return Some(Outcome::Abandoned),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn one_leader_many_followers_share_the_value() {
        let group: Arc<SingleFlight<u64, String>> = Arc::new(SingleFlight::new());
        let computations = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (group, computations, barrier) =
                    (group.clone(), computations.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    loop {
                        match group.join(b"k") {
                            Join::Leader(guard) => {
                                computations.fetch_add(1, Ordering::SeqCst);
                                thread::sleep(Duration::from_millis(50));
                                guard.complete(Ok(42));
                                return 42;
                            }
                            Join::Follower(waiter) => match waiter.wait() {
                                Outcome::Value(v) => return v,
                                Outcome::Error(e) => panic!("{e}"),
                                Outcome::Abandoned => continue,
                            },
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 42);
        }
        assert_eq!(computations.load(Ordering::SeqCst), 1);
        assert_eq!(group.in_flight(), 0);
    }

    #[test]
    fn followers_receive_the_error() {
        let group: SingleFlight<u64, &'static str> = SingleFlight::new();
        let Join::Leader(guard) = group.join(b"k") else {
            panic!("first join leads")
        };
        let Join::Follower(waiter) = group.join(b"k") else {
            panic!("second join follows")
        };
        assert!(waiter.is_own_flight());
        guard.complete(Err("boom"));
        assert_eq!(waiter.wait(), Outcome::Error("boom"));
        assert!(matches!(group.join(b"k"), Join::Leader(_)));
    }

    #[test]
    fn a_dropped_leader_abandons() {
        let group: SingleFlight<u64, ()> = SingleFlight::new();
        let leader = group.join(b"k");
        let Join::Follower(waiter) = group.join(b"k") else {
            panic!("second join follows")
        };
        drop(leader);
        assert_eq!(waiter.wait(), Outcome::Abandoned);
        assert_eq!(group.in_flight(), 0);
    }

    #[test]
    fn keys_fly_independently_and_waits_can_time_out() {
        let group: SingleFlight<u64, ()> = SingleFlight::new();
        let _a = group.join(b"a");
        assert!(matches!(group.join(b"b"), Join::Leader(_)));
        let Join::Follower(waiter) = group.join(b"a") else {
            panic!("a is in flight")
        };
        assert_eq!(waiter.wait_timeout(Duration::from_millis(1)), None);
    }

    #[test]
    fn forget_all_clears_the_map() {
        let group: SingleFlight<u64, ()> = SingleFlight::new();
        let guard = group.join(b"a");
        // SAFETY: no other thread uses the group.
        unsafe { group.forget_all() };
        assert_eq!(group.in_flight(), 0);
        assert!(matches!(group.join(b"a"), Join::Leader(_)));
        drop(guard);
    }
}
