"""``unix:///path``: Redis on the same host, through its Unix socket.

The README spoke of Unix sockets (they skip the busy-waiting lookups and
the near cache), and the redis crate connects to them, but ``BACKEND``
refused every ``unix://`` URL. django-redis and redis-py take these URLs,
so code moving from them sets them."""

from __future__ import annotations

import re

import pytest
import redis as redis_py
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from tests.redis.conftest import RedisServer, redis_settings
from tests.test_lifecycle_model import AsyncApi, SyncApi, new_loop, run_model
from tests.test_lifecycle_model import areport as model_areport
from tests.test_lifecycle_model import report as model_report

computed: list = []


@cache_result(ttl=60)
def tripled(n):
    computed.append(n)
    return n * 3


class UnixRedis(RedisServer):
    """A redis-server that listens on a Unix socket only (no TCP port)."""

    def __init__(self, directory) -> None:
        super().__init__(directory=directory)
        self.socket = directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def listen(self) -> list[str]:
        return ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]

    def client(self, db: int = 0) -> redis_py.Redis:
        return redis_py.Redis(
            unix_socket_path=str(self.socket), db=db, password=self.password, socket_timeout=2
        )


@pytest.fixture(scope="module")
def unix_redis(tmp_path_factory):
    server = UnixRedis(tmp_path_factory.mktemp("unix")).start()
    yield server
    server.stop()


@pytest.fixture(params=["unix", "redis+unix"])
def on_socket(unix_redis, request):
    unix_redis.client().flushdb()
    computed.clear()
    url = unix_redis.url.replace("unix://", f"{request.param}://", 1)
    with override_settings(RESTFLOW_SETTINGS=redis_settings(url)):
        yield unix_redis


def test_calls_are_cached_through_the_socket(on_socket):
    statuses = [tripled.get_with_metadata(2)[1]["cache_status"] for _ in range(2)]
    assert (statuses, computed) == ([CacheStatus.MISS, CacheStatus.HIT], [2])
    assert on_socket.client().exists(tripled.get_cache_key(2)) == 1


def test_a_database_is_chosen_by_its_query_parameter(unix_redis):
    unix_redis.client(3).flushdb()
    computed.clear()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(f"{unix_redis.url}?db=3")):
        assert tripled(5) == 15
        assert unix_redis.client(3).exists(tripled.get_cache_key(5)) == 1
        assert unix_redis.client(0).exists(tripled.get_cache_key(5)) == 0


def test_calls_through_the_socket_follow_the_lifecycle_model(on_socket):
    run_model(71, SyncApi(model_report))


def test_async_calls_through_the_socket_follow_the_lifecycle_model(on_socket):
    with new_loop() as loop:
        run_model(72, AsyncApi(model_areport, loop=loop))


def test_a_password_under_redis_py_s_name_is_refused_with_the_name_to_use(unix_redis):
    from django.core.exceptions import ImproperlyConfigured

    url = f"{unix_redis.url}?db=0&password=secret"
    with override_settings(RESTFLOW_SETTINGS=redis_settings(url)):
        with pytest.raises(ImproperlyConfigured, match=re.escape('"?pass=...&user=..."')):
            tripled(1)


def test_a_password_is_sent(tmp_path):
    server = UnixRedis(tmp_path)
    server.password = "s3cret"  # --requirepass
    server.start()
    try:
        computed.clear()
        url = f"{server.url}?pass=s3cret"
        with override_settings(RESTFLOW_SETTINGS=redis_settings(url)):
            statuses = [tripled.get_with_metadata(8)[1]["cache_status"] for _ in range(2)]
        assert (statuses, computed) == ([CacheStatus.MISS, CacheStatus.HIT], [8])
    finally:
        server.stop()
