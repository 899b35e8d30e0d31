"""A Django cache backend (LocMem) that can hold the thread in one of its
calls: where a test cancels a task whose worker thread is inside the
store's steps (``Steps.begin``, a lead's ``complete``)."""

from __future__ import annotations

import threading
from typing import ClassVar

from django.core.cache.backends.locmem import LocMemCache


class HeldCache(LocMemCache):
    """While ``hold(method, part)`` is on, the first call of ``method``
    (``"add"``, ``"set"``) on a key containing ``part`` does its work, sets
    ``reached`` and waits for ``let_go()``. Every ``delete`` is recorded in
    ``deleted`` (cleared by ``hold``)."""

    reached = threading.Event()
    go = threading.Event()
    held: tuple[str, str] | None = None
    #: ``(thread name, key)`` of each ``delete`` (who gave a lock back).
    deleted: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def hold(cls, method: str, part: str) -> None:
        cls.deleted.clear()
        cls.reached.clear()
        cls.go.clear()
        cls.held = (method, part)

    @classmethod
    def let_go(cls) -> None:
        cls.held = None
        cls.go.set()

    def _maybe_hold(self, method: str, key: str) -> None:
        cls = type(self)
        held = cls.held
        if held is not None and held[0] == method and held[1] in key:
            cls.held = None  # the first such call only
            cls.reached.set()
            assert cls.go.wait(30), "never let go"

    def add(self, key, value, timeout=None, version=None):
        added = super().add(key, value, timeout, version)
        self._maybe_hold("add", key)
        return added

    def set(self, key, value, timeout=None, version=None):
        super().set(key, value, timeout, version)
        self._maybe_hold("set", key)

    def delete(self, key, version=None):
        type(self).deleted.append((threading.current_thread().name, key))
        return super().delete(key, version)
