"""``@cache_result`` on ``async def`` functions (issue 5).

What every store does alike runs on the ``store`` fixture (tests/stores.py:
memory, a Django cache, the Redis servers), once instead of a copied suite
per store (issue 11); the rest on the memory store. What only a Redis store
does (a paused or killed server, its lock and refresh-claim keys) is in
tests/redis/test_async_redis.py and tests/redis/test_async_steps.py.

No pytest-asyncio: every test is a sync function that runs its coroutine with
``asyncio.run`` (through :func:`run`, which also bounds it in time so a hang
fails instead of stalling the suite).
"""

import asyncio
import contextvars
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import AsyncClient

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheStatus,
    DefaultKeyConstructor,
    KeyConstructor,
    cache_result,
)
from restflow.caching.asynchronous import AsyncCachedWrapper, wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests import async_views
from tests.parking import DEADLINE, Gate, until, until_waiting

ROOT = Path(__file__).resolve().parents[1]

calls: list = []


@cache_result(ttl=60)
async def lookup(user_id, verbose=False):
    """Looks a user up."""
    calls.append((user_id, verbose))
    await asyncio.sleep(0)
    return {"id": user_id, "n": len(calls)}


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=60, key_constructor=TenantKey)
async def report(tenant, item):
    calls.append((tenant, item))
    await asyncio.sleep(0)
    return f"{tenant}/{item}/{len(calls)}"


class Profiles:
    def __init__(self, tag):
        self.tag = tag

    @cache_result(ttl=60)
    async def load(self, user_id):
        calls.append((self.tag, user_id))
        await asyncio.sleep(0)
        return {"id": user_id, "by": self.tag, "n": len(calls)}


class MoreProfiles(Profiles):
    pass


A_METHODS = [
    "aget_with_metadata",
    "arefresh",
    "arefresh_with_metadata",
    "abypass_cache",
    "abypass_cache_with_metadata",
    "aget_cache_only",
    "aget_cached_metadata",
    "adelete_cache",
    "adelete_by_prefix",
    "ainvalidate_all",
]
SYNC_NAMES = [name[1:] for name in A_METHODS]


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()
    async_views.calls.clear()


def run(coroutine, timeout=30):
    """Runs ``coroutine`` on a new loop; a hang fails after ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def lifetime(metadata):
    """reset_at - cached_at of a metadata dict."""
    return datetime.fromisoformat(metadata["reset_at"]) - datetime.fromisoformat(
        metadata["cached_at"]
    )


# -- the wrapper ------------------------------------------------------------------


def test_cache_result_on_async_def_gives_an_async_wrapper():
    assert isinstance(lookup, AsyncCachedWrapper)
    assert lookup.__name__ == "lookup"
    assert lookup.__doc__ == "Looks a user up."
    assert inspect.iscoroutinefunction(lookup.func)
    for name in A_METHODS:
        assert inspect.iscoroutinefunction(getattr(lookup, name)), name


def test_awaiting_returns_the_value_and_a_hit_is_never_a_coroutine(store):
    async def main():
        first = await lookup(1)
        second = await lookup(1)
        return first, second

    first, second = run(main())
    assert first == second == {"id": 1, "n": 1}
    assert not inspect.isawaitable(second)
    assert calls == [(1, False)]


def test_an_async_wrapper_reads_its_counters_and_store_like_a_sync_one(store):
    """``counters()``, ``counted_events()``, ``counts()`` and ``shared_backend()`` make no
    round trip, so they are the sync wrapper's, not async."""
    lookup.reset_stats()

    async def main():
        await lookup(1)
        await lookup(1)

    run(main())
    counted = lookup.counters()
    assert (counted["miss"], counted["hit"], counted["computations"]) == (1, 1, 1)
    assert lookup.counted_events() == lookup._engine.counted_events() > 0
    assert lookup.counts().counters() == counted
    backend = lookup.shared_backend()
    if store.kind == "memory":
        assert backend is None
    else:
        assert backend.url == store.label


def test_a_memory_hit_finishes_without_suspending():
    """A hit on the memory store is answered inline: the coroutine completes
    on its first step, without ever handing the loop back."""

    async def main():
        await lookup(1)
        step = lookup.aget_with_metadata(1)
        with pytest.raises(StopIteration) as done:
            step.send(None)
        return done.value.value

    value, meta = run(main())
    assert value == {"id": 1, "n": 1}
    assert meta["cache_status"] is CacheStatus.HIT


# -- single-flight ----------------------------------------------------------------


def test_100_concurrent_tasks_on_a_cold_key_compute_once(store):
    """The loop keeps running while 99 tasks wait on the computation (this
    task polls the engine's count meanwhile): a waiter that blocked the loop
    would hang it, and the computation with it, which runs on the loop too."""
    computations = []
    gate = Gate()

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        await gate.passed()  # in flight until the 99 others await it
        return {"x": x}

    async def main():
        gate.close()
        tasks = [asyncio.create_task(slow.aget_with_metadata(1)) for _ in range(100)]
        await until_waiting(99, slow, 1)
        gate.open()
        return await asyncio.gather(*tasks)

    results = run(main())
    assert computations == [1]
    assert [value for value, _ in results] == [{"x": 1}] * 100
    assert [meta["cache_status"] for _, meta in results] == [CacheStatus.MISS] * 100
    assert len({meta["cached_at"] for _, meta in results}) == 1
    if store.shared:
        assert store.raw(slow.get_cache_key(1)).startswith(b"RFC3")


def test_concurrent_tasks_on_a_raising_key_share_one_exception_and_nothing_is_stored(store):
    computations = []
    gate = Gate()

    class Boom(Exception):
        pass

    @cache_result(ttl=60)
    async def failing(x):
        computations.append(x)
        await gate.passed()  # in flight until the 19 others await it
        raise Boom(x)

    async def main():
        gate.close()
        tasks = [asyncio.create_task(failing.aget_with_metadata(1)) for _ in range(20)]
        await until_waiting(19, failing, 1)
        gate.open()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, await failing.aget_cache_only(1)

    results, cached = run(main())
    assert computations == [1]
    assert all(isinstance(result, Boom) for result in results)
    assert cached is CACHE_MISSING


def test_cancelling_the_computing_task_hands_the_computation_to_a_waiter(store):
    """The function runs in the leading task, on every store: cancelling it
    cancels the computation and gives the key (a shared store's lock) back;
    one waiter takes over and computes, the 9 others follow it, and every
    waiter gets its value."""
    computations = []
    gate = Gate()

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        if len(computations) == 1:
            await asyncio.get_running_loop().create_future()  # until cancelled
        await gate.passed()  # the waiter that took over, until the 9 others follow it
        return ("value", len(computations))

    async def main():
        gate.close()
        leader = asyncio.create_task(slow.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        waiters = [asyncio.create_task(slow.aget_with_metadata(1)) for _ in range(10)]
        await until_waiting(10, slow, 1)
        assert computations == [1]
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader  # until it has let go of the flight
        await until(lambda: len(computations) == 2, "a waiter computing in its place")
        await until_waiting(9, slow, 1)
        gate.open()
        results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=DEADLINE)
        return results, await slow.aget_with_metadata(1)

    results, (value, meta) = run(main())
    # One waiter took over: one new computation, whose value every waiter gets.
    assert computations == [1, 1]
    assert [(v, m["cache_status"]) for v, m in results] == [(("value", 2), CacheStatus.MISS)] * 10
    assert (value, meta) == (("value", 2), {**results[0][1], "cache_status": CacheStatus.HIT})


def test_waiters_of_a_cancelled_leader_compute_once_when_the_takeover_never_suspends(store):
    """The waiter that takes over from a cancelled leader may finish (and
    store) before the other waiters wake, if its computation never
    suspends; they must then be served what it stored, not each compute
    again (they did: 11 computations)."""
    computations = []

    @cache_result(ttl=60)
    async def quick_after_the_first(x):
        computations.append(x)
        if len(computations) == 1:
            await asyncio.get_running_loop().create_future()  # until cancelled
        return ("value", len(computations))

    async def main():
        leader = asyncio.create_task(quick_after_the_first.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        waiters = [
            asyncio.create_task(quick_after_the_first.aget_with_metadata(1)) for _ in range(10)
        ]
        await until_waiting(10, quick_after_the_first, 1)
        leader.cancel()
        results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=DEADLINE)
        with pytest.raises(asyncio.CancelledError):
            await leader
        return results

    results = run(main())
    assert computations == [1, 1]
    assert [value for value, _ in results] == [("value", 2)] * 10
    assert [meta["cache_status"] for _, meta in results] == [CacheStatus.MISS] * 10


def test_a_cancelled_waiter_does_not_cancel_the_computation(store):
    computations = []
    gate = Gate()

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        await gate.passed()
        return x * 10

    async def main():
        gate.close()
        leader = asyncio.create_task(slow(1))
        await until(lambda: computations, "computing")
        waiter = asyncio.create_task(slow(1))
        other = asyncio.create_task(slow(1))
        await until_waiting(2, slow, 1)
        waiter.cancel()
        gate.open()
        value = await asyncio.wait_for(leader, timeout=DEADLINE)
        return value, await asyncio.wait_for(other, timeout=DEADLINE), waiter.cancelled()

    assert run(main()) == (10, 10, True)
    assert computations == [1]
    assert run(slow.aget_cache_only(1)) == 10


def test_nested_cached_calls_under_load_do_not_deadlock(store):
    """A cached coroutine that awaits another cached coroutine (a payload
    built from cached parts), with more cold keys in flight at once than a
    shared store's worker pool has threads: every outer computation waits
    on an inner one while all 80 are in flight."""
    parts = []
    gate = Gate()

    @cache_result(ttl=30)
    async def part(x):
        parts.append(x)
        await gate.passed()  # until all 40 inner computations are in flight
        return x

    @cache_result(ttl=30)
    async def whole(x):
        return await part(x) + 1

    async def main():
        gate.close()
        tasks = [asyncio.create_task(whole(x)) for x in range(40)]
        await until(lambda: len(parts) == 40, "every inner computation in flight")
        gate.open()
        return await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)

    assert run(main()) == [x + 1 for x in range(40)]
    assert sorted(parts) == list(range(40))


def test_a_coroutine_awaiting_itself_with_the_same_arguments_fails_clearly(store):
    """As on a sync function (RuntimeError), never a task awaiting its own
    computation forever."""

    @cache_result(ttl=60)
    async def recursive(x):
        return await recursive(x)

    with pytest.raises(RuntimeError, match="called itself with the same arguments"):
        run(recursive(1), timeout=5)


class MixedReport(KeyConstructor):
    """One key for a sync and an async function (a shared key identifier)."""

    x = ArgsKeyField("x")

    class Meta:
        namespace = "mixed"
        key_identifier = "reports.mixed"


def sync_and_async_reports(computations, sync_waits, async_waits):
    """A sync and an async function of one key; each records its computation
    and then waits (``sync_waits()``, ``await async_waits()``)."""

    @cache_result(ttl=60, key_constructor=MixedReport)
    def report(x):
        computations.append(("sync", x))
        sync_waits()
        return ("sync", x)

    @cache_result(ttl=60, key_constructor=MixedReport)
    async def areport(x):
        computations.append(("async", x))
        await async_waits()
        return ("async", x)

    return report, areport


def test_an_async_task_follows_a_sync_thread_computing_its_key(store):
    """One flight per key in the process: a task that misses while a sync
    thread computes the key waits for that thread's value."""
    computations, results = [], {}
    entered, release = threading.Event(), threading.Event()

    def sync_waits():
        entered.set()
        assert release.wait(30)

    report, areport = sync_and_async_reports(computations, sync_waits, lambda: asyncio.sleep(0))
    thread = threading.Thread(target=lambda: results.update(sync=report.get_with_metadata(1)))
    thread.start()
    assert entered.wait(30)

    async def main():
        task = asyncio.create_task(areport.aget_with_metadata(1))
        await until_waiting(1, areport, 1)
        release.set()
        return await task

    results["async"] = run(main())
    thread.join(30)
    assert computations == [("sync", 1)]
    assert results["sync"][0] == results["async"][0] == ("sync", 1)
    assert results["sync"][1]["cache_status"] is CacheStatus.MISS
    assert results["async"][1] == results["sync"][1]


def test_a_sync_thread_follows_an_async_task_computing_its_key(store):
    computations, results = [], []
    gate = Gate()
    report, areport = sync_and_async_reports(computations, lambda: None, gate.passed)

    async def main():
        gate.close()
        task = asyncio.create_task(areport.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        thread = threading.Thread(target=lambda: results.append(report.get_with_metadata(1)))
        thread.start()
        await until_waiting(1, report, 1)
        gate.open()
        served = await task
        await asyncio.to_thread(thread.join, 30)
        return served

    served = run(main())
    assert computations == [("async", 1)]
    assert results == [served]
    assert served[0] == ("async", 1)
    assert served[1]["cache_status"] is CacheStatus.MISS


def test_a_sync_call_on_the_loop_of_the_task_computing_its_key_fails_clearly(store):
    """Blocking the loop's thread on a task of that loop would never end: a
    RuntimeError instead, on every store. In a process of its own
    (tests/loop_block.py), which the hang guard kills where the call blocks."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    backend = store.settings()["CACHE_SETTINGS"]["BACKEND"]
    done = subprocess.run(
        [sys.executable, "-m", "tests.loop_block", backend, json.dumps(settings.CACHES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a hang guard: the process reports a blocked call itself
    )
    assert done.stdout != "blocked\n", "the sync call blocked the loop's thread"
    assert done.returncode == 0, done.stderr
    said = done.stdout.splitlines()
    assert said[0].startswith("RuntimeError: "), said
    assert "would wait on the outer one forever" in said[0]
    assert said[1:] == ["task ('async', 1)", "computations [('async', 1)]"]


INVALIDATIONS = ["ainvalidate_all", "adelete_by_prefix", "awipe"]


@pytest.mark.parametrize("invalidate", INVALIDATIONS)
def test_an_invalidation_during_a_computation_is_not_undone(store, invalidate):
    """A value computed from data read before an invalidation must not be
    stored where readers find it after the invalidation (as on sync, whose
    entry goes under the key the computation started with)."""
    data = {"title": "old"}
    read = []
    gate = Gate()

    class TitleKey(KeyConstructor):
        """This test's own: ``awipe`` touches no function another test made
        (see test_function_identity.py::test_wipe_passes_over_a_dropped_namesake_...)."""

        tenant = ArgsKeyField("tenant", partition=True)
        item = ArgsKeyField("item")

    @cache_result(ttl=60, key_constructor=TitleKey)
    async def title(tenant, item):
        read.append(data["title"])
        await gate.passed()  # the data changes and is invalidated meanwhile
        return read[-1]

    async def main():
        gate.close()
        computing = asyncio.create_task(title("a", 1))
        await until(lambda: read, "reading the data")
        data["title"] = "new"
        if invalidate == "ainvalidate_all":
            await title.ainvalidate_all()
        elif invalidate == "adelete_by_prefix":
            await title.adelete_by_prefix(tenant="a")
        else:
            assert await TitleKey.awipe() == 1
        gate.open()
        assert await computing == "old"
        return await title.aget_cache_only("a", 1), await title("a", 1)

    cached, served = run(main())
    assert cached is CACHE_MISSING
    assert served == "new"


# -- every a-method ---------------------------------------------------------------


def test_every_a_method(store):
    async def main():
        assert await lookup.aget_cache_only(1) is CACHE_MISSING
        assert await lookup.aget_cached_metadata(1) is None
        value, meta = await lookup.aget_with_metadata(1)
        assert value == {"id": 1, "n": 1}
        assert meta["cache_status"] is CacheStatus.MISS
        assert set(meta) == {"cache_status", "cached_at", "reset_at"}
        assert lifetime(meta) == timedelta(seconds=60)
        if store.shared:
            # The entry is in the store, under the key string, signed.
            assert store.raw(lookup.get_cache_key(1)).startswith(b"RFC3")
        again, meta2 = await lookup.aget_with_metadata(1)
        assert again == value
        assert meta2 == {**meta, "cache_status": CacheStatus.HIT}
        assert await lookup(1) == value
        assert await lookup(user_id=1) == value  # bound like a call: one entry
        assert await lookup.aget_cache_only(1) == value
        assert await lookup.aget_cache_only(3) is CACHE_MISSING
        assert await lookup.aget_cached_metadata(1) == meta2
        assert await lookup.aget_cached_metadata(3) is None

        assert await lookup.arefresh(1) == {"id": 1, "n": 2}
        refreshed, meta3 = await lookup.arefresh_with_metadata(1)
        assert refreshed == {"id": 1, "n": 3}
        assert meta3["cache_status"] is CacheStatus.REFRESH
        assert await lookup.aget_with_metadata(1) == (
            refreshed,
            {**meta3, "cache_status": CacheStatus.HIT},
        )

        assert await lookup.abypass_cache(2) == {"id": 2, "n": 4}
        bypassed, meta4 = await lookup.abypass_cache_with_metadata(2)
        assert bypassed == {"id": 2, "n": 5}
        assert meta4 == {"cache_status": CacheStatus.BYPASS}
        assert await lookup.aget_cache_only(2) is CACHE_MISSING
        assert await lookup(1) == refreshed

        assert await lookup.adelete_cache(1) is True
        assert await lookup.adelete_cache(1) is False
        assert await lookup.aget_cache_only(1) is CACHE_MISSING
        if store.shared:
            assert store.raw(lookup.get_cache_key(1)) is None

        await lookup(1)
        await lookup(2)
        assert await lookup.ainvalidate_all() is None
        assert await lookup.aget_cache_only(1) is CACHE_MISSING
        assert await lookup.aget_cache_only(2) is CACHE_MISSING

        await lookup(3)
        assert await lookup.adelete_by_prefix() is None  # no partition: every entry
        assert await lookup.aget_cache_only(3) is CACHE_MISSING

    run(main())
    assert calls == [(1, False)] * 3 + [(2, False)] * 2 + [(1, False), (2, False), (3, False)]


def test_get_cache_key_func_and_key_constructor(store):
    key = lookup.get_cache_key(1)
    assert isinstance(key, str)
    assert key == lookup.get_cache_key(user_id=1)
    assert key.startswith("default::tests.test_async.lookup::")
    assert lookup.get_cache_key(2) != key
    assert isinstance(lookup.key_constructor, DefaultKeyConstructor)
    assert isinstance(report.key_constructor, TenantKey)
    assert inspect.iscoroutinefunction(lookup.func)
    # func is the undecorated function: it neither reads nor writes the cache.
    assert run(lookup.func(9)) == {"id": 9, "n": 1}
    assert run(lookup.aget_cache_only(9)) is CACHE_MISSING


def test_aget_cached_metadata_walks_hit_stale_gone(store):
    async def main():
        with frozen_clock() as clock:
            _, meta = await lookup.aget_with_metadata(1)
            assert await lookup.aget_cached_metadata(1) == {
                **meta,
                "cache_status": CacheStatus.HIT,
            }
            clock.advance(61)
            # STALE_WHILE_REVALIDATE is 60 s (configured below).
            assert await lookup.aget_cached_metadata(1) == {
                **meta,
                "cache_status": CacheStatus.STALE,
            }
            assert await lookup.aget_cache_only(1) == {"id": 1, "n": 1}
            clock.advance(60)
            assert await lookup.aget_cached_metadata(1) is None
            assert await lookup.aget_cache_only(1) is CACHE_MISSING

    with store.configured(STALE_WHILE_REVALIDATE=60):
        run(main())


def test_adelete_by_prefix_awipe_and_adelete_previous_versions(store):
    def versioned(version):
        meta = type("Meta", (), {"namespace": "async-versions", "version": version})
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
        # awipe counts the functions it touched: report, TenantKey's one.
        assert await TenantKey.awipe(tenant="b") == 1
        assert await report.aget_cache_only("b", 1) is CACHE_MISSING
        assert await report.aget_cache_only("c", 1) == "c/1/4"
        assert await TenantKey.awipe() == 1
        assert await report.aget_cache_only("c", 1) is CACHE_MISSING

        await old(1)
        await new(1)
        assert await v1.adelete_previous_versions() == 0
        await v2.adelete_previous_versions()
        return await old.aget_cache_only(1), await new.aget_cache_only(1)

    assert run(main()) == (CACHE_MISSING, ("new", 1))


# -- on a method -------------------------------------------------------------------


def test_every_a_method_on_a_bound_method(store):
    async def main():
        a, b = Profiles("a"), Profiles("b")
        assert await a.load.aget_cache_only(1) is CACHE_MISSING
        value, meta = await a.load.aget_with_metadata(1)
        assert value == {"id": 1, "by": "a", "n": 1}
        assert meta["cache_status"] is CacheStatus.MISS
        # self is not part of the key (its class is).
        assert await b.load(1) == value
        assert await Profiles.load(b, 1) == value
        _, hit = await b.load.aget_with_metadata(1)
        assert hit == {**meta, "cache_status": CacheStatus.HIT}
        assert await b.load.aget_cached_metadata(1) == hit
        assert await b.load.aget_cache_only(1) == value
        assert await MoreProfiles("m").load(1) == {"id": 1, "by": "m", "n": 2}

        assert await b.load.arefresh(1) == {"id": 1, "by": "b", "n": 3}
        refreshed, meta2 = await a.load.arefresh_with_metadata(1)
        assert refreshed == {"id": 1, "by": "a", "n": 4}
        assert meta2["cache_status"] is CacheStatus.REFRESH
        assert await b.load(1) == refreshed

        assert await b.load.abypass_cache(1) == {"id": 1, "by": "b", "n": 5}
        bypassed, meta3 = await b.load.abypass_cache_with_metadata(2)
        assert bypassed == {"id": 2, "by": "b", "n": 6}
        assert meta3 == {"cache_status": CacheStatus.BYPASS}
        assert await a.load.aget_cache_only(2) is CACHE_MISSING

        assert await a.load.adelete_cache(1) is True
        assert await b.load.adelete_cache(1) is False
        await a.load(1)
        # As on a sync method: without partition fields, every entry of the
        # function goes, the subclass's too.
        await a.load.adelete_by_prefix()
        assert await a.load.aget_cache_only(1) is CACHE_MISSING
        assert await MoreProfiles("n").load.aget_cache_only(1) is CACHE_MISSING

        assert a.load.get_cache_key(1) == Profiles.load.get_cache_key(a, 1)
        assert a.load.get_cache_key(1) != MoreProfiles("x").load.get_cache_key(1)
        assert a.load.func is Profiles.load.func
        assert isinstance(a.load.key_constructor, DefaultKeyConstructor)

    run(main())


def test_ainvalidate_all_on_a_bound_method(store):
    async def main():
        profiles = Profiles("a")
        await profiles.load(1)
        await profiles.load(2)
        await profiles.load.ainvalidate_all()
        return await profiles.load.aget_cache_only(1), await profiles.load.aget_cache_only(2)

    assert run(main()) == (CACHE_MISSING, CACHE_MISSING)


# -- the TypeErrors ----------------------------------------------------------------


@pytest.mark.parametrize("name", SYNC_NAMES)
def test_a_sync_named_method_names_its_async_counterpart(name):
    method = getattr(lookup, name)
    with pytest.raises(TypeError, match=rf"use a{name}\b"):
        method() if name == "invalidate_all" else method(1)
    bound = getattr(Profiles("a").load, name)
    with pytest.raises(TypeError, match=rf"use a{name}\b"):
        bound() if name == "invalidate_all" else bound(1)
    assert calls == []


@pytest.mark.parametrize(
    ("option", "message"),
    [("cache_if", "async predicate"), ("cache_unless", "async predicate"), ("ttl", "async ttl")],
)
def test_an_async_policy_on_a_sync_function_is_refused_at_decoration(option, message):
    async def policy(result, *args, **kwargs):
        return True

    def plain(x):
        calls.append(x)
        return x

    with pytest.raises(TypeError, match=message):
        cache_result(**{option: policy})(plain)
    assert calls == []


# -- async predicates and ttl ------------------------------------------------------


def test_an_async_cache_if_decides_what_is_stored(store):
    seen = []

    async def only_even(result, x, *, scale=1):
        seen.append((result, x, scale))
        await asyncio.sleep(0)
        return result % 2 == 0

    @cache_result(ttl=60, cache_if=only_even)
    async def scaled(x, *, scale=1):
        calls.append(x)
        return x * scale

    async def main():
        statuses = []
        for x in (2, 2, 3, 3):
            _, meta = await scaled.aget_with_metadata(x)
            statuses.append(meta["cache_status"])
        assert await scaled.aget_cache_only(2) == 2
        assert await scaled.aget_cache_only(3) is CACHE_MISSING
        assert await scaled(3, scale=2) == 6  # even: stored
        assert await scaled.aget_cache_only(3, scale=2) == 6
        return statuses

    assert run(main()) == [CacheStatus.MISS, CacheStatus.HIT, CacheStatus.MISS, CacheStatus.MISS]
    assert calls == [2, 3, 3, 3]
    assert seen == [(2, 2, 1), (3, 3, 1), (3, 3, 1), (6, 3, 2)]


def test_an_async_cache_unless_decides_what_is_not_stored(store):
    async def is_error(result, x):
        await asyncio.sleep(0)
        return "error" in result

    @cache_result(ttl=60, cache_unless=is_error)
    async def fetch(x):
        calls.append(x)
        return {"error": "upstream"} if x < 0 else {"ok": x}

    async def main():
        await fetch(1)
        await fetch(-1)
        return (
            await fetch.aget_cache_only(1),
            await fetch.aget_cache_only(-1),
            (await fetch.aget_with_metadata(-1))[1]["cache_status"],
        )

    assert run(main()) == ({"ok": 1}, CACHE_MISSING, CacheStatus.MISS)
    assert calls == [1, -1, -1]


def test_a_sync_predicate_works_on_an_async_function(store):
    @cache_result(ttl=60, cache_if=lambda result, x: result > 0)
    async def signed(x):
        calls.append(x)
        return x

    async def main():
        await signed(1)
        await signed(-1)
        return await signed.aget_cache_only(1), await signed.aget_cache_only(-1)

    assert run(main()) == (1, CACHE_MISSING)


def test_an_async_ttl_sets_each_entrys_lifetime(store):
    seen = []

    async def ttl_for(result, x):
        seen.append((result, x))
        await asyncio.sleep(0)
        return result["ttl"]

    @cache_result(ttl=ttl_for, stale_while_revalidate=60)
    async def timed(x):
        calls.append(x)
        return {"ttl": timedelta(minutes=2) if x == "td" else x}

    async def main():
        with frozen_clock() as clock:
            metas = {x: (await timed.aget_with_metadata(x))[1] for x in (5, 90, "td")}
            clock.advance(6)
            after = {x: (await timed.aget_with_metadata(x))[1]["cache_status"] for x in (5, 90)}
            # The stale 5 s entry's refresh asks for its ttl again.
            await wait_for_async_refreshes()
            return metas, after

    metas, after = run(main())
    assert lifetime(metas[5]) == timedelta(seconds=5)
    assert lifetime(metas[90]) == timedelta(seconds=90)
    assert lifetime(metas["td"]) == timedelta(minutes=2)
    assert seen == [
        ({"ttl": 5}, 5),
        ({"ttl": 90}, 90),
        ({"ttl": timedelta(minutes=2)}, "td"),
        ({"ttl": 5}, 5),  # the refresh of the stale entry
    ]
    # 6 s later the 5 s entry is stale (inside the 60 s window), the 90 s one fresh.
    assert after == {5: CacheStatus.STALE, 90: CacheStatus.HIT}


def test_an_async_cache_if_and_an_async_ttl_together(store):
    async def positive(result, x):
        await asyncio.sleep(0)
        return result > 0

    async def ttl_for(result, x):
        await asyncio.sleep(0)
        return result * 10

    @cache_result(ttl=ttl_for, cache_if=positive)
    async def value(x):
        calls.append(x)
        return x

    async def main():
        _, meta = await value.aget_with_metadata(3)
        hit = (await value.aget_with_metadata(3))[1]["cache_status"]
        await value(-3)
        again = (await value.aget_with_metadata(-3))[1]["cache_status"]
        return meta, hit, again, await value.aget_cache_only(-3)

    meta, hit, again, missing = run(main())
    assert meta["cache_status"] is CacheStatus.MISS
    assert lifetime(meta) == timedelta(seconds=30)
    assert (hit, again, missing) == (CacheStatus.HIT, CacheStatus.MISS, CACHE_MISSING)
    assert calls == [3, -3, -3]
    if store.shared:
        assert store.holds(value.get_cache_key(3), value.get_cache_key(-3)) == 1
        assert store.raw(value.get_cache_key(-3)) is None


# -- STALE and the refresh task ----------------------------------------------------


def test_stale_is_served_at_once_and_refreshed_by_one_task(store):
    computations = []
    gate = Gate()

    @cache_result(ttl=10, stale_while_revalidate=60)
    async def version(x):
        computations.append(x)
        await gate.passed()  # the refresh stays in flight during the stale reads
        return len(computations)

    async def main():
        with frozen_clock() as clock:
            assert await version(1) == 1
            clock.advance(11)
            gate.close()
            value, meta = await version.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
            assert computations == [1]  # served without waiting on the recompute
            more = await asyncio.gather(*(version.aget_with_metadata(1) for _ in range(20)))
            assert [(v, m["cache_status"]) for v, m in more] == [(1, CacheStatus.STALE)] * 20
            # The one refresh task (on a shared store, once its claim's round trip is made).
            await until(lambda: computations == [1, 1], "refreshing")
            gate.open()
            await wait_for_async_refreshes()
            await asyncio.to_thread(wait_for_refreshes)
            assert computations == [1, 1]  # one refresh for 21 stale reads
            value, meta = await version.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
            assert lifetime(meta) == timedelta(seconds=10)

    run(main())


def test_a_failed_refresh_keeps_the_old_value_logs_and_is_tried_again(store, caplog):
    computations = []
    failing = {"on": False}

    @cache_result(ttl=10, stale_while_revalidate=60)
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
            await wait_for_async_refreshes()
            assert computations == [1, 1]
            value, meta = await fragile.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
            assert await fragile.aget_cache_only(1) == 1
            await wait_for_async_refreshes()
            # The failure gave the claim back: a later stale read refreshes again.
            failing["on"] = False
            await fragile.aget_with_metadata(1)
            await wait_for_async_refreshes()
            return await fragile.aget_with_metadata(1)

    with caplog.at_level(logging.DEBUG, logger="restflow"):
        value, meta = run(main())
    # The first value, two failed refreshes, the one that succeeded.
    assert (value, meta["cache_status"]) == (4, CacheStatus.HIT)
    assert computations == [1] * 4
    # Each failed refresh logged once, as an error with its exception.
    message = (
        f"restflow: background refresh of {fragile.__module__}.{fragile.__qualname__}()"
        " failed; the stale value is kept"
    )
    logged = [(r.name, r.levelno, r.getMessage(), type(r.exc_info[1])) for r in caplog.records]
    assert logged == [("restflow.caching", logging.ERROR, message, ConnectionError)] * 2


def test_a_refresh_task_cancelled_with_its_loop_starts_over_on_restflows_loop(store, caplog):
    """A loop that ends (``asyncio.run`` returning, ``async_to_sync`` per call,
    a server shutting down) cancels the refresh task it was running: the
    refresh starts over on restflow's own loop, with its claim, so the entry
    is refreshed all the same (given back instead, the claim went to the next
    stale read, whose loop could end as soon); no worker waits on the closed
    loop, and nothing is logged."""
    computations, claims = [], []

    @cache_result(ttl=10, stale_while_revalidate=60)
    async def slow_version(x):
        computations.append(x)
        if len(computations) == 2:
            await asyncio.get_running_loop().create_future()  # until its loop ends
        return len(computations)

    async def stale_then_leave():
        value, meta = await slow_version.aget_with_metadata(1)
        await until(lambda: len(computations) == 2, "refreshing")  # the loop ends under it
        claims.extend(store.keys_with("restflow:refresh:"))
        return value, meta["cache_status"]

    with frozen_clock() as clock, caplog.at_level(logging.WARNING, logger="restflow"):
        assert run(slow_version(1)) == 1
        clock.advance(11)
        assert run(stale_then_leave()) == (1, CacheStatus.STALE)
        assert len(claims) == (1 if store.shared else 0)  # the claim, held
        run(wait_for_async_refreshes())
        # The cancelled attempt, then the one on restflow's loop, which
        # stored its value and gave the claim back.
        assert computations == [1, 1, 1]
        assert store.keys_with("restflow:refresh:") == []
        value, meta = run(slow_version.aget_with_metadata(1))
    assert (value, meta["cache_status"]) == (3, CacheStatus.HIT)
    assert [record.getMessage() for record in caplog.records] == []


def test_stale_if_error(store):
    """As for a sync function: past ttl and stale window, a recompute that
    raises serves the kept value as STALE, to the leader and its waiters."""
    computations = []
    failing = {"on": False}

    gate = Gate()

    @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
    async def fragile(x):
        computations.append(x)
        await gate.passed()  # in flight until the 4 others await it
        if failing["on"]:
            raise ConnectionError("upstream down")
        return len(computations)

    async def main():
        with frozen_clock() as clock:
            assert await fragile(1) == 1
            failing["on"] = True
            clock.advance(16)
            gate.close()
            tasks = [asyncio.create_task(fragile.aget_with_metadata(1)) for _ in range(5)]
            await until_waiting(4, fragile, 1)
            gate.open()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            clock.advance(61)
            with pytest.raises(ConnectionError):
                await fragile(1)
            return results

    results = run(main())
    served = [r if isinstance(r, Exception) else (r[0], r[1]["cache_status"]) for r in results]
    assert served == [(1, CacheStatus.STALE)] * 5
    assert computations == [1, 1, 1]


# -- a Django async view -------------------------------------------------------------


@pytest.mark.urls("tests.async_views")
def test_concurrent_requests_to_a_django_async_view_compute_once_then_hit(store):
    async def main():
        client = AsyncClient()
        async_views.gate.close()
        try:
            requests = [asyncio.create_task(client.get("/async-users/2/")) for _ in range(10)]
            await until_waiting(9, async_views.get_user_payload, 2)
        finally:
            async_views.gate.open()
        first = await asyncio.gather(*requests)
        return first, await client.get("/async-users/2/")

    first, second = run(main())
    assert [r.status_code for r in [*first, second]] == [200] * 11
    assert [r["X-Cache-status"] for r in first] == ["MISS"] * 10
    assert second["X-Cache-status"] == "HIT"
    assert [r.json() for r in [*first, second]] == [{"id": 2, "name": "user 2", "version": 1}] * 11
    assert [r["X-Cached-at"] for r in first] == [second["X-Cached-at"]] * 10
    assert async_views.calls == [2]
    if store.shared:
        assert store.raw(async_views.get_user_payload.get_cache_key(2)).startswith(b"RFC3")


# -- invalidation rules ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_invalidation_rule_drops_an_async_functions_entry(store):
    from restflow.caching.registry import CacheRegister
    from restflow.caching.rules import InvalidationRule
    from tests.testapp.models import Article

    rule = InvalidationRule(Article, field_mapping={"article_id": "pk"})

    @cache_result(ttl=None, invalidates_on=[rule])
    async def title(article_id):
        calls.append(article_id)
        return f"title of {article_id}"

    try:
        article = Article.objects.create(title="a")
        assert run(title(article.pk)) == f"title of {article.pk}"
        article.title = "a2"
        article.save()
        assert run(title.aget_cache_only(article.pk)) is CACHE_MISSING
    finally:
        CacheRegister.clear()


#: Set by a caller before it awaits a cached function.
caller = contextvars.ContextVar("caller", default=None)


def test_the_function_runs_in_the_calling_task(store):
    """A miss awaits the function in the caller's task, on every store (on
    a shared one it ran in a task of its own, made for a worker thread):
    the caller's ``current_task()`` and context variables are the
    function's."""
    seen = []

    @cache_result(ttl=30)
    async def where(x):
        seen.append((asyncio.current_task(), caller.get()))
        return x

    async def main():
        caller.set("the caller")
        value, meta = await where.aget_with_metadata(1)
        return asyncio.current_task(), value, meta["cache_status"]

    task, value, status = run(main())
    assert (value, status) == (1, CacheStatus.MISS)
    assert seen == [(task, "the caller")]
    assert run(where.aget_with_metadata(1))[1]["cache_status"] is CacheStatus.HIT


def test_a_cancelled_leader_hands_its_key_over_without_a_lock_wait(store):
    """Cancelling the task that computes a key cancels its computation and
    gives the key back at once: the next caller computes it (MISS) without
    waiting on the first one, nor on a store lock left to expire (LOCK_TIMEOUT
    60 s, far past the hang guard). On a shared store the lock was taken
    (one lock key while the first computation runs), and none is left;
    tests/redis/test_async_steps.py checks that it is freed with no next
    caller."""
    computations, locks = [], []
    gate = Gate()

    @cache_result(ttl=30)
    async def slow(x):
        computations.append(x)
        if len(computations) == 1:
            await gate.passed()  # the first computation never ends by itself
        return len(computations)

    async def main():
        gate.close()
        leader = asyncio.create_task(slow.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        locks.extend(store.keys_with("restflow:lock:"))
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await asyncio.wait_for(slow.aget_with_metadata(1), DEADLINE)

    with store.configured(LOCK_TIMEOUT=60):
        value, meta = run(main())
        shared = slow._engine.shared_backend()
        if store.shared:
            assert shared.stats()["lock_waits"] == 0
        else:
            assert shared is None
    gate.open()
    assert (value, meta["cache_status"]) == (2, CacheStatus.MISS)
    assert computations == [1, 1]
    assert len(locks) == (1 if store.shared else 0)
    assert store.keys_with("restflow:lock:") == []
