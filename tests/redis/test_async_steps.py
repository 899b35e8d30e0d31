"""Async calls on a shared store run the engine's steps (issue 11): the
round trips on worker threads, and no worker ever waits on the event loop;
here the lock a cancelled leader gives back in Redis. Every server (the
``redis`` fixture); that the function runs in the calling task, and the
refresh claim of a closed loop, on every
store: tests/test_async.py."""

from __future__ import annotations

import asyncio
import contextlib

from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from tests.parking import Gate, until
from tests.redis.conftest import redis_settings
from tests.test_async import run


def test_a_cancelled_leader_frees_the_store_lock_at_once(redis_server, redis):
    """LOCK_TIMEOUT 60 s: a lock left to expire would outlast the hang
    guards; given back by the cancelled task, it is free as soon as a worker
    has made the round trip, and the next caller takes it and computes."""
    computations = []
    gate = Gate()

    @cache_result(ttl=30)
    async def slow(x):
        computations.append(x)
        await gate.passed()
        return len(computations)

    async def main():
        gate.close()
        leader = asyncio.create_task(slow.aget_with_metadata(1))
        await until(lambda: computations, "computing")
        assert len(redis.keys("*restflow:lock:*")) == 1
        leader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader
        await until(lambda: not redis.keys("*restflow:lock:*"), "the lock freed")
        gate.open()
        return await slow.aget_with_metadata(1)

    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, LOCK_TIMEOUT=60)):
        value, meta = run(main())
        assert slow._engine.shared_backend().stats()["lock_waits"] == 0
    assert (value, meta["cache_status"]) == (2, CacheStatus.MISS)
    assert computations == [1, 1]
