//! What the steps of a call (`crate::steps::Steps`) hand the async layer
//! (`restflow.caching.asynchronous`).
//!
//! On the memory store a call looks up first (`Steps.lookup`: a
//! [`Lookup`], or `None` on a miss), then joins the key's flight
//! (`Steps.flight`: a [`Flight`]). The leader completes its flight with the
//! value it awaited, or fails it; a follower registers a callback the
//! leader's end runs (on whichever thread ends it: a sync caller of the
//! same key shares the flight) and then reads the outcome. A stale hit this
//! call must refresh carries the engine's claim ([`Refresh`]). These
//! objects only convert: the decisions (single-flight, hand-over,
//! stale-if-error, the claim) are `restflow_cache::Engine`'s.
//!
//! On a shared store, [`SharedFlight`] lets the tasks of a process that
//! miss one key share the answer of one leading task (with the same flight
//! primitive, hand-over and waiter count); that task takes the store's
//! steps (`Steps.begin`, `crate::steps::Lead`) and awaits the function
//! itself. A stale shared read's refresh is a [`Refresh`] too.

use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyBaseException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use restflow_cache::{
    Counter, Join, Lead, LeaderGuard, MemoryStore, Outcome, Owner, RefreshClaim, Served, Shared,
    Waiter,
};

use crate::core::Core;
use crate::runtime::SharedErr;
use crate::shared::SharedBackend;
use crate::stored::Stored;
use crate::wrapper::{raise, CachedWrapper};

type PyLead = Lead<'static, Stored, SharedErr, MemoryStore<Stored>>;
type PyClaim = RefreshClaim<Stored, SharedErr, MemoryStore<Stored>>;

/// `(value, metadata)`, what every step hands Python.
type Reply<'py> = (Py<PyAny>, Bound<'py, PyDict>);

/// A call the memory store answered without computing: HIT or STALE, and
/// the refresh this call claimed, if any (to run, then complete or drop).
#[pyclass(module = "restflow._engine", name = "Lookup", frozen, freelist = 32)]
pub struct Lookup {
    #[pyo3(get)]
    value: Py<PyAny>,
    #[pyo3(get)]
    metadata: Py<PyDict>,
    #[pyo3(get)]
    refresh: Option<Py<Refresh>>,
}

impl Lookup {
    pub(crate) fn new(
        value: Py<PyAny>,
        metadata: Py<PyDict>,
        refresh: Option<Py<Refresh>>,
    ) -> Self {
        Lookup {
            value,
            metadata,
            refresh,
        }
    }
}

/// Counts one computation this layer ran (as `Core::compute` does for the
/// ones the engine runs).
pub(crate) fn count_computation(core: &Core, started: Instant, failed: bool) {
    core.stats.add(Counter::Computation);
    core.stats.observe_compute(started.elapsed());
    if failed {
        core.stats.add(Counter::Error);
    }
}

/// The engine's claim on a stale entry's background refresh. Completing it
/// stores the new value under the key as it was when the claim was taken;
/// failing or dropping it gives the claim back (the stale value stays).
///
/// Also the token of a forced refresh (`arefresh`) on the memory store,
/// which claims nothing. On a shared store, completing, failing and
/// releasing make round trips: call them on a worker thread.
#[pyclass(module = "restflow._engine", name = "Refresh")]
pub struct Refresh {
    core: Arc<Core>,
    claim: Option<Claimed>,
    started: Instant,
    /// A forced refresh (counted as REFRESH), not a background one.
    forced: bool,
}

/// The claim a [`Refresh`] holds, on the store that took it.
enum Claimed {
    Memory(PyClaim),
    Shared(Py<SharedBackend>, restflow_cache::shared::RefreshClaim),
}

impl Refresh {
    pub(crate) fn new(core: Arc<Core>, claim: PyClaim, forced: bool) -> Self {
        if !forced {
            core.stats.add(Counter::BackgroundRefresh);
        }
        Refresh {
            core,
            claim: Some(Claimed::Memory(claim)),
            started: Instant::now(),
            forced,
        }
    }

    /// The background refresh a shared-store read claimed (counted by
    /// the read).
    pub(crate) fn shared(
        core: Arc<Core>,
        backend: Py<SharedBackend>,
        claim: restflow_cache::shared::RefreshClaim,
    ) -> Self {
        Refresh {
            core,
            claim: Some(Claimed::Shared(backend, claim)),
            started: Instant::now(),
            forced: false,
        }
    }

    /// Ends the claim with `computed` (`None`: nothing to store).
    fn end(
        &self,
        py: Python<'_>,
        claim: Claimed,
        computed: Option<restflow_cache::Computed<Stored>>,
    ) -> PyResult<Option<Served<Stored>>> {
        match (claim, computed) {
            (Claimed::Memory(claim), Some(computed)) => Ok(Some(claim.complete(computed))),
            (Claimed::Memory(claim), None) => {
                drop(claim);
                Ok(None)
            }
            (Claimed::Shared(backend, claim), computed) => {
                crate::shared::finish_refresh(py, &self.core, &backend, claim, computed)
                    .map(|()| None)
            }
        }
    }
}

#[pymethods]
impl Refresh {
    /// Stores the refreshed value; `decision` as the policy makes it
    /// (`None`: the wrapper's ttl; `(store, ttl_seconds_or_None)`).
    /// Returns `(value, metadata)`, REFRESH.
    #[pyo3(signature = (value, decision=None))]
    fn complete<'py>(
        &mut self,
        py: Python<'py>,
        value: Bound<'py, PyAny>,
        decision: Option<(bool, Option<f64>)>,
    ) -> PyResult<Reply<'py>> {
        let Some(claim) = self.claim.take() else {
            return Err(PyRuntimeError::new_err("this refresh has ended already"));
        };
        count_computation(&self.core, self.started, false);
        // A bad decision (a ttl that is no duration) drops the claim: given back.
        let computed = match self.core.decided(value.clone(), decision) {
            Ok(computed) => computed,
            Err(error) => {
                self.end(py, claim, None)?;
                return Err(error);
            }
        };
        let served = self.end(py, claim, Some(computed))?;
        if self.forced {
            self.core.stats.add(Counter::Refresh);
        }
        match served {
            Some(served) => CachedWrapper::with_metadata(py, &served),
            None => {
                let served = crate::shared::SharedServed {
                    value: value.unbind(),
                    status: restflow_cache::Status::Refresh,
                    stamps: None,
                };
                crate::wrapper::Reply::Shared(served).with_metadata(py)
            }
        }
    }

    /// The refresh raised `error`: the claim is given back, and a
    /// background refresh's error logged (a forced one's caller gets it).
    fn fail(&mut self, py: Python<'_>, error: Bound<'_, PyBaseException>) -> PyResult<()> {
        if let Some(claim) = self.claim.take() {
            count_computation(&self.core, self.started, true);
            if !self.forced {
                let error = PyErr::from_value(error.into_any());
                self.core.log_refresh_failure(py, &error);
            }
            self.end(py, claim, None)?;
        }
        Ok(())
    }

    /// The refresh was cancelled: the claim is given back.
    fn release(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.claim.take() {
            Some(claim) => self.end(py, claim, None).map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for Refresh {
    fn drop(&mut self) {
        if let Some(Claimed::Shared(backend, claim)) = self.claim.take() {
            // Never ended: given back here (a round trip, detached), so the
            // next read may claim it at once.
            let _ = Python::try_attach(|py| {
                let _ = crate::shared::finish_refresh(py, &self.core, &backend, claim, None);
            });
        }
    }
}

/// What joining a key's computation made a caller: the leader's token `L`
/// or a follower's waiter on outcome `T` (memory store and shared store
/// alike: both pyclasses below are this, with their own outcome).
enum Step<L, T> {
    /// It computes.
    Lead(L),
    /// Another caller computes.
    Follow(Waiter<T, SharedErr>),
    /// A leader had just stored the value (memory store).
    Served(Served<Stored>),
    /// Completed, failed or abandoned.
    Ended,
}

impl<L, T: Clone> Step<L, T> {
    fn is_leader(&self) -> bool {
        matches!(self, Step::Lead(_))
    }

    /// The leader's token, once.
    fn take_lead(&mut self) -> PyResult<L> {
        match std::mem::replace(self, Step::Ended) {
            Step::Lead(lead) => Ok(lead),
            other => {
                *self = other;
                Err(PyRuntimeError::new_err(
                    "only the leader of a flight completes it, once",
                ))
            }
        }
    }

    /// Drops the leader's token (one follower takes over); whether this
    /// was the leader.
    fn abandon(&mut self) -> bool {
        match std::mem::replace(self, Step::Ended) {
            Step::Lead(lead) => {
                drop(lead);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }

    /// Runs `callback()` once the leader's outcome is there, on the thread
    /// that produced it; at once for anything but a follower.
    fn on_done(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        let Step::Follow(waiter) = self else {
            return callback.call0(py).map(drop);
        };
        waiter.on_finish(wake_with(callback));
        Ok(())
    }
}

/// One caller's part in the computation of a key (memory store): the
/// leader's token, or a follower's handle on the leader's outcome.
#[pyclass(module = "restflow._engine", name = "Flight")]
pub struct Flight {
    core: Arc<Core>,
    step: Step<PyLead, Shared<Stored>>,
    started: Instant,
}

impl Flight {
    /// Joins the computation of `key` as task `task` of this thread's loop.
    pub(crate) fn join(
        py: Python<'_>,
        core: &Arc<Core>,
        key: &[u8],
        task: u64,
        followed: bool,
    ) -> PyResult<Flight> {
        let engine: &'static crate::runtime::PyEngine = &crate::runtime::RUNTIME.engine;
        let (_, fallback) = engine
            .cache()
            .lookup_keeping(key, core.stale_if_error_window());
        let owner = restflow_cache::Owner::task(task);
        let step = match engine.start(key, fallback, owner, followed) {
            Ok(restflow_cache::Start::Lead(lead)) => Step::Lead(lead),
            Ok(restflow_cache::Start::Follow(waiter)) => {
                core.stats.add(Counter::SingleFlightWait);
                Step::Follow(waiter)
            }
            Ok(restflow_cache::Start::Served(served)) => Step::Served(served),
            Err(error) => return Err(raise(py, error, &core.function_id)),
        };
        Ok(Flight {
            core: Arc::clone(core),
            step,
            started: Instant::now(),
        })
    }

    /// Counts what a served call is, and answers it.
    fn reply<'py>(&self, py: Python<'py>, served: &Served<Stored>) -> PyResult<Reply<'py>> {
        self.core.stats.add(Counter::of_status(served.status));
        CachedWrapper::with_metadata(py, served)
    }

    /// Ends the leader's flight with `result`.
    fn end<'py>(
        &mut self,
        py: Python<'py>,
        result: Result<restflow_cache::Computed<Stored>, SharedErr>,
    ) -> PyResult<Reply<'py>> {
        let lead = self.step.take_lead()?;
        count_computation(&self.core, self.started, result.is_err());
        let failed = result.is_err();
        let served = lead
            .complete(result)
            .map_err(|error| raise(py, error, &self.core.function_id))?;
        if failed {
            // Failed, and the value kept for stale-if-error answers.
            self.core.stats.add(Counter::StaleIfError);
        }
        self.reply(py, &served)
    }
}

#[pymethods]
impl Flight {
    /// Whether this caller computes the value.
    #[getter]
    fn leader(&self) -> bool {
        self.step.is_leader()
    }

    /// The leader's value: stored (as `decision` allows) and handed to
    /// every follower; `(value, metadata)`, MISS.
    #[pyo3(signature = (value, decision=None))]
    fn complete<'py>(
        &mut self,
        py: Python<'py>,
        value: Bound<'py, PyAny>,
        decision: Option<(bool, Option<f64>)>,
    ) -> PyResult<Reply<'py>> {
        let computed = self.core.decided(value, decision).map_err(Arc::new);
        self.end(py, computed)
    }

    /// The leader's computation raised `error`: every follower gets it, or
    /// the value kept for stale-if-error, which this returns (STALE);
    /// raises `error` when none is kept.
    fn fail<'py>(
        &mut self,
        py: Python<'py>,
        error: Bound<'py, PyBaseException>,
    ) -> PyResult<Reply<'py>> {
        self.end(py, Err(Arc::new(PyErr::from_value(error.into_any()))))
    }

    /// The leader gives up (its task was cancelled): one follower takes
    /// over. Also what dropping an uncompleted leader does.
    fn abandon(&mut self) {
        if self.step.abandon() {
            count_computation(&self.core, self.started, false);
        }
    }

    /// A follower: runs `callback()` once the leader's outcome is there,
    /// on the thread that produced it (at once if it is there already).
    /// An event loop's callback therefore hands over with
    /// `loop.call_soon_threadsafe`.
    fn on_done(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        self.step.on_done(py, callback)
    }

    /// A follower's answer once `on_done` called back: the leader's
    /// `(value, metadata)`, or its error raised; `None` when the leader
    /// abandoned (join again: this caller may lead).
    fn result<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Reply<'py>>> {
        let served = match std::mem::replace(&mut self.step, Step::Ended) {
            Step::Follow(waiter) => {
                let Some(outcome) = waiter.outcome() else {
                    self.step = Step::Follow(waiter);
                    return Err(PyRuntimeError::new_err("the leader has not finished yet"));
                };
                match restflow_cache::follow(outcome) {
                    None => return Ok(None),
                    Some(Err(error)) => return Err(raise(py, error, &self.core.function_id)),
                    Some(Ok(served)) => served,
                }
            }
            Step::Served(served) => served,
            other => {
                self.step = other;
                return Err(PyRuntimeError::new_err("only a follower reads the result"));
            }
        };
        self.reply(py, &served).map(Some)
    }
}

/// A shared-store answer, `(value, metadata)`, as its leader hands it on.
pub type Answer = Arc<(Py<PyAny>, Py<PyDict>)>;

/// One async caller's part in the computation of a shared-store key: the
/// leading task serves the call (the store's steps, the function awaited in
/// the task) and hands the answer on; the followers await it (a callback,
/// as for [`Flight`]).
#[pyclass(module = "restflow._engine", name = "SharedFlight")]
pub struct SharedFlight {
    core: Arc<Core>,
    step: Step<LeaderGuard<'static, Answer, SharedErr>, Answer>,
}

impl SharedFlight {
    /// Joins the flight of the shared-store entry `key` as task `task`.
    pub(crate) fn join(core: &Arc<Core>, key: &[u8], task: u64) -> PyResult<SharedFlight> {
        let flights = &crate::runtime::RUNTIME.shared_flights;
        let step = match flights.join_as(key, Owner::task(task)) {
            Join::Leader(guard) => Step::Lead(guard),
            Join::Follower(waiter) if waiter.is_own_flight() => {
                let error = restflow_cache::GetError::Recursive;
                return Err(Python::attach(|py| raise(py, error, &core.function_id)));
            }
            Join::Follower(waiter) => {
                core.stats.add(Counter::SingleFlightWait);
                Step::Follow(waiter)
            }
        };
        Ok(SharedFlight {
            core: Arc::clone(core),
            step,
        })
    }
}

#[pymethods]
impl SharedFlight {
    /// Whether this task serves the call.
    #[getter]
    fn leader(&self) -> bool {
        self.step.is_leader()
    }

    /// Hands the leader's answer to every follower.
    fn complete(&mut self, value: Py<PyAny>, metadata: Py<PyDict>) -> PyResult<()> {
        self.step
            .take_lead()?
            .complete(Ok(Arc::new((value, metadata))));
        Ok(())
    }

    /// Hands the leader's error to every follower.
    fn fail(&mut self, error: Bound<'_, PyBaseException>) -> PyResult<()> {
        let error = Arc::new(PyErr::from_value(error.into_any()));
        self.step.take_lead()?.complete(Err(error));
        Ok(())
    }

    /// The leader gives up (its task was cancelled): one follower takes over.
    fn abandon(&mut self) {
        self.step.abandon();
    }

    /// As [`Flight`]'s `on_done`.
    fn on_done(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        self.step.on_done(py, callback)
    }

    /// A follower's answer once `on_done` called back: the leader's
    /// `(value, metadata)` (a copy of its metadata), or its error raised;
    /// `None` when the leader abandoned (join again: this task may lead).
    fn result<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Reply<'py>>> {
        let Step::Follow(waiter) = &self.step else {
            return Err(PyRuntimeError::new_err("only a follower reads the result"));
        };
        let Some(outcome) = waiter.outcome() else {
            return Err(PyRuntimeError::new_err("the leader has not finished yet"));
        };
        self.step = Step::Ended;
        match outcome {
            Outcome::Abandoned => Ok(None),
            Outcome::Error(error) => Err(error.clone_ref(py)),
            Outcome::Value(answer) => {
                let (value, metadata) = &*answer;
                let metadata = metadata.bind(py).copy()?;
                let status = metadata.get_item(crate::interned!(py, "cache_status"))?;
                if let Some(status) = status {
                    let name = status.str()?.to_cow()?.to_ascii_lowercase();
                    crate::stats::record(&self.core.stats, &name, None)?;
                }
                Ok(Some((value.clone_ref(py), metadata)))
            }
        }
    }
}

/// The callback a follower's flight runs when its leader ends: calls
/// `callback()` attached to Python, reporting (never raising) its error.
fn wake_with(callback: Py<PyAny>) -> restflow_cache::Callback {
    let callback = ReleasedAttached(Some(callback));
    Box::new(move || {
        // `move`: the callback is released inside the attach (see
        // `ReleasedAttached`).
        Python::attach(move |py| {
            let callback = &callback;
            if let Some(Err(error)) = callback.0.as_ref().map(|c| c.call0(py)) {
                error.write_unraisable(py, None);
            }
        })
    })
}

/// A Python object released attached to the interpreter, whichever thread
/// drops its holder. A flight's callback may be dropped (or run) by a
/// thread that is detached; a `Py` dropped detached goes through pyo3's
/// reference pool, behind a process-wide lock that a fork at that instant
/// leaves held in the child, whose next decref then waits forever (a hung
/// child in tests/fork_worker.py, caught with gdb).
struct ReleasedAttached(Option<Py<PyAny>>);

impl Drop for ReleasedAttached {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // At interpreter exit there is nothing to attach to: the
            // object goes with the process.
            let _ = Python::try_attach(move |_| drop(object));
        }
    }
}
