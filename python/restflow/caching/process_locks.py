"""Locks that a forked child gets back unlocked.

gunicorn ``--preload`` and Celery's prefork pool fork a process whose other
threads may be inside restflow at that instant: registering a function,
naming a closure, recording a response's ``Vary`` variants. A plain
``threading.Lock`` held by such a thread is copied into the child locked,
and no thread in the child will ever release it, so the child's first use
waits forever. Every lock restflow keeps for the life of the process is a
:class:`ProcessLock`, which the child replaces with a fresh one (what the
standard library does for its own module locks). What the lock guarded may
have been mid-update in the parent; each user keeps its updates to single
assignments of whole values, so the child sees the state before or after.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

__all__ = ["ProcessLock"]

_live: weakref.WeakSet[ProcessLock] = weakref.WeakSet()


class ProcessLock:
    """A ``threading.Lock`` (or ``RLock`` with ``reentrant=True``) that is
    unlocked again in a forked child."""

    __slots__ = ("__weakref__", "_lock", "_reentrant")

    def __init__(self, *, reentrant: bool = False) -> None:
        self._reentrant = reentrant
        self._lock = self._make()
        _live.add(self)

    def _make(self) -> Any:
        return threading.RLock() if self._reentrant else threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def _renew(self) -> None:
        self._lock = self._make()


def _renew_after_fork() -> None:
    for lock in list(_live):
        lock._renew()


os.register_at_fork(after_in_child=_renew_after_fork)
