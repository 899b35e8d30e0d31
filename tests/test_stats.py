"""Statistics per function and per backend (issue 15, item 1), on every store
(tests/stores.py); a Redis store that fails (its breaker):
tests/redis/test_stats_redis.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

import restflow.caching
from restflow.caching import CacheStatus, cache_result, reset_stats, stats
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.parking import wait_until
from tests.stores import on

calls: list = []


@cache_result(ttl=10, stale_while_revalidate=5)
def square(x):
    calls.append(x)
    return x * x


@pytest.fixture(autouse=True)
def _fresh_stats(request):
    """Counts start at zero, on the test's store (after ``store`` is set)."""
    if "store" in request.fixturenames:
        request.getfixturevalue("store")
    reset_stats()


def counts(wrapper, *names):
    got = wrapper.stats()
    return {name: got[name] for name in names}


def test_the_package_exports_the_functions_not_the_module():
    assert callable(restflow.caching.stats)
    assert restflow.caching.stats is stats
    assert restflow.caching.reset_stats is reset_stats


def test_every_status_is_counted(store):
    with frozen_clock() as clock:
        square(2)  # MISS
        square(2)  # HIT (vectorcall path)
        assert square.get_with_metadata(2)[1]["cache_status"] is CacheStatus.HIT
        clock.advance(11)
        assert square.get_with_metadata(2)[1]["cache_status"] is CacheStatus.STALE
        wait_for_refreshes()
        square.refresh(2)
        square.bypass_cache(2)
    got = square.stats()
    assert {k: got[k] for k in ("hit", "miss", "stale", "refresh", "bypass", "calls")} == {
        "hit": 2,
        "miss": 1,
        "stale": 1,
        "refresh": 1,
        "bypass": 1,
        "calls": 6,
    }
    # miss + background refresh + refresh + bypass
    assert got["computations"] == 4
    assert got["background_refreshes"] == 1
    assert got["compute"]["count"] == 4
    assert got["hit_ratio"] == 3 / 6
    assert got["errors"] == 0
    assert got["backend"] == store.label
    if store.kind == "memory":
        # A memory hit is counted, never timed (a clock read costs more).
        assert got["lookup"]["count"] == 0
    else:
        assert got["lookup"]["count"] == 3  # two hits and the stale read


def test_errors_and_stale_if_error(store):
    failing = []

    @cache_result(ttl=10, stale_while_revalidate=0, stale_if_error=60)
    def flaky(x):
        if failing:
            raise ValueError("down")
        return x

    with frozen_clock() as clock:
        assert flaky(1) == 1
        clock.advance(11)
        failing.append(True)
        value, meta = flaky.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
        with pytest.raises(ValueError):
            flaky(2)  # nothing kept for this one
        with pytest.raises(ValueError):
            flaky.bypass_cache(1)
    got = counts(
        flaky, "miss", "stale", "stale_if_error", "bypass", "errors", "computations", "calls"
    )
    assert got == {
        "miss": 1,
        "stale": 1,
        "stale_if_error": 1,
        "bypass": 0,  # a call that raised served nothing
        "errors": 3,
        "computations": 4,
        "calls": 2,
    }


def test_a_caller_that_waits_on_another_is_counted_once(store):
    release = threading.Event()

    @cache_result(ttl=10)
    def slow(x):
        assert release.wait(30)
        return x

    leader = threading.Thread(target=slow, args=(1,))
    leader.start()
    follower_status = []
    follower = threading.Thread(
        target=lambda: follower_status.append(slow.get_with_metadata(1)[1]["cache_status"])
    )
    # Whichever thread joins first computes; the other waits on it.
    follower.start()
    wait_until(lambda: slow.stats()["single_flight_waits"] == 1, "the follower waiting")
    release.set()
    leader.join(30)
    follower.join(30)
    assert follower_status == [CacheStatus.MISS]
    assert counts(slow, "miss", "single_flight_waits", "computations") == {
        "miss": 2,
        "single_flight_waits": 1,
        "computations": 1,
    }


def test_reset_and_the_module_level_view(store):
    @cache_result(ttl=10)
    def other(x):
        return x

    square(3)
    square(3)
    other(1)
    everything = stats()
    assert everything["functions"][square.function_id]["hit"] == 1
    assert everything["functions"][other.function_id]["miss"] == 1
    totals = everything["backends"][store.label]
    assert (totals["hit"], totals["miss"]) == (1, 2)
    assert totals["compute"]["count"] == 2
    reset_stats()
    assert square.stats()["calls"] == 0
    assert stats()["backends"][store.label]["calls"] == 0
    square(3)
    assert square.stats()["hit"] == 1
    other(2)
    square.reset_stats()
    assert square.stats()["hit"] == 0
    assert other.stats()["miss"] == 1, "one wrapper's reset leaves the others"


def test_percentiles_are_bucket_bounds():
    from restflow.caching.statistics import histogram

    buckets = [0] * 27
    buckets[5] = 98  # <= 32 us
    buckets[12] = 2  # <= 4.096 ms
    summary = histogram({"buckets": buckets, "sum": 0.01})
    assert (summary["count"], summary["p50"], summary["p99"]) == (100, 0.000032, 0.004096)
    assert summary["buckets"][-1] == (float("inf"), 100)
    assert histogram({"buckets": [0] * 27, "sum": 0.0})["p50"] is None


def test_a_bad_event_name_says_what_to_use():
    with pytest.raises(ValueError, match=r'unknown statistics event "hits".*hit, miss'):
        square.steps.record("hits")
    with pytest.raises(ValueError, match="needs its duration"):
        square.steps.record("compute")


def test_a_duration_too_long_for_the_engine_is_counted_past_the_last_bucket():
    """A huge duration panicked in the engine (Duration::from_secs_f64)."""

    @cache_result(ttl=10)
    def timed(x):
        return x

    timed.steps.record("compute", 1e300)
    compute = timed.stats()["compute"]
    assert (compute["count"], compute["p50"]) == (1, float("inf"))
    assert timed.stats()["computations"] == 1


def test_async_functions_are_counted():
    @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
    async def fetch(x):
        return x

    async def scenario():
        with frozen_clock() as clock:
            await fetch(1)  # MISS
            await fetch(1)  # HIT
            clock.advance(11)
            _, meta = await fetch.aget_with_metadata(1)  # STALE, refreshed in the background
            assert meta["cache_status"] is CacheStatus.STALE
            await restflow.caching.asynchronous.wait_for_async_refreshes()
            await fetch.arefresh(1)
            await fetch.abypass_cache(1)

    asyncio.run(scenario())
    got = counts(
        fetch, "hit", "miss", "stale", "refresh", "bypass", "computations", "background_refreshes"
    )
    assert got == {
        "hit": 1,
        "miss": 1,
        "stale": 1,
        "refresh": 1,
        "bypass": 1,
        "computations": 4,
        "background_refreshes": 1,
    }
    assert fetch.stats()["compute"]["count"] == 4
    assert stats()["functions"][fetch.function_id]["calls"] == 5


@pytest.mark.urls("tests.response_views")
def test_cache_response_views_are_counted():
    from rest_framework.test import APIClient

    from tests.response_views import ArticleView

    view = ArticleView.get
    view.reset_stats()
    client = APIClient()
    assert client.get("/articles/1/")["X-Cache-status"] == "MISS"
    assert client.get("/articles/1/")["X-Cache-status"] == "HIT"
    got = view.stats()
    assert (got["miss"], got["hit"], got["calls"], got["computations"]) == (1, 1, 2, 1)
    assert stats()["functions"]["tests.response_views.ArticleView.get"]["calls"] == 2


@pytest.mark.parametrize("store", on("django", "redis"), indirect=True)
def test_a_shared_store_times_its_lookups(store):
    square(1)
    square(1)
    assert square.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT
    mine = square.stats()
    assert (mine["miss"], mine["hit"], mine["calls"], mine["computations"]) == (1, 2, 3, 1)
    assert mine["backend"] == store.label
    # The function times the calls the store answered (the two hits);
    # the store times every lookup's round trip (all three).
    assert mine["lookup"]["count"] == 2
    assert mine["lookup"]["p99"] is not None
    backend = stats()["backends"][store.label]
    assert (backend["hit"], backend["miss"], backend["store_errors"]) == (2, 1, 0)
    assert backend["lookup"]["count"] == 3


def test_credentials_stay_out_of_labels():
    from restflow.caching.statistics import backend_label

    class Backend:
        url = "redis://user:secret@127.0.0.1:6380/2"

    assert backend_label(Backend()) == "redis://127.0.0.1:6380/2"
    assert backend_label(None) == "memory"


@pytest.mark.parametrize("store", on("django", "redis"), indirect=True)
def test_async_calls_on_a_shared_store_are_counted(store):
    import asyncio

    @cache_result(ttl=30)
    async def fetch(x):
        return x

    async def scenario():
        assert (await fetch.aget_with_metadata(1))[1]["cache_status"] is CacheStatus.MISS
        # Fetched by the event loop itself, counted and timed by the async layer.
        assert (await fetch.aget_with_metadata(1))[1]["cache_status"] is CacheStatus.HIT
        await fetch.abypass_cache(1)

    asyncio.run(scenario())
    got = fetch.stats()
    assert (got["miss"], got["hit"], got["bypass"], got["computations"]) == (1, 1, 1, 2)
    assert got["lookup"]["count"] == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sync_and_async_count_every_status_alike_on_every_store(store, kind):
    """MISS, HIT, STALE with its background refresh, REFRESH, BYPASS, and a
    failed recompute answered with the kept value, counted the same for a
    sync and an async function on each store."""
    failing = []

    def value(x):
        if failing:
            raise ValueError("the source is down")
        return x

    if kind == "sync":
        fetch = cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)(value)

        async def run(method, *args):
            return getattr(fetch, method)(*args)

        async def settle():
            wait_for_refreshes()
    else:

        @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
        async def fetch(x):
            return value(x)

        async def run(method, *args):
            return await getattr(fetch, "a" + method)(*args)

        async def settle():
            await restflow.caching.asynchronous.wait_for_async_refreshes()

    async def scenario():
        with frozen_clock() as clock:
            seen = [(await run("get_with_metadata", 1))[1]["cache_status"] for _ in range(2)]
            clock.advance(11)
            seen.append((await run("get_with_metadata", 1))[1]["cache_status"])
            await settle()
            await run("refresh", 1)
            await run("bypass_cache", 1)
            clock.advance(16)  # past the stale window, inside stale_if_error
            failing.append(True)
            seen.append((await run("get_with_metadata", 1))[1]["cache_status"])
        return seen

    seen = asyncio.run(scenario())
    assert seen == [CacheStatus.MISS, CacheStatus.HIT, CacheStatus.STALE, CacheStatus.STALE]
    names = ("hit", "miss", "stale", "refresh", "bypass", "calls", "computations")
    more = ("background_refreshes", "errors", "stale_if_error")
    got = counts(fetch, *names, *more)
    assert got == {
        "hit": 1,
        "miss": 1,
        "stale": 2,
        "refresh": 1,
        "bypass": 1,
        "calls": 6,
        "computations": 5,
        "background_refreshes": 1,
        "errors": 1,
        "stale_if_error": 1,
    }
    assert fetch.stats()["compute"]["count"] == 5
