//! A blocking connection pool with no threads of its own.
//!
//! Written here rather than taken from r2d2 because of fork safety (see
//! [`crate::fork`]): r2d2 keeps helper threads (its scheduled thread pool)
//! parked in `parking_lot`'s process-wide wait table, which a forked child
//! inherits with those vanished threads still queued in it; the child then
//! crashes or hangs on its first contended lock. This pool waits only on a
//! `std` condition variable of its own, opens connections on the caller's
//! thread, and never reaps idle ones (a dead one fails once, is marked
//! broken, and is replaced).
//!
//! Invariants: `open` counts the connections handed out plus the idle ones,
//! and never exceeds `max_size`; a slot is taken before connecting (outside
//! the lock) and given back if the connection cannot be made. `waiting`
//! counts the callers parked on `returned`, changed only under the lock, so
//! a caller that gives a connection or a slot back wakes one only when one
//! waits: `std`'s `notify_one` makes a system call even with no waiter, and
//! every Redis hit gives its connection back (one `futex` per hit, seen with
//! `strace -c`, before this count).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::store::StoreError;

/// Opens connections for a [`Pool`] and tells the broken ones.
pub trait Manage {
    /// A connection.
    type Conn;
    /// Opens one.
    fn connect(&self) -> Result<Self::Conn, StoreError>;
    /// Whether `conn` must be thrown away instead of reused.
    fn has_broken(&self, conn: &Self::Conn) -> bool;
}

struct State<C> {
    idle: Vec<C>,
    open: usize,
    waiting: usize,
}

/// At most `max_size` connections, handed out one caller at a time.
pub struct Pool<M: Manage> {
    manager: M,
    max_size: usize,
    wait: Duration,
    state: Mutex<State<M::Conn>>,
    returned: Condvar,
}

/// A connection out of a [`Pool`]; it goes back (or, broken, away) on drop.
pub struct Pooled<'a, M: Manage> {
    pool: &'a Pool<M>,
    conn: Option<M::Conn>,
    reused: bool,
}

impl<M: Manage> Pool<M> {
    /// A pool of at most `max_size` connections (at least one), whose
    /// callers wait at most `wait` for one to be free.
    pub fn new(manager: M, max_size: usize, wait: Duration) -> Self {
        Pool {
            manager,
            max_size: max_size.max(1),
            wait,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            returned: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<M::Conn>> {
        // Nothing panics while holding it: a poisoned lock holds good data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, a new one if the pool is not full, or the first
    /// one given back within the wait.
    pub fn get(&self) -> Result<Pooled<'_, M>, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.state();
        loop {
            // The most recently used first: the likeliest to be alive.
            if let Some(conn) = state.idle.pop() {
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                    reused: true,
                });
            }
            if state.open < self.max_size {
                state.open += 1;
                drop(state);
                return match self.manager.connect() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                        reused: false,
                    }),
                    Err(error) => {
                        self.release_slot();
                        Err(error)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Timeout(
                    "no connection free within the connect timeout (raise POOL_SIZE?)".into(),
                ));
            }
            state.waiting += 1;
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }

    fn release_slot(&self) {
        let mut state = self.state();
        state.open -= 1;
        self.wake_one(state);
    }

    /// Wakes one caller waiting for a connection, if one waits (see the
    /// module's invariants); takes the lock's guard so the count it reads
    /// is the one the change it announces was made under.
    fn wake_one(&self, state: MutexGuard<'_, State<M::Conn>>) {
        let waits = state.waiting > 0;
        drop(state);
        if waits {
            self.returned.notify_one();
        }
    }

    /// The most connections it holds.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Callers waiting for a connection now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state().waiting
    }

    /// Connections open now (idle or handed out).
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.state().open
    }
}

impl<M: Manage> Pooled<'_, M> {
    /// Whether it sat idle in the pool before this caller got it (rather
    /// than being made for this caller): the server may have closed it
    /// meanwhile.
    pub fn reused(&self) -> bool {
        self.reused
    }
}

impl<M: Manage> std::ops::Deref for Pooled<'_, M> {
    type Target = M::Conn;
    fn deref(&self) -> &M::Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl<M: Manage> std::ops::DerefMut for Pooled<'_, M> {
    fn deref_mut(&mut self) -> &mut M::Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl<M: Manage> Drop for Pooled<'_, M> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.pool.manager.has_broken(&conn) {
            // Closed outside the lock.
            drop(conn);
            self.pool.release_slot();
        } else {
            let mut state = self.pool.state();
            state.idle.push(conn);
            self.pool.wake_one(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        made: AtomicUsize,
        refuse: bool,
    }

    impl Manage for Counting {
        type Conn = (usize, Cell<bool>);
        fn connect(&self) -> Result<Self::Conn, StoreError> {
            if self.refuse {
                return Err(StoreError::Unavailable("refused".into()));
            }
            Ok((self.made.fetch_add(1, Ordering::SeqCst), Cell::new(false)))
        }
        fn has_broken(&self, conn: &Self::Conn) -> bool {
            conn.1.get()
        }
    }

    fn pool(max: usize, refuse: bool, wait: Duration) -> Pool<Counting> {
        let manager = Counting {
            made: AtomicUsize::new(0),
            refuse,
        };
        Pool::new(manager, max, wait)
    }

    #[test]
    fn reuses_idle_connections_and_replaces_broken_ones() {
        let pool = pool(2, false, Duration::ZERO);
        let made = pool.get().unwrap();
        let first = made.0;
        assert!(!made.reused());
        drop(made);
        let again = pool.get().unwrap();
        assert_eq!(
            (again.0, again.reused()),
            (first, true),
            "an idle one is reused"
        );
        drop(again);
        {
            let conn = pool.get().unwrap();
            conn.1.set(true);
        }
        assert_eq!(pool.open(), 0, "a broken one is thrown away");
        assert_eq!(pool.get().unwrap().0, first + 1);
    }

    #[test]
    fn a_full_pool_times_out() {
        let pool = pool(1, false, Duration::from_millis(1));
        let _held = pool.get().unwrap();
        let error = pool.get().err().expect("full");
        assert!(matches!(error, StoreError::Timeout(_)), "{error}");
    }

    /// Gives back `held` (`broken`: as a broken connection, so its slot)
    /// once another caller waits for one, and returns what that caller got.
    fn handed_on(pool: &Pool<Counting>, held: Pooled<'_, Counting>, broken: bool) -> usize {
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.get().map(|c| c.0));
            // Parked on the condition variable, not merely on its way.
            while pool.waiting() == 0 {
                std::thread::yield_now();
            }
            held.1.set(broken);
            drop(held);
            waiter.join().unwrap().unwrap()
        })
    }

    #[test]
    fn a_given_back_connection_wakes_a_waiting_caller() {
        let pool = pool(1, false, Duration::from_secs(60));
        let held = pool.get().unwrap();
        // The one connection, handed on: never a second.
        assert_eq!(handed_on(&pool, held, false), 0);
        assert_eq!((pool.open(), pool.waiting()), (1, 0));
    }

    #[test]
    fn a_slot_given_back_wakes_a_waiting_caller_who_connects() {
        let pool = pool(1, false, Duration::from_secs(60));
        let held = pool.get().unwrap();
        // The broken one is thrown away; the waiter opens the next one.
        assert_eq!(handed_on(&pool, held, true), 1);
        assert_eq!((pool.open(), pool.waiting()), (1, 0));
    }

    #[test]
    fn a_caller_that_times_out_no_longer_counts_as_waiting() {
        let pool = pool(1, false, Duration::from_millis(1));
        let _held = pool.get().unwrap();
        assert!(pool.get().is_err());
        assert_eq!(pool.waiting(), 0);
    }

    #[test]
    fn a_failed_connect_gives_its_slot_back() {
        let pool = pool(1, true, Duration::ZERO);
        assert!(pool.get().is_err());
        assert_eq!(pool.open(), 0);
    }
}
