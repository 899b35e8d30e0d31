"""Async cached functions at their edges, past what tests/test_async.py
covers: a leader that ends other than with a value or an ``Exception`` (its
coroutine closed, a ``CancelledError`` the function raises itself), tasks
cancelled while a worker thread is inside the store's steps, background
refreshes on several loops at once, a bound method's whole-function methods.

Runs on every store (tests/stores.py) unless a test names its own; each
test runs its coroutine with ``asyncio.run`` under a hang guard, as
tests/test_async.py does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import pytest
from django.core.cache import caches as django_caches
from django.test import override_settings

from restflow import _engine
from restflow.caching import CACHE_MISSING, ArgsKeyField, CacheStatus, KeyConstructor, cache_result
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock
from tests.held_cache import HeldCache
from tests.parking import DEADLINE, Gate, following_calls, until, until_waiting, wait_until
from tests.stores import DJANGO_CACHES


def run(coroutine, timeout=30):
    """Runs ``coroutine`` on a new loop; a hang fails after ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def test_a_leader_whose_task_is_destroyed_with_its_loop_hands_over(store):
    """A loop closed with the leading task still pending (a thread's loop
    that ran until something else finished): when that task is destroyed,
    its coroutine is closed (``GeneratorExit``). Its follower, on another
    loop, must take over as from a cancelled leader,
    not fail with a ``GeneratorExit`` that was never theirs."""
    computations = []

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        if len(computations) == 1:
            await asyncio.get_running_loop().create_future()  # never ends
        return ("value", len(computations))

    leading = {}

    def lead_then_leave():
        loop = asyncio.new_event_loop()
        leading["task"] = loop.create_task(slow.aget_with_metadata(1))
        loop.run_until_complete(until(lambda: computations, "computing"))
        loop.close()  # the leading task is left pending

    thread = threading.Thread(target=lead_then_leave)
    thread.start()
    thread.join(DEADLINE)
    assert computations == [1]

    async def main():
        follower = asyncio.create_task(slow.aget_with_metadata(1))
        await until_waiting(1, slow, 1)
        del leading["task"]
        gc.collect()  # the pending task destroyed: its coroutine closed
        return await asyncio.wait_for(follower, DEADLINE)

    value, meta = run(main())
    assert (value, meta["cache_status"]) == (("value", 2), CacheStatus.MISS)
    assert computations == [1, 1]
    assert (_engine.in_flight(), _engine.waiters()) == (0, 0)
    assert run(slow.aget_cache_only(1)) == ("value", 2)


def test_a_cancelled_error_the_function_raises_is_its_error_shared_once(store):
    """The function awaits a future that someone else cancelled: it raises
    ``CancelledError``, but no caller's task was cancelled. That is the
    function's error, which its followers share, as they share any other:
    they must not each take over and compute again in turn (5 computations
    for 5 callers), nor be served a value."""
    computations = []
    gate = Gate()
    upstream = {}

    @cache_result(ttl=60)
    async def fetch(x):
        computations.append(x)
        await gate.passed()  # until the 4 others follow this computation
        return await upstream["reply"]  # cancelled by its owner

    async def main():
        upstream["reply"] = asyncio.get_running_loop().create_future()
        upstream["reply"].cancel()
        gate.close()
        tasks = [asyncio.create_task(fetch.aget_with_metadata(1)) for _ in range(5)]
        await until_waiting(4, fetch, 1)
        gate.open()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE)
        return results, [task.cancelled() for task in tasks], await fetch.aget_cache_only(1)

    results, cancelled, cached = run(main())
    assert computations == [1]
    assert [type(result) for result in results] == [asyncio.CancelledError] * 5
    assert cancelled == [True] * 5  # a task that raises CancelledError ends cancelled
    assert cached is CACHE_MISSING
    assert (_engine.in_flight(), _engine.waiters()) == (0, 0)


def test_wait_for_async_refreshes_waits_for_its_own_loops_refreshes(store):
    """Two threads, each with its event loop, and a background refresh in
    flight on each: ``wait_for_async_refreshes`` on one loop waits for that
    loop's refresh, and leaves the other loop's (which only that loop can
    await) alone, instead of failing with ``ValueError`` (a future of
    another loop given to ``gather``)."""
    computations = []
    gate = Gate()

    @cache_result(ttl=10, stale_while_revalidate=60)
    async def version(x):
        computations.append(x)
        if x == 1:
            await gate.passed()  # key 1's refresh is held, on the other loop
        return computations.count(x)

    refreshing, waited = threading.Event(), {}

    def other_loop():
        async def main():
            assert await version(1) == 1  # STALE: its refresh task starts
            await until(lambda: computations.count(1) == 2, "refreshing key 1")
            refreshing.set()
            await until(lambda: gate.is_open, "the gate opened")
            await wait_for_async_refreshes()
            waited["other"] = await version.aget_with_metadata(1)

        run(main())

    async def mine():
        assert await version(2) == 1  # STALE: its refresh task starts
        await wait_for_async_refreshes()
        return await version.aget_with_metadata(2)

    with frozen_clock() as clock:
        assert (run(version(1)), run(version(2))) == (1, 1)
        clock.advance(11)
        gate.close()
        thread = threading.Thread(target=other_loop)
        thread.start()
        assert refreshing.wait(DEADLINE)
        try:
            value, meta = run(mine())
        finally:
            gate.open()
            thread.join(DEADLINE)
    assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
    other_value, other_meta = waited["other"]
    assert (other_value, other_meta["cache_status"]) == (2, CacheStatus.HIT)


class Reports:
    @cache_result(ttl=60)
    async def load(self, x):
        return x


def test_a_bound_method_has_its_functions_statistics(store):
    """``instance.method.stats()`` and ``reset_stats()``, as on a sync
    method: they take no call arguments, so no instance goes in front
    (they raised ``TypeError``: 2 positional arguments given)."""
    reports = Reports()
    assert run(reports.load(1)) == 1
    assert run(reports.load(1)) == 1
    stats = reports.load.stats()
    assert (stats["miss"], stats["hit"]) == (1, 1)
    assert stats == Reports.load.stats()
    reports.load.reset_stats()
    assert (Reports.load.stats()["miss"], Reports.load.stats()["hit"]) == (0, 0)


def test_cancelling_every_caller_at_once_leaves_nothing_behind(store):
    """The leader and all its followers cancelled together: no flight and
    no follower left in the engine, no computation lock left in the store
    (it is given back on a worker), and the next caller computes at once
    (MISS), without waiting on a lock (LOCK_TIMEOUT 60 s is past the hang
    guard)."""
    computations = []
    gate = Gate()

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        await gate.passed()  # the first computation never ends by itself
        return len(computations)

    async def cancel_all():
        gate.close()
        tasks = [asyncio.create_task(slow.aget_with_metadata(1)) for _ in range(6)]
        await until(lambda: computations, "computing")
        await until_waiting(5, slow, 1)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [type(result) for result in results]

    with store.configured(LOCK_TIMEOUT=60):
        assert run(cancel_all()) == [asyncio.CancelledError] * 6
        assert (_engine.in_flight(), _engine.waiters()) == (0, 0)
        wait_until(lambda: not store.keys_with("restflow:lock:"), "the lock given back")
        gate.open()
        value, meta = run(slow.aget_with_metadata(1))
        shared = slow._engine.shared_backend()
        lock_waits = shared.stats()["lock_waits"] if store.shared else 0
    assert (value, meta["cache_status"]) == (2, CacheStatus.MISS)
    assert computations == [1, 1]
    assert lock_waits == 0
    stats = slow.stats()
    assert (stats["miss"], stats["computations"], stats["errors"]) == (1, 2, 0)


#: A Django cache whose calls a test can hold (tests/held_cache.py).
HELD_CACHES = {
    **DJANGO_CACHES,
    "held": {"BACKEND": "tests.held_cache.HeldCache", "LOCATION": "restflow-held"},
}


@pytest.fixture
def held_store():
    """The Django store over ``HeldCache``, emptied before and after."""
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:held", "LOCK_TIMEOUT": 60}}
    with override_settings(CACHES=HELD_CACHES, RESTFLOW_SETTINGS=settings):
        django_caches["held"].clear()
        yield django_caches["held"]
        HeldCache.let_go()
        django_caches["held"].clear()


def lock_keys(cache) -> list[str]:
    return [key for key in list(cache._cache) if "restflow:lock:" in key]


def test_a_leader_cancelled_while_its_worker_takes_the_lock_gives_it_back(held_store):
    """The task is cancelled while ``begin`` runs on a worker and has just
    taken the store's lock: the lead it hands back finds no task, and is
    given back (by a worker), so one of the tasks that followed it computes
    at once (MISS, no lock wait), the other follows that one, and no lock
    is left."""
    computations = []

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        return len(computations)

    async def main():
        HeldCache.hold("add", "restflow:lock:")
        leader = asyncio.create_task(slow.aget_with_metadata(1))
        assert await asyncio.to_thread(HeldCache.reached.wait, DEADLINE)
        assert len(lock_keys(held_store)) == 1
        followers = [asyncio.create_task(slow.aget_with_metadata(1)) for _ in range(2)]
        await until_waiting(2, slow, 1)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        HeldCache.let_go()
        served = await asyncio.wait_for(asyncio.gather(*followers), DEADLINE)
        return served, await asyncio.wait_for(slow.aget_with_metadata(1), DEADLINE)

    served, (value, meta) = run(main())
    # One follower took over (MISS), the other followed it.
    assert [(v, m["cache_status"]) for v, m in served] == [(1, CacheStatus.MISS)] * 2
    assert (value, meta["cache_status"]) == (1, CacheStatus.HIT)
    assert computations == [1]  # the cancelled task never ran the function
    assert slow._engine.shared_backend().stats()["lock_waits"] == 0
    wait_until(lambda: not lock_keys(held_store), "no lock left")
    assert (_engine.in_flight(), _engine.waiters()) == (0, 0)
    # Given back by a refresh worker (a round trip), not by the loop's
    # thread, where the lead that nobody awaited any more was dropped: the
    # loop never waits on the store.
    gave_back = [who for who, key in HeldCache.deleted if "restflow:lock:" in key]
    assert len(gave_back) == 2  # the cancelled task's lock, then the next caller's
    # ``restflow-refresh-N`` cut to the system's 15 characters.
    assert gave_back[0] == "restflow-refres", gave_back


def test_a_leader_cancelled_while_its_worker_stores_the_value_serves_its_followers(held_store):
    """The task is cancelled while its worker stores the value it computed:
    the value is stored all the same, and the tasks that followed it are
    served it (HIT) instead of computing again."""
    computations = []
    gate = Gate()

    @cache_result(ttl=60)
    async def slow(x):
        computations.append(x)
        await gate.passed()  # until the 3 others follow it
        return len(computations)

    async def main():
        gate.close()
        leader = asyncio.create_task(slow.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        followers = [asyncio.create_task(slow.aget_with_metadata(1)) for _ in range(3)]
        await until_waiting(3, slow, 1)
        HeldCache.hold("set", slow.get_cache_key(1))
        gate.open()
        assert await asyncio.to_thread(HeldCache.reached.wait, DEADLINE)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        HeldCache.let_go()
        return await asyncio.wait_for(asyncio.gather(*followers), DEADLINE)

    results = run(main())
    assert [(value, meta["cache_status"]) for value, meta in results] == [(1, CacheStatus.HIT)] * 3
    assert computations == [1]
    wait_until(lambda: not lock_keys(held_store), "no lock left")
    assert (_engine.in_flight(), _engine.waiters()) == (0, 0)


def test_a_coroutine_object_returned_by_the_function_is_refused(store):
    """``return fetch()`` instead of ``return await fetch()``: the value is
    a coroutine object, which only one caller can await. Cached (the memory
    store kept it), every later caller got it already awaited
    (``RuntimeError: cannot reuse already awaited coroutine``), and the
    callers that followed the computation shared that one object. A
    ``TypeError`` that says what to change instead, for the caller and its
    followers; nothing is stored."""
    computations = []
    gate = Gate()

    async def fetch(x):
        return x * 10

    @cache_result(ttl=60)
    async def forgetful(x):
        computations.append(x)
        await gate.passed()  # until the 2 others follow this computation
        return fetch(x)

    async def main():
        gate.close()
        tasks = [asyncio.create_task(forgetful(1)) for _ in range(3)]
        await until_waiting(2, forgetful, 1)
        gate.open()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE)
        return results, await forgetful.aget_cache_only(1)

    results, cached = run(main())
    assert [type(result) for result in results] == [TypeError] * 3
    assert str(results[0]) == (
        f"{forgetful.function_id}() returned a coroutine object, which only one caller"
        " could await, so it is not cached: await it in the function (return await ...)"
    )
    assert computations == [1]
    assert cached is CACHE_MISSING


@cache_result(ttl=60)
async def request_for(url, method="GET", self=None):
    """Parameters named as the wrapper's own (``method``, ``self``)."""
    return (url, method, self)


def test_parameters_named_method_or_self_are_passed_by_keyword_to_every_method(store):
    """As on a sync function. ``method=`` collided with a parameter of the
    helper that runs a step on a worker (``aget_cache_only``,
    ``aget_cached_metadata``, ``adelete_cache``: "got multiple values for
    argument 'method'"), ``self=`` with the wrapper's own ``self`` in
    every method."""

    async def main():
        call = {"method": "POST", "self": "me"}
        value = ("/a", "POST", "me")
        assert await request_for.aget_cache_only("/a", **call) is CACHE_MISSING
        assert await request_for("/a", **call) == value
        served, meta = await request_for.aget_with_metadata("/a", **call)
        assert (served, meta["cache_status"]) == (value, CacheStatus.HIT)
        assert await request_for.aget_cache_only("/a", **call) == value
        assert await request_for.aget_cached_metadata("/a", **call) == meta
        assert await request_for.arefresh("/a", **call) == value
        assert await request_for.abypass_cache("/a", **call) == value
        assert request_for.get_cache_key("/a", **call) == request_for.get_cache_key(
            "/a", "POST", "me"
        )
        assert await request_for.adelete_cache("/a", **call) is True
        return await request_for.aget_cache_only("/a", **call)

    assert run(main()) is CACHE_MISSING


def test_tasks_of_loops_on_several_threads_share_one_computation(store):
    """``async_to_sync`` from several threads (each call its own event loop,
    as Django's sync views do) and tasks on another thread's loop, all on
    one cold key: one computation, whose value every caller gets (MISS).
    Task numbers are per loop; the engine tells them apart by thread."""
    from asgiref.sync import async_to_sync

    computations = []
    gate = Gate()

    @cache_result(ttl=60)
    async def report(x):
        computations.append(x)
        await gate.passed()  # until the 7 others follow it
        return ("report", x)

    results = []

    def sync_caller():
        results.append(async_to_sync(report.aget_with_metadata)(1))

    def loop_of_tasks():
        async def main():
            return await asyncio.gather(*(report.aget_with_metadata(1) for _ in range(4)))

        results.extend(run(main()))

    gate.close()
    threads = [threading.Thread(target=sync_caller) for _ in range(4)]
    threads.append(threading.Thread(target=loop_of_tasks))
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: following_calls(report, 1) >= 7, "7 callers following")
    finally:
        gate.open()
        for thread in threads:
            thread.join(DEADLINE)
    assert computations == [1]
    assert [(value, meta["cache_status"]) for value, meta in results] == [
        (("report", 1), CacheStatus.MISS)
    ] * 8


def cancelled_upstream() -> asyncio.Future:
    """A future its owner cancelled: awaiting it raises ``CancelledError``
    in a task nobody cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    return future


def test_a_cancelled_error_the_function_raises_gets_stale_if_error(store):
    """Past its stale window, a recompute that raises ``CancelledError`` on
    its own (an upstream future cancelled by its owner) is a failure like
    any other: the value kept for stale-if-error is served (STALE) to the
    caller and to the callers that followed it, on every store."""
    computations = []
    gate = Gate()
    failing = {"on": False}

    @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
    async def fragile(x):
        computations.append(x)
        await gate.passed()  # until the 2 others follow it
        if failing["on"]:
            return await cancelled_upstream()
        return len(computations)

    async def main():
        with frozen_clock() as clock:
            assert await fragile(1) == 1
            failing["on"] = True
            clock.advance(16)
            gate.close()
            tasks = [asyncio.create_task(fragile.aget_with_metadata(1)) for _ in range(3)]
            await until_waiting(2, fragile, 1)
            gate.open()
            return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE)

    results = run(main())
    served = [r if isinstance(r, BaseException) else (r[0], r[1]["cache_status"]) for r in results]
    assert served == [(1, CacheStatus.STALE)] * 3
    assert computations == [1, 1]


def test_a_background_refresh_that_raises_a_cancelled_error_is_logged(store, caplog):
    """A stale entry's refresh task whose function raises ``CancelledError``
    on its own failed: logged as every failed refresh is, with the stale
    value kept (it ended silently, as if cancelled, and so every later
    refresh did too)."""
    failing = {"on": False}

    @cache_result(ttl=10, stale_while_revalidate=60)
    async def fragile(x):
        if failing["on"]:
            return await cancelled_upstream()
        return "first"

    async def main():
        with frozen_clock() as clock:
            assert await fragile(1) == "first"
            clock.advance(11)
            failing["on"] = True
            value, meta = await fragile.aget_with_metadata(1)
            await wait_for_async_refreshes()
            return value, meta["cache_status"], await fragile.aget_cache_only(1)

    with caplog.at_level(logging.WARNING, logger="restflow"):
        assert run(main()) == ("first", CacheStatus.STALE, "first")
    message = (
        f"restflow: background refresh of {fragile.function_id}() failed; the stale value is kept"
    )
    logged = [(r.levelno, r.getMessage(), type(r.exc_info[1])) for r in caplog.records]
    assert logged == [(logging.ERROR, message, asyncio.CancelledError)]


class SharedReportKey(KeyConstructor):
    """One key string for two functions (a shared key identifier)."""

    x = ArgsKeyField("x")

    class Meta:
        namespace = "edges"
        key_identifier = "reports.shared"


def test_functions_of_one_key_on_two_shared_stores_each_compute_for_their_store():
    """Two async functions share a key identifier but not a store (two
    Django caches here; two Redis servers alike). While one computes, a
    call of the other must not be handed its value: that value belongs to
    the other store, and this store would never get its entry. (The tasks
    that miss a shared-store key were grouped by key string alone; the sync
    path groups callers per store.)"""
    computations = []
    with override_settings(CACHES=DJANGO_CACHES):
        django_caches["locmem"].clear()
        django_caches["default"].clear()
        try:
            first, second, stored, keys = two_stores_of_one_key(computations)
        finally:
            django_caches["locmem"].clear()
            django_caches["default"].clear()
            # The two functions go (a cycle holds each): later tests, and
            # `restflow_cache check`, see no function on those stores.
            gc.collect()
    assert keys[0] == keys[1]
    assert first == ("locmem", CacheStatus.MISS)
    assert second == ("default", CacheStatus.MISS)
    assert stored == "default"
    assert computations == ["locmem", "default"]


def two_stores_of_one_key(computations: list) -> tuple:
    """The calls of the test above, with functions that live only here."""
    gate = Gate()

    @cache_result(ttl=60, key_constructor=SharedReportKey, backend="django:locmem")
    async def on_locmem(x):
        computations.append("locmem")
        await gate.passed()  # still computing when the other is called
        return "locmem"

    @cache_result(ttl=60, key_constructor=SharedReportKey, backend="django:default")
    async def on_default(x):
        computations.append("default")
        return "default"

    async def main():
        gate.close()
        first = asyncio.create_task(on_locmem.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        try:
            second = await asyncio.wait_for(on_default.aget_with_metadata(1), DEADLINE)
        finally:
            gate.open()
        value, meta = await first
        return (
            (value, meta["cache_status"]),
            (second[0], second[1]["cache_status"]),
            await on_default.aget_cache_only(1),
        )

    first, second, stored = run(main())
    return first, second, stored, (on_locmem.get_cache_key(1), on_default.get_cache_key(1))


def test_an_interrupt_from_an_async_ttl_leaves_nothing_behind(store):
    """``SystemExit`` raised by an async callable ``ttl`` (after the
    function computed) ends the call with it, as any interrupt does; the
    process may go on: no flight, no follower and no computation lock are
    left, and the next call computes at once (MISS), storing its value."""
    computations = []
    exiting = {"on": True}

    async def ttl(value, *args):
        if exiting["on"]:
            raise SystemExit("shutting down")
        return 30

    @cache_result(ttl=ttl)
    async def report(x):
        computations.append(x)
        return len(computations)

    with store.configured(LOCK_TIMEOUT=60):
        with pytest.raises(SystemExit, match="shutting down"):
            run(report.aget_with_metadata(1))
        assert (_engine.in_flight(), _engine.waiters()) == (0, 0)
        wait_until(lambda: not store.keys_with("restflow:lock:"), "the lock given back")
        exiting["on"] = False
        value, meta = run(report.aget_with_metadata(1))
        cached = run(report.aget_cache_only(1))
    assert (value, meta["cache_status"], cached) == (2, CacheStatus.MISS, 2)
    assert computations == [1, 1]


def test_a_stale_entry_read_through_async_to_sync_is_refreshed(store):
    """``async_to_sync`` runs each call on a loop that is gone when the
    call returns, cancelling the background refresh task of a stale read at
    its first await. The refresh starts over on restflow's own loop, with
    its claim, so the entry is refreshed (HIT, the new value) instead of
    being served stale, read after read, until its window ends (before:
    STALE, the old value)."""
    from asgiref.sync import async_to_sync

    computations = []

    @cache_result(ttl=10, stale_while_revalidate=60)
    async def version(x):
        computations.append(x)
        await asyncio.sleep(0)  # its I/O: the loop runs other tasks meanwhile
        return len(computations)

    get = async_to_sync(version.aget_with_metadata)
    with frozen_clock() as clock:
        assert get(1)[0] == 1
        clock.advance(11)
        value, meta = get(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
        async_to_sync(wait_for_async_refreshes)()
        value, meta = get(1)
    # The first attempt, cancelled with its loop, then the one that stored.
    assert (value, meta["cache_status"]) == (3, CacheStatus.HIT)
    assert computations == [1, 1, 1]
