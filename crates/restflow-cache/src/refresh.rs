//! The small, bounded pool of threads that runs stale-while-revalidate
//! refreshes off the caller's path.
//!
//! Threads start lazily on the first refresh and are started again in a
//! process forked after that (a fork copies no threads; the parent's queue
//! and workers are left alone, see [`crate::fork`]). A full queue turns
//! a refresh away instead of blocking the caller: the entry stays stale and
//! a later read tries again.
//!
//! Written here rather than taken from a thread-pool crate because of those
//! two rules (never block the submitter, rebuild after fork without touching
//! the parent's state), which general pools do not offer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::fork::PerProcess;

/// A unit of background work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Counts the jobs accepted and not yet finished, so callers (tests, an
/// orderly shutdown) can wait for the pool to go idle.
///
/// Invariant: `count <= threads + capacity` ([`Refresher::try_spawn`]
/// admits a job only below that), so the pool holds at most `capacity`
/// jobs beyond those its workers run.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    lock: Mutex<()>,
    idle: Condvar,
    /// Set by [`Refresher::shut_down`]: the workers drop what is queued.
    closed: AtomicBool,
}

impl Pending {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = lock(&self.lock);
            self.idle.notify_all();
        }
    }
}

/// Locks `mutex`; jobs run outside these locks, so a poisoned one (which
/// no code here can cause) still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One process's workers.
struct Pool {
    sender: Sender<Job>,
    pending: Arc<Pending>,
}

/// Runs one job on a worker thread. An embedder uses it to give each job
/// the context it needs (the bindings attach the thread to Python, so every
/// store operation a job makes happens under the GIL, as on any other path).
pub type Runner = fn(Job);

fn run_plain(job: Job) {
    job()
}

/// A lazily started pool of `threads` workers with a queue of `capacity` jobs.
pub struct Refresher {
    threads: usize,
    capacity: usize,
    runner: Runner,
    /// This process's workers, once started (see [`crate::fork`]).
    pool: PerProcess<Mutex<Option<Pool>>>,
    /// Set by [`Refresher::shut_down`]: no job is taken or run after it.
    closed: AtomicBool,
}

impl Refresher {
    /// A pool that will run at most `threads` jobs at once and queue at
    /// most `capacity` more. Nothing starts until the first job.
    pub const fn new(threads: usize, capacity: usize) -> Self {
        Self::with_runner(threads, capacity, run_plain)
    }

    /// Like [`Refresher::new`], with every job run through `runner`.
    pub const fn with_runner(threads: usize, capacity: usize, runner: Runner) -> Self {
        Refresher {
            threads,
            capacity,
            runner,
            pool: PerProcess::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Option<Pool>> {
        lock(self.pool.get_or_init(|| Mutex::new(None)))
    }

    /// Queues `job`, starting the workers if this process has none yet.
    ///
    /// Never blocks on a full queue: the job is handed back instead, to be
    /// dropped by the caller (outside any lock of ours).
    pub fn try_spawn(&self, job: Job) -> Result<(), Job> {
        if self.is_closed() {
            return Err(job);
        }
        let mut pool = self.pool();
        let pool = match pool.as_mut() {
            Some(pool) => pool,
            None => pool.insert(self.start()),
        };
        // Admitted by the count, not by the channel: a job is accepted
        // while fewer than `threads` run and `capacity` wait, whether or
        // not a worker has reached its `recv` yet (a rendezvous channel,
        // capacity 0, turned away every job no worker stood waiting for,
        // the first one after start included).
        let limit = self.threads.max(1).saturating_add(self.capacity);
        let admitted = pool
            .pending
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(job);
        }
        match pool.sender.send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError(job)) => {
                pool.pending.count.fetch_sub(1, Ordering::AcqRel);
                Err(job)
            }
        }
    }

    fn start(&self) -> Pool {
        // Unbounded: the count bounds it (see `try_spawn`), and a bounded
        // channel allocates its whole capacity up front.
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let pending = Arc::new(Pending::default());
        for n in 0..self.threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let pending = Arc::clone(&pending);
            let runner = self.runner;
            thread::Builder::new()
                .name(format!("restflow-refresh-{n}"))
                .spawn(move || work(&receiver, &pending, runner))
                .expect("the OS refused a refresh worker thread");
        }
        Pool { sender, pending }
    }

    /// Shuts the pool down (the embedder's process is exiting): jobs still
    /// queued are dropped unrun, new ones are handed back, and running ones
    /// get `timeout` seconds ([`timeout_from_secs`]) to finish. Returns
    /// whether they did; `Err`: the message for a NaN.
    pub fn shut_down(&self, timeout: f64) -> Result<bool, String> {
        let timeout = timeout_from_secs(timeout)?;
        self.closed.store(true, Ordering::Release);
        if let Some(pool) = self.pool().as_ref() {
            pool.pending.closed.store(true, Ordering::Release);
        }
        Ok(self.wait_idle(timeout))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Jobs accepted and not finished.
    pub fn pending(&self) -> usize {
        self.pool()
            .as_ref()
            .map_or(0, |p| p.pending.count.load(Ordering::Acquire))
    }

    /// [`Refresher::wait_idle`] for a timeout an embedder's caller gave in
    /// seconds ([`timeout_from_secs`]); `Err`: the message for a NaN.
    pub fn wait_idle_secs(&self, timeout: f64) -> Result<bool, String> {
        Ok(self.wait_idle(timeout_from_secs(timeout)?))
    }

    /// Waits until every accepted job has finished, or `timeout` passes.
    /// Returns whether the pool is idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let Some(pending) = self.pool().as_ref().map(|p| Arc::clone(&p.pending)) else {
            return true;
        };
        // `None`: a timeout past what an `Instant` can hold, no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = lock(&pending.lock);
        while pending.count.load(Ordering::Acquire) > 0 {
            let Some(deadline) = deadline else {
                guard = pending
                    .idle
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = pending
                .idle
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// A timeout from a number of seconds: a negative number waits not at
/// all, and one too large for a `Duration` (infinity) as long as it takes
/// (`Duration::MAX`, past any deadline an `Instant` can hold); NaN is no
/// number of seconds, refused with the message to show.
pub fn timeout_from_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_nan() {
        return Err(format!("timeout must be a number of seconds, got {secs}"));
    }
    Ok(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX))
}

fn work(receiver: &Mutex<Receiver<Job>>, pending: &Pending, runner: Runner) {
    loop {
        let job = match lock(receiver).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // Shut down: dropped unrun (the process is exiting).
        if !pending.closed.load(Ordering::Acquire) {
            // A panicking job must not take the worker, or the pending count, with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner(job)));
        }
        pending.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn runs_jobs_off_thread_and_goes_idle() {
        let refresher = Refresher::new(2, 16);
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            let ran = ran.clone();
            assert!(refresher
                .try_spawn(Box::new(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok());
        }
        assert!(refresher.wait_idle(Duration::from_secs(10)));
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        assert_eq!(refresher.pending(), 0);
    }

    #[test]
    fn a_full_queue_hands_the_job_back() {
        let refresher = Refresher::new(1, 1);
        let release = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        {
            let (release, started) = (release.clone(), started.clone());
            refresher
                .try_spawn(Box::new(move || {
                    started.store(true, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        thread::yield_now();
                    }
                }))
                .ok()
                .unwrap();
        }
        while !started.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        assert!(refresher.try_spawn(Box::new(|| {})).is_ok()); // fills the queue
        assert!(refresher.try_spawn(Box::new(|| {})).is_err());
        release.store(true, Ordering::SeqCst);
        assert!(refresher.wait_idle(Duration::from_secs(10)));
    }

    #[test]
    fn a_pool_without_a_queue_runs_its_first_job_and_refuses_a_second() {
        // A rendezvous channel turned the first job away: no worker had
        // reached its `recv` yet.
        let refresher = Refresher::new(1, 0);
        let (started, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let (on_start, on_release) = (Arc::clone(&started), Arc::clone(&release));
        let running = Box::new(move || {
            on_start.wait();
            on_release.wait();
        });
        assert!(refresher.try_spawn(running).is_ok(), "the first job runs");
        started.wait();
        assert!(refresher.try_spawn(Box::new(|| {})).is_err(), "no queue");
        release.wait();
        assert!(refresher.wait_idle(Duration::from_secs(30)));
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let job = Box::new(move || flag.store(true, Ordering::SeqCst));
        assert!(refresher.try_spawn(job).is_ok(), "the worker is free again");
        assert!(refresher.wait_idle(Duration::from_secs(30)));
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn a_huge_queue_bound_allocates_nothing_up_front() {
        let refresher = Refresher::new(2, usize::MAX);
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let ran = Arc::clone(&ran);
            let job = Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            });
            assert!(refresher.try_spawn(job).is_ok());
        }
        assert!(refresher.wait_idle(Duration::from_secs(30)));
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_panicking_job_does_not_wedge_the_pool() {
        let refresher = Refresher::new(1, 4);
        refresher
            .try_spawn(Box::new(|| panic!("job failed")))
            .ok()
            .unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        refresher
            .try_spawn(Box::new(move || flag.store(true, Ordering::SeqCst)))
            .ok()
            .unwrap();
        assert!(refresher.wait_idle(Duration::from_secs(10)));
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn a_timeout_past_the_clock_s_range_waits_until_idle() {
        // A `Duration` that `Instant` cannot add panicked before.
        let refresher = Refresher::new(1, 4);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let job = Box::new(move || flag.store(true, Ordering::SeqCst));
        refresher.try_spawn(job).ok().unwrap();
        assert!(refresher.wait_idle(Duration::MAX));
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(refresher.wait_idle_secs(f64::INFINITY), Ok(true));
        assert_eq!(refresher.wait_idle_secs(1e300), Ok(true));
        assert_eq!(refresher.wait_idle_secs(-1.0), Ok(true));
    }

    #[test]
    fn a_shut_down_pool_drops_what_is_queued_and_takes_nothing_new() {
        let refresher = Refresher::new(1, 4);
        let (started, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let (on_start, on_release) = (Arc::clone(&started), Arc::clone(&release));
        let running = Box::new(move || {
            on_start.wait();
            on_release.wait();
        });
        refresher.try_spawn(running).ok().unwrap();
        started.wait(); // the one worker runs the first job
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let queued = Box::new(move || flag.store(true, Ordering::SeqCst));
        refresher.try_spawn(queued).ok().unwrap();
        // The running job is not done yet: not idle within no time.
        assert_eq!(refresher.shut_down(0.0), Ok(false));
        assert!(refresher.try_spawn(Box::new(|| {})).is_err());
        release.wait();
        assert!(refresher.wait_idle(Duration::from_secs(30)));
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(refresher.pending(), 0);
        assert!(refresher.shut_down(f64::NAN).is_err());
    }

    #[test]
    fn seconds_become_a_timeout_and_nan_is_refused() {
        assert_eq!(timeout_from_secs(1.5), Ok(Duration::from_millis(1500)));
        assert_eq!(timeout_from_secs(-3.0), Ok(Duration::ZERO));
        assert_eq!(timeout_from_secs(f64::INFINITY), Ok(Duration::MAX));
        assert_eq!(timeout_from_secs(1e300), Ok(Duration::MAX));
        assert_eq!(
            timeout_from_secs(f64::NAN),
            Err("timeout must be a number of seconds, got NaN".to_owned())
        );
    }
}
