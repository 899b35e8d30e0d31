"""Issue 10 on a real Redis: values are freed at once (item 2), ``ttl=0``
is never fresh (item 10) and the interpreter exits with an async
computation in flight (item 5). tests/test_value_lifetimes.py,
tests/test_ttl_zero.py and tests/test_async_exit.py have the memory side."""

from __future__ import annotations

import weakref

import pytest

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from restflow.caching.testing import wait_for_refreshes
from tests.test_async_exit import run_scenario

#: Calls per loop of the ttl=0 tests (each is a round trip).
CALLS = 300

#: Every `Tracked` object alive, made by a call or by unpickling.
ALIVE: weakref.WeakSet = weakref.WeakSet()


class Tracked:
    """A value that registers itself however it was made (unpickling does
    not call ``__init__``, but does call ``__new__``)."""

    def __new__(cls, *args):
        obj = super().__new__(cls)
        ALIVE.add(obj)
        return obj

    def __init__(self, n):
        self.n = n


@cache_result(ttl=600)
def tracked(n):
    return Tracked(n)


@pytest.mark.parametrize("entry_point", ["call", "keyword", "get_with_metadata"])
def test_values_served_from_redis_are_freed_at_once(redis, entry_point):
    call = {
        "call": lambda n: tracked(n),
        "keyword": lambda n: tracked(n=n),
        "get_with_metadata": lambda n: tracked.get_with_metadata(n),
    }[entry_point]
    for _ in range(2):  # misses, then hits
        for n in range(200):
            call(n)
    # Nothing holds a value: none may be alive, with no other engine call
    # made in between.
    assert len(ALIVE) == 0


@pytest.mark.parametrize("ttl", [0, lambda result, x: 0], ids=["zero", "callable_zero"])
def test_ttl_zero_on_redis_is_a_miss_on_every_call(redis, ttl):
    computed = []

    @cache_result(ttl=ttl, stale_while_revalidate=0)
    def f(x):
        computed.append(x)
        return x

    statuses = [f.get_with_metadata(1)[1]["cache_status"] for _ in range(CALLS)]
    assert statuses == [CacheStatus.MISS] * CALLS
    assert len(computed) == CALLS
    assert f.get_cache_only(1) is CACHE_MISSING
    assert f.get_cached_metadata(1) is None


def test_ttl_zero_on_redis_with_a_stale_window_is_stale_after_the_first_call(redis):
    @cache_result(ttl=0, stale_while_revalidate=60)
    def f(x):
        return x

    statuses = [f.get_with_metadata(1)[1]["cache_status"] for _ in range(CALLS)]
    wait_for_refreshes()
    assert statuses == [CacheStatus.MISS] + [CacheStatus.STALE] * (CALLS - 1)
    assert f.get_cached_metadata(1)["cache_status"] is CacheStatus.STALE


@pytest.mark.parametrize("ending", ["close", "stop"])
def test_exit_with_a_redis_computation_in_flight(redis, redis_server, ending):
    out = run_scenario(redis_server.url, ending)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["exiting"]
