"""``@cache_result`` on ``async def`` functions.

The event loop never waits on the cache:

* **memory store**: a lookup is a few hundred nanoseconds of Rust, done
  inline (a hit never leaves the loop thread). A miss joins the engine's
  flight for its key, the one sync callers of the key join too: the leader
  awaits the function and hands the value to the engine, the followers
  await a callback the leader's end runs. If the leader's task is
  cancelled, one of the followers takes over. A stale entry is served at
  once; the refresh the engine claimed for this call runs as a task on the
  loop, and hands its value back through the claim.
* **shared stores** (Redis, Django caches): a near-cache hit is served
  inline, a plain Redis hit may be read on the loop's own socket; anything
  else takes the engine's steps (``Steps.begin``): its round trips, its
  locks and its waits on other processes run on a worker thread
  (``restflow-async``), and end with a hit or with a ``Lead``, the claim to
  compute the value. The function then runs in the calling task, awaited
  like any coroutine (its context variables and ``current_task()`` are the
  caller's), and the lead is completed on a worker (the value stored, the
  lock freed). A cancelled task gives its lead back at once: another
  process takes the lock without waiting for it to expire, and another task
  of this process (they share one leader per key through the engine's
  flight, as on the memory store) takes over. A stale entry's refresh runs
  as a task on the loop, as on the memory store; no worker ever waits on
  the loop.

The wrapper has the sync wrapper's methods under ``a``-names
(``aget_with_metadata``, ``arefresh``, ...). Calling a sync-named method
raises a ``TypeError`` that names the async one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, TypeVar

from restflow import _engine
from restflow.caching.decorators import Policy
from restflow.caching.settings import cache_settings
from restflow.caching.status import CacheStatus
from restflow.caching.twins import arun

logger = logging.getLogger("restflow.caching")

#: Set in the task of an async background refresh while it awaits the
#: function (see :func:`in_background_refresh`).
_refreshing: ContextVar[bool] = ContextVar("restflow_background_refresh", default=False)


def in_background_refresh() -> bool:
    """Whether the function running now runs as a background refresh (a
    sync one on an engine refresh worker, or an async one's task), whose
    value replaces a stale entry: it may raise
    ``restflow._engine.RefreshDeclined`` to keep that entry instead."""
    return _refreshing.get() or _engine.in_background_refresh()


#: The wrapped function's parameters and result, for type checkers.
P = ParamSpec("P")
T = TypeVar("T")

#: Threads that make shared-store round trips for async callers; kept apart
#: from the loop's default executor so the function's own ``to_thread``
#: calls never wait behind cache lookups.
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()

#: Background refresh tasks (kept referenced until done).
_refreshes: set[asyncio.Task] = set()

#: A loop of restflow's own, on a daemon thread, made when first needed:
#: where a background refresh carries on when the caller's loop goes away
#: before it is done (``async_to_sync`` runs each call on a loop that ends
#: with the call, cancelling the refresh the call's stale read started).
_refresh_loop: asyncio.AbstractEventLoop | None = None

#: Refreshes handed over to that loop (kept referenced until done).
_handed_over: set[concurrent.futures.Future] = set()

#: Reentrant: a coroutine closed by the collector while this thread makes
#: the loop may hand its refresh over from inside that very call.
_refresh_loop_lock = threading.RLock()


class _LoopSockets:
    """One event loop's own connections to one Redis server (see
    :func:`_loop_hit`): at most ``POOL_SIZE`` open, as in each of the
    engine's pools, so that a burst of concurrent hits never opens a
    connection per task (and keeps them all); a hit that finds every one of
    them busy goes through the engine instead."""

    __slots__ = ("idle", "open")

    def __init__(self) -> None:
        self.idle: list[Any] = []  # connected, waiting for a lookup
        self.open = 0  # idle, in use, or being opened


#: The loop-driven Redis connections, per event loop, by Redis URL.
_loop_connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _LoopSockets]] = (
    weakref.WeakKeyDictionary()
)


def worker_pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            # Threads are made only as needed, and each holds one only for
            # round trips (and for waits on another process's computation,
            # bounded by WAIT_TIMEOUT): the functions run on the loop.
            _executor = ThreadPoolExecutor(max_workers=256, thread_name_prefix="restflow-async")
        return _executor


def _own_refresh_loop() -> asyncio.AbstractEventLoop:
    global _refresh_loop
    with _refresh_loop_lock:
        if _refresh_loop is None:
            _refresh_loop = asyncio.new_event_loop()
            # A daemon: at exit a refresh left running is abandoned, as the
            # engine's are (its claim expires), never waited for.
            threading.Thread(
                target=_refresh_loop.run_forever, name="restflow-refresh-loop", daemon=True
            ).start()
        return _refresh_loop


def _forget_pool_after_fork() -> None:
    global _executor, _executor_lock, _refresh_loop, _refresh_loop_lock
    _executor = None  # the parent's threads do not exist here
    _executor_lock = threading.Lock()
    _refresh_loop = None
    _refresh_loop_lock = threading.RLock()
    _refreshes.clear()
    _handed_over.clear()
    _loop_connections.clear()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _give_back(release: Callable[[], None]) -> None:
    """Gives a claim back (a round trip) on a worker, without waiting for
    it: called where the task is going away (cancelled). Inline when the
    pool takes no more work (the interpreter is exiting)."""
    try:
        worker_pool().submit(release)
    except RuntimeError:
        release()


def _going_away(error: BaseException) -> bool:
    """Whether ``error``, raised where a leader awaits the function, means
    that its task goes away without an answer, so that a follower must take
    over: the task was cancelled, or its coroutine closed (``GeneratorExit``:
    a pending task destroyed with its loop)."""
    if isinstance(error, GeneratorExit):
        return True
    if not isinstance(error, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # thrown in outside a loop: nothing to ask
        return True
    return task is None or task.cancelling() > 0


def _failed(error: BaseException) -> bool:
    """Whether ``error`` is the function's failure, handled as an
    ``Exception`` is (shared with the followers, answered with the value
    kept for stale-if-error, logged by a background refresh): an
    ``Exception``, or a ``CancelledError`` in a task that nobody cancelled
    (the function awaited a future someone else cancelled). Taken for a
    cancellation, each follower would take over and compute again in turn,
    and a refresh would fail silently, time after time. Anything else
    (``KeyboardInterrupt``, ``SystemExit``) ends the call as it is."""
    return isinstance(error, Exception) or (
        isinstance(error, asyncio.CancelledError) and not _going_away(error)
    )


def _wake(future: asyncio.Future) -> None:
    if not future.done():  # a follower cancelled meanwhile
        future.set_result(None)


def _waker(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> Callable[[], None]:
    """What a follower's flight calls when the leader ends, on the thread
    that ended it (a sync caller's, perhaps): wakes ``future`` on its loop."""

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(_wake, future)
        except RuntimeError:  # the loop is closed: nobody awaits any more
            pass

    return wake


async def _fly(
    steps: Any, args: tuple, kwargs: dict, lead: Callable[[Any], Awaitable[tuple[Any, dict]]]
) -> tuple[Any, dict]:
    r"""Serves a miss through the in-process flight for its key:
    ``steps.flight`` makes this task the leader, which ``lead``\ s, or a
    follower, which awaits the leader's end without blocking the loop (the
    engine calls back from whichever thread ends it). A follower whose
    leader was cancelled joins again, and may lead."""
    task = id(asyncio.current_task())  # unique while the task lives
    followed = False
    while True:
        flight = steps.flight(args, kwargs, task, followed)
        if flight.leader:
            return await lead(flight)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        flight.on_done(_waker(loop, done))
        await done
        served = flight.result()
        if served is not None:
            return served
        followed = True


#: Each sync wrapper method and the async one to use instead.
SYNC_TO_ASYNC_NAMES = (
    ("get_with_metadata", "aget_with_metadata"),
    ("refresh", "arefresh"),
    ("refresh_with_metadata", "arefresh_with_metadata"),
    ("bypass_cache", "abypass_cache"),
    ("bypass_cache_with_metadata", "abypass_cache_with_metadata"),
    ("get_cache_only", "aget_cache_only"),
    ("get_cached_metadata", "aget_cached_metadata"),
    ("delete_cache", "adelete_cache"),
    ("delete_by_prefix", "adelete_by_prefix"),
    ("invalidate_all", "ainvalidate_all"),
)


def refuses_sync_names(what: str) -> Callable[[type], type]:
    """Class decorator: every sync-named method raises a ``TypeError`` naming
    its async counterpart, because calling it would hand back a coroutine (or
    block the loop) where the caller expects a value."""

    def refusal(name: str, async_name: str) -> Callable[..., Any]:
        def refuse(self: Any, /, *args: Any, **kwargs: Any) -> Any:
            raise TypeError(
                f"{self.__qualname__} is {what}: use {async_name}() instead of {name}()"
            )

        refuse.__name__ = refuse.__qualname__ = name
        return refuse

    def install(cls: type) -> type:
        for name, async_name in SYNC_TO_ASYNC_NAMES:
            setattr(cls, name, refusal(name, async_name))
        return cls

    return install


@refuses_sync_names("an async def function")
class AsyncCachedWrapper(Generic[P, T]):
    """What ``@cache_result`` returns for an ``async def`` function."""

    is_cached_function = True

    def __init__(
        self,
        engine: Any,
        func: Callable[P, Awaitable[T]],
        *,
        policy: Policy | None,
        serves: Callable[[Any, tuple, dict], bool] | None = None,
    ) -> None:
        self._engine = engine
        #: The engine's lifecycle in steps (``restflow._engine.Steps``).
        self._steps = engine.steps
        self.func = func
        self._policy = policy  # None when what is stored never depends on the value
        #: Whether a call may be answered with the value found for its key
        #: (``result_cache``'s ``serves``); None: every call may.
        self._serves = serves
        functools.update_wrapper(self, func)
        # Lets inspect.iscoroutinefunction (3.12+), asyncio's, asgiref's and
        # so Django's see that calling the wrapper gives an awaitable.
        if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
            inspect.markcoroutinefunction(self)
        else:  # the marker asyncio.iscoroutinefunction looks for before 3.12
            self._is_coroutine = asyncio.coroutines._is_coroutine

    # -- binding ---------------------------------------------------------

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _BoundAsyncWrapper(self, instance)

    def __set_name__(self, owner: type, name: str) -> None:
        from restflow.caching.decorators import check_owner

        check_owner(self, owner, name)

    @property
    def key_constructor(self) -> Any:
        return self._engine.key_constructor

    @property
    def function_id(self) -> str:
        return self._engine.function_id

    def get_key_version(self) -> int:
        """``Meta.version`` of the key constructor (drf-restflow's name)."""
        return self._engine.key_constructor.get_version()

    def get_cache_key(self, /, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key string of a call (no I/O, so not async)."""
        return self._engine.get_cache_key(*args, **kwargs)

    async def _produce(
        self, args: tuple, kwargs: dict, *, background: bool = False
    ) -> tuple[Any, Any]:
        """The value and the policy's decision on it: the steps a sync
        function's engine runs, with async predicates and ttl awaited. A
        coroutine object for a value (a missing ``await``) is refused.
        ``background``: a background refresh's (see
        :func:`in_background_refresh`; a miss awaited inside one is not)."""
        refreshing = _refreshing.set(background)
        try:
            return await self._produced(args, kwargs)
        finally:
            try:
                _refreshing.reset(refreshing)
            except ValueError:
                # Closed outside its task's context (a pending task destroyed
                # with its loop): that context is gone, nothing to restore.
                pass

    async def _produced(self, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        value = await self.func(*args, **kwargs)
        if inspect.iscoroutine(value):
            # One caller could await it; cached or shared with the
            # followers, the others would get it already awaited.
            value.close()  # refused here: no "never awaited" warning on top
            raise TypeError(
                f"{self.function_id}() returned a coroutine object, which only one caller"
                " could await, so it is not cached: await it in the function"
                " (return await ...)"
            )
        policy = self._policy
        return value, None if policy is None else await arun(policy.steps(value, args, kwargs))

    async def _in_thread(self, method: Callable[..., Any], /, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(worker_pool(), functools.partial(method, *args))

    # -- serving -----------------------------------------------------------

    # A memory hit is served inline by __call__ and aget_with_metadata (no
    # extra coroutine frame, no loop lookup); the helpers below take the rest.

    async def _shared(self, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        """A call on a shared store (Redis, Django caches)."""
        steps = self._steps
        # A fresh hit in the near cache, or fetched by the loop itself: no
        # thread hand-off.
        hit = steps.near_hit(args, kwargs)
        if hit is not None:
            return hit
        settings = cache_settings()
        if settings["LOOP_SOCKET"]:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            hit = await _loop_hit(loop, steps, args, kwargs, settings["POOL_SIZE"])
            if hit is not None:
                steps.record("hit")
                steps.record("lookup", time.perf_counter() - started)
                return hit
        # Anything else through the engine's steps, one leading task per key
        # and process: the other tasks await its answer.
        return await _fly(
            steps, args, kwargs, lambda flight: self._lead_shared(flight, args, kwargs)
        )

    async def _lead_shared(self, flight: Any, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        """Serves a shared-store call for every task of this process that
        misses its key, and hands the answer on."""
        try:
            found = await self._in_thread(self._steps.begin, args, kwargs, flight)
            if isinstance(found, _engine.Lead):
                served = await self._run_lead(found, args, kwargs)
            else:
                if found.refresh is not None:  # this call refreshes it
                    self._spawn_refresh(found.refresh, found.value, args, kwargs)
                served = found.value, found.metadata
        except BaseException as error:
            if _going_away(error):
                flight.abandon()  # a follower takes over
            else:
                flight.fail(error)  # the followers fail with it too
            raise
        flight.share(*served)
        return served

    async def _run_lead(
        self,
        lead: Any,
        args: tuple,
        kwargs: dict,
        *,
        forced: bool = False,
        background: bool = False,
    ) -> Any:
        """Awaits the function in this task and hands the outcome to the
        engine's ``lead`` (inline on the memory store, on a worker on a
        shared one): a shared store's miss, a stale entry's background
        refresh, or a forced refresh (``forced``, whose caller gets the
        error). The engine stores the value, or answers a failed miss with
        the value kept for stale-if-error (or raises), or gives a failed
        refresh's claim back (logging a background one's error). A
        ``background`` refresh whose loop goes away first starts over on
        restflow's own loop, with its claim."""
        try:
            value, decision = await self._produce(args, kwargs, background=background)
        except BaseException as error:
            if background and _going_away(error) and self._hand_over(lead, args, kwargs):
                raise
            if not _failed(error):
                # Cancelled (or the process is exiting): given back now (off
                # the loop on a shared store), so another caller computes at
                # once.
                self._release(lead)
                raise
            kept = await self._maybe_thread(lead.fail, error)
            if forced:
                raise
            return kept if kept is None else self._serving_kept(kept)
        return await self._maybe_thread(lead.complete, value, decision)

    async def _compute(self, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        """A memory-store miss: led or followed in the engine's flight."""
        return await _fly(
            self._steps, args, kwargs, lambda flight: self._lead(flight, args, kwargs)
        )

    async def _lead(self, flight: Any, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        """Awaits the function for every caller of the key, and hands the
        outcome to the engine (which stores it, or falls back on the value
        kept for stale-if-error)."""
        try:
            value, decision = await self._produce(args, kwargs)
        except BaseException as error:
            if _failed(error):  # raises it, unless a value was kept
                return self._serving_kept(flight.fail(error))
            if _going_away(error):
                flight.abandon()  # a follower takes over
            else:
                flight.fail(error)  # an interrupt: the followers fail with it too
            raise
        return flight.complete(value, decision)

    def _serving_kept(self, served: tuple[Any, dict]) -> tuple[Any, dict]:
        """Logs that the function failed and ``served`` is the value kept
        for stale-if-error (called while its error is being handled)."""
        logger.warning(
            "restflow: %s() failed; serving the value kept for stale-if-error",
            self.__qualname__,
            exc_info=True,
        )
        return served

    def _spawn_refresh(self, claim: Any, value: Any, args: tuple, kwargs: dict) -> None:
        """A stale memory hit whose refresh the engine claimed for this
        call: one task on the loop, that hands the value back to the claim.
        A call that ``value`` may not answer (``serves``) would refresh it
        with the wrong request: its claim is given back, the entry stays."""
        serves = self._serves
        if serves is not None and not serves(value, args, kwargs):
            self._release(claim)
            return
        refresh = self._run_lead(claim, args, kwargs, background=True)
        task = asyncio.get_running_loop().create_task(refresh)
        _refreshes.add(task)
        task.add_done_callback(_refreshes.discard)

    def _hand_over(self, claim: Any, args: tuple, kwargs: dict) -> bool:
        """Runs a background refresh whose loop is going away (its task
        cancelled, or its coroutine closed) on restflow's own loop, so that
        the entry is refreshed all the same; whether it did (not when that
        loop is the one going away: the process is exiting)."""
        loop = _own_refresh_loop()
        try:
            if asyncio.get_running_loop() is loop:
                return False
        except RuntimeError:  # a coroutine closed outside its loop
            pass
        refresh = self._run_lead(claim, args, kwargs, background=True)
        future = asyncio.run_coroutine_threadsafe(refresh, loop)
        _handed_over.add(future)
        future.add_done_callback(_handed_over.discard)
        return True

    def _release(self, claim: Any) -> None:
        """Gives a claim back without waiting: inline on the memory store,
        on a worker (a round trip) on a shared one."""
        if self._steps.uses_memory():
            claim.release()
        else:
            _give_back(claim.release)

    async def _refresh(self, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        # The key now, before the computation.
        refresh = await self._maybe_thread(self._steps.begin_refresh, args, kwargs)
        return await self._run_lead(refresh, args, kwargs, forced=True)

    async def _maybe_thread(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Runs a step inline on the memory store, on a worker on a shared
        one (where it makes round trips)."""
        if self._steps.uses_memory():
            return method(*args, **kwargs)
        return await self._in_thread(functools.partial(method, **kwargs), *args)

    # -- the public async API ----------------------------------------------

    async def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = self._steps
        if not steps.uses_memory():
            return (await self._shared(args, kwargs))[0]
        found = steps.lookup(args, kwargs)
        if found is None:
            return (await self._compute(args, kwargs))[0]
        if found.refresh is not None:  # this call refreshes it
            self._spawn_refresh(found.refresh, found.value, args, kwargs)
        return found.value

    async def aget_with_metadata(self, /, *args: P.args, **kwargs: P.kwargs) -> tuple[T, dict]:
        """``(value, metadata)``: HIT, MISS or STALE."""
        steps = self._steps
        if not steps.uses_memory():
            return await self._shared(args, kwargs)
        found = steps.lookup(args, kwargs)
        if found is None:
            return await self._compute(args, kwargs)
        if found.refresh is not None:  # this call refreshes it
            self._spawn_refresh(found.refresh, found.value, args, kwargs)
        return found.value, found.metadata

    async def arefresh(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return (await self._refresh(args, kwargs))[0]

    async def arefresh_with_metadata(self, /, *args: P.args, **kwargs: P.kwargs) -> tuple[T, dict]:
        """Recomputes now and overwrites the entry: ``(value, metadata)``, REFRESH."""
        return await self._refresh(args, kwargs)

    async def abypass_cache(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            value = await self.func(*args, **kwargs)
        except Exception:
            self._steps.record("errors")
            raise
        finally:
            self._steps.record("compute", time.perf_counter() - started)
        self._steps.record("bypass")
        return value

    async def abypass_cache_with_metadata(
        self, /, *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T, dict]:
        return await self.abypass_cache(*args, **kwargs), {"cache_status": CacheStatus.BYPASS}

    def stats(self) -> dict[str, Any]:
        """This function's statistics (see :mod:`restflow.caching.statistics`)."""
        return self._engine.stats()

    def reset_stats(self) -> None:
        self._engine.reset_stats()

    def counters(self, totals: bool = False) -> dict[str, Any]:
        """The raw counters :meth:`stats` describes (no I/O, so not async)."""
        return self._engine.counters(totals)

    def counted_events(self) -> int:
        """How many events were ever counted (what the Prometheus flush
        checks before it reads the totals)."""
        return self._engine.counted_events()

    def counts(self) -> Any:
        """Those counters apart from the wrapper (``restflow._engine.Counts``),
        readable once the function is collected."""
        return self._engine.counts()

    def shared_backend(self) -> Any:
        """The shared store this function's calls use (``near_stats()``,
        ``near_sync()``, ``stats()``), or ``None`` on the memory store;
        claims nothing. Not async: it makes no round trip (its
        ``near_sync`` does, and blocks)."""
        return self._engine.shared_backend()

    async def aget_cache_only(self, /, *args: Any, **kwargs: Any) -> Any:
        return await self._maybe_thread(self._engine.get_cache_only, *args, **kwargs)

    async def aget_cached_metadata(self, /, *args: Any, **kwargs: Any) -> dict | None:
        return await self._maybe_thread(self._engine.get_cached_metadata, *args, **kwargs)

    async def adelete_cache(self, /, *args: P.args, **kwargs: P.kwargs) -> bool:
        return await self._maybe_thread(self._engine.delete_cache, *args, **kwargs)

    async def adelete_by_prefix(self, /, *args: Any, **kwargs: Any) -> None:
        return await self._maybe_thread(self._engine.delete_by_prefix, *args, **kwargs)

    async def ainvalidate_all(self) -> None:
        return await self._maybe_thread(self._engine.invalidate_all)

    def __repr__(self) -> str:
        return f"<AsyncCachedWrapper of {self.function_id}>"


async def _loop_hit(
    loop: asyncio.AbstractEventLoop, steps: Any, args: tuple, kwargs: dict, most: int
) -> tuple[Any, dict] | None:
    """A fresh Redis hit fetched on the loop's own socket (see the engine's
    ``LoopConnection``; at most ``most`` of them per loop and server), or
    ``None`` to let the engine answer."""
    fetch = steps.loop_fetch(args, kwargs)
    if fetch is None:
        return None
    backend = fetch.backend
    sockets = _loop_connections.setdefault(loop, {}).get(backend.url)
    if sockets is None:
        sockets = _loop_connections[loop][backend.url] = _LoopSockets()
    if sockets.idle:
        connection = sockets.idle.pop()
    elif sockets.open >= most:
        return None  # every one busy: the engine's path, with its own pool
    else:
        sockets.open += 1
        try:
            connection = await loop.run_in_executor(
                worker_pool(),
                _engine.LoopConnection.open,
                backend.url,
                max(backend.read_timeout, 0.5),
            )
        except BaseException as error:
            sockets.open -= 1
            if isinstance(error, Exception):
                return None  # the engine's path reports the fault
            raise
    answered = loop.create_future()
    fd = connection.fileno()
    #: Whether part of the answer came since the last wait began.
    progressed = False

    def readable() -> None:
        nonlocal progressed
        try:
            answer = connection.receive()
        except Exception as error:
            loop.remove_reader(fd)
            if not answered.done():
                answered.set_exception(error)
            return
        if answer is None:
            progressed = True
        else:
            loop.remove_reader(fd)
            if not answered.done():
                answered.set_result(answer)

    try:
        connection.send(fetch.command)
        loop.add_reader(fd, readable)
        # READ_TIMEOUT bounds each wait for the next bytes, not the whole
        # answer (as on the engine's lookups): a large entry that keeps
        # coming is read here, not given up on and fetched again.
        while not answered.done():
            await asyncio.wait((answered,), timeout=backend.read_timeout)
            if not answered.done() and not progressed:
                raise TimeoutError("no answer from Redis within READ_TIMEOUT")
            progressed = False
        answer = answered.result()
    except BaseException as error:
        # Failed, timed out, cancelled or closed: the answer may still come,
        # so the connection is done.
        loop.remove_reader(fd)
        sockets.open -= 1
        if isinstance(error, Exception):
            return None
        raise
    sockets.idle.append(connection)
    return backend.fresh_hit(answer, fetch.key)


class _BoundAsyncWrapper:
    """An async cached method fetched from an instance."""

    def __init__(self, wrapper: AsyncCachedWrapper, instance: Any) -> None:
        self.__wrapper = wrapper
        self.__self__ = instance
        self.__doc__ = wrapper.__doc__

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapper(self.__self__, *args, **kwargs)

    #: The methods that take a call's arguments, so the instance goes in
    #: front (the sync names too, whose ``TypeError`` names the async one).
    #: Anything else is the function's as a whole (``stats``, ``func``,
    #: ``ainvalidate_all``...), handed out as is.
    _PER_CALL = frozenset(
        {
            "get_cache_key",
            *(name for pair in SYNC_TO_ASYNC_NAMES for name in pair),
        }
        - {"invalidate_all", "ainvalidate_all"}
    )

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.__wrapper, name)
        if name in self._PER_CALL:
            return functools.partial(attribute, self.__self__)
        return attribute

    def __repr__(self) -> str:
        return f"<bound AsyncCachedWrapper of {self.__wrapper.function_id}>"


async def wait_for_async_refreshes(timeout: float = 10.0) -> None:
    """Finishes when every background refresh is done: the tasks on this
    loop, those handed over to restflow's own loop, and the engine's (sync
    callers' refreshes; waited for on a worker thread). Another loop's
    refresh tasks (another thread's) only that loop can await; those of a
    closed loop will never run again, and are forgotten here."""
    from restflow.caching.testing import wait_for_refreshes

    loop = asyncio.get_running_loop()
    here = []
    for task in list(_refreshes):
        if task.get_loop() is loop:
            here.append(task)
        elif task.get_loop().is_closed():
            _refreshes.discard(task)
    await asyncio.gather(*here, return_exceptions=True)
    handed_over = [asyncio.wrap_future(future) for future in list(_handed_over)]
    await asyncio.gather(*handed_over, return_exceptions=True)
    await loop.run_in_executor(None, wait_for_refreshes, timeout)
