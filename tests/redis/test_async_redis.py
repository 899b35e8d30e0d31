"""``@cache_result`` on ``async def`` functions over a Redis server that is
paused, killed or gone mid-call (issue 5): what only a Redis store does. What
every store does alike (every a-method, single-flight across tasks, STALE and
its refresh, predicates, a Django async view) runs on the ``store`` fixture
in tests/test_async.py; the lock and refresh-claim keys in
tests/redis/test_async_steps.py. See tests/redis/conftest.py for the server
fixtures."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from restflow.caching import CacheBackendError, CacheStatus, cache_result
from tests.parking import until
from tests.redis.conftest import redis_settings
from tests.test_async import run
from tests.timeouts import PAUSED

calls: list = []


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


# -- a slow store never blocks the loop ------------------------------------------------


def test_the_loop_runs_while_a_round_trip_waits_on_a_paused_redis(own_redis):
    """The lookup waits off the loop: this coroutine runs while it is stuck,
    and it is what lets the server go on (a lookup that blocked the loop
    would never see the answer before its 30 s read timeout)."""
    computations = []

    @cache_result(ttl=30)
    async def fetch(x):
        computations.append(x)
        return x * 2

    async def main():
        assert await fetch(1) == 2  # the pool holds a connection to the server
        own_redis.pause()
        try:
            lookup = asyncio.create_task(fetch.aget_with_metadata(1))
            await until(lambda: suspended(lookup), "the lookup waiting")
        finally:
            own_redis.resume()
        return await lookup

    settings = redis_settings(own_redis.url, READ_TIMEOUT=30.0)
    with override_settings(RESTFLOW_SETTINGS=settings):
        value, meta = run(main())
    assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
    assert computations == [1]


def suspended(task):
    """Whether ``task`` started and now awaits something (not done)."""
    return not task.done() and task.get_coro().cr_await is not None


def test_a_paused_redis_is_bypassed_by_an_async_call(own_redis):
    computations = []

    @cache_result(ttl=30)
    async def fetch(x):
        computations.append(x)
        return x * 2

    async def main():
        assert await fetch(1) == 2
        own_redis.pause()
        try:
            return await fetch.aget_with_metadata(1)
        finally:
            own_redis.resume()

    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, **PAUSED)):
        value, meta = run(main())
    # Past the read timeout the call is computed live.
    assert (value, meta["cache_status"]) == (2, CacheStatus.BYPASS)
    assert computations == [1, 1]


def test_a_killed_redis_bypasses_and_failure_mode_raise_raises(own_redis):
    @cache_result(ttl=30)
    async def fetch(x):
        calls.append(x)
        return x

    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        assert run(fetch(1)) == 1
        own_redis.stop()
        value, meta = run(fetch.aget_with_metadata(1))
        assert (value, meta["cache_status"]) == (1, CacheStatus.BYPASS)
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, FAILURE_MODE="raise")):
        calls.clear()
        with pytest.raises(CacheBackendError):
            run(fetch(2))
        assert calls == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_store_that_dies_while_the_leader_computes_serves_the_value_as_bypass(own_redis, kind):
    """The lock is taken, the function runs, and the server is gone when its
    value is to be written: the value is served, as BYPASS (it is in no
    store), never as MISS."""

    def compute(x):
        own_redis.stop()  # after the lock was taken, before the write
        return x * 2

    if kind == "sync":
        fetch = cache_result(ttl=30)(compute)
    else:

        async def computed(x):
            return compute(x)

        fetch = cache_result(ttl=30)(computed)
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        if kind == "sync":
            value, meta = fetch.get_with_metadata(21)
        else:
            value, meta = run(fetch.aget_with_metadata(21))
    assert (value, meta["cache_status"]) == (42, CacheStatus.BYPASS)
