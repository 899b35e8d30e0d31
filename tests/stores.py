"""The stores a test runs on: one ``store`` fixture instead of a copied suite
per store (issue 11).

``store`` is parametrized over the memory store, a Django cache (LocMem),
Django's memcached backend on a real memcached (``tests/memcached.py``),
django-redis (the third-party ``django_redis.cache.RedisCache``) on the
session's Redis server and the three Redis servers of
``tests/redis/conftest.py`` (ids ``memory``, ``django``,
``django-memcached``, ``django-redis``, ``redis``, ``redis6``,
``valkey9``). A test that applies to fewer names them::

    @pytest.mark.parametrize("store", on("memory", "redis"), indirect=True)

(``redis`` stands for the three servers). The servers are started once
per session, on first use, and shared with the tests under ``tests/redis``
(whose ``redis_server`` fixture takes them from the same pool), so a folded
suite costs no extra server start.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import redis as redis_py
from django.core.cache import caches as django_caches
from django.core.management import call_command
from django.core.signals import setting_changed
from django.test import override_settings

from tests.memcached import MemcachedServer
from tests.redis.conftest import SERVERS, RedisServer, redis_settings, server_binary

#: The Django cache the ``django`` store uses (locmem: in this process).
DJANGO_CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "locmem": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "restflow-store",
    },
    "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "rf_store"},
}

#: The Django alias of each Django store id. ``django-db`` (the database
#: cache) is not in ``ALL``: a test names it through ``on`` where the
#: database matters (its engine threads cannot see the test database).
#: ``django-memcached``'s alias gets its ``LOCATION`` (the session's
#: memcached) in ``using_store``, ``django-redis``'s its database on the
#: session's ``redis`` server.
DJANGO_ALIASES = {
    "django": "locmem",
    "django-db": "db",
    "django-memcached": "memcached",
    "django-redis": "djredis",
}

#: Every store id: the memory store, a Django cache (LocMem), Django's
#: memcached backend, django-redis, each Redis server.
ALL = ("memory", "django", "django-memcached", "django-redis", *SERVERS)

#: The database ``django-redis`` uses on the session's ``redis`` server:
#: one of its own, so the ``redis`` store's flushes (database 0) and its
#: own never meet.
DJANGO_REDIS_DB = 9


#: pymemcache's options restflow needs (README, "Any Django cache"): a
#: failed connection raises at once instead of pymemcache answering empty
#: results without asking the server; ``dead_timeout`` 0 tries the server
#: again at the next call (a restarted server is used at once).
MEMCACHED_OPTIONS = {"retry_attempts": 0, "dead_timeout": 0}


def memcached_caches(location: str, **options) -> dict:
    """``DJANGO_CACHES`` with the ``memcached`` alias on ``location``, with
    ``MEMCACHED_OPTIONS`` (``options`` override them)."""
    memcached = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": location,
        "OPTIONS": {**MEMCACHED_OPTIONS, **options},
    }
    return {**DJANGO_CACHES, "memcached": memcached}


def django_redis_caches(url: str, **options) -> dict:
    """``DJANGO_CACHES`` with the ``djredis`` alias (django-redis's
    ``RedisCache``) on the Redis at ``url`` (a ``redis://`` URL naming
    its database), with ``options`` as its ``OPTIONS``."""
    djredis = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url, "OPTIONS": options}
    return {**DJANGO_CACHES, "djredis": djredis}


def django_redis_url(server: RedisServer, db: int = DJANGO_REDIS_DB) -> str:
    """The ``LOCATION`` of a django-redis alias on ``server``'s database ``db``."""
    return server.url.rsplit("/", 1)[0] + f"/{db}"


#: Every Django cache object made (in any thread) since ``CACHES`` last
#: changed; see ``close_replaced_caches``.
_made_caches: weakref.WeakSet = weakref.WeakSet()
_made_caches_lock = threading.Lock()


def _tracking(create_connection):
    def create(alias):
        made = create_connection(alias)
        with _made_caches_lock:
            _made_caches.add(made)
        return made

    return create


def close_replaced_caches(*, setting: str, **kwargs) -> None:
    """When ``CACHES`` changes (``override_settings``, entered or left):
    closes every Django cache object made under the replaced value, in
    whichever thread made it.

    Django's own receiver (``django.test.signals.clear_cache_handlers``)
    closes only the calling thread's, then gives ``caches`` a new
    ``asgiref`` ``Local``. Django keeps each thread's cache objects in a
    context variable of that ``Local``, so a thread that lives on (each of
    restflow's ``restflow-async`` workers, its refresh workers) keeps the
    objects it made under every earlier ``CACHES`` in its context, never
    used again and never closed: on memcached each is an open connection,
    about 33 per async model run (32 workers and the refresh workers), and
    past memcached's 1024 the server refused new ones (``ERROR Too many
    open connections``, which pymemcache raises as
    ``MemcacheUnknownCommandError: b'get'``). They stay referenced from
    those contexts (only their own thread can drop them), closed."""
    if setting != "CACHES":
        return
    with _made_caches_lock:
        replaced = list(_made_caches)
        _made_caches.clear()
    for cache in replaced:
        cache.close()


django_caches.create_connection = _tracking(django_caches.create_connection)
setting_changed.connect(close_replaced_caches, dispatch_uid="tests.stores.close_replaced_caches")


def on(*kinds: str) -> list[str]:
    """The store ids for ``kinds`` (``"redis"`` means every Redis server;
    ``"django-db"`` the Django database cache), to parametrize ``store``
    indirectly with."""
    ids: list[str] = []
    for kind in kinds:
        ids.extend(SERVERS if kind == "redis" else [kind])
    return ids


class ServerPool:
    """The session's Redis servers, one per kind, and its memcached, each
    started on first use."""

    def __init__(self) -> None:
        self._servers: dict[str, RedisServer] = {}
        self._memcached: MemcachedServer | None = None

    def memcached(self) -> MemcachedServer:
        if self._memcached is None:
            self._memcached = MemcachedServer().start()
        return self._memcached

    def get(self, kind: str) -> RedisServer:
        if kind not in self._servers:
            self._servers[kind] = RedisServer(binary=server_binary(kind)).start()
        return self._servers[kind]

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        if self._memcached is not None:
            self._memcached.stop()
            self._memcached = None


@pytest.fixture(scope="session")
def server_pool():
    pool = ServerPool()
    yield pool
    pool.stop()


@dataclass
class Store:
    """The store a test runs on.

    ``kind`` is ``"memory"``, ``"django"`` (any Django alias) or
    ``"redis"`` (whichever server);
    ``id`` the test id; ``label`` the backend as ``stats()`` and the
    management command name it; ``server``/``client`` the Redis server and
    a client of its database (None on the other stores); ``memcached`` the
    memcached server of ``django-memcached`` (None on the others);
    ``djredis`` a client of ``django-redis``'s database, to list its keys
    (None on the others).
    """

    id: str
    kind: str
    label: str
    server: RedisServer | None = None
    client: redis_py.Redis | None = field(default=None, repr=False)
    memcached: MemcachedServer | None = None
    djredis: redis_py.Redis | None = field(default=None, repr=False)

    @property
    def shared(self) -> bool:
        """Whether entries live outside this process (Django cache, Redis)."""
        return self.kind != "memory"

    @property
    def across_processes(self) -> bool:
        """Whether another process (a forked child) sees the entries this
        one stores: on a server (Redis, memcached), not in LocMem."""
        return self.kind == "redis" or self.memcached is not None or self.djredis is not None

    def settings(self, **extra) -> dict:
        """The RESTFLOW_SETTINGS of this store, with ``extra`` cache settings."""
        if self.server is not None:
            return redis_settings(self.server.url, **extra)
        return {"CACHE_SETTINGS": {"BACKEND": self.label, **extra}}

    @contextmanager
    def configured(self, **extra) -> Iterator[None]:
        """Within: this store with ``extra`` cache settings (``SERIALIZER``...)."""
        with override_settings(RESTFLOW_SETTINGS=self.settings(**extra)):
            yield

    def raw(self, key: str) -> bytes | None:
        """What the shared store holds under ``key``, as stored."""
        if self.client is not None:
            return self.client.get(key)
        assert self.kind == "django", "the memory store has no keys to look up"
        return django_caches[self.label.removeprefix("django:")].get(key)

    def keys_with(self, part: str) -> list[str]:
        """The keys the shared store holds whose name contains ``part`` (a
        kind of key of crates/restflow-cache/src/shared/keyspace.rs, such as
        ``"restflow:refresh:"``); none on the memory store."""
        if self.client is not None:
            return [key.decode() for key in self.client.scan_iter(f"*{part}*")]
        if self.kind == "memory":
            return []
        if self.memcached is not None:
            # Django writes ``:<version>:<key>``; the server lists them all.
            return [key.split(":", 2)[2] for key in self.memcached.keys() if part in key]
        if self.djredis is not None:
            # django-redis writes ``:<version>:<key>`` too.
            return [key.decode().split(":", 2)[2] for key in self.djredis.scan_iter(f"*{part}*")]
        # LocMem's own table: a Django cache has no way to list its keys.
        cache = django_caches[self.label.removeprefix("django:")]
        return [key for key in list(cache._cache) if part in key]

    def holds(self, *keys: str) -> int:
        """How many of ``keys`` the shared store holds an entry under."""
        if self.client is not None:
            return self.client.exists(*keys)
        return sum(self.raw(key) is not None for key in keys)


@contextmanager
def using_store(kind: str, pool: ServerPool | None = None) -> Iterator[Store]:
    """Within: the cache uses store ``kind`` (an id of ``ALL``), emptied
    before and after.

    Statistics are not reset here (the statistics tests reset them, where
    the counts matter)."""
    if kind in SERVERS:
        assert pool is not None, "a Redis store needs the server pool"
        server = pool.get(kind)
        client = server.client()
        client.flushdb()
        store = Store(kind, "redis", server.url, server, client)
        with override_settings(CACHES=DJANGO_CACHES, RESTFLOW_SETTINGS=store.settings()):
            yield store
        client.flushdb()
        return
    if kind == "memory":
        store = Store(kind, kind, "memory")
        with override_settings(CACHES=DJANGO_CACHES, RESTFLOW_SETTINGS=store.settings()):
            yield store
        return
    alias = DJANGO_ALIASES[kind]
    store = Store(kind, "django", f"django:{alias}")
    caches = DJANGO_CACHES
    if kind == "django-memcached":
        assert pool is not None, "memcached is in the server pool"
        store.memcached = pool.memcached()
        caches = memcached_caches(store.memcached.location)
    if kind == "django-redis":
        assert pool is not None, "django-redis runs on the pool's redis server"
        server = pool.get("redis")
        store.djredis = server.client(DJANGO_REDIS_DB)
        caches = django_redis_caches(django_redis_url(server))
    with override_settings(CACHES=caches, RESTFLOW_SETTINGS=store.settings()):
        if alias == "db":
            call_command("createcachetable", "rf_store", verbosity=0)
        django_caches[alias].clear()  # locmem, memcached and Redis outlive the test
        yield store
        django_caches[alias].clear()


@pytest.fixture(params=ALL)
def store(request, server_pool):
    """``store``: the test runs on each store of ``ALL`` (or those it
    parametrizes ``store`` with, indirectly); a ``Store``."""
    if request.param == "django-db":
        request.getfixturevalue("db")  # pytest-django's test database
    with using_store(request.param, server_pool) as chosen:
        yield chosen
