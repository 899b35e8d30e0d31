"""The circuit breaker's scope: a store that cannot be reached (refused,
reset, timed out) is skipped for every function until a probe gets through;
an operation the store answers with an error (a write refused under
``noeviction``, a corrupt counter of one function) fails that operation
only, and every read that can succeed keeps succeeding."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from restflow.caching import CacheBackendError, CacheStatus, cache_result
from tests.redis.conftest import redis_settings


@cache_result(ttl=30)
def price(item):
    return {"item": item}


@cache_result(ttl=30)
def stock(item):
    return {"stock": item}


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def test_refused_writes_do_not_stop_reads(own_redis, caplog):
    client = own_redis.client()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        for item in range(5):
            price(item)
        # Every write is refused from now on ("OOM command not allowed").
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        try:
            with caplog.at_level(logging.WARNING, logger="restflow.caching"):
                misses = [status(price, 100 + item) for item in range(5)]
            hits = [status(price, item) for item in range(5)]
            other = [status(stock, item) for item in range(3)]
            # An invalidation deletes a counter: a DEL, which a full Redis
            # still takes, so it lands (no stale entry survives it).
            price.invalidate_all()
            after_invalidation = status(price, 0)
        finally:
            client.config_set("maxmemory", "0")
    # A miss cannot be stored (nor its lock taken): computed live. Five
    # refused writes in a row, more than the breaker's threshold.
    assert misses == [CacheStatus.BYPASS] * 5
    [warning] = [r.getMessage() for r in caplog.records if r.name == "restflow.caching"]
    assert "refused an operation" in warning and "OOM" in warning
    assert hits == [CacheStatus.HIT] * 5
    assert other == [CacheStatus.BYPASS] * 3
    assert after_invalidation is CacheStatus.BYPASS
    assert status(price, 100) is CacheStatus.MISS  # writes work again


def test_a_corrupt_counter_of_one_function_does_not_stop_the_others(redis):
    price(1)
    before = set(redis.keys("*restflow:gen:*"))
    stock(0)  # its first computation starts stock's counter
    [counter] = set(redis.keys("*restflow:gen:*")) - before
    redis.set(counter, b"abc")
    for item in range(5):
        assert stock(item) == {"stock": item}
    assert status(price, 1) is CacheStatus.HIT


def test_an_unreachable_store_is_skipped_for_every_function(own_redis):
    settings = redis_settings(own_redis.url, FAILURE_MODE="raise")
    with override_settings(RESTFLOW_SETTINGS=settings):
        price(1)
        own_redis.stop()
        for _ in range(3):
            with pytest.raises(CacheBackendError, match="unavailable"):
                price(1)
        # Another function does not even try: the breaker is open.
        with pytest.raises(CacheBackendError, match="circuit breaker open"):
            stock(1)
