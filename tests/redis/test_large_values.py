"""A large value on Redis is a slow round trip, not a store that is down.

The read timeout guards against a server that stopped answering. A value
of tens of megabytes takes longer than that to arrive (or to be taken in)
even while every byte comes on time; read as a timeout, it counted as a
store failure, and enough of them opened the circuit breaker for every
function on the store. Here the server's answers come through a slow link
(a proxy that pauses after every megabyte): each pause is well inside the
read timeout, the whole answer well past it."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from restflow.caching import cache_result, stats
from tests.redis.conftest import RedisServer
from tests.redis.gate_proxy import GateProxy

#: Megabytes of the value; the link pauses 0.1 s after each one.
MEGABYTES = 16
READ_TIMEOUT = 1.0

computed: list = []


@cache_result(ttl=60)
def report(n):
    computed.append(n)
    return (n, b"r" * (MEGABYTES << 20))


@cache_result(ttl=60)
async def areport(n):
    computed.append(n)
    return (n, b"a" * (MEGABYTES << 20))


@cache_result(ttl=60)
def small(n):
    computed.append(n)
    return n


@pytest.fixture(scope="module")
def slow_link():
    server = RedisServer().start()
    proxy = GateProxy(server.port, paced=(1 << 20, 0.1))
    yield proxy, server
    proxy.close()
    server.stop()


@pytest.fixture
def redis_behind(slow_link):
    proxy, server = slow_link
    computed.clear()
    server.client().flushdb()
    settings = {"BACKEND": proxy.url, "READ_TIMEOUT": READ_TIMEOUT}
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": settings}):
        yield proxy.url


def backend_faults(url):
    backend = stats()["backends"][url]
    return backend["store_errors"], backend["breaker_trips"]


def test_a_large_value_is_stored_and_served(redis_behind):
    before = backend_faults(redis_behind)
    value, meta = report.get_with_metadata(1)
    assert (meta["cache_status"], value[0], len(value[1])) == ("MISS", 1, MEGABYTES << 20)
    value, meta = report.get_with_metadata(1)
    assert (meta["cache_status"], value) == ("HIT", (1, b"r" * (MEGABYTES << 20)))
    # The store never looked down, so other functions cache as usual.
    assert [small.get_with_metadata(7)[1]["cache_status"] for _ in range(2)] == ["MISS", "HIT"]
    assert computed == [1, 7]
    assert backend_faults(redis_behind) == before


def lookups(server) -> int:
    """The MGETs (restflow's lookups) the server has answered."""
    return server.client().info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


def test_a_large_value_is_served_to_async_callers(redis_behind, slow_link):
    _, server = slow_link
    before = backend_faults(redis_behind)

    async def calls():
        first = await areport.aget_with_metadata(2)
        looked_up = lookups(server)
        second = await areport.aget_with_metadata(2)
        return first, second, lookups(server) - looked_up

    (first, first_meta), (second, second_meta), hit_lookups = asyncio.run(calls())
    assert (first_meta["cache_status"], second_meta["cache_status"]) == ("MISS", "HIT")
    assert second == first == (2, b"a" * (MEGABYTES << 20))
    # The hit is read on the event loop's socket, which keeps waiting while
    # the answer keeps coming, rather than given up on and fetched again.
    assert hit_lookups == 1
    assert computed == [2]
    assert backend_faults(redis_behind) == before
