//! State that belongs to one process, so that a forked child never touches
//! what its parent's threads were doing at the fork.
//!
//! After `fork` only the forking thread exists in the child. A lock another
//! thread held stays held forever, a thread parked in a wait queue never
//! wakes, and a pool's helper threads are gone; worse, once the child starts
//! threads of its own, glibc reuses the vanished threads' stacks and
//! thread-local blocks. So a child must neither reset nor drop its parent's
//! in-flight state: it must leave it alone and build its own.
//!
//! [`PerProcess`] does that: each process sees its own value, made on first
//! use there; the parent's copy is leaked in the child, untouched. A process
//! learns it is a child from a `pthread_atfork` handler that bumps a counter
//! (one atomic load per access, where `getpid` would be a system call).
//!
//! Invariants for the whole crate:
//! - everything a thread may hold or wait on while other threads run freely
//!   (single-flight waits, refresh workers, connection pools) lives in a
//!   [`PerProcess`] value;
//! - those locks are `std::sync`'s, which wait on a futex in the lock
//!   itself. `parking_lot` parks waiters in one process-wide table that a
//!   child inherits with its parent's vanished threads still queued in it
//!   (their records freed and reused in the child: SIGSEGV, or a hang on a
//!   bucket lock a vanished thread held). The same goes for crates built on
//!   it (r2d2 and its thread pool), which is why the Redis pool is our own.
//!   `parking_lot` stays only where every access is made under an outer
//!   lock that `fork` itself waits for (the memory store, under Python's GIL);
//! - a step that takes a lock of someone else's which a fork must not find
//!   held (the embedder's runtime, e.g. CPython's thread list) runs in a
//!   [`ForkGate`] section, which the forking thread waits for.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Bumped in every child right after `fork`.
static GENERATION: AtomicU64 = AtomicU64::new(0);

#[cfg(unix)]
extern "C" fn forked_child() {
    // Async-signal-safe: one atomic increment.
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The current process's fork generation: 0 in the first process, and
/// different in each child from its parent's. The first call registers the
/// fork handler; an embedder that may fork from a multi-threaded process
/// calls it once early (at import), so no fork can catch that one-time
/// registration half done.
pub fn generation() -> u64 {
    #[cfg(unix)]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: registers a handler that only touches an atomic.
            let failed = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
            assert_eq!(failed, 0, "pthread_atfork refused restflow's fork handler");
        });
    }
    GENERATION.load(Ordering::Acquire)
}

struct Slot<T> {
    generation: u64,
    value: T,
}

/// A value of which each process has its own, made on first use there.
///
/// Invariant: a slot is freed only by [`Drop`], and only when it belongs to
/// the dropping process; slots replaced after a fork are leaked, so a
/// reference handed out stays valid for as long as `self` lives.
pub struct PerProcess<T> {
    slot: AtomicPtr<Slot<T>>,
    _owns: PhantomData<*const Slot<T>>,
}

// SAFETY: the value is made on one thread, read through `&T` on any, and
// dropped on whichever drops `self`: that needs `Send + Sync`, as `Arc<T>`.
unsafe impl<T: Send + Sync> Sync for PerProcess<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for PerProcess<T> {}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerProcess<T> {
    /// Empty in every process until first use.
    pub const fn new() -> Self {
        PerProcess {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// This process's value, made with `init` if it has none yet.
    pub fn get_or_init(&self, mut init: impl FnMut() -> T) -> &T {
        let current = generation();
        let mut seen = self.slot.load(Ordering::Acquire);
        loop {
            // SAFETY: a non-null slot is alive for as long as `self` (see
            // the invariant).
            if let Some(slot) = unsafe { seen.as_ref() } {
                if slot.generation == current {
                    return &slot.value;
                }
            }
            let fresh = Box::into_raw(Box::new(Slot {
                generation: current,
                value: init(),
            }));
            match self
                .slot
                .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // The parent's slot, if any, is leaked on purpose.
                // SAFETY: just installed; never freed before `self` drops.
                Ok(_) => return unsafe { &(*fresh).value },
                Err(now) => {
                    // Another thread of this process won: use its value.
                    // SAFETY: `fresh` was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    seen = now;
                }
            }
        }
    }

    /// This process's value, if it has made one.
    pub fn get(&self) -> Option<&T> {
        // SAFETY: as in `get_or_init`.
        let slot = unsafe { self.slot.load(Ordering::Acquire).as_ref()? };
        (slot.generation == generation()).then_some(&slot.value)
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let slot = *self.slot.get_mut();
        // SAFETY: `&mut self`: no reference to the slot is left.
        if let Some(owned) = unsafe { slot.as_ref() } {
            if owned.generation == generation() {
                // SAFETY: made by `Box::into_raw` in this process.
                drop(unsafe { Box::from_raw(slot) });
            }
        }
    }
}

/// Sections that a fork must not split: a forking thread that calls
/// [`ForkGate::before_fork`] waits until no section runs, and sections that
/// start meanwhile wait until [`ForkGate::after_fork_in_parent`] (a child
/// starts with a gate of its own, see [`PerProcess`]).
///
/// For a step that holds a lock the child would inherit held, which the
/// embedder cannot reset: CPython before 3.11.10 (gh-112275) takes its
/// thread-list lock in the child before resetting it, so a thread making
/// its Python thread state (which takes that lock without the GIL) at the
/// instant of a fork hangs the child inside `os.fork`. The embedder runs
/// that step in a section and calls the fork hooks from
/// `os.register_at_fork`, whose `before` hooks run ahead of the
/// interpreter's own fork locks.
///
/// Invariant: a section never waits on anything the forking thread may
/// hold (the GIL, the import lock): the fork waits for the section.
///
/// Written here rather than with `std::sync::RwLock` because the fork's
/// side is held from one hook call to another, which a guard cannot span.
pub struct ForkGate {
    gate: PerProcess<Gate>,
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Sections running now.
    running: usize,
    /// A fork is being prepared: sections wait.
    forking: bool,
    /// Forks waiting for sections to end (read by tests).
    waiting: usize,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        // Nothing panics while holding it: a poisoned lock holds good data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, GateState>) -> MutexGuard<'a, GateState> {
        self.changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for ForkGate {
    fn default() -> Self {
        Self::new()
    }
}

impl ForkGate {
    /// A gate with no section running and no fork pending.
    pub const fn new() -> Self {
        ForkGate {
            gate: PerProcess::new(),
        }
    }

    fn gate(&self) -> &Gate {
        self.gate.get_or_init(Gate::default)
    }

    /// Runs `section` where no fork can happen (waiting first for a fork
    /// being prepared to be done).
    pub fn section<R>(&self, section: impl FnOnce() -> R) -> R {
        let gate = self.gate();
        {
            let mut state = gate.state();
            while state.forking {
                state = gate.wait(state);
            }
            state.running += 1;
        }
        // Ends the section even if `section` panics.
        struct End<'a>(&'a Gate);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state();
                state.running -= 1;
                if state.running == 0 {
                    self.0.changed.notify_all();
                }
            }
        }
        let _end = End(gate);
        section()
    }

    /// Called by the forking thread just before the fork: waits until no
    /// section runs, and keeps new ones waiting until
    /// [`ForkGate::after_fork_in_parent`].
    pub fn before_fork(&self) {
        let gate = self.gate();
        let mut state = gate.state();
        // One fork at a time: another thread's fork is prepared first.
        while state.forking {
            state = gate.wait(state);
        }
        state.forking = true;
        state.waiting += 1;
        while state.running > 0 {
            state = gate.wait(state);
        }
        state.waiting -= 1;
    }

    /// Called in the parent after the fork (made or failed): sections may
    /// run again. The child has a gate of its own and calls nothing.
    pub fn after_fork_in_parent(&self) {
        let gate = self.gate();
        gate.state().forking = false;
        gate.changed.notify_all();
    }

    /// Forks waiting for sections to end.
    #[cfg(test)]
    fn forks_waiting(&self) -> usize {
        self.gate().state().waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    #[test]
    fn one_value_per_process_made_once() {
        let cell: PerProcess<AtomicUsize> = PerProcess::new();
        assert!(cell.get().is_none());
        let made = AtomicUsize::new(0);
        let barrier = Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    cell.get_or_init(|| {
                        made.fetch_add(1, Ordering::SeqCst);
                        AtomicUsize::new(0)
                    })
                    .fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        // Racing threads may each make one, but all use the winner's.
        assert!(made.load(Ordering::SeqCst) >= 1);
        assert_eq!(cell.get().unwrap().load(Ordering::SeqCst), 8);
    }

    #[cfg(unix)]
    #[test]
    fn a_forked_child_gets_a_fresh_value_and_leaves_the_parents_alone() {
        let cell: PerProcess<std::sync::Mutex<u32>> = PerProcess::new();
        *cell
            .get_or_init(|| std::sync::Mutex::new(0))
            .lock()
            .unwrap() = 7;
        // Held across the fork, as by a thread that does not exist in the child.
        let held = cell.get().unwrap().lock().unwrap();
        // SAFETY: the child only touches atomics and the cell, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let fresh = cell.get().is_none()
                && *cell
                    .get_or_init(|| std::sync::Mutex::new(1))
                    .lock()
                    .unwrap()
                    == 1;
            // SAFETY: ends the child without running the test harness's exit.
            unsafe { libc::_exit(if fresh { 0 } else { 1 }) };
        }
        drop(held);
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(*cell.get().unwrap().lock().unwrap(), 7);
    }

    #[test]
    fn a_fork_waits_for_the_sections_running_and_holds_new_ones_back() {
        use std::sync::atomic::AtomicBool;
        use std::sync::mpsc;

        let gate = ForkGate::new();
        let ended = AtomicBool::new(false);
        let (entered, section_entered) = mpsc::channel();
        let (end_section, ending) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (gate, ended) = (&gate, &ended);
            s.spawn(move || {
                gate.section(|| {
                    entered.send(()).unwrap();
                    ending.recv().unwrap();
                    ended.store(true, Ordering::SeqCst);
                })
            });
            section_entered.recv().unwrap();
            let fork = s.spawn(|| {
                gate.before_fork();
                // The section ended before the fork could go on.
                let saw_it_end = ended.load(Ordering::SeqCst);
                gate.after_fork_in_parent();
                saw_it_end
            });
            while gate.forks_waiting() == 0 {
                std::thread::yield_now();
            }
            end_section.send(()).unwrap();
            assert!(fork.join().unwrap());
        });
        // The gate is open again.
        assert_eq!(gate.section(|| 7), 7);
    }

    #[cfg(unix)]
    #[test]
    fn a_child_forked_while_the_gate_is_closed_has_an_open_one() {
        let gate = ForkGate::new();
        gate.section(|| ());
        gate.before_fork();
        // SAFETY: the child only touches the gate and atomics, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let open = gate.section(|| true);
            // SAFETY: ends the child without running the harness's exit.
            unsafe { libc::_exit(if open { 0 } else { 1 }) };
        }
        gate.after_fork_in_parent();
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
