"""A stale read that another caller's whole refresh overtakes, for every
shared store.

Caller B reads the stale entry; before B tries to claim its refresh,
caller A claims it, recomputes, stores the new entry and frees the claim.
B must then not refresh a second time: one refresh per stale period across
processes (DESIGN §2). The two callers are two threads of one process: the
shared stores' claims are not deduplicated within a process, so their store
calls interleave as two processes' would. A :class:`ClaimGate` holds B
between its read and its claim, so the order is exact, not hoped for."""

from __future__ import annotations

import threading

from django.core.cache.backends.locmem import LocMemCache

from restflow.caching import CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes


class ClaimGate:
    """Holds the next attempt to claim a refresh lock until released."""

    def __init__(self) -> None:
        self._armed = False
        self._lock = threading.Lock()
        self.held = threading.Event()
        self.release = threading.Event()

    def arm(self) -> None:
        """Holds the next claim (from a fresh start: a gate may be reused)."""
        self.held.clear()
        self.release.clear()
        with self._lock:
            self._armed = True

    def pass_through(self) -> None:
        """Called before a refresh claim reaches the store: holds the first
        one after :meth:`arm`, lets every other one through."""
        with self._lock:
            hold, self._armed = self._armed, False
        if hold:
            self.held.set()
            assert self.release.wait(10), "the gate was never released"


#: The gate of :class:`GatedLocMemCache` (a Django cache is built from its
#: settings alone, so it cannot be handed one).
DJANGO_GATE = ClaimGate()


class GatedLocMemCache(LocMemCache):
    """LocMem whose refresh-lock ``add`` passes :data:`DJANGO_GATE` first."""

    def add(self, key, *args, **kwargs):
        if "restflow:refresh:" in key:
            DJANGO_GATE.pass_through()
        return super().add(key, *args, **kwargs)


def check_an_overtaken_stale_read_does_not_refresh_again(gate: ClaimGate, **options) -> None:
    """Runs the sequence on a function cached with ``options`` (``backend``),
    whose refresh claims pass ``gate``."""
    calls: list = []

    @cache_result(ttl=10, stale_while_revalidate=60, **options)
    def priced(x):
        calls.append(x)
        return len(calls)

    def served():
        value, meta = priced.get_with_metadata(1)
        return value, meta["cache_status"]

    with frozen_clock() as clock:
        assert served() == (1, CacheStatus.MISS)
        clock.advance(11)
        gate.arm()
        overtaken: list = []
        reader = threading.Thread(target=lambda: overtaken.append(served()))
        reader.start()
        # B has read the stale entry and is about to claim its refresh.
        assert gate.held.wait(10)
        # A claims it, recomputes, stores and frees the claim.
        assert served() == (1, CacheStatus.STALE)
        wait_for_refreshes()
        assert calls == [1, 1]
        gate.release.set()
        reader.join(10)
        assert overtaken == [(1, CacheStatus.STALE)]
        wait_for_refreshes()
        assert calls == [1, 1]  # no second refresh for the entry B read
        assert served() == (2, CacheStatus.HIT)
        # The next stale period is refreshed as before.
        clock.advance(11)
        assert served() == (2, CacheStatus.STALE)
        wait_for_refreshes()
        assert served() == (3, CacheStatus.HIT)
