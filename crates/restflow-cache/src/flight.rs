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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use crate::fork::PerProcess;

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
/// Each process has its own map (see [`crate::fork`]): in a forked child the
/// parent's leaders do not exist, and its map is left alone.
pub struct SingleFlight<T, E> {
    flights: PerProcess<Mutex<FlightMap<T, E>>>,
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
            flights: PerProcess::new(),
        }
    }
}

/// Locks `mutex`. No code panics while holding one of these locks, so a
/// poisoned one holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T, E> SingleFlight<T, E> {
    fn map(&self) -> MutexGuard<'_, FlightMap<T, E>> {
        lock(self.flights.get_or_init(|| Mutex::new(HashMap::default())))
    }
}

impl<T: Clone, E: Clone> SingleFlight<T, E> {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Becomes the leader for `key`, or a follower of its current leader.
    pub fn join(&self, key: &[u8]) -> Join<'_, T, E> {
        let mut flights = self.map();
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
        self.flights.get().map_or(0, |map| lock(map).len())
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
            let mut flights = self.group.map();
            match flights.get(&self.key) {
                Some(current) if Arc::ptr_eq(current, &self.flight) => flights.remove(&self.key),
                _ => None,
            }
        };
        // Dropped outside the map lock: the flight may hold the last
        // reference to a value whose drop runs foreign code.
        drop(removed);
        let previous = std::mem::replace(&mut *lock(&self.flight.state), state);
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
        let mut state = lock(&self.flight.state);
        loop {
            match &*state {
                State::Running => {
                    let finished = &self.flight.finished;
                    state = match deadline {
                        None => finished.wait(state).unwrap_or_else(PoisonError::into_inner),
                        Some(deadline) => {
                            let left =
                                deadline.saturating_duration_since(std::time::Instant::now());
                            if left.is_zero() {
                                return None;
                            }
                            finished
                                .wait_timeout(state, left)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                    }
                }
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
}
