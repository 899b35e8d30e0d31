"""Knowing, instead of hoping, that callers wait on another's computation.

A single-flight test holds the leader's computation on an event and releases
it only once every other caller is parked on that computation. A caller
released a moment too early would arrive after the leader finished and be a
HIT (or compute again), so "wait a bit" makes such tests flaky on a loaded
machine and lets them pass without testing anything. These helpers poll (as
a hang guard, with a generous deadline) for the state itself: the engine
counts the callers that joined a computation as followers (sync threads and
async tasks alike, on every store), and a follower counted there gets the
leader's outcome whatever it does next.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from restflow import _engine

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


def following_calls(wrapper: object, *args: object, **kwargs: object) -> int:
    """How many callers follow the in-process computation of
    ``wrapper(*args, **kwargs)`` now (sync or async wrapper, any store)."""
    engine = getattr(wrapper, "_engine", wrapper)
    return engine.steps.waiters(args, kwargs)


def wait_until_waiting(count: int, what: Callable[[], int] = _engine.waiters) -> None:
    """Blocks until ``what()`` is at least ``count``; by default, the
    followers of every key of the memory store (a test that has one
    computation in flight)."""
    wait_until(lambda: what() >= count, f"{count} callers waiting on a leader")


async def until_waiting(count: int, wrapper: object, *args: object, **kwargs: object) -> None:
    """Yields to the loop until ``count`` callers follow the computation of
    ``wrapper(*args, **kwargs)``."""
    await until(lambda: following_calls(wrapper, *args, **kwargs) >= count, f"{count} waiting")


async def until_following(count: int) -> None:
    """Yields to the loop until ``count`` callers await a leader, over
    every key (the engine's count: memory-store callers, and async callers
    of shared stores)."""
    await until(lambda: _engine.waiters() >= count, f"{count} callers following")


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
