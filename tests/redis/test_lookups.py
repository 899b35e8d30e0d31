"""Hits read through the lookup connections (plain TCP): with and without
busy-waiting, behind a password on another database, and after the
server was paused mid-answer."""

from __future__ import annotations

import pytest
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from tests.redis.conftest import SERVERS, RedisServer, redis_settings
from tests.timeouts import PAUSED

calls: list = []


@cache_result(ttl=30)
def article(n):
    calls.append(n)
    return {"id": n, "title": f"article {n}", "tags": ["a", "b"]}


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()


def statuses(*ns):
    return [article.get_with_metadata(n)[1]["cache_status"] for n in ns]


@pytest.mark.parametrize("spin", [0, 0.0001, 0.001])
def test_hits_with_and_without_busy_waiting(redis, redis_server, spin):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, READ_SPIN=spin)):
        assert statuses(1, 2) == [CacheStatus.MISS, CacheStatus.MISS]
        assert [article(1) for _ in range(50)] == [article(1)] * 50
        assert statuses(1, 2) == [CacheStatus.HIT, CacheStatus.HIT]
        assert article(2) == {"id": 2, "title": "article 2", "tags": ["a", "b"]}
    assert calls == [1, 2]


def test_the_server_is_the_one_named(redis, server_kind):
    field, version = SERVERS[server_kind][1]
    assert redis.info("server")[field].startswith(version)


def test_a_password_and_a_database_reach_the_lookups(server_kind):
    server = RedisServer(password="s3cret", binary=SERVERS[server_kind][0]).start()
    try:
        url = server.url.removesuffix("/0") + "/3"
        with override_settings(RESTFLOW_SETTINGS=redis_settings(url)):
            assert statuses(1) == [CacheStatus.MISS]
            assert statuses(1) == [CacheStatus.HIT]
        assert server.client(db=3).dbsize() > 0
        assert server.client(db=0).dbsize() == 0
        wrong = url.replace("s3cret", "wrong")
        with override_settings(RESTFLOW_SETTINGS=redis_settings(wrong)):
            # Refused set-up: the call runs live, nothing raises.
            assert statuses(1) == [CacheStatus.BYPASS]
    finally:
        server.stop()
    assert calls == [1, 1]


def test_a_timed_out_lookup_never_hands_its_late_answer_to_the_next(own_redis):
    settings = redis_settings(own_redis.url, READ_SPIN=0.0001, **PAUSED)
    with override_settings(RESTFLOW_SETTINGS=settings):
        assert statuses(1, 1) == [CacheStatus.MISS, CacheStatus.HIT]
        own_redis.pause()
        try:
            assert statuses(1) == [CacheStatus.BYPASS]
        finally:
            own_redis.resume()
        # The answer to the timed-out lookup of 1 now arrives; its
        # connection was dropped, so the lookup of 2 cannot read it.
        assert statuses(2) == [CacheStatus.MISS]
        assert article(2)["id"] == 2
        assert statuses(1, 2) == [CacheStatus.HIT, CacheStatus.HIT]
    assert calls == [1, 1, 2]
