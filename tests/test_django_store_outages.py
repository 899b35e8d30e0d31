"""A Django store's server killed and restarted, two processes, a fork:
one suite for every Django cache that has a server of its own (memcached
through Django's ``PyMemcacheCache``, Redis through django-redis).

What only one of them does (memcached's item limit and key rules,
django-redis's ``OPTIONS``) stays in tests/test_memcached.py and
tests/test_django_redis.py; the suites that take the ``store`` fixture run
on both too (store ids ``django-memcached`` and ``django-redis``).
"""

from __future__ import annotations

import os
import threading

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from restflow._engine import CacheBackendError
from restflow.caching import CacheStatus, cache_result
from tests.memcached import MemcachedServer
from tests.redis.conftest import RedisServer
from tests.stores import django_redis_caches, django_redis_url, memcached_caches, on
from tests.test_lifecycle_model import AsyncApi, PeerApi, SyncApi, new_loop, run_model
from tests.test_lifecycle_model import areport as model_areport
from tests.test_lifecycle_model import report as model_report

calls: list = []


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


@cache_result(ttl=60)
def profile(user_id):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


def served(wrapper, *args):
    """What a call serves, and its status."""
    value, meta = wrapper.get_with_metadata(*args)
    return value, meta["cache_status"]


def in_a_thread(call):
    """``call()``'s result in a thread of its own: with a Django cache
    object of its own (Django keeps one per thread), as another worker."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join(30)
    return result[0]


class OwnServer:
    """A server of the store ``kind`` this test may stop and start again
    (on its port), as the store of every function: ``stop``/``start`` are
    the server's (``run_model`` takes it as its outages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "django-memcached":
            self.server = MemcachedServer().start()
            self.alias = "memcached"
            self.caches = memcached_caches(self.server.location)
        else:
            self.server = RedisServer().start()
            self.alias = "djredis"
            self.caches = django_redis_caches(django_redis_url(self.server))
            self.admin = self.server.client()
            self.admin.ping()  # its one connection, made before any count

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def connections_accepted(self) -> int:
        """How many connections the server has accepted since it started,
        not counting those made to ask it (memcached is asked on a new
        connection each time: ``total_connections`` counts that one too;
        Redis on the admin client's one connection)."""
        if self.kind == "django-memcached":
            stats = self.server.command(b"stats", end=b"END\r\n").decode()
            (line,) = [s for s in stats.splitlines() if s.startswith("STAT total_connections ")]
            self.asked = getattr(self, "asked", 0) + 1
            return int(line.split()[2]) - self.asked
        return self.admin.info("stats")["total_connections_received"] - 1


@pytest.fixture(params=["django-memcached", "django-redis"])
def own_server(request):
    owned = OwnServer(request.param)
    settings = {"CACHE_SETTINGS": {"BACKEND": f"django:{owned.alias}"}}
    with override_settings(CACHES=owned.caches, RESTFLOW_SETTINGS=settings):
        yield owned
    owned.stop()


def test_a_restarted_server_is_bypassed_while_down_then_used_again(own_server):
    """Killed mid-run: calls compute live (BYPASS) and an invalidation
    raises; started again on its port (empty): caching resumes at the next
    call, and an invalidation made right after reaches it, seen by a
    thread whose connection never failed."""
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT)
    own_server.stop()
    assert served(profile, 1) == ({"id": 1, "n": 2}, CacheStatus.BYPASS)
    with pytest.raises(CacheBackendError):
        profile.invalidate_all()
    own_server.start()
    assert served(profile, 1) == ({"id": 1, "n": 3}, CacheStatus.MISS)
    assert served(profile, 1) == ({"id": 1, "n": 3}, CacheStatus.HIT)
    assert in_a_thread(lambda: served(profile, 1)) == ({"id": 1, "n": 3}, CacheStatus.HIT)
    profile.invalidate_all()
    assert in_a_thread(lambda: served(profile, 1)) == ({"id": 1, "n": 4}, CacheStatus.MISS)
    assert calls == [1, 1, 1, 1]


def test_a_connection_idle_across_a_restart_is_not_a_failure(own_server):
    """The server restarted while this thread's connection sat idle: the
    next call finds it closed (pymemcache's MemcacheUnexpectedCloseError;
    redis-py reconnects by itself) and is made again on a new connection:
    a MISS (the restart emptied the server), not a BYPASS counted against
    the store."""
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
    own_server.stop()
    own_server.start()
    assert served(profile, 1) == ({"id": 1, "n": 2}, CacheStatus.MISS)
    assert served(profile, 1) == ({"id": 1, "n": 2}, CacheStatus.HIT)
    assert profile.shared_backend().stats()["store_errors"] == 0


@pytest.mark.parametrize("seed", [56, 57, 58, 59])
def test_calls_across_restarts_follow_the_lifecycle_model(own_server, seed):
    """tests/test_lifecycle_model.py's model while the server is killed
    now and then (every call BYPASS, live; an invalidation raises
    CacheBackendError; nothing wrong is ever served) and starts again,
    empty, on its port."""
    run_model(seed, SyncApi(model_report), outages=own_server, steps=400)


@pytest.mark.parametrize("seed", [60, 61])
def test_async_calls_across_restarts_follow_the_lifecycle_model(own_server, seed):
    with new_loop() as loop:
        run_model(seed, AsyncApi(model_areport, loop=loop), outages=own_server, steps=400)


@pytest.mark.parametrize("seed", [47, 48, 49])
@pytest.mark.parametrize("store", on("django-memcached", "django-redis"), indirect=True)
def test_two_processes_on_one_server_follow_the_lifecycle_model(store, seed):
    """Each operation in one of two processes on one Django alias: what one
    stores, invalidates or refreshes, the other sees."""
    # The peer gets this process's CACHES: the alias on the same server.
    peer = PeerApi("report", store.settings(), caches=django_settings.CACHES)
    try:
        run_model(seed, SyncApi(model_report), peer)
    finally:
        peer.close()


def test_a_forked_child_opens_its_own_connection(own_server):
    """A process forked after it used the store (a gunicorn ``--preload``
    master that warmed its cache): the child must not use the connection
    it inherited (parent and child would read each other's answers).
    pymemcache never notices a fork, so the child closes the Django cache
    objects it inherited; redis-py's pool notices the new pid. Either way
    the child connects again, and the parent goes on using its own."""
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
    before = own_server.connections_accepted()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            code = 0 if served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT) else 2
        finally:
            os._exit(code)
    _, status_code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status_code) == 0, "the child's read"
    assert own_server.connections_accepted() == before + 1  # the child's
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT)
    assert own_server.connections_accepted() == before + 1  # none new
