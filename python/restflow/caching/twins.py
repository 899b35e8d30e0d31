"""One body for a sync function and its async twin.

Several steps exist for sync callers and for ``async def`` ones and differ
only where the async one awaits: deciding whether a result is stored
(``cache_if`` / ``cache_unless`` / a callable ``ttl``, which may be
``async def`` on an async function), rendering a view's response, serving a
response call. Each is written once, as a generator that *yields* whatever
it would await (a call's result, which is a plain value for sync callers and
may be a coroutine for async ones) and gets the value back::

    def steps(predicate, value):
        keep = yield predicate(value)
        return bool(keep)

    run(steps(is_small, 3))           # sync callers
    await arun(steps(ais_small, 3))   # async callers: awaitables are awaited

The two drivers are all that differs, so the twins cannot drift apart. The
drivers are hand-written because they are a few lines of restflow's own
plumbing; nothing here runs on a hit of ``@cache_result``.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["Steps", "arun", "run"]

T = TypeVar("T")

#: A step function's generator: yields what it needs resolved, gets the
#: value back, and returns its result.
Steps = Generator[Any, Any, T]


def run(steps: Steps[T]) -> T:
    """Drives ``steps`` for a sync caller: each yielded value is already the
    value (the sync callables it called returned it) and goes straight back."""
    value = None
    try:
        while True:
            value = steps.send(value)
    except StopIteration as done:
        return done.value


async def arun(steps: Steps[T]) -> T:
    """Drives ``steps`` for an async caller: a yielded awaitable is awaited
    and its result sent back (anything else goes back as it is). An
    exception the await raises is thrown into ``steps`` at its ``yield``, so
    its ``try``/``finally`` and ``with`` blocks behave as around an ``await``."""
    send: Any = steps.send
    value: Any = None
    while True:
        try:
            wanted = send(value)
        except StopIteration as done:
            return done.value
        try:
            value = (await wanted) if inspect.isawaitable(wanted) else wanted
            send = steps.send
        except BaseException as error:  # CancelledError too: the steps see it
            send, value = steps.throw, error
