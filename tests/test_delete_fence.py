"""A single-key delete is not undone by a computation of that key already
under way (every store of tests/stores.py).

A caller who changes a row and then drops its entry (``delete_cache``) must
not find the old payload cached again because a request was computing it
from the old data at that moment: the computation hands its value to its
callers (they asked before the delete) but stores nothing, and the next
call computes again. The same for a background refresh of a stale entry,
and for the async calls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from restflow.caching import CacheStatus, cache_result
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.parking import Gate, following_calls, until, wait_until
from tests.stores import ALL, on
from tests.test_async import run


def test_a_delete_during_a_computation_is_not_undone(store):
    check_a_delete_during_a_computation()


@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_a_delete_during_a_computation_is_not_undone_with_a_near_cache(store):
    with store.configured(NEAR_CACHE=True):
        check_a_delete_during_a_computation()


def check_a_delete_during_a_computation():
    """A leader computes, another thread deletes the entry, the leader ends:
    it and its follower get its value as MISS, the next call computes again.
    (Also run on a Redis Cluster and under Sentinel: tests/redis.)"""
    calls = []
    started, release = threading.Event(), threading.Event()

    @cache_result(ttl=60)
    def row(pk):
        calls.append(pk)
        n = len(calls)
        if n == 1:
            started.set()
            assert release.wait(30)  # computing until the delete is done
        return {"pk": pk, "n": n}

    results = {}

    def call(name):
        results[name] = row.get_with_metadata(1)

    leader = threading.Thread(target=call, args=("leader",))
    leader.start()
    assert started.wait(10)
    follower = threading.Thread(target=call, args=("follower",))
    follower.start()
    wait_until(lambda: following_calls(row, 1) == 1, "the follower waiting")
    assert row.delete_cache(1) is False  # nothing stored yet
    release.set()
    for thread in (leader, follower):
        thread.join(30)
        assert not thread.is_alive()
    # Both asked before the delete: they get what was computed for them.
    for name in ("leader", "follower"):
        value, meta = results[name]
        assert (value, meta["cache_status"]) == ({"pk": 1, "n": 1}, CacheStatus.MISS)
    # The value computed from the data before the delete was not stored.
    value, meta = row.get_with_metadata(1)
    assert (value, meta["cache_status"]) == ({"pk": 1, "n": 2}, CacheStatus.MISS)
    value, meta = row.get_with_metadata(1)
    assert (value, meta["cache_status"]) == ({"pk": 1, "n": 2}, CacheStatus.HIT)


def test_a_delete_during_a_background_refresh_is_not_undone(store):
    check_a_delete_during_a_background_refresh()


def check_a_delete_during_a_background_refresh():
    """A background refresh computes, the entry is deleted, the refresh
    ends: the next call is a MISS that computes again."""
    calls = []
    started, release = threading.Event(), threading.Event()

    @cache_result(ttl=10, stale_while_revalidate=60)
    def row(pk):
        calls.append(pk)
        n = len(calls)
        if n == 2:
            started.set()
            assert release.wait(30)  # refreshing until the delete is done
        return n

    with frozen_clock() as clock:
        assert row(1) == 1
        clock.advance(11)
        value, meta = row.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
        assert started.wait(10)
        assert row.delete_cache(1) is True
        release.set()
        wait_for_refreshes()
        value, meta = row.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (3, CacheStatus.MISS)
        value, meta = row.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (3, CacheStatus.HIT)
    assert calls == [1, 1, 1]


def test_a_delete_during_a_forced_refresh_is_not_undone(store):
    check_a_delete_during_a_forced_refresh()


def check_a_delete_during_a_forced_refresh():
    """``refresh()`` recomputes and overwrites, but a delete of the entry
    while it computes stands: it returns its value (REFRESH) and stores
    nothing, and the next call computes again. A refresh that starts after
    the delete stores, as always. (Also run on a Redis Cluster and under
    Sentinel: tests/redis.)"""
    calls = []
    started, release = threading.Event(), threading.Event()

    @cache_result(ttl=60)
    def row(pk):
        calls.append(pk)
        n = len(calls)
        if n == 2:
            started.set()
            assert release.wait(30)  # refreshing until the delete is done
        return n

    assert row(1) == 1
    results = []
    refresher = threading.Thread(target=lambda: results.append(row.refresh_with_metadata(1)))
    refresher.start()
    assert started.wait(10)
    assert row.delete_cache(1) is True
    release.set()
    refresher.join(30)
    assert not refresher.is_alive()
    [(value, meta)] = results
    assert (value, meta["cache_status"]) == (2, CacheStatus.REFRESH)
    value, meta = row.get_with_metadata(1)
    assert (value, meta["cache_status"]) == (3, CacheStatus.MISS)
    assert row.refresh(1) == 4
    value, meta = row.get_with_metadata(1)
    assert (value, meta["cache_status"]) == (4, CacheStatus.HIT)


@pytest.mark.parametrize("store", ALL, indirect=True)
def test_an_async_delete_during_an_async_forced_refresh_is_not_undone(store):
    calls = []
    gate = Gate()

    @cache_result(ttl=60)
    async def row(pk):
        calls.append(pk)
        n = len(calls)
        if n == 2:
            await gate.passed()
        return n

    async def main():
        assert await row(1) == 1
        gate.close()
        refresh = asyncio.create_task(row.arefresh_with_metadata(1))
        await until(lambda: len(calls) == 2, "the refresh computing")
        deleted = await row.adelete_cache(1)
        gate.open()
        return await refresh, deleted, await row.aget_with_metadata(1)

    refreshed, deleted, again = run(main())
    assert (refreshed[0], refreshed[1]["cache_status"]) == (2, CacheStatus.REFRESH)
    assert deleted is True
    assert (again[0], again[1]["cache_status"]) == (3, CacheStatus.MISS)


def test_a_delete_after_the_computation_stored_still_drops_it(store):
    """The fence only refuses stores that come after the delete: a value
    stored before it is removed by it, as always."""

    @cache_result(ttl=60)
    def row(pk):
        return pk

    assert row.get_with_metadata(1)[1]["cache_status"] is CacheStatus.MISS
    assert row.delete_cache(1) is True
    assert row.delete_cache(1) is False
    assert row.get_with_metadata(1)[1]["cache_status"] is CacheStatus.MISS
    assert row.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT


@pytest.mark.parametrize("store", ALL, indirect=True)
def test_an_async_delete_during_an_async_computation_is_not_undone(store):
    calls = []
    gate = Gate()

    @cache_result(ttl=60)
    async def row(pk):
        calls.append(pk)
        n = len(calls)
        if n == 1:
            await gate.passed()
        return {"pk": pk, "n": n}

    async def main():
        gate.close()
        leader = asyncio.create_task(row.aget_with_metadata(1))
        await until(lambda: calls, "the leader computing")
        follower = asyncio.create_task(row.aget_with_metadata(1))
        await until(lambda: following_calls(row, 1) == 1, "the follower waiting")
        assert await row.adelete_cache(1) is False
        gate.open()
        first = [await leader, await follower]
        return first, await row.aget_with_metadata(1), await row.aget_with_metadata(1)

    first, again, hit = run(main())
    for value, meta in first:
        assert (value, meta["cache_status"]) == ({"pk": 1, "n": 1}, CacheStatus.MISS)
    assert (again[0], again[1]["cache_status"]) == ({"pk": 1, "n": 2}, CacheStatus.MISS)
    assert (hit[0], hit[1]["cache_status"]) == ({"pk": 1, "n": 2}, CacheStatus.HIT)


@pytest.mark.parametrize("store", ALL, indirect=True)
def test_an_async_delete_during_an_async_refresh_is_not_undone(store):
    calls = []
    gate = Gate()

    @cache_result(ttl=10, stale_while_revalidate=60)
    async def row(pk):
        calls.append(pk)
        n = len(calls)
        if n == 2:
            await gate.passed()
        return n

    async def main(clock):
        assert await row(1) == 1
        clock.advance(11)
        gate.close()
        stale = await row.aget_with_metadata(1)
        await until(lambda: len(calls) == 2, "the refresh computing")
        deleted = await row.adelete_cache(1)
        gate.open()
        await wait_for_async_refreshes()
        return stale, deleted, await row.aget_with_metadata(1), await row.aget_with_metadata(1)

    with frozen_clock() as clock:
        stale, deleted, again, hit = run(main(clock))
    assert (stale[0], stale[1]["cache_status"]) == (1, CacheStatus.STALE)
    assert deleted is True
    assert (again[0], again[1]["cache_status"]) == (3, CacheStatus.MISS)
    assert (hit[0], hit[1]["cache_status"]) == (3, CacheStatus.HIT)


@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_on_redis_the_delete_marks_the_lock_its_holder_then_frees(store):
    """The lock of the computation under way stays taken through the delete
    (other processes wait for its holder as before), marked as deleted for
    its token; the holder's write is refused and its unlock frees it."""
    started, release = threading.Event(), threading.Event()

    @cache_result(ttl=60)
    def row(pk):
        started.set()
        assert release.wait(30)
        return pk

    results = []
    leader = threading.Thread(target=lambda: results.append(row.get_with_metadata(1)))
    leader.start()
    assert started.wait(10)
    [lock] = store.keys_with("restflow:lock:")
    token = store.client.get(lock)
    assert row.delete_cache(1) is False
    assert store.client.get(lock) == b"deleted:" + token
    assert store.client.pttl(lock) > 0, "its expiry is kept"
    release.set()
    leader.join(30)
    assert not leader.is_alive()
    assert results[0][1]["cache_status"] is CacheStatus.MISS
    assert store.keys_with("restflow:lock:") == []
    assert store.holds(row.get_cache_key(1)) == 0
    assert row.get_with_metadata(1)[1]["cache_status"] is CacheStatus.MISS
    assert store.holds(row.get_cache_key(1)) == 1
