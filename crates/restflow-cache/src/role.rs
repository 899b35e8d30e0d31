//! One caller's part in a key's computation, as a handle that outlives the
//! call that joined: what a caller that cannot block (an event loop's task)
//! holds between joining a flight and its end.
//!
//! The same shape serves every flight an embedder drives in steps (the
//! engine's own, [`crate::Engine::start`], and an embedder's flight of
//! answers among its tasks, [`crate::SingleFlight::join_as`]): the leader
//! takes its token once to complete it, or abandons it; a follower
//! registers a callback and then reads the leader's outcome once. The
//! misuses (completing twice, reading too early) are [`RoleError`]s the
//! embedder reports, never panics.

use crate::engine::GetError;
use crate::flight::{Callback, Join, LeaderGuard, Outcome, Owner, SingleFlight, Waiter};
use crate::stats::{Counter, Stats};

/// A caller's part: the leader's token `L`, a follower's waiter on the
/// leader's outcome `T`, or an outcome already there.
pub enum Role<L, T, E> {
    /// It computes, then completes `L`.
    Lead(L),
    /// Another caller computes.
    Follow(Waiter<T, E>),
    /// The outcome was there when the caller joined (a leader had just
    /// finished): served as a follower's would be.
    Done(T),
    /// Completed, abandoned, or its outcome read.
    Ended,
}

/// A step taken out of turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleError {
    /// Only the leader completes, and once.
    NotLeader,
    /// Only a follower reads an outcome, and once.
    NotFollower,
    /// A follower read before its callback ran.
    NotFinished,
}

impl std::fmt::Display for RoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleError::NotLeader => "only the leader of a flight completes it, once",
            RoleError::NotFollower => "only a follower reads the result",
            RoleError::NotFinished => "the leader has not finished yet",
        })
    }
}

impl std::error::Error for RoleError {}

impl<'a, T, E> From<Join<'a, T, E>> for Role<LeaderGuard<'a, T, E>, T, E> {
    fn from(join: Join<'a, T, E>) -> Self {
        match join {
            Join::Leader(guard) => Role::Lead(guard),
            Join::Follower(waiter) => Role::Follow(waiter),
        }
    }
}

impl<T: Clone, E: Clone> SingleFlight<T, E> {
    /// [`SingleFlight::join_as`] as the [`Role`] a caller holds between
    /// steps, a follower's wait counted in `stats`. A follower of a flight
    /// `owner` leads itself is refused ([`GetError::Recursive`]): it would
    /// wait on itself forever.
    pub fn join_counted(
        &self,
        key: &[u8],
        owner: Owner,
        stats: &Stats,
    ) -> Result<Role<LeaderGuard<'_, T, E>, T, E>, GetError<E>> {
        match self.join_as(key, owner) {
            Join::Follower(waiter) if waiter.is_own_flight() => Err(GetError::Recursive),
            Join::Follower(waiter) => {
                stats.add(Counter::SingleFlightWait);
                Ok(Role::Follow(waiter))
            }
            Join::Leader(guard) => Ok(Role::Lead(guard)),
        }
    }
}

impl<L, T: Clone, E: Clone> Role<L, T, E> {
    /// Whether this caller computes.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Lead(_))
    }

    /// The leader's token, once; the role has ended after.
    pub fn take_lead(&mut self) -> Result<L, RoleError> {
        match std::mem::replace(self, Role::Ended) {
            Role::Lead(lead) => Ok(lead),
            other => {
                *self = other;
                Err(RoleError::NotLeader)
            }
        }
    }

    /// Drops the leader's token (one follower takes over); whether this
    /// was the leader. Anything else is left as it is.
    pub fn abandon(&mut self) -> bool {
        self.take_lead().map(drop).is_ok()
    }

    /// Registers `callback` to run once the leader's outcome is there, on
    /// the thread that produced it; hands it back when the outcome (if
    /// any) is there already: for anything but a follower, and for a
    /// follower whose leader has ended ([`Waiter::on_finish`]). The caller
    /// then runs it itself, once it no longer holds this role.
    pub fn on_done(&self, callback: Callback) -> Result<(), Callback> {
        match self {
            Role::Follow(waiter) => waiter.on_finish(callback),
            _ => Err(callback),
        }
    }

    /// A follower's outcome, once, after its callback ran;
    /// [`Outcome::Abandoned`] says join again (this caller may lead).
    pub fn outcome(&mut self) -> Result<Outcome<T, E>, RoleError> {
        match std::mem::replace(self, Role::Ended) {
            Role::Follow(waiter) => match waiter.outcome() {
                Some(outcome) => Ok(outcome),
                None => {
                    *self = Role::Follow(waiter);
                    Err(RoleError::NotFinished)
                }
            },
            Role::Done(value) => Ok(Outcome::Value(value)),
            other => {
                *self = other;
                Err(RoleError::NotFollower)
            }
        }
    }
}

/// A caller's part in any flight, as one trait object: what an embedder
/// that holds parts of different flights behind one handle asks of each
/// (the Python bindings' `Flight`, over the engine's flight and the flight
/// of its own tasks), answered once here instead of once per flight.
pub trait Joined {
    /// Whether this caller computes ([`Role::is_leader`]).
    fn is_leader(&self) -> bool;
    /// Runs `callback` once the leader's outcome is there
    /// ([`Role::on_done`]).
    fn on_done(&self, callback: Callback) -> Result<(), Callback>;
    /// Gives the lead up, if this caller holds it (one follower takes
    /// over), as its token counts that in `stats` ([`Abandon`]); anything
    /// else is left as it is.
    fn abandon_counted(&mut self, stats: &Stats);
}

/// A leader's token given up (a cancelled task), counted in `stats` as
/// the token times its computation.
pub trait Abandon {
    /// Gives the token up: its followers join again.
    fn abandon_counted(self, stats: &Stats);
}

impl<T, E> Abandon for LeaderGuard<'_, T, E> {
    /// Dropped (which abandons its flight); it times nothing.
    fn abandon_counted(self, _: &Stats) {}
}

impl<V, E, S> Abandon for crate::engine::Lead<'_, V, E, S>
where
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    S: crate::store::Store<V> + 'static,
{
    /// Counted as a computation that ran this long.
    fn abandon_counted(self, stats: &Stats) {
        crate::engine::Lead::abandon_counted(self, stats);
    }
}

impl<L: Abandon, T: Clone, E: Clone> Joined for Role<L, T, E> {
    fn is_leader(&self) -> bool {
        Role::is_leader(self)
    }

    fn on_done(&self, callback: Callback) -> Result<(), Callback> {
        Role::on_done(self, callback)
    }

    fn abandon_counted(&mut self, stats: &Stats) {
        if let Ok(lead) = self.take_lead() {
            lead.abandon_counted(stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::{Owner, SingleFlight};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    type Group = SingleFlight<u32, String>;

    fn join<'a>(
        group: &'a Group,
        task: u64,
    ) -> Role<crate::LeaderGuard<'a, u32, String>, u32, String> {
        Role::from(group.join_as(b"k", Owner::task(task)))
    }

    #[test]
    fn the_leader_completes_once_and_its_follower_reads_once() {
        let group = Group::new();
        let mut leader = join(&group, 1);
        let mut follower = join(&group, 2);
        assert!(leader.is_leader() && !follower.is_leader());
        assert_eq!(follower.outcome().err(), Some(RoleError::NotFinished));
        assert_eq!(leader.outcome().err(), Some(RoleError::NotFollower));
        let called = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&called);
        let callback: Callback = Box::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert!(follower.on_done(callback).is_ok());
        assert_eq!(called.load(Ordering::SeqCst), 0);
        leader.take_lead().unwrap().complete(Ok(7));
        assert_eq!(called.load(Ordering::SeqCst), 1);
        assert_eq!(leader.take_lead().err(), Some(RoleError::NotLeader));
        assert!(!leader.abandon());
        assert_eq!(follower.outcome(), Ok(Outcome::Value(7)));
        assert_eq!(follower.outcome().err(), Some(RoleError::NotFollower));
    }

    #[test]
    fn a_follower_whose_leader_has_ended_gets_its_callback_back_unrun() {
        let group = Group::new();
        let mut leader = join(&group, 1);
        let mut follower = join(&group, 2);
        leader.take_lead().unwrap().complete(Ok(5));
        let called = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&called);
        let callback: Callback = Box::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        // Run by the caller once it no longer holds the role, so the
        // callback may read the outcome through whatever holds it.
        let handed_back = follower.on_done(callback).expect_err("ended already");
        assert_eq!(called.load(Ordering::SeqCst), 0);
        handed_back();
        assert_eq!(called.load(Ordering::SeqCst), 1);
        assert_eq!(follower.outcome(), Ok(Outcome::Value(5)));
    }

    #[test]
    fn an_abandoned_lead_tells_the_follower_to_join_again() {
        let group = Group::new();
        let mut leader = join(&group, 1);
        let mut follower = join(&group, 2);
        assert!(leader.abandon());
        assert!(matches!(leader, Role::Ended));
        assert_eq!(follower.outcome(), Ok(Outcome::Abandoned));
        assert!(join(&group, 2).is_leader());
    }

    #[test]
    fn a_counted_join_counts_a_followers_wait_and_refuses_a_task_following_itself() {
        let (group, stats) = (Group::new(), Stats::new());
        let leader = group.join_counted(b"k", Owner::task(1), &stats).unwrap();
        assert!(leader.is_leader());
        assert_eq!(stats.snapshot().get(Counter::SingleFlightWait), 0);
        let follower = group.join_counted(b"k", Owner::task(2), &stats).unwrap();
        assert!(!follower.is_leader());
        assert_eq!(stats.snapshot().get(Counter::SingleFlightWait), 1);
        let again = group.join_counted(b"k", Owner::task(1), &stats);
        assert!(matches!(again, Err(GetError::Recursive)));
        assert_eq!(stats.snapshot().get(Counter::SingleFlightWait), 1);
    }

    #[test]
    fn an_outcome_already_there_is_read_like_a_followers_and_calls_nothing_back() {
        let mut done: Role<(), u32, String> = Role::Done(3);
        let callback: Callback = Box::new(|| panic!("handed back, not run"));
        assert!(done.on_done(callback).is_err());
        assert_eq!(done.outcome(), Ok(Outcome::Value(3)));
        assert_eq!(done.outcome().err(), Some(RoleError::NotFollower));
    }

    #[test]
    fn parts_of_different_flights_answer_as_one_trait_and_an_abandoned_lead_counts_as_its_token_does(
    ) {
        type TestEngine = crate::Engine<u32, String, crate::MemoryStore<u32>>;
        let clock = crate::Clock::frozen(crate::Timestamp::from_micros(1));
        let cache = crate::Cache::new(crate::MemoryStore::new(10), clock);
        let engine = TestEngine::new(cache, crate::Refresher::new(1, 1));
        let (group, stats) = (Group::new(), Stats::new());
        let memory =
            |task| engine.join_counted(b"k", crate::Span::ZERO, Owner::task(task), false, &stats);
        let tasks = |task| group.join_counted(b"k", Owner::task(task), &stats);
        let (mut memory_lead, memory_follower) = (memory(1).unwrap(), memory(2).unwrap());
        let (mut task_lead, task_follower) = (tasks(1).unwrap(), tasks(2).unwrap());
        let mut parts: Vec<&mut dyn Joined> = vec![&mut memory_lead, &mut task_lead];
        assert!(parts.iter().all(|part| part.is_leader()));
        assert!(!Joined::is_leader(&memory_follower) && !Joined::is_leader(&task_follower));
        // A leader hands a callback back; a follower keeps it.
        let callback = || -> Callback { Box::new(|| {}) };
        assert!(parts.iter().all(|part| part.on_done(callback()).is_err()));
        assert!(Joined::on_done(&task_follower, callback()).is_ok());
        for part in parts.iter_mut() {
            part.abandon_counted(&stats);
            assert!(!part.is_leader(), "given up");
            part.abandon_counted(&stats); // no lead left: nothing
        }
        // Only the engine's lead times a computation.
        assert_eq!(stats.snapshot().get(Counter::Computation), 1);
        let mut followers = (memory_follower, task_follower);
        assert!(matches!(followers.0.outcome(), Ok(Outcome::Abandoned)));
        assert_eq!(followers.1.outcome(), Ok(Outcome::Abandoned));
    }
}
