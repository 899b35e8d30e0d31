//! What the steps of a call (`crate::steps::Steps`) hand the async layer
//! (`restflow.caching.asynchronous`): three handles that only convert.
//!
//! * [`Lookup`]: a call served without computing (HIT or STALE), with the
//!   refresh this call claimed, if any.
//! * [`Flight`]: one caller's part in the in-process computation of a key
//!   ([`restflow_cache::Role`]): on the memory store the engine's own
//!   flight ([`restflow_cache::Engine::start`]), which sync callers of the
//!   key share; on a shared store the flight of the tasks of this process
//!   that miss one key, whose leading task takes the store's steps and
//!   shares their answer. The leader completes (or fails, or abandons) it;
//!   a follower registers a callback the leader's end runs (on whichever
//!   thread ends it) and then reads the outcome.
//! * [`Lead`]: the right to compute a value the caller awaits itself and
//!   hand it to the engine: the claim of a stale entry's background
//!   refresh, the token of a forced refresh, or a shared store's lock on a
//!   missed key. On a shared store its ends make round trips.
//!
//! The decisions (single-flight, hand-over, stale-if-error, the claims)
//! and their statistics are the engine's.

use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyBaseException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use restflow_cache::{
    Callback, Computed, Counter, GetError, Joined, LeaderGuard, MemoryRole, MemoryStore, Outcome,
    Owner, RefreshClaim, Role, RoleError,
};

use crate::core::Core;
use crate::runtime::{SharedErr, RUNTIME};
use crate::shared::{PyLead, SharedBackend};
use crate::stored::Stored;
use crate::wrapper::{raise, Reply as Served};

type PyClaim = RefreshClaim<Stored, SharedErr, MemoryStore<Stored>>;

/// `(value, metadata)`, what every step hands Python.
type Reply<'py> = (Py<PyAny>, Bound<'py, PyDict>);

/// A shared-store answer, `(value, metadata)`, as its leading task hands it on.
pub type Answer = Arc<(Py<PyAny>, Py<PyDict>)>;

fn misstep(error: RoleError) -> PyErr {
    PyRuntimeError::new_err(error.to_string())
}

/// A call the store answered without computing: HIT or STALE, and the
/// refresh this call claimed, if any (to run, then complete or release).
#[pyclass(module = "restflow._engine", name = "Lookup", frozen, freelist = 32)]
pub struct Lookup {
    #[pyo3(get)]
    value: Py<PyAny>,
    #[pyo3(get)]
    metadata: Py<PyDict>,
    #[pyo3(get)]
    refresh: Option<Py<Lead>>,
}

impl Lookup {
    /// `served` as Python sees it, with the refresh it claimed.
    pub(crate) fn new(py: Python<'_>, served: Served, refresh: Option<Lead>) -> PyResult<Self> {
        let (value, metadata) = served.with_metadata(py)?;
        Ok(Lookup {
            value,
            metadata: metadata.unbind(),
            refresh: refresh.map(|lead| Py::new(py, lead)).transpose()?,
        })
    }
}

/// The flight a [`Flight`] is part of.
enum Part {
    /// The engine's, on the memory store.
    Memory(MemoryRole<'static, Stored, SharedErr, MemoryStore<Stored>>),
    /// The tasks' of this process that miss a shared-store key.
    Tasks(Role<LeaderGuard<'static, Answer, SharedErr>, Answer, SharedErr>),
}

impl Part {
    /// This part as any flight's (see [`Joined`]).
    fn joined(&mut self) -> &mut dyn Joined {
        match self {
            Part::Memory(role) => role,
            Part::Tasks(role) => role,
        }
    }
}

/// One caller's part in the in-process computation of a key (see the
/// module documentation).
#[pyclass(module = "restflow._engine", name = "Flight")]
pub struct Flight {
    core: Arc<Core>,
    part: Part,
}

impl Flight {
    /// Joins the engine's computation of `key` (memory store) as task
    /// `task` of this thread's loop; `followed`: the caller followed a
    /// leader that abandoned.
    pub(crate) fn join(
        core: &Arc<Core>,
        key: &[u8],
        task: u64,
        followed: bool,
    ) -> PyResult<Flight> {
        let window = core.stale_if_error_window();
        let role =
            RUNTIME
                .engine
                .join_counted(key, window, Owner::task(task), followed, &core.stats);
        Flight::of(core, role.map(Part::Memory))
    }

    /// Joins the flight of the tasks that miss the shared-store entry
    /// `key`, as task `task`.
    pub(crate) fn join_tasks(core: &Arc<Core>, key: &[u8], task: u64) -> PyResult<Flight> {
        let flights = &RUNTIME.shared_flights;
        let role = flights.join_counted(key, Owner::task(task), &core.stats);
        Flight::of(core, role.map(Part::Tasks))
    }

    /// The flight, or why it could not be joined.
    fn of(core: &Arc<Core>, part: Result<Part, GetError<SharedErr>>) -> PyResult<Flight> {
        let part =
            part.map_err(|error| Python::attach(|py| raise(py, error, &core.function_id)))?;
        Ok(Flight {
            core: Arc::clone(core),
            part,
        })
    }

    /// The task that leads this flight of a shared-store key: the owner of
    /// the store's claim its `begin` takes, so that a call on the thread of
    /// that task's loop is refused instead of blocking the loop forever
    /// (see `SharedCache::begin`).
    pub(crate) fn leading_task(&self) -> Option<Owner> {
        match &self.part {
            Part::Tasks(Role::Lead(guard)) => Some(guard.owner()),
            _ => None,
        }
    }

    /// Ends the engine's flight (memory store) with `result`.
    fn end<'py>(
        &mut self,
        py: Python<'py>,
        result: Result<Computed<Stored>, SharedErr>,
    ) -> PyResult<Reply<'py>> {
        let Part::Memory(role) = &mut self.part else {
            return Err(misstep(RoleError::NotLeader));
        };
        let lead = role.take_lead().map_err(misstep)?;
        let served = lead
            .complete_counted(result, &self.core.stats)
            .map_err(|error| raise(py, error, &self.core.function_id))?;
        Served::Memory(served).with_metadata(py)
    }
}

#[pymethods]
impl Flight {
    /// Whether this caller computes the value (memory store), or serves
    /// the call for the other tasks (shared store).
    #[getter]
    fn leader(&mut self) -> bool {
        self.part.joined().is_leader()
    }

    /// Memory store: the leader's value, stored (as `decision` allows, see
    /// `Lead.complete`) and handed to every follower; `(value, metadata)`,
    /// MISS.
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

    /// Shared store: hands the leading task's answer to every follower.
    fn share(&mut self, value: Py<PyAny>, metadata: Py<PyDict>) -> PyResult<()> {
        let Part::Tasks(role) = &mut self.part else {
            return Err(misstep(RoleError::NotLeader));
        };
        let lead = role.take_lead().map_err(misstep)?;
        lead.complete(Ok(Arc::new((value, metadata))));
        Ok(())
    }

    /// The leader's computation raised `error`: every follower gets it.
    /// Memory store: or the value kept for stale-if-error, which this
    /// returns (STALE); raises `error` when none is kept. Shared store:
    /// returns `None`.
    fn fail<'py>(
        &mut self,
        py: Python<'py>,
        error: Bound<'py, PyBaseException>,
    ) -> PyResult<Option<Reply<'py>>> {
        let error = Arc::new(PyErr::from_value(error.into_any()));
        if let Part::Tasks(role) = &mut self.part {
            role.take_lead().map_err(misstep)?.complete(Err(error));
            return Ok(None);
        }
        self.end(py, Err(error)).map(Some)
    }

    /// The leader gives up (its task was cancelled): one follower takes
    /// over. Also what dropping an uncompleted leader does.
    fn abandon(&mut self) {
        self.part.joined().abandon_counted(&self.core.stats);
    }

    /// A follower: runs `callback()` once the leader's outcome is there,
    /// on the thread that produced it (at once if it is there already).
    /// An event loop's callback therefore hands over with
    /// `loop.call_soon_threadsafe`.
    fn on_done(slf: &Bound<'_, Self>, callback: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let wake = wake_with(callback.clone_ref(py));
        let waiting = slf.borrow_mut().part.joined().on_done(wake).is_ok();
        // The outcome is there: call back now, here (its error raised to
        // this caller), with the flight no longer borrowed, so the
        // callback may read it (`result()`).
        if !waiting {
            callback.call0(py)?;
        }
        Ok(())
    }

    /// A follower's answer once `on_done` called back: the leader's
    /// `(value, metadata)` (on a shared store, a copy of its metadata), or
    /// its error raised; `None` when the leader abandoned (join again:
    /// this caller may lead).
    fn result<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Reply<'py>>> {
        let stats = &self.core.stats;
        match &mut self.part {
            Part::Memory(role) => match restflow_cache::follow(role.outcome().map_err(misstep)?) {
                None => Ok(None),
                Some(Err(error)) => Err(raise(py, error, &self.core.function_id)),
                Some(Ok(served)) => {
                    stats.served(served.status, false, false);
                    Served::Memory(served).with_metadata(py).map(Some)
                }
            },
            Part::Tasks(role) => match role.outcome().map_err(misstep)? {
                Outcome::Abandoned => Ok(None),
                Outcome::Error(error) => Err(error.clone_ref(py)),
                Outcome::Value(answer) => {
                    let (value, metadata) = &*answer;
                    let metadata = metadata.bind(py).copy()?;
                    let status = metadata.get_item(crate::interned!(py, "cache_status"))?;
                    if let Some(status) = status {
                        let name = status.str()?.to_cow()?.to_ascii_lowercase();
                        crate::stats::record(stats, &name, None)?;
                    }
                    Ok(Some((value.clone_ref(py), metadata)))
                }
            },
        }
    }
}

/// What a [`Lead`] holds, on the store that handed it out.
pub(crate) enum Claim {
    /// A stale memory entry's refresh, or a forced refresh's token.
    Memory(PyClaim),
    /// A shared store's: the right to compute a missed key (its lock, or
    /// a live computation past a failing store), a forced refresh's, or a
    /// stale entry's background refresh.
    Shared(Py<SharedBackend>, PyLead),
}

impl Claim {
    /// Whether its end answers the caller (a shared store's miss or
    /// forced refresh), so the caller gets the computation's error too.
    fn answers(&self) -> bool {
        matches!(self, Claim::Shared(_, lead) if !lead.is_background())
    }
}

/// The right to compute a value the caller awaits itself, and to hand it
/// to the engine (see the module documentation). Completing it stores the
/// value; failing, releasing or dropping it gives the claim back at once
/// (a shared store's lock is freed, so another process computes without
/// waiting for it to expire; a stale value stays).
#[pyclass(module = "restflow._engine", name = "Lead")]
pub struct Lead {
    core: Arc<Core>,
    claim: Option<Claim>,
    started: Instant,
    /// A forced refresh (REFRESH), not a background one nor a miss.
    forced: bool,
}

impl Lead {
    /// The lead of `claim`; `forced`: a forced refresh's (counted as
    /// REFRESH; a memory one claims nothing).
    pub(crate) fn new(core: &Arc<Core>, claim: Claim, forced: bool) -> Self {
        Lead {
            core: Arc::clone(core),
            claim: Some(claim),
            started: Instant::now(),
            forced,
        }
    }

    fn take(&mut self) -> PyResult<Claim> {
        self.claim
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this lead has ended already"))
    }

    /// Ends `claim` with what its caller `computed` (`Err`: the
    /// computation raised; `None`: given back unrun). A store's miss is
    /// answered (stored, or the value kept for stale-if-error, or the error
    /// raised), a completed refresh answered REFRESH, anything else `None`.
    /// Counts no computation: its callers do, as each ends.
    fn end<'py>(
        &self,
        py: Python<'py>,
        claim: Claim,
        computed: Option<Result<Computed<Stored>, SharedErr>>,
    ) -> PyResult<Option<Reply<'py>>> {
        let core = &self.core;
        let served = match (claim, computed) {
            (Claim::Shared(backend, lead), Some(computed)) => {
                crate::shared::finish(py, core, &backend, lead, computed)?.map(Served::Shared)
            }
            (Claim::Shared(_, lead), None) => {
                py.detach(|| drop(lead)); // round trips: the claim given back
                None
            }
            (Claim::Memory(claim), Some(Ok(computed))) => {
                if self.forced {
                    core.stats.add(Counter::Refresh);
                }
                Some(Served::Memory(claim.complete(computed)))
            }
            (Claim::Memory(_), _) => None,
        };
        served.map(|served| served.with_metadata(py)).transpose()
    }
}

#[pymethods]
impl Lead {
    /// Stores the computed value; `decision` as the policy makes it
    /// (`None`: the wrapper's ttl; a `Decision`: `store`, `ttl`).
    /// Returns `(value, metadata)`: MISS (or BYPASS, STALE) for a shared
    /// store's miss, REFRESH for a refresh. Blocks on a shared store.
    #[pyo3(signature = (value, decision=None))]
    fn complete<'py>(
        &mut self,
        py: Python<'py>,
        value: Bound<'py, PyAny>,
        decision: Option<(bool, Option<f64>)>,
    ) -> PyResult<Reply<'py>> {
        let computed = self.core.decided(value, decision);
        let claim = self.take()?;
        let store = claim.answers();
        self.core
            .stats
            .computed(self.started, store && computed.is_err());
        let computed = match computed {
            Ok(computed) => Ok(computed),
            // A bad decision (a ttl that is no duration) fails a store's
            // miss, and gives a refresh's claim back.
            Err(error) if store => Err(Arc::new(error)),
            Err(error) => return self.end(py, claim, None).and(Err(error)),
        };
        let answered = self.end(py, claim, Some(computed))?;
        answered.ok_or_else(|| PyRuntimeError::new_err("this lead was answered with nothing"))
    }

    /// The computation raised `error`. A shared store's miss: the value
    /// kept for stale-if-error (STALE), or `error` raised. A refresh: the
    /// claim is given back, `None` returned, and a background refresh's
    /// error logged and counted (a forced one's caller has it), unless it
    /// declined (`RefreshDeclined`: nothing failed). Blocks on a shared
    /// store.
    fn fail<'py>(
        &mut self,
        py: Python<'py>,
        error: Bound<'py, PyBaseException>,
    ) -> PyResult<Option<Reply<'py>>> {
        let error = PyErr::from_value(error.into_any());
        let Some(claim) = self.claim.take() else {
            return Ok(None);
        };
        let background = !self.forced && !claim.answers();
        let declined = background && crate::core::declined(py, &error);
        self.core.stats.computed(self.started, !declined);
        if background {
            self.core.log_refresh_failure(py, &error);
        }
        self.end(py, claim, Some(Err(Arc::new(error))))
    }

    /// Gives the claim back (the task was cancelled). A round trip on a
    /// shared store: call it on a worker thread.
    fn release(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(claim) = self.claim.take() else {
            return Ok(());
        };
        if claim.answers() {
            self.core.stats.computed(self.started, false);
        }
        self.end(py, claim, None).map(drop)
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let Some(Claim::Shared(backend, lead)) = self.claim.take() else {
            return;
        };
        // Never ended: given back at once, so the next caller may claim it
        // without waiting for it to expire; on a refresh worker, because
        // giving it back is a round trip, and the thread that drops a lead
        // nobody awaits any more may be an event loop's (a task cancelled
        // while a worker ran `Steps.begin` for it). Refresh jobs run
        // attached; the round trip runs detached, the backend handle is
        // dropped attached.
        let give_back = move || {
            Python::attach(move |py| {
                py.detach(|| drop(lead));
                drop(backend);
            })
        };
        let refresher = RUNTIME.engine.refresher();
        if let Err(give_back) = refresher.try_spawn(Box::new(give_back)) {
            // The queue is full, or the interpreter is exiting: here.
            let _ = Python::try_attach(|_| give_back());
        }
    }
}

/// The callback a follower's flight runs when its leader ends: calls
/// `callback()` attached to Python, reporting (never raising) its error.
fn wake_with(callback: Py<PyAny>) -> Callback {
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
