"""``ttl=0`` and ttls shorter than a clock tick (issue 10, item 10).

The decision: ``ttl=0`` (or a callable ttl returning 0) stores the value
but it is never fresh. Without a stale window every call is a MISS that
computes; with one, every call after the first is served STALE while one
background refresh runs. Freshness is judged on the precise clock whenever
an entry is within the coarse clock's lag of its deadline, so a hit, a peek
(``get_cache_only`` / ``get_cached_metadata``) and the metadata's
``reset_at`` always agree. The ``store`` tests run on every store
(tests/stores.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes

CALLS = 2000


def _counted(**options):
    """A cached function of one argument, and the list of its computations."""
    computed = []

    @cache_result(**options)
    def f(x):
        computed.append(x)
        return x

    return f, computed


def calls_on(store) -> int:
    """Calls per loop: fewer on Redis, where each is a round trip."""
    return 300 if store.kind == "redis" else CALLS


@pytest.mark.parametrize("ttl", [0, lambda result, x: 0], ids=["zero", "callable_zero"])
def test_ttl_zero_is_a_miss_on_every_call(store, ttl):
    calls = calls_on(store)
    f, computed = _counted(ttl=ttl, stale_while_revalidate=0)
    statuses = [f.get_with_metadata(1)[1]["cache_status"] for _ in range(calls)]
    assert statuses == [CacheStatus.MISS] * calls
    for _ in range(calls):
        assert f(2) == 2  # the vectorcall fast path
    assert len(computed) == 2 * calls
    assert f.get_cache_only(1) is CACHE_MISSING
    assert f.get_cached_metadata(1) is None


def test_ttl_zero_with_a_stale_window_is_stale_after_the_first_call(store):
    calls = calls_on(store)
    f, _ = _counted(ttl=0, stale_while_revalidate=60)
    statuses = [f.get_with_metadata(1)[1]["cache_status"] for _ in range(calls)]
    wait_for_refreshes()
    assert statuses == [CacheStatus.MISS] + [CacheStatus.STALE] * (calls - 1)
    assert f.get_cached_metadata(1)["cache_status"] is CacheStatus.STALE
    assert f.get_cache_only(1) == 1


def test_ttl_zero_on_the_frozen_clock():
    f, computed = _counted(ttl=0, stale_while_revalidate=0)
    g, _ = _counted(ttl=0, stale_while_revalidate=30)
    with frozen_clock() as clock:
        assert [f.get_with_metadata(1)[1]["cache_status"] for _ in range(3)] == [
            CacheStatus.MISS
        ] * 3
        assert f.get_cache_only(1) is CACHE_MISSING
        assert [g.get_with_metadata(1)[1]["cache_status"] for _ in range(3)] == [
            CacheStatus.MISS,
            CacheStatus.STALE,
            CacheStatus.STALE,
        ]
        wait_for_refreshes()
        clock.advance(29.999)
        assert g.get_cached_metadata(1)["cache_status"] is CacheStatus.STALE
    assert len(computed) == 3


def test_a_ttl_shorter_than_a_tick_on_the_frozen_clock():
    f, computed = _counted(ttl=0.001, stale_while_revalidate=0)
    with frozen_clock() as clock:
        f(1)
        clock.advance(0.000999)
        assert f.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT
        assert f.get_cached_metadata(1)["cache_status"] is CacheStatus.HIT
        clock.advance(0.000001)
        assert f.get_cache_only(1) is CACHE_MISSING
        assert f.get_with_metadata(1)[1]["cache_status"] is CacheStatus.MISS
    assert len(computed) == 2


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_a_hit_is_never_served_past_reset_at_on_the_real_clock():
    """A 3 ms ttl, shorter than or close to a coarse clock tick: every HIT
    must have been asked for before the entry's ``reset_at``. Compared in
    whole microseconds, as the engine's stamps are: a float timestamp has
    only ~0.24 µs of resolution at today's dates, enough to put a call asked
    just before ``reset_at`` on or after it."""
    f, _ = _counted(ttl=0.003, stale_while_revalidate=0)
    late_hits = []
    hits = {"call": 0, "peek": 0}
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        for how, ask in (
            ("call", lambda: f.get_with_metadata(1)[1]),
            ("peek", lambda: f.get_cached_metadata(1)),
        ):
            asked_at = time.time_ns() // 1000
            metadata = ask()
            if metadata is not None and metadata["cache_status"] is CacheStatus.HIT:
                hits[how] += 1
                reset_at = _micros(datetime.fromisoformat(metadata["reset_at"]))
                if asked_at >= reset_at:
                    late_hits.append((how, asked_at, reset_at))
    assert hits["call"] > 0 and hits["peek"] > 0
    assert late_hits == []
