"""Knowing, instead of hoping, that callers wait on another's computation.

A single-flight test holds the leader's computation on an event and releases
it only once every other caller is parked on that computation. A caller
released a moment too early would arrive after the leader finished and be a
HIT (or compute again), so "wait a bit" makes such tests flaky on a loaded
machine and lets them pass without testing anything. These helpers poll (as
a hang guard, with a generous deadline) for the state itself.
"""

from __future__ import annotations

import asyncio
import dis
import functools
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable

from restflow.caching.asynchronous import AsyncCachedWrapper

#: Hang guards: far beyond any wait on a loaded machine, well inside the
#: 30 s a test's run() allows.
DEADLINE = 10.0


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = DEADLINE, every: float = 0.001
) -> None:
    """Polls ``condition`` from a thread (every ``every`` s); raises if it
    is still false at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout} s")
        time.sleep(every)


async def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Yields to the loop until ``condition`` holds; raises at the deadline.

    Polls every millisecond rather than spinning the loop: on a shared
    store the condition may wait on worker threads that need the CPU."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout} s")
        await asyncio.sleep(0.001)


def parked_threads(threads: Iterable[threading.Thread], call: Callable[[], object]) -> int:
    """How many of ``threads`` are inside a call made by ``call`` (a lambda
    such as ``lambda: f.get_with_metadata(1)``) with the GIL released.

    Only for the memory store, where that means "waiting on the leader":
    the engine keeps the GIL from the moment a call enters the wrapper until
    it parks a follower on the leader's computation (detached), and the
    only instruction where a thread can hand the GIL over between starting
    ``call`` and that point is the lambda's own RESUME (CPython checks for a
    GIL hand-over at RESUME, backward jumps and after a call returns, never
    between loading the arguments and calling). This thread holds the GIL
    while it looks, so a thread it sees at the lambda's CALL is parked.
    (Shared stores run their round trips detached too: not for them.)
    """
    code = call.__code__
    calls = call_offsets(code)
    frames = sys._current_frames()
    count = 0
    for thread in threads:
        frame = frames.get(thread.ident)
        if frame is not None and frame.f_code is code and frame.f_lasti in calls:
            count += 1
    return count


@functools.cache
def call_offsets(code: types.CodeType) -> frozenset[int]:
    """Where ``code``'s call instructions are (looked up once per code)."""
    return frozenset(i.offset for i in dis.get_instructions(code) if i.opname.startswith("CALL"))


def wait_until_parked(
    threads: Iterable[threading.Thread], call: Callable[[], object], count: int
) -> None:
    """Blocks until ``count`` of ``threads`` wait on the leader (memory store)."""
    threads = list(threads)
    wait_until(lambda: parked_threads(threads, call) >= count, f"{count} threads parked")


def awaits_a_leader(task: asyncio.Task) -> bool:
    """Whether ``task`` is suspended as a follower in the async layer's
    single-flight: awaiting the leader's future, not computing itself."""
    awaited = task.get_coro()
    single_flight = AsyncCachedWrapper._single_flight.__code__
    while awaited is not None and hasattr(awaited, "cr_code"):
        if awaited.cr_code is single_flight:
            # A follower awaits the leader's future (through its iterator);
            # the leader awaits its own computation, a coroutine.
            inner = awaited.cr_await
            return inner is not None and not asyncio.iscoroutine(inner)
        awaited = awaited.cr_await
    return False


async def until_following(count: int, tasks: Iterable[asyncio.Task] | None = None) -> None:
    """Yields to the loop until ``count`` of ``tasks`` (default: every task
    on the loop, for requests a test client makes) await a leader."""
    chosen = None if tasks is None else list(tasks)

    def following() -> int:
        current = asyncio.all_tasks() if chosen is None else chosen
        return sum(awaits_a_leader(task) for task in current)

    await until(lambda: following() >= count, f"{count} tasks following")


class Gate:
    """Where a computation under test waits while the test holds it closed.

    Open by default, so the code it sits in runs freely in other tests;
    polled (see :func:`until`) so one gate serves any event loop."""

    def __init__(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def open(self) -> None:
        self.is_open = True

    async def passed(self) -> None:
        await until(lambda: self.is_open, "the gate opened", timeout=60)


def blocked_on_a_futex(thread: threading.Thread) -> bool:
    """Whether the kernel has ``thread`` asleep on a futex (a lock or
    condition variable wait), not waiting for a socket or runnable.

    For shared stores, where a thread is detached during its round trips
    too: one parked at its call and asleep on a futex after its lookup is
    waiting on the leader. Linux only (``/proc``); elsewhere it cannot tell
    and says yes.
    """
    return kernel_wait(thread, "futex")


def asleep(thread: threading.Thread) -> bool:
    """Whether ``thread`` is in a timed sleep (``time.sleep``, Rust's
    ``thread::sleep``: a backoff, say). Linux only; elsewhere says yes."""
    return kernel_wait(thread, "nanosleep")


def kernel_wait(thread: threading.Thread, where: str) -> bool:
    """Whether the kernel function ``thread`` sleeps in names ``where``."""
    try:
        with open(f"/proc/self/task/{thread.native_id}/wchan") as wchan:
            return where in wchan.read()
    except OSError:
        return True


def workers_parked_in_the_engine(prefix: str = "restflow-async") -> int:
    """How many of the async layer's worker threads wait, inside the
    engine, on another thread's computation: in the engine call their pool
    made (``self.fn(*self.args, **self.kwargs)``) and asleep on a futex,
    not on a socket (a shared store's round trip)."""
    from concurrent.futures.thread import _WorkItem

    code = _WorkItem.run.__code__
    return sum(
        parked_in(thread, code, "CALL_FUNCTION_EX")
        for thread in threading.enumerate()
        if thread.name.startswith(prefix)
    )


def parked_in(thread: threading.Thread, code: types.CodeType, opname: str) -> bool:
    """Whether ``thread`` waits on a leader (memory store) from inside a
    call that ``code`` makes with its only ``opname`` instruction: its
    innermost frame is there, detached (this thread holds the GIL) and
    asleep on a futex. As :func:`parked_threads`, for calls that run
    through library code rather than a test's lambda."""
    [offset] = [i.offset for i in dis.get_instructions(code) if i.opname == opname]
    frame = sys._current_frames().get(thread.ident)
    return (
        frame is not None
        and frame.f_code is code
        and frame.f_lasti == offset
        and blocked_on_a_futex(thread)
    )
