//! Counters and latency histograms, per cached function and per store.
//!
//! Every event is one relaxed atomic increment: no lock, no allocation, so
//! a memory hit can afford one (the hit path has a few nanoseconds to
//! spare, not tens). Nothing here reads a clock: callers time what they
//! choose to time. The Python bindings time computations and shared-store
//! lookups only; a memory hit is counted but never timed, since a clock
//! read would cost more than the hit itself.
//!
//! Counts only grow. [`Stats::reset`] records a baseline that
//! [`Stats::snapshot`] subtracts, so exporters that need monotonic
//! counters (Prometheus) read [`Stats::totals`] and are never confused by
//! a reset.
//!
//! The histogram is written here rather than taken from a crate: the
//! maintained ones (hdrhistogram, the `metrics` family) either need `&mut`
//! (a lock on every record) or a global recorder; this needs a fixed,
//! Prometheus-compatible bucket layout that many threads add to at once,
//! which is an array of atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What is counted. Other layers (a near cache, early refresh) add their
/// events here, so every exporter sees them without change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Counter {
    /// A fresh entry served.
    Hit,
    /// A value computed (here or by the caller waited on) and served.
    Miss,
    /// A stale entry served (stale-while-revalidate or stale-if-error).
    Stale,
    /// The cache skipped: on purpose, or because the store failed.
    Bypass,
    /// A forced recompute.
    Refresh,
    /// The function ran (misses, refreshes, background refreshes, bypasses).
    Computation,
    /// The function raised.
    Error,
    /// A failed recompute answered with the value kept for stale-if-error.
    StaleIfError,
    /// A caller waited on another caller's computation in this process.
    SingleFlightWait,
    /// A caller waited on another process's computation lock.
    LockWait,
    /// A background refresh started.
    BackgroundRefresh,
    /// A store operation failed.
    StoreError,
    /// The circuit breaker opened.
    BreakerTrip,
    /// Served from a near (in-process) copy of a shared entry.
    NearHit,
    /// Looked for in the near cache and not found.
    NearMiss,
    /// A near copy dropped because the shared entry changed.
    NearInvalidation,
    /// A refresh started before expiry (probabilistic early refresh).
    EarlyRefresh,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 17] = [
        Counter::Hit,
        Counter::Miss,
        Counter::Stale,
        Counter::Bypass,
        Counter::Refresh,
        Counter::Computation,
        Counter::Error,
        Counter::StaleIfError,
        Counter::SingleFlightWait,
        Counter::LockWait,
        Counter::BackgroundRefresh,
        Counter::StoreError,
        Counter::BreakerTrip,
        Counter::NearHit,
        Counter::NearMiss,
        Counter::NearInvalidation,
        Counter::EarlyRefresh,
    ];

    /// How many counters there are.
    pub const COUNT: usize = Counter::ALL.len();

    /// The name exporters use (`hit`, `single_flight_waits`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Counter::Hit => "hit",
            Counter::Miss => "miss",
            Counter::Stale => "stale",
            Counter::Bypass => "bypass",
            Counter::Refresh => "refresh",
            Counter::Computation => "computations",
            Counter::Error => "errors",
            Counter::StaleIfError => "stale_if_error",
            Counter::SingleFlightWait => "single_flight_waits",
            Counter::LockWait => "lock_waits",
            Counter::BackgroundRefresh => "background_refreshes",
            Counter::StoreError => "store_errors",
            Counter::BreakerTrip => "breaker_trips",
            Counter::NearHit => "near_hits",
            Counter::NearMiss => "near_misses",
            Counter::NearInvalidation => "near_invalidations",
            Counter::EarlyRefresh => "early_refreshes",
        }
    }

    /// The counter named `name` (see [`Counter::as_str`]).
    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The counter of a served status.
    pub const fn of_status(status: crate::Status) -> Counter {
        match status {
            crate::Status::Hit => Counter::Hit,
            crate::Status::Miss => Counter::Miss,
            crate::Status::Stale => Counter::Stale,
            crate::Status::Bypass => Counter::Bypass,
            crate::Status::Refresh => Counter::Refresh,
        }
    }
}

/// Finite bucket bounds: 1 µs, 2 µs, 4 µs, … 2^25 µs (~33.5 s); one more
/// bucket holds the rest (+Inf).
pub const BUCKETS: usize = 26;

/// The upper bound of finite bucket `i`, in seconds (`le` in Prometheus).
pub fn bucket_bound_secs(i: usize) -> f64 {
    (1u64 << i) as f64 / 1e6
}

/// The bucket a duration falls in: the smallest `i` with
/// `duration <= 2^i µs`, or [`BUCKETS`] for longer ones.
fn bucket_of(duration: Duration) -> usize {
    let micros = duration.as_nanos().div_ceil(1000);
    if micros <= 1 {
        return 0;
    }
    let i = (128 - (micros - 1).leading_zeros()) as usize;
    i.min(BUCKETS)
}

/// A latency histogram on fixed log-scale buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket counts (not cumulative); the last is +Inf.
    pub buckets: [u64; BUCKETS + 1],
    /// Sum of the observed durations, in nanoseconds.
    pub sum_nanos: u64,
}

impl Histogram {
    /// Adds one observation.
    #[inline]
    pub fn observe(&self, duration: Duration) {
        self.buckets[bucket_of(duration)].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // Saturating (~584 years of nanoseconds): a wrapped sum would
        // read as a small one, and exporters subtract sums.
        let _ = self
            .sum_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(nanos))
            });
    }

    fn read(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }

    fn set(&self, to: &HistogramSnapshot) {
        for (bucket, value) in self.buckets.iter().zip(to.buckets) {
            bucket.store(value, Ordering::Relaxed);
        }
        self.sum_nanos.store(to.sum_nanos, Ordering::Relaxed);
    }
}

impl HistogramSnapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound (seconds) of the bucket holding quantile `q`
    /// (0..=1): an estimate that is never below the true value by more
    /// than the bucket's width. `None` without observations; `+Inf` when
    /// it falls past the last finite bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(if i < BUCKETS {
                    bucket_bound_secs(i)
                } else {
                    f64::INFINITY
                });
            }
        }
        Some(f64::INFINITY)
    }

    fn since(&self, base: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(base.buckets[i])),
            sum_nanos: self.sum_nanos.saturating_sub(base.sum_nanos),
        }
    }
}

/// The counters and histograms at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Indexed by `Counter as usize`.
    pub counters: [u64; Counter::COUNT],
    /// How long computations took.
    pub compute: HistogramSnapshot,
    /// How long shared-store lookups took.
    pub lookup: HistogramSnapshot,
}

impl Snapshot {
    /// One counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize]
    }

    fn since(&self, base: &Snapshot) -> Snapshot {
        Snapshot {
            counters: std::array::from_fn(|i| self.counters[i].saturating_sub(base.counters[i])),
            compute: self.compute.since(&base.compute),
            lookup: self.lookup.since(&base.lookup),
        }
    }
}

#[derive(Debug, Default)]
struct Cells {
    counters: [AtomicU64; Counter::COUNT],
    compute: Histogram,
    lookup: Histogram,
}

impl Cells {
    fn read(&self) -> Snapshot {
        Snapshot {
            counters: std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed)),
            compute: self.compute.read(),
            lookup: self.lookup.read(),
        }
    }
}

/// An event [`Stats::record`] cannot record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// A `"compute"` or `"lookup"` event without a duration >= 0.
    NoDuration(String),
    /// A name that is no counter's.
    Unknown(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::NoDuration(event) => {
                write!(f, "a {event:?} event needs its duration: seconds >= 0")
            }
            RecordError::Unknown(event) => {
                let names: Vec<_> = Counter::ALL.iter().map(|c| c.as_str()).collect();
                write!(
                    f,
                    "unknown statistics event {event:?}; expected \"compute\" or one of {}",
                    names.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// The statistics of one cached function or one store.
///
/// Invariants: `totals` only grow; `baseline` is a past reading of them
/// (set by [`Stats::reset`]), so `totals - baseline` never underflows
/// except for events racing a reset, which saturate at zero; `observed`
/// counts every observation of either histogram, so [`Stats::events`]
/// moves with each one.
#[derive(Debug, Default)]
pub struct Stats {
    totals: Cells,
    baseline: Cells,
    observed: AtomicU64,
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event: a relaxed atomic increment.
    #[inline]
    pub fn add(&self, counter: Counter) {
        self.totals.counters[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` events.
    pub fn add_n(&self, counter: Counter, n: u64) {
        self.totals.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Records how long one computation took.
    pub fn observe_compute(&self, duration: Duration) {
        self.totals.compute.observe(duration);
        self.observed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long one shared-store lookup took.
    pub fn observe_lookup(&self, duration: Duration) {
        self.totals.lookup.observe(duration);
        self.observed.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a computation, counting it, its time, and its failure.
    pub fn count_compute<T, E>(&self, compute: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let started = std::time::Instant::now();
        let computed = compute();
        self.computed(started, computed.is_err());
        computed
    }

    /// Counts one computation that started at `started` and ended now
    /// (an embedder that awaited it itself, an async task's, reports it
    /// here), and its failure.
    pub fn computed(&self, started: std::time::Instant, failed: bool) {
        self.add(Counter::Computation);
        self.observe_compute(started.elapsed());
        if failed {
            self.add(Counter::Error);
        }
    }

    /// Counts what a call served (see [`crate::Served`]): its status; the
    /// background refresh it claimed, and for a fresh hit, the early
    /// refresh it drew; and, when `led` (its own computation ran and
    /// failed, so a STALE answer is the value kept for stale-if-error),
    /// that fallback.
    pub fn served(&self, status: crate::Status, refresh_claimed: bool, led: bool) {
        self.add(Counter::of_status(status));
        if status == crate::Status::Stale && led {
            self.add(Counter::StaleIfError);
        }
        if refresh_claimed {
            if status == crate::Status::Hit {
                self.add(Counter::EarlyRefresh);
            }
            self.add(Counter::BackgroundRefresh);
        }
    }

    /// Records an event an embedder served itself (an async layer's own
    /// single-flight, a hit its event loop fetched), by name: a counter's
    /// ([`Counter::from_name`]), or `"compute"` (counted, and timed) or
    /// `"lookup"` (timed only) with its `seconds`.
    pub fn record(&self, event: &str, seconds: Option<f64>) -> Result<(), RecordError> {
        if event == "compute" || event == "lookup" {
            let seconds = seconds
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| RecordError::NoDuration(event.to_owned()))?;
            // Past what a `Duration` holds (1e300 s): the longest one,
            // which lands in the +Inf bucket (`from_secs_f64` panicked).
            let duration = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
            if event == "lookup" {
                self.observe_lookup(duration);
            } else {
                self.add(Counter::Computation);
                self.observe_compute(duration);
            }
            return Ok(());
        }
        let counter =
            Counter::from_name(event).ok_or_else(|| RecordError::Unknown(event.to_owned()))?;
        self.add(counter);
        Ok(())
    }

    /// How many events were counted and durations observed since the
    /// start: a cheap way for an exporter to skip functions with nothing
    /// new. Observations are in it too: a time is recorded apart from the
    /// event it comes with (after it, by an embedder that times a hit
    /// itself), and an exporter that read between the two would otherwise
    /// never see the time arrive.
    pub fn events(&self) -> u64 {
        let counted: u64 = self
            .totals
            .counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        counted + self.observed.load(Ordering::Relaxed)
    }

    /// Everything since the last [`Stats::reset`].
    pub fn snapshot(&self) -> Snapshot {
        self.totals.read().since(&self.baseline.read())
    }

    /// Everything since the start, unaffected by resets (for exporters
    /// that keep monotonic counters).
    pub fn totals(&self) -> Snapshot {
        self.totals.read()
    }

    /// Starts [`Stats::snapshot`] over from zero.
    pub fn reset(&self) {
        let now = self.totals.read();
        for (cell, value) in self.baseline.counters.iter().zip(now.counters) {
            cell.store(value, Ordering::Relaxed);
        }
        self.baseline.compute.set(&now.compute);
        self.baseline.lookup.set(&now.lookup);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorded_events_count_and_time_like_the_engines_own() {
        let stats = Stats::new();
        stats.record("hit", None).unwrap();
        stats.record("compute", Some(0.25)).unwrap();
        stats.record("lookup", Some(0.0)).unwrap();
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.get(Counter::Hit), 1);
        assert_eq!(snapshot.get(Counter::Computation), 1);
        assert_eq!(snapshot.compute.count(), 1);
        assert_eq!(snapshot.lookup.count(), 1);
        assert_eq!(
            stats.record("compute", Some(-1.0)),
            Err(RecordError::NoDuration("compute".into()))
        );
        assert_eq!(
            stats.record("lookup", None).unwrap_err().to_string(),
            "a \"lookup\" event needs its duration: seconds >= 0"
        );
        let unknown = stats.record("hits", None).unwrap_err().to_string();
        assert!(
            unknown.starts_with(
                "unknown statistics event \"hits\"; expected \"compute\" or one of hit, "
            ),
            "{unknown}"
        );
    }

    #[test]
    fn a_counted_computation_is_timed_and_its_failure_counted() {
        let stats = Stats::new();
        assert_eq!(stats.count_compute(|| Ok::<_, ()>(1)), Ok(1));
        assert_eq!(stats.count_compute(|| Err::<u8, _>("no")), Err("no"));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.get(Counter::Computation), 2);
        assert_eq!(snapshot.get(Counter::Error), 1);
        assert_eq!(snapshot.compute.count(), 2);
    }

    use super::*;

    #[test]
    fn a_served_call_counts_its_status_and_what_it_claimed() {
        let stats = Stats::new();
        stats.served(crate::Status::Hit, false, false);
        stats.served(crate::Status::Hit, true, false); // an early refresh drawn
        stats.served(crate::Status::Stale, true, false); // stale-while-revalidate
        stats.served(crate::Status::Stale, false, true); // its own computation failed
        stats.served(crate::Status::Miss, false, true);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.get(Counter::Hit), 2);
        assert_eq!(snapshot.get(Counter::Stale), 2);
        assert_eq!(snapshot.get(Counter::Miss), 1);
        assert_eq!(snapshot.get(Counter::EarlyRefresh), 1);
        assert_eq!(snapshot.get(Counter::BackgroundRefresh), 2);
        assert_eq!(snapshot.get(Counter::StaleIfError), 1);
    }

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1_000)), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1_001)), 1);
        assert_eq!(bucket_of(Duration::from_micros(2)), 1);
        assert_eq!(bucket_of(Duration::from_micros(3)), 2);
        assert_eq!(bucket_of(Duration::from_micros(1024)), 10);
        assert_eq!(bucket_of(Duration::from_micros(1025)), 11);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS);
        assert_eq!(bucket_bound_secs(10), 0.001024);
    }

    #[test]
    fn counts_reset_without_touching_totals() {
        let stats = Stats::new();
        stats.add(Counter::Hit);
        stats.add(Counter::Hit);
        stats.add_n(Counter::Miss, 3);
        stats.observe_compute(Duration::from_millis(3));
        assert_eq!(stats.snapshot().get(Counter::Hit), 2);
        assert_eq!(stats.snapshot().compute.count(), 1);
        stats.reset();
        assert_eq!(stats.snapshot(), Snapshot::default());
        stats.add(Counter::Hit);
        assert_eq!(stats.snapshot().get(Counter::Hit), 1);
        assert_eq!(stats.totals().get(Counter::Hit), 3);
        assert_eq!(stats.totals().get(Counter::Miss), 3);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let stats = Stats::new();
        for _ in 0..98 {
            stats.observe_lookup(Duration::from_micros(20)); // bucket 5: 32 µs
        }
        stats.observe_lookup(Duration::from_millis(3)); // bucket 12: 4.096 ms
        stats.observe_lookup(Duration::from_millis(3));
        let lookup = stats.snapshot().lookup;
        assert_eq!(lookup.count(), 100);
        assert_eq!(lookup.quantile(0.5), Some(0.000032));
        assert_eq!(lookup.quantile(0.99), Some(0.004096));
        assert_eq!(lookup.sum_nanos, 98 * 20_000 + 2 * 3_000_000);
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn a_duration_past_any_bound_lands_in_the_last_bucket_without_wrapping_the_sum() {
        // `Duration::from_secs_f64(1e300)` panicked in the library, and a
        // sum of two huge observations wrapped around to a small one.
        let stats = Stats::new();
        stats.record("compute", Some(1e300)).unwrap();
        stats.record("lookup", Some(f64::MAX)).unwrap();
        stats.observe_compute(Duration::MAX);
        stats.observe_compute(Duration::from_micros(3));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.get(Counter::Computation), 1);
        assert_eq!(snapshot.compute.buckets[BUCKETS], 2);
        assert_eq!(snapshot.compute.buckets[2], 1);
        assert_eq!(snapshot.compute.sum_nanos, u64::MAX);
        assert_eq!(snapshot.lookup.buckets[BUCKETS], 1);
        assert_eq!(snapshot.lookup.sum_nanos, u64::MAX);
        assert_eq!(snapshot.compute.quantile(1.0), Some(f64::INFINITY));
    }

    #[test]
    fn a_duration_observed_on_its_own_moves_the_events() {
        // An embedder counts a hit, then records the lookup's time: an
        // exporter that read the events between the two must see them move
        // again when the time arrives.
        let stats = Stats::new();
        stats.add(Counter::Hit);
        let before = stats.events();
        stats.observe_lookup(Duration::from_micros(3));
        assert_eq!(stats.events(), before + 1);
        stats.observe_compute(Duration::from_micros(3));
        assert_eq!(stats.events(), before + 2);
        stats.reset();
        assert_eq!(stats.events(), before + 2, "events count since the start");
    }

    #[test]
    fn names_round_trip() {
        for counter in Counter::ALL {
            assert_eq!(Counter::from_name(counter.as_str()), Some(counter));
            assert_eq!(Counter::ALL[counter as usize], counter);
        }
        assert_eq!(Counter::from_name("nope"), None);
    }
}
