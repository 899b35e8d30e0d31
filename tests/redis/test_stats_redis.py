"""Statistics on the Redis store (issue 15, item 1): per function, per
backend (with the store's own counts), and a store that fails."""

from __future__ import annotations

from django.test import override_settings

from restflow.caching import CacheStatus, cache_result, reset_stats, stats
from tests.redis.conftest import redis_settings


@cache_result(ttl=30)
def card(user_id):
    return {"id": user_id}


def test_counts_and_lookup_times(redis, redis_server):
    reset_stats()
    card(1)
    card(1)
    assert card.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT
    mine = card.stats()
    assert (mine["miss"], mine["hit"], mine["calls"], mine["computations"]) == (1, 2, 3, 1)
    assert mine["backend"] == redis_server.url
    # The function times the calls the store answered (the two hits);
    # the store times every lookup's round trip (all three).
    assert mine["lookup"]["count"] == 2
    assert mine["lookup"]["p99"] is not None
    backend = stats()["backends"][redis_server.url]
    assert (backend["hit"], backend["miss"], backend["store_errors"]) == (2, 1, 0)
    assert backend["lookup"]["count"] == 3


def test_a_store_that_fails_counts_errors_and_one_breaker_trip(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        card(1)
        reset_stats()
        own_redis.stop()
        # Three connection failures in a row open the breaker (threshold 3).
        statuses = [card.get_with_metadata(1)[1]["cache_status"] for _ in range(3)]
        assert statuses == [CacheStatus.BYPASS] * 3
        mine = card.stats()
        backend = stats()["backends"][own_redis.url]
    assert (mine["bypass"], mine["computations"]) == (3, 3)
    assert (backend["store_errors"], backend["breaker_trips"], backend["bypass"]) == (3, 1, 3)


def test_credentials_stay_out_of_labels():
    from restflow.caching.statistics import backend_label

    class Backend:
        url = "redis://user:secret@127.0.0.1:6380/2"

    assert backend_label(Backend()) == "redis://127.0.0.1:6380/2"
    assert backend_label(None) == "memory"


def test_async_calls_on_redis_are_counted(redis):
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
