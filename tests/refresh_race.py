"""A background refresh that an invalidation overtakes, for every store.

The refresh starts computing, the function is invalidated (its data
changed), then the refresh ends: its value predates the invalidation and
must never be served after it. The memory store keeps the invalidation;
the shared stores must agree with it."""

from __future__ import annotations

import threading

from restflow.caching import CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes


def check_an_invalidation_during_a_refresh_is_kept(**options) -> None:
    """Runs the sequence on a function cached with ``options`` (``backend``)."""
    calls: list = []
    entered, release = threading.Event(), threading.Event()
    block = {"on": False}

    @cache_result(ttl=10, stale_while_revalidate=60, **options)
    def slow(x):
        calls.append(x)
        if block["on"]:
            entered.set()
            assert release.wait(10)
        return len(calls)

    def served():
        value, meta = slow.get_with_metadata(1)
        return value, meta["cache_status"]

    with frozen_clock() as clock:
        assert served() == (1, CacheStatus.MISS)
        clock.advance(11)
        block["on"] = True
        assert served() == (1, CacheStatus.STALE)
        assert entered.wait(10)
        slow.invalidate_all()
        release.set()
        wait_for_refreshes()
        block["on"] = False
        assert served() == (3, CacheStatus.MISS)
        assert served() == (3, CacheStatus.HIT)
