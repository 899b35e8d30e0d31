//! Statistics as Python sees them: plain dicts, read by
//! `restflow.caching.statistics` (which adds ratios and percentiles) and by the
//! Prometheus exporter. The counters themselves live in the engine
//! ([`restflow_cache::stats`]).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use restflow_cache::stats::{bucket_bound_secs, HistogramSnapshot, Snapshot, BUCKETS};
use restflow_cache::{Counter, Stats};

/// `{"buckets": [per-bucket counts, +Inf last], "sum": seconds}`.
fn histogram<'py>(py: Python<'py>, h: &HistogramSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("buckets", h.buckets.to_vec())?;
    dict.set_item("sum", h.sum_nanos as f64 / 1e9)?;
    Ok(dict)
}

/// Every counter by name, and the `compute` and `lookup` histograms.
pub(crate) fn to_dict<'py>(py: Python<'py>, snapshot: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for counter in Counter::ALL {
        dict.set_item(counter.as_str(), snapshot.get(counter))?;
    }
    dict.set_item("compute", histogram(py, &snapshot.compute)?)?;
    dict.set_item("lookup", histogram(py, &snapshot.lookup)?)?;
    Ok(dict)
}

/// [`to_dict`] of `stats`: since the last reset, or since the start
/// (`totals`, for exporters that keep monotonic counters).
pub(crate) fn read<'py>(
    py: Python<'py>,
    stats: &Stats,
    totals: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let snapshot = if totals {
        stats.totals()
    } else {
        stats.snapshot()
    };
    to_dict(py, &snapshot)
}

/// One cached function's counters, apart from its wrapper
/// (`wrapper.counts()`): an exporter keeps one to read what a wrapper
/// counted up to its end once the wrapper has been collected, so its
/// exported totals never go down. It holds the counters alone, no Python
/// object, so keeping it keeps neither the function nor its wrapper alive.
#[pyclass(module = "restflow._engine", name = "Counts", frozen)]
pub(crate) struct Counts(pub(crate) Arc<Stats>);

#[pymethods]
impl Counts {
    /// As `CachedWrapper.counters`: since the last reset, or since the
    /// start (`totals`).
    #[pyo3(signature = (totals=false))]
    fn counters<'py>(&self, py: Python<'py>, totals: bool) -> PyResult<Bound<'py, PyDict>> {
        read(py, &self.0, totals)
    }

    /// As `CachedWrapper.counted_events`.
    fn counted_events(&self) -> u64 {
        self.0.events()
    }
}

/// Counts an event a Python layer served itself (the async layer's own
/// single-flight, a hit the event loop fetched); see [`Stats::record`].
pub(crate) fn record(stats: &Stats, event: &str, seconds: Option<f64>) -> PyResult<()> {
    stats
        .record(event, seconds)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The histograms' finite bucket bounds, in seconds (Prometheus `le`);
/// a last bucket, +Inf, follows them.
#[pyfunction]
pub(crate) fn stats_bucket_bounds() -> Vec<f64> {
    (0..BUCKETS).map(bucket_bound_secs).collect()
}
