"""``threadpool``: the work runs on a thread pool of this process.

The save returns before the invalidation has run, so a read right after it
may still see the old entry for a moment. Nothing is durable: jobs not run
when the process exits are lost. The pool is made on first use and again
in a process forked after that (a pool's threads do not survive a fork).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, ClassVar

from restflow.caching.dispatchers.base import Dispatcher
from restflow.caching.dispatchers.jobs import Job
from restflow.caching.process_locks import ProcessLock

logger = logging.getLogger("restflow.caching")


class ThreadPoolDispatcher(Dispatcher):
    """Submits the jobs to a shared ``ThreadPoolExecutor``
    (``max_workers``, setting ``MAX_WORKERS``, default 4)."""

    name = "threadpool"
    config_keys = frozenset({"max_workers"})
    default_settings: ClassVar[dict[str, Any]] = {"MAX_WORKERS": 4}

    _pools: ClassVar[dict[tuple[int, int], ThreadPoolExecutor]] = {}
    _pending: ClassVar[set[Future]] = set()
    _lock = ProcessLock()

    def validate_config(self) -> None:
        super().validate_config()
        # The value in force: the rule's dispatcher_config, else the
        # MAX_WORKERS setting, else the default.
        workers = self.option("max_workers")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(
                f"threadpool max_workers must be an int >= 1; got {workers!r} (from "
                "dispatcher_config['max_workers'], else DISPATCHER_SETTINGS['threadpool']"
                "['MAX_WORKERS'])."
            )

    @classmethod
    def _pool(cls, workers: int) -> ThreadPoolExecutor:
        # One pool per size and per process: a forked child gets its own.
        key = (os.getpid(), workers)
        with cls._lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="restflow-invalidation"
                )
            return pool

    def dispatch(self, jobs: Sequence[Job]) -> None:
        from restflow.caching.tasks import run_cache_rules

        future = self._pool(int(self.option("max_workers"))).submit(
            run_cache_rules, list(jobs), dispatcher_name=self.name
        )
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._finished)

    @classmethod
    def _finished(cls, future: Future) -> None:
        with cls._lock:
            cls._pending.discard(future)
        error = future.exception()
        if error is not None:
            # Only failures the error policy lets through reach here; the
            # others were logged where they happened.
            logger.error("restflow: threadpool invalidation failed", exc_info=error)

    @classmethod
    def join(cls, timeout: float | None = None) -> bool:
        """Waits for the jobs submitted so far (for tests and shutdown);
        ``False`` if some were still running after ``timeout`` seconds."""
        with cls._lock:
            pending = set(cls._pending)
        return not wait(pending, timeout=timeout).not_done
