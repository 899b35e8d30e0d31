"""Async Redis hits fetched on the event loop's own socket."""

from __future__ import annotations

import asyncio

import pytest

from restflow.caching import CacheStatus, asynchronous, cache_result

calls: list = []


@cache_result(ttl=60)
async def payload(x):
    calls.append(x)
    return {"x": x, "n": len(calls)}


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_fresh_hit_needs_no_worker_thread(redis, monkeypatch):
    async def scenario():
        first = await payload.aget_with_metadata(1)
        assert first[1]["cache_status"] is CacheStatus.MISS

        def no_threads():
            raise AssertionError("a fresh hit went through a worker thread")

        monkeypatch.setattr(asynchronous, "worker_pool", no_threads)
        for _ in range(20):
            value, meta = await payload.aget_with_metadata(1)
            assert (value, meta["cache_status"]) == (first[0], CacheStatus.HIT)
            assert meta["cached_at"] == first[1]["cached_at"]

    run(scenario())
    assert calls == [1]


def test_a_tampered_entry_read_by_the_loop_is_a_miss(redis):
    async def scenario():
        await payload(1)
        await payload(1)  # the loop's connection now exists
        key = payload.get_cache_key(1)
        stored = bytearray(redis.get(key))
        stored[60] ^= 1
        redis.set(key, bytes(stored))
        return await payload.aget_with_metadata(1)

    value, meta = run(scenario())
    assert meta["cache_status"] is CacheStatus.MISS
    assert value["n"] == 2


def test_concurrent_hits_share_the_loops_connections(redis):
    async def scenario():
        await payload(1)
        results = await asyncio.gather(*(payload.aget_with_metadata(1) for _ in range(50)))
        return {meta["cache_status"] for _, meta in results}

    assert run(scenario()) == {CacheStatus.HIT}
    assert calls == [1]


def test_a_paused_redis_falls_back_within_the_timeouts(own_redis):
    from django.test import override_settings

    from tests.redis.conftest import redis_settings
    from tests.timeouts import PAUSED, PAUSED_CALL_LIMIT

    async def scenario():
        await payload(1)
        await payload(1)
        own_redis.pause()
        try:
            started = asyncio.get_running_loop().time()
            _, meta = await payload.aget_with_metadata(1)
            return meta, asyncio.get_running_loop().time() - started
        finally:
            own_redis.resume()

    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, **PAUSED)):
        meta, elapsed = run(scenario())
    assert meta["cache_status"] is CacheStatus.BYPASS
    assert elapsed < PAUSED_CALL_LIMIT, elapsed


def test_with_loop_socket_off_hits_go_through_a_worker_thread(redis_server, redis):
    """``LOOP_SOCKET=False``: the loop opens no socket of its own; a hit is
    still a HIT, fetched by a worker thread like every other round trip."""
    from django.test import override_settings

    from tests.redis.conftest import redis_settings

    opened = []
    real_open = asynchronous._engine.LoopConnection.open

    async def scenario():
        first = await payload.aget_with_metadata(1)
        hits = [await payload.aget_with_metadata(1) for _ in range(5)]
        return first, hits

    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, LOOP_SOCKET=False)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                asynchronous._engine,
                "LoopConnection",
                type(
                    "Counting",
                    (),
                    {"open": staticmethod(lambda *a: opened.append(a) or real_open(*a))},
                ),
            )
            first, hits = run(scenario())
    assert first[1]["cache_status"] is CacheStatus.MISS
    assert [(value, meta["cache_status"]) for value, meta in hits] == [
        (first[0], CacheStatus.HIT)
    ] * 5
    assert opened == []
    assert calls == [1]


def test_with_loop_socket_on_the_loop_opens_its_own_socket(redis_server, redis):
    """The default, as a control for the test above: the same calls open
    one loop connection."""
    opened = []
    real_open = asynchronous._engine.LoopConnection.open

    async def scenario():
        await payload.aget_with_metadata(1)
        return [await payload.aget_with_metadata(1) for _ in range(5)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            asynchronous._engine,
            "LoopConnection",
            type(
                "Counting", (), {"open": staticmethod(lambda *a: opened.append(a) or real_open(*a))}
            ),
        )
        hits = run(scenario())
    assert {meta["cache_status"] for _, meta in hits} == {CacheStatus.HIT}
    assert len(opened) == 1


def test_a_burst_of_hits_opens_at_most_pool_size_loop_sockets(redis_server, redis):
    """100 concurrent hits, three times over, on one loop with
    ``POOL_SIZE=4``: the loop opens 4 sockets of its own and keeps them; the
    hits that find them all busy go through the engine (its own pool) and
    are HITs all the same. It opened a socket per concurrent hit and kept
    every one (100 here; a burst of 5,000 requests held 5,000 connections
    per process, past Redis's ``maxclients`` with a few workers)."""
    from django.test import override_settings

    from tests.redis.conftest import redis_settings

    opened = []
    real_open = asynchronous._engine.LoopConnection.open

    async def scenario():
        first = await payload.aget_with_metadata(1)
        rounds = []
        for _ in range(3):
            hits = await asyncio.gather(*(payload.aget_with_metadata(1) for _ in range(100)))
            rounds.append(hits)
        return first, [hit for hits in rounds for hit in hits]

    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, POOL_SIZE=4)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                asynchronous._engine,
                "LoopConnection",
                type(
                    "Counting",
                    (),
                    {"open": staticmethod(lambda *a: opened.append(a) or real_open(*a))},
                ),
            )
            first, hits = run(scenario())
    assert [(value, meta["cache_status"]) for value, meta in hits] == [
        (first[0], CacheStatus.HIT)
    ] * 300
    assert len(opened) == 4
    assert calls == [1]
