"""``@cache_result`` on ``async def`` functions over a real Redis (issue 5):
every a-method, single-flight across tasks, a loop that keeps running while
the store is slow, STALE and its refresh, faults. See tests/redis/conftest.py
for the server fixtures; tests/test_async.py has the memory-store side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import pytest
from django.test import AsyncClient, override_settings

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheBackendError,
    CacheStatus,
    KeyConstructor,
    cache_result,
)
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests import async_views
from tests.parking import Gate, following_calls, until, until_following
from tests.redis.conftest import redis_settings
from tests.test_async import (
    INVALIDATIONS,
    an_invalidation_during_a_computation_is_not_undone,
    hundred_tasks_on_a_cold_key_compute_once,
)
from tests.timeouts import PAUSED

calls: list = []


@cache_result(ttl=30)
async def profile(user_id, verbose=False):
    calls.append(user_id)
    await asyncio.sleep(0)
    return {"id": user_id, "n": len(calls)}


class AsyncTenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=30, key_constructor=AsyncTenantKey)
async def report(tenant, item):
    calls.append((tenant, item))
    await asyncio.sleep(0)
    return f"{tenant}/{item}/{len(calls)}"


class Accounts:
    def __init__(self, tag):
        self.tag = tag

    @cache_result(ttl=30)
    async def load(self, account_id):
        calls.append((self.tag, account_id))
        await asyncio.sleep(0)
        return {"id": account_id, "by": self.tag, "n": len(calls)}


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()
    async_views.calls.clear()


def run(coroutine, timeout=30):
    """Runs ``coroutine`` on a new loop; a hang fails after ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def lifetime(metadata):
    return datetime.fromisoformat(metadata["reset_at"]) - datetime.fromisoformat(
        metadata["cached_at"]
    )


# -- every a-method ------------------------------------------------------------------


def test_every_a_method_on_redis(redis):
    async def main():
        assert await profile.aget_cache_only(1) is CACHE_MISSING
        assert await profile.aget_cached_metadata(1) is None
        value, meta = await profile.aget_with_metadata(1)
        assert meta["cache_status"] is CacheStatus.MISS
        assert set(meta) == {"cache_status", "cached_at", "reset_at"}
        # The entry is in Redis, under the key string, signed.
        assert redis.get(profile.get_cache_key(1)).startswith(b"RFC3")
        again, meta2 = await profile.aget_with_metadata(1)
        assert (again, meta2) == (value, {**meta, "cache_status": CacheStatus.HIT})
        assert await profile(1) == value
        assert await profile.aget_cache_only(1) == value
        assert await profile.aget_cache_only(2) is CACHE_MISSING
        assert await profile.aget_cached_metadata(1) == meta2
        assert await profile.aget_cached_metadata(2) is None

        assert await profile.arefresh(1) == {"id": 1, "n": 2}
        refreshed, meta3 = await profile.arefresh_with_metadata(1)
        assert refreshed == {"id": 1, "n": 3}
        assert meta3["cache_status"] is CacheStatus.REFRESH
        assert await profile(1) == refreshed

        assert await profile.abypass_cache(1) == {"id": 1, "n": 4}
        bypassed, meta4 = await profile.abypass_cache_with_metadata(1)
        assert (bypassed, meta4) == ({"id": 1, "n": 5}, {"cache_status": CacheStatus.BYPASS})
        assert await profile(1) == refreshed

        assert await profile.adelete_cache(1) is True
        assert await profile.adelete_cache(1) is False
        assert await profile.aget_cache_only(1) is CACHE_MISSING
        assert redis.get(profile.get_cache_key(1)) is None

        await profile(1)
        await profile(2)
        await profile.ainvalidate_all()
        assert await profile.aget_cache_only(1) is CACHE_MISSING
        assert await profile.aget_cache_only(2) is CACHE_MISSING

    run(main())


def test_partitions_awipe_and_versions_on_redis(redis):
    def versioned(version):
        meta = type("Meta", (), {"namespace": "async-redis-versions", "version": version})
        cls = type("Versioned", (KeyConstructor,), {"x": ArgsKeyField("x"), "Meta": meta})
        cls.__qualname__ = "Versioned"
        return cls

    v1, v2 = versioned(1), versioned(2)

    @cache_result(ttl=30, key_constructor=v1)
    async def old(x):
        return ("old", x)

    @cache_result(ttl=30, key_constructor=v2)
    async def new(x):
        return ("new", x)

    async def main():
        await report("a", 1)
        await report("a", 2)
        await report("b", 1)
        await report("c", 1)
        await report.adelete_by_prefix(tenant="a")
        assert await report.aget_cache_only("a", 1) is CACHE_MISSING
        assert await report.aget_cache_only("a", 2) is CACHE_MISSING
        assert await report.aget_cache_only("b", 1) == "b/1/3"
        await report.adelete_by_prefix(tenant="b*")  # data, not a pattern
        assert await report.aget_cache_only("b", 1) == "b/1/3"
        assert await AsyncTenantKey.awipe(tenant="b") == 1
        assert await report.aget_cache_only("b", 1) is CACHE_MISSING
        assert await report.aget_cache_only("c", 1) == "c/1/4"
        assert await AsyncTenantKey.awipe() == 1
        assert await report.aget_cache_only("c", 1) is CACHE_MISSING

        await old(1)
        await new(1)
        assert await v1.adelete_previous_versions() == 0
        await v2.adelete_previous_versions()
        assert await old.aget_cache_only(1) is CACHE_MISSING
        assert await new.aget_cache_only(1) == ("new", 1)

    run(main())


def test_a_methods_on_a_bound_method_on_redis(redis):
    async def main():
        a, b = Accounts("a"), Accounts("b")
        value, meta = await a.load.aget_with_metadata(1)
        assert meta["cache_status"] is CacheStatus.MISS
        assert await b.load(1) == value
        assert await b.load.aget_cache_only(1) == value
        assert (await b.load.aget_cached_metadata(1))["cache_status"] is CacheStatus.HIT
        refreshed, meta2 = await b.load.arefresh_with_metadata(1)
        assert (refreshed["by"], meta2["cache_status"]) == ("b", CacheStatus.REFRESH)
        assert await a.load.arefresh(1) == {"id": 1, "by": "a", "n": 3}
        assert (await b.load.abypass_cache_with_metadata(1))[1]["cache_status"] is (
            CacheStatus.BYPASS
        )
        assert await a.load.abypass_cache(2) == {"id": 2, "by": "a", "n": 5}
        assert await a.load.adelete_cache(1) is True
        assert await a.load.aget_cache_only(1) is CACHE_MISSING
        await a.load(1)
        await a.load.adelete_by_prefix()
        assert await a.load.aget_cache_only(1) is CACHE_MISSING
        assert a.load.get_cache_key(1) == Accounts.load.get_cache_key(b, 1)

    run(main())


# -- single-flight -------------------------------------------------------------------


def test_concurrent_tasks_on_a_cold_key_compute_once_on_redis(redis):
    slow = hundred_tasks_on_a_cold_key_compute_once()
    assert redis.get(slow.get_cache_key(1)).startswith(b"RFC3")


def test_the_loop_keeps_running_while_tasks_wait_on_a_computation_over_redis(redis):
    computations = []
    gate = Gate()

    @cache_result(ttl=30)
    async def slow(x):
        computations.append(x)
        await gate.passed()
        return x

    async def main():
        gate.close()
        tasks = [asyncio.create_task(slow(1)) for _ in range(20)]
        # This task runs on the loop while 19 wait and the computation is in
        # flight: a waiter that blocked the loop would hang it here (and the
        # computation itself, which runs on the loop too).
        await until_following(19)
        gate.open()
        return await asyncio.gather(*tasks)

    assert run(main()) == [1] * 20
    assert computations == [1]


def test_cancelling_the_computing_task_on_redis_hands_the_computation_to_a_waiter(redis):
    """On a shared store, as on the memory store, the function runs in the
    leading task: cancelling it cancels the computation and gives the lock
    back; one waiter takes over and computes, the 9 others follow it, and
    every waiter gets its value."""
    computations = []
    gate = Gate()

    @cache_result(ttl=30)
    async def slow(x):
        computations.append(x)
        await gate.passed()
        return ("value", len(computations))

    async def main():
        gate.close()
        leader = asyncio.create_task(slow.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        waiters = [asyncio.create_task(slow.aget_with_metadata(1)) for _ in range(10)]
        await until_following(10)
        leader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader  # until it has let go of the flight
        await until(lambda: len(computations) == 2, "a waiter computing in its place")
        await until(lambda: following_calls(slow, 1) == 9, "the 9 others following it")
        gate.open()
        results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        return results, await slow.aget_with_metadata(1)

    results, (value, meta) = run(main())
    assert computations == [1, 1]
    assert [(v, m["cache_status"]) for v, m in results] == [(("value", 2), CacheStatus.MISS)] * 10
    assert (value, meta["cache_status"]) == (("value", 2), CacheStatus.HIT)


def test_nested_cached_calls_under_load_do_not_deadlock_on_redis(redis):
    """A cached coroutine that awaits another cached coroutine (a payload built
    from cached parts), under more concurrent cold keys than the worker pool
    has threads."""

    @cache_result(ttl=30)
    async def part(x):
        # A slow query: how long it takes decides nothing, only that the
        # outer computations wait on inner ones while all are in flight.
        await asyncio.sleep(0.01)
        return x

    @cache_result(ttl=30)
    async def whole(x):
        return await part(x) + 1

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(whole(x) for x in range(40))), 10)

    assert run(main()) == [x + 1 for x in range(40)]


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


# -- async predicates and ttl --------------------------------------------------------


def test_async_predicates_and_ttl_on_redis(redis):
    async def positive(result, x):
        await asyncio.sleep(0)
        return result > 0

    async def ttl_for(result, x):
        await asyncio.sleep(0)
        return result * 10

    @cache_result(ttl=ttl_for, cache_if=positive)
    async def signed(x):
        calls.append(x)
        return x

    async def is_negative(result, x):
        return result < 0

    @cache_result(ttl=30, cache_unless=is_negative)
    async def unless(x):
        calls.append(("unless", x))
        return x

    async def main():
        _, meta = await signed.aget_with_metadata(3)
        assert meta["cache_status"] is CacheStatus.MISS
        assert lifetime(meta) == timedelta(seconds=30)
        assert (await signed.aget_with_metadata(3))[1]["cache_status"] is CacheStatus.HIT
        await signed(-3)
        assert (await signed.aget_with_metadata(-3))[1]["cache_status"] is CacheStatus.MISS
        assert await signed.aget_cache_only(-3) is CACHE_MISSING
        await unless(-1)
        await unless(1)
        assert await unless.aget_cache_only(-1) is CACHE_MISSING
        assert await unless.aget_cache_only(1) == 1

    run(main())
    assert redis.get(signed.get_cache_key(3)) is not None
    assert redis.get(signed.get_cache_key(-3)) is None
    assert redis.get(unless.get_cache_key(-1)) is None
    assert calls == [3, -3, -3, ("unless", -1), ("unless", 1)]


# -- STALE and the refresh -----------------------------------------------------------


def test_stale_on_redis_is_served_at_once_and_refreshed(redis):
    computations = []
    gate = Gate()

    @cache_result(ttl=10)
    async def version(x):
        computations.append(x)
        await gate.passed()  # a refresh stays in flight until the stale read is served
        return len(computations)

    async def main():
        with frozen_clock() as clock:
            assert await version(1) == 1
            clock.advance(11)
            gate.close()
            value, meta = await version.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
            gate.open()
            await asyncio.to_thread(wait_for_refreshes)
            await wait_for_async_refreshes()
            value, meta = await version.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
            assert computations == [1, 1]

    run(main())


def test_a_failed_refresh_on_redis_keeps_the_old_value_and_logs(redis, caplog):
    computations = []
    failing = {"on": False}

    @cache_result(ttl=10)
    async def fragile(x):
        computations.append(x)
        await asyncio.sleep(0)
        if failing["on"]:
            raise ConnectionError("upstream down")
        return len(computations)

    async def main():
        with frozen_clock() as clock:
            assert await fragile(1) == 1
            clock.advance(11)
            failing["on"] = True
            value, meta = await fragile.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
            # The refresh is a task on this loop (its end a worker's round trip).
            await wait_for_async_refreshes()
            assert computations == [1, 1]
            value, meta = await fragile.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
            assert await fragile.aget_cache_only(1) == 1
            await wait_for_async_refreshes()
            # The failure gave the refresh back: a later stale read tries again.
            failing["on"] = False
            await fragile.aget_with_metadata(1)
            await wait_for_async_refreshes()
            return await fragile.aget_with_metadata(1)

    with caplog.at_level(logging.WARNING, logger="restflow.caching"):
        value, meta = run(main())
    assert (value, meta["cache_status"]) == (len(computations), CacheStatus.HIT)
    records = [r for r in caplog.records if r.name == "restflow.caching"]
    assert records, "the failed refresh was not logged on restflow.caching"
    assert any("upstream down" in r.getMessage() + str(r.exc_info) for r in records), records


def test_stale_if_error_on_redis(redis):
    failing = {"on": False}

    @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
    async def fragile(x):
        calls.append(x)
        await asyncio.sleep(0)
        if failing["on"]:
            raise ConnectionError("upstream down")
        return len(calls)

    async def main():
        with frozen_clock() as clock:
            assert await fragile(1) == 1
            # Past ttl and stale window, the recompute fails: the old value is
            # served as STALE instead of the exception.
            failing["on"] = True
            clock.advance(16)
            value, meta = await fragile.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
            clock.advance(61)
            with pytest.raises(ConnectionError):
                await fragile(1)

    run(main())


@pytest.mark.parametrize("invalidate", INVALIDATIONS)
def test_an_invalidation_during_a_computation_is_not_undone_on_redis(redis, invalidate):
    an_invalidation_during_a_computation_is_not_undone(invalidate)


# -- a Django async view ---------------------------------------------------------------


@pytest.mark.urls("tests.async_views")
def test_a_django_async_view_on_redis(redis):
    async def main():
        client = AsyncClient()
        async_views.gate.close()
        try:
            requests = [asyncio.create_task(client.get("/async-users/3/")) for _ in range(5)]
            await until_following(4)
        finally:
            async_views.gate.open()
        first = await asyncio.gather(*requests)
        second = await client.get("/async-users/3/")
        return first, second

    first, second = run(main())
    assert [r.status_code for r in first] == [200] * 5
    assert [r["X-Cache-status"] for r in first] == ["MISS"] * 5
    assert second["X-Cache-status"] == "HIT"
    assert {r.json()["version"] for r in [*first, second]} == {1}
    assert async_views.calls == [3]
    assert redis.get(async_views.get_user_payload.get_cache_key(3)) is not None


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
