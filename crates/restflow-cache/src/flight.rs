//! Single-flight: one computation per key, however many callers miss at once.
//!
//! The first caller to miss a key becomes its *leader* and computes; every
//! caller that misses the same key while the leader runs becomes a
//! *follower* and waits for the leader's outcome, value or error alike.
//!
//! Waiting is split from joining ([`Join::Follower`] hands back a
//! [`Waiter`]) so that a caller can give up other locks first, such as
//! Python's GIL, before it blocks, or not block at all: a follower on an
//! event loop registers a callback ([`Waiter::on_finish`]) that the
//! leader's completion runs, then reads the outcome ([`Waiter::outcome`]).
//! Threads and event-loop tasks of one process so share one flight per key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Run once by the leader's completion, on the thread that completes it
/// (or drops its guard), after every lock here is released. A callback
/// that panics does not keep the others from running; its panic reaches
/// the leader's caller after they all ran.
pub type Callback = Box<dyn FnOnce() + Send>;

/// A flight's state and the callbacks waiting for it to change.
struct Progress<T, E> {
    state: State<T, E>,
    callbacks: Vec<Callback>,
}

struct Flight<T, E> {
    leader: Owner,
    progress: Mutex<Progress<T, E>>,
    finished: Condvar,
    /// Live [`Waiter`]s: callers that joined this flight as followers and
    /// have not let go of it (see [`SingleFlight::waiters`]).
    waiters: AtomicUsize,
}

/// Who leads or joins a flight: a thread, or a task of an event loop that
/// runs on a thread. A caller that would wait on itself is refused
/// ([`Waiter::is_own_flight`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A thread that blocks while it waits.
    Thread(ThreadId),
    /// A task (any number its caller keeps unique while the task lives) of
    /// an event loop on `thread`; it waits without blocking the thread.
    Task {
        /// The thread its loop runs on.
        thread: ThreadId,
        /// The task.
        task: u64,
    },
}

impl Owner {
    /// The calling thread.
    pub fn current_thread() -> Self {
        Owner::Thread(thread::current().id())
    }

    /// Task `task` of an event loop running on the calling thread.
    pub fn task(task: u64) -> Self {
        Owner::Task {
            thread: thread::current().id(),
            task,
        }
    }

    fn thread(self) -> ThreadId {
        match self {
            Owner::Thread(thread) | Owner::Task { thread, .. } => thread,
        }
    }

    /// Whether this caller, following `leader`, would wait forever: a
    /// thread blocks its own thread, so nothing else on it (a task of its
    /// loop included) can finish; a task waits only on itself.
    fn would_wait_on(self, leader: Owner) -> bool {
        match self {
            Owner::Thread(thread) => leader.thread() == thread,
            Owner::Task { .. } => self == leader,
        }
    }
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
    group: Group<'a, T, E>,
    key: Box<[u8]>,
    flight: Arc<Flight<T, E>>,
    completed: bool,
}

/// The group a leader leaves when it ends: borrowed by a caller that
/// computes within one call, owned by a guard that outlives the call that
/// joined (a leader that computes in an event loop's task, see
/// [`SingleFlight::join_shared`]).
enum Group<'a, T, E> {
    Borrowed(&'a SingleFlight<T, E>),
    Shared(Arc<SingleFlight<T, E>>),
}

impl<T, E> std::ops::Deref for Group<'_, T, E> {
    type Target = SingleFlight<T, E>;

    fn deref(&self) -> &SingleFlight<T, E> {
        match self {
            Group::Borrowed(group) => group,
            Group::Shared(group) => group,
        }
    }
}

/// Held by a caller waiting on a leader.
///
/// Invariant: counted in its flight's `waiters` from creation to drop.
pub struct Waiter<T, E> {
    flight: Arc<Flight<T, E>>,
    owner: Owner,
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

    /// Becomes the leader for `key`, or a follower of its current leader,
    /// as the calling thread.
    pub fn join(&self, key: &[u8]) -> Join<'_, T, E> {
        self.join_as(key, Owner::current_thread())
    }

    /// [`SingleFlight::join`] for `owner` (an event loop's task, say).
    pub fn join_as(&self, key: &[u8], owner: Owner) -> Join<'_, T, E> {
        self.join_in(Group::Borrowed(self), key, owner)
    }

    /// [`SingleFlight::join_as`], with a leader's guard that owns a share
    /// of the group: it may outlive the call that joined (held while an
    /// event loop's task computes).
    pub fn join_shared<'a>(self: &Arc<Self>, key: &[u8], owner: Owner) -> Join<'a, T, E> {
        self.join_in(Group::Shared(Arc::clone(self)), key, owner)
    }

    fn join_in<'a>(&self, group: Group<'a, T, E>, key: &[u8], owner: Owner) -> Join<'a, T, E> {
        let mut flights = self.map();
        if let Some(flight) = flights.get(key) {
            flight.waiters.fetch_add(1, Ordering::AcqRel);
            return Join::Follower(Waiter {
                flight: Arc::clone(flight),
                owner,
            });
        }
        let flight = Arc::new(Flight {
            leader: owner,
            progress: Mutex::new(Progress {
                state: State::Running,
                callbacks: Vec::new(),
            }),
            finished: Condvar::new(),
            waiters: AtomicUsize::new(0),
        });
        let key: Box<[u8]> = key.into();
        flights.insert(key.clone(), Arc::clone(&flight));
        Join::Leader(LeaderGuard {
            group,
            key,
            flight,
            completed: false,
        })
    }

    /// How many keys are being computed now.
    pub fn in_flight(&self) -> usize {
        self.flights.get().map_or(0, |map| lock(map).len())
    }

    /// How many callers follow the computation of `key` now (blocked
    /// threads and tasks with a callback alike), 0 when none runs. A
    /// follower counts from its join on: whatever it does next, the
    /// leader's outcome reaches it.
    pub fn waiters(&self, key: &[u8]) -> usize {
        self.flights.get().map_or(0, |map| {
            lock(map)
                .get(key)
                .map_or(0, |flight| flight.waiters.load(Ordering::Acquire))
        })
    }

    /// [`SingleFlight::waiters`] summed over every key.
    pub fn total_waiters(&self) -> usize {
        self.flights.get().map_or(0, |map| {
            lock(map)
                .values()
                .map(|flight| flight.waiters.load(Ordering::Acquire))
                .sum()
        })
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
    /// Who leads this flight: the owner it was joined as.
    pub fn owner(&self) -> Owner {
        self.flight.leader
    }

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
        let (previous, callbacks) = {
            let mut progress = lock(&self.flight.progress);
            let previous = std::mem::replace(&mut progress.state, state);
            (previous, std::mem::take(&mut progress.callbacks))
        };
        self.flight.finished.notify_all();
        drop(previous);
        // Outside every lock: a callback may run foreign code. Each one
        // runs whatever the others do: a callback that panics must not
        // leave the followers after it waiting forever. The first panic
        // goes on to the leader once all have run (unless the leader is
        // unwinding already: a second panic would abort the process).
        let mut first_panic = None;
        for callback in callbacks {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
                first_panic.get_or_insert(panic);
            }
        }
        if let Some(panic) = first_panic {
            if !thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl<T, E> Drop for LeaderGuard<'_, T, E> {
    fn drop(&mut self) {
        if !self.completed {
            self.finish(State::Abandoned);
        }
    }
}

impl<T, E> Drop for Waiter<T, E> {
    fn drop(&mut self) {
        self.flight.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T: Clone, E: Clone> Waiter<T, E> {
    /// Whether waiting would never end: the leader is this caller (a
    /// function that calls itself with the same arguments), or a task of
    /// the loop this thread would block.
    pub fn is_own_flight(&self) -> bool {
        self.owner.would_wait_on(self.flight.leader)
    }

    /// The outcome, if the leader has finished; never blocks.
    pub fn outcome(&self) -> Option<Outcome<T, E>> {
        outcome_of(&lock(&self.flight.progress).state)
    }

    /// Registers `callback` to run once the leader finishes, on the thread
    /// that finishes it; then [`Waiter::outcome`] has the outcome. When the
    /// leader has finished already, `callback` is handed back unrun: the
    /// caller runs it once it lets go of whatever holds this waiter, so a
    /// callback that reads the outcome through that holder finds it free
    /// (a callback run from in here would run inside the caller's borrow).
    pub fn on_finish(&self, callback: Callback) -> Result<(), Callback> {
        let mut progress = lock(&self.flight.progress);
        if let State::Running = progress.state {
            progress.callbacks.push(callback);
            return Ok(());
        }
        Err(callback)
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
        let mut progress = lock(&self.flight.progress);
        loop {
            if let Some(outcome) = outcome_of(&progress.state) {
                return Some(outcome);
            }
            let finished = &self.flight.finished;
            progress = match deadline {
                None => finished
                    .wait(progress)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    finished
                        .wait_timeout(progress, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            }
        }
    }
}

/// What a finished flight's followers learn; `None` while it runs.
fn outcome_of<T: Clone, E: Clone>(state: &State<T, E>) -> Option<Outcome<T, E>> {
    match state {
        State::Running => None,
        State::Done(Ok(value)) => Some(Outcome::Value(value.clone())),
        State::Done(Err(error)) => Some(Outcome::Error(error.clone())),
        State::Abandoned => Some(Outcome::Abandoned),
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
                                // Finishes once every other caller follows.
                                while group.waiters(b"k") < 15 {
                                    thread::yield_now();
                                }
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
    fn a_callback_follower_learns_the_value_abandonment_and_counts_as_a_waiter() {
        let group: SingleFlight<u64, ()> = SingleFlight::new();
        let Join::Leader(guard) = group.join_as(b"k", Owner::task(1)) else {
            panic!("first join leads")
        };
        assert_eq!(group.waiters(b"k"), 0);
        // Another task of the same loop follows; a thread of that loop's
        // thread would block the leader, and is refused.
        let Join::Follower(task) = group.join_as(b"k", Owner::task(2)) else {
            panic!("second join follows")
        };
        assert!(!task.is_own_flight());
        let Join::Follower(thread) = group.join(b"k") else {
            panic!("third join follows")
        };
        assert!(thread.is_own_flight());
        assert_eq!(group.waiters(b"k"), 2);
        drop(thread);
        assert_eq!(group.waiters(b"k"), 1);
        let called = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&called);
        let registered = task.on_finish(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(registered.is_ok(), "the leader runs on: kept");
        assert_eq!(task.outcome(), None);
        assert_eq!(called.load(Ordering::SeqCst), 0);
        guard.complete(Ok(7));
        assert_eq!(called.load(Ordering::SeqCst), 1);
        assert_eq!(task.outcome(), Some(Outcome::Value(7)));
        // Registered after the end: handed back unrun, for the caller to
        // run once it holds nothing.
        let counter = Arc::clone(&called);
        let handed_back = task.on_finish(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(called.load(Ordering::SeqCst), 1, "not run in there");
        handed_back.expect_err("the leader has ended")();
        assert_eq!(called.load(Ordering::SeqCst), 2);
        assert_eq!(group.waiters(b"k"), 0);

        let leader = group.join_as(b"k", Owner::task(1));
        let Join::Follower(task) = group.join_as(b"k", Owner::task(1)) else {
            panic!("follows")
        };
        assert!(task.is_own_flight(), "a task awaiting its own key");
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fired);
        let registered = task.on_finish(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(registered.is_ok());
        drop(leader);
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(task.outcome(), Some(Outcome::Abandoned));
    }

    #[test]
    fn a_panicking_callback_does_not_keep_the_others_from_running() {
        // The first callback's panic skipped the rest: their tasks never
        // woke.
        let group: SingleFlight<u64, ()> = SingleFlight::new();
        let Join::Leader(guard) = group.join_as(b"k", Owner::task(1)) else {
            panic!("first join leads")
        };
        let ran = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (2..5)
            .map(|task| match group.join_as(b"k", Owner::task(task)) {
                Join::Follower(waiter) => waiter,
                Join::Leader(_) => panic!("task 1 leads"),
            })
            .collect();
        for (n, waiter) in waiters.iter().enumerate() {
            let ran = Arc::clone(&ran);
            let registered = waiter.on_finish(Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                assert!(n != 0, "the first callback panics");
            }));
            assert!(registered.is_ok());
        }
        let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            guard.complete(Ok(5));
        }));
        let message = completed.expect_err("the callback's panic reaches the leader");
        assert_eq!(
            message.downcast_ref::<&str>(),
            Some(&"the first callback panics")
        );
        assert_eq!(ran.load(Ordering::SeqCst), 3, "every callback ran");
        for waiter in &waiters {
            assert_eq!(waiter.outcome(), Some(Outcome::Value(5)));
        }
        assert_eq!(group.in_flight(), 0);
    }

    #[test]
    fn a_blocked_thread_follows_a_task_of_another_thread() {
        let group: Arc<SingleFlight<u64, ()>> = Arc::new(SingleFlight::new());
        let Join::Leader(guard) = group.join_as(b"k", Owner::task(9)) else {
            panic!("first join leads")
        };
        let follower = {
            let group = Arc::clone(&group);
            thread::spawn(move || match group.join(b"k") {
                Join::Follower(waiter) => {
                    assert!(!waiter.is_own_flight());
                    waiter.wait()
                }
                Join::Leader(_) => panic!("the task leads"),
            })
        };
        // A hang guard only: the count says when the thread has joined.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while group.waiters(b"k") < 1 {
            assert!(std::time::Instant::now() < deadline, "never joined");
            thread::yield_now();
        }
        guard.complete(Ok(3));
        assert_eq!(follower.join().unwrap(), Outcome::Value(3));
    }
}
