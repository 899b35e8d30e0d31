"""``asyncio``: the work becomes a task of the application's event loop.

Async Django code saves through ``sync_to_async`` (``await obj.asave()``),
so the signal, and the commit, happen on a worker thread; the loop that
awaits them is found through asgiref, which records it for that thread.
The jobs are handed to that loop and the save returns at once. They run in
the loop's default executor, not on the loop: a rule that rewarms calls
the cached function, which may query the database, and Django refuses
database calls on an event loop. Where no loop is waiting (a sync view, a
management command) the jobs run inline.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import ClassVar

from restflow.caching.dispatchers.base import Dispatcher
from restflow.caching.dispatchers.jobs import Job

logger = logging.getLogger("restflow.caching")


def _event_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running on this thread, or the one awaiting this
    ``sync_to_async`` thread; ``None`` when there is neither."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:
        return None
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(local, "main_event_loop", None)
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


class AsyncIODispatcher(Dispatcher):
    """Runs the jobs as a task of the awaiting event loop, or inline without one."""

    name = "asyncio"
    config_keys = frozenset()  # takes no options: any dispatcher_config is a mistake
    supports_batching = False

    # A loop keeps only weak references to its tasks: hold them until done.
    _tasks: ClassVar[set[asyncio.Task]] = set()

    def dispatch(self, jobs: Sequence[Job]) -> None:
        from restflow.caching.tasks import run_cache_rules

        loop = _event_loop()
        if loop is None:
            run_cache_rules(jobs, dispatcher_name=self.name)
            return
        jobs = list(jobs)
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if running_here:
            self._start(jobs)
        else:
            loop.call_soon_threadsafe(self._start, jobs)

    def _start(self, jobs: list[Job]) -> None:
        from restflow.caching.tasks import run_cache_rules

        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(run_cache_rules, jobs, dispatcher_name=self.name)
        )
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    @classmethod
    def _finished(cls, task: asyncio.Task) -> None:
        cls._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Only failures the error policy lets through reach here.
            logger.error("restflow: asyncio invalidation failed", exc_info=task.exception())

    @classmethod
    async def join(cls) -> None:
        """Waits for the jobs handed to the running loop so far (for tests and
        shutdown)."""
        # Jobs handed over from another thread start on the next loop turn.
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        pending = [task for task in cls._tasks if task.get_loop() is loop]
        if pending:
            await asyncio.wait(pending)
