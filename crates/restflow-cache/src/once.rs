//! A value made once per process that a forked child can always finish
//! making.
//!
//! A blocking once-cell (std's `OnceLock`, `LazyLock`, or a cell that takes
//! a lock around its initializer) has a state in which one thread holds the
//! cell's lock while it makes the value. If another thread forks at that
//! instant (gunicorn `--preload`, Celery prefork), the child's copy of the
//! cell is locked by a thread that does not exist in the child, and its
//! first use waits forever. Embedders whose initializers wait for something
//! else inside the lock (an interpreter lock, say) make that window wide.
//!
//! [`OnceValue`] never locks: the value is made with no lock held, and
//! published by one compare-and-swap (`once_cell::race::OnceBox`). There is
//! no state in which a reader waits on another thread, so a fork at any
//! instant leaves a cell that is either set or empty. Two threads may both
//! make the value; one wins and the other's copy is dropped. That suits
//! values whose every copy is as good as another (imported objects,
//! interned strings, formatted timestamps, an idempotent claim).

use once_cell::race::OnceBox;

/// A value made on first use; see the module documentation.
///
/// Invariant: once [`OnceValue::get`] has returned `Some`, it returns the
/// same value for the life of the cell (the first value published wins).
pub struct OnceValue<T>(OnceBox<T>);

impl<T> OnceValue<T> {
    /// An empty cell (usable in a `static`).
    pub const fn new() -> Self {
        OnceValue(OnceBox::new())
    }

    /// The value, when it has been made.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }

    /// Publishes `value` unless a value is already there; `Err(value)` then.
    pub fn set(&self, value: T) -> Result<(), T> {
        self.0.set(Box::new(value)).map_err(|boxed| *boxed)
    }

    /// The value, made by `make` when there is none yet. `make` may run on
    /// two threads at once; the value published first is kept, and a
    /// failed `make` leaves the cell empty for the next caller.
    #[inline]
    pub fn get_or_try_make<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(value) = self.0.get() {
            return Ok(value);
        }
        self.0.get_or_try_init(|| make().map(Box::new))
    }

    /// As [`OnceValue::get_or_try_make`], for a `make` that cannot fail.
    #[inline]
    pub fn get_or_make(&self, make: impl FnOnce() -> T) -> &T {
        match self.get_or_try_make::<std::convert::Infallible>(|| Ok(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

impl<T> Default for OnceValue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::OnceValue;
    use std::sync::mpsc;

    #[test]
    fn the_first_value_published_is_kept() {
        let cell = OnceValue::new();
        assert_eq!(cell.get(), None);
        assert_eq!(
            cell.get_or_try_make(|| Err::<u32, _>("failed")),
            Err("failed")
        );
        assert_eq!(cell.get(), None, "a failed make leaves the cell empty");
        assert_eq!(*cell.get_or_make(|| 1), 1);
        assert_eq!(*cell.get_or_make(|| 2), 1);
        assert_eq!(cell.set(3), Err(3));
        assert_eq!(cell.get(), Some(&1));
    }

    /// The property the module exists for: a fork while another thread is
    /// making the value leaves the child a cell it can fill. (With a
    /// blocking once-cell the child waits forever on the vanished thread.)
    #[test]
    #[cfg(unix)]
    fn a_child_forked_while_another_thread_makes_the_value_can_make_it() {
        static CELL: OnceValue<u32> = OnceValue::new();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            *CELL
                .get_or_try_make(|| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok::<_, ()>(1)
                })
                .unwrap()
        });
        entered_rx.recv().unwrap();
        // SAFETY: the child only reads and fills the cell, allocates, and
        // leaves with `_exit`; it touches no lock another thread holds.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let made = *CELL.get_or_try_make(|| Ok::<_, ()>(2)).unwrap();
            // SAFETY: `_exit` ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(if made == 2 { 0 } else { 3 }) };
        }
        release_tx.send(()).unwrap();
        assert_eq!(maker.join().unwrap(), 1);
        let mut status = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            // SAFETY: waits for our own child without blocking.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: kills our own child, which hung.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the child hung on a cell another thread was making at the fork");
            }
            std::thread::yield_now();
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
