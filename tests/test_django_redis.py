"""What differs on django-redis (the third-party ``django_redis.cache.RedisCache``,
the Django cache most DRF projects already have) as a Django store
(``"django:<alias>"``): its ``OPTIONS`` (``IGNORE_EXCEPTIONS``, clients,
serializers, compressors), the alias's ``KEY_PREFIX`` and ``VERSION``, and
timeouts. A server killed and restarted, two processes and a fork:
tests/test_django_store_outages.py, shared with memcached.

The suites that take the ``store`` fixture run on django-redis too (store id
``django-redis``); these are the attacks on what only django-redis does.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow._engine import CacheBackendError
from restflow.caching import ArgsKeyField, CacheStatus, KeyConstructor, cache_result
from tests.redis.conftest import RedisServer
from tests.stores import DJANGO_REDIS_DB, django_redis_caches, django_redis_url, on

calls: list = []


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=60)
def profile(user_id):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


@cache_result(ttl=60, key_constructor=TenantKey)
def report(tenant, item):
    calls.append((tenant, item))
    return f"{tenant}/{item}/{len(calls)}"


def served(wrapper, *args):
    """What a call serves, and its status."""
    value, meta = wrapper.get_with_metadata(*args)
    return value, meta["cache_status"]


SETTINGS = {"CACHE_SETTINGS": {"BACKEND": "django:djredis"}}


@pytest.fixture
def own_redis():
    """A redis-server this test may stop and start again (on its port), as
    the store of every function (``django:djredis``, django-redis's
    defaults)."""
    server = RedisServer().start()
    setting = django_redis_caches(django_redis_url(server))
    with override_settings(CACHES=setting, RESTFLOW_SETTINGS=SETTINGS):
        yield server
    server.stop()


def refused(setting: dict, **django_settings) -> str:
    """The ``ImproperlyConfigured`` message the first cached call on the
    ``djredis`` alias of ``setting`` (CACHES) raises (nothing computed)."""
    with (
        override_settings(CACHES=setting, **django_settings),
        pytest.raises(ImproperlyConfigured) as raised,
    ):
        profile(1)
    assert calls == []
    return str(raised.value)


@pytest.mark.parametrize("where", ["OPTIONS", "setting"])
def test_an_alias_that_ignores_connection_errors_is_refused(own_redis, where):
    """django-redis's ``IGNORE_EXCEPTIONS`` answers a failed connection with
    nothing instead of raising: an invalidation made then was lost while it
    reported success, and the retired entry was served again (checked: a
    connection refused for one ``invalidate_all()``, ``maxclients`` reached,
    then a HIT of the old value; without the option the invalidation raises
    ``CacheBackendError``). Refused, saying what to set."""
    if where == "OPTIONS":
        message = refused(django_redis_caches(django_redis_url(own_redis), IGNORE_EXCEPTIONS=True))
    else:
        message = refused(
            django_redis_caches(django_redis_url(own_redis)), DJANGO_REDIS_IGNORE_EXCEPTIONS=True
        )
    assert "a django-redis RedisCache that ignores connection errors" in message
    assert "an invalidation made then would be lost silently" in message
    assert "Set CACHES['djredis']['OPTIONS']['IGNORE_EXCEPTIONS'] = False" in message


def test_an_alias_that_raises_overrides_the_global_setting(own_redis):
    """``OPTIONS`` ``IGNORE_EXCEPTIONS`` False overrides
    ``DJANGO_REDIS_IGNORE_EXCEPTIONS`` (django-redis reads it first): what
    the refusal tells a project that sets the global one to do."""
    setting = django_redis_caches(django_redis_url(own_redis), IGNORE_EXCEPTIONS=False)
    with override_settings(CACHES=setting, DJANGO_REDIS_IGNORE_EXCEPTIONS=True):
        assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
        assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT)
        own_redis.stop()
        with pytest.raises(CacheBackendError):
            profile.invalidate_all()


def test_the_herd_client_is_refused(own_redis):
    """django-redis's ``HerdClient`` makes ``touch`` a ``get`` then a
    ``set``: a partition invalidated between the two had its counter
    written back, and the entry it retired was a HIT (checked by hand:
    ``delete_by_prefix(tenant="a")`` run inside that window; on the
    default client, whose ``touch`` is ``PEXPIRE``, the next call is a
    MISS). It also keeps every key 60 s past its timeout, locks included."""
    setting = django_redis_caches(
        django_redis_url(own_redis), CLIENT_CLASS="django_redis.client.HerdClient"
    )
    message = refused(setting)
    assert "with django-redis's HerdClient: its touch is a read then a write" in message
    assert "Use django_redis.client.DefaultClient (the default)" in message


@pytest.mark.parametrize("form", ["list", "string"])
def test_an_alias_reading_from_replicas_is_refused(own_redis, form):
    """django-redis reads from the other servers of ``LOCATION`` (its
    replicas): one behind an invalidation served the entry it retired
    (checked by hand: a replica whose link to the master was down, then
    ``invalidate_all()`` on the master: the old value was a HIT)."""
    servers = [django_redis_url(own_redis), django_redis_url(own_redis, DJANGO_REDIS_DB + 1)]
    setting = django_redis_caches(django_redis_url(own_redis))
    setting["djredis"]["LOCATION"] = servers if form == "list" else ",".join(servers)
    message = refused(setting)
    assert "a django-redis RedisCache that reads from replicas" in message
    assert "with the master alone in LOCATION" in message


def test_the_sentinel_client_is_refused(own_redis):
    """django-redis's ``SentinelClient`` reads from the replicas too (its
    code: a second pool, ``is_master=0``, for every read); refused before
    it connects."""
    setting = django_redis_caches(
        "redis://mymaster/0", CLIENT_CLASS="django_redis.client.SentinelClient"
    )
    message = refused(setting)
    assert "a django-redis RedisCache that reads from replicas" in message
    assert "'redis+sentinel://...'" in message


def test_a_serializer_that_cannot_store_bytes_is_refused(own_redis):
    """django-redis's JSON serializer refuses bytes (restflow's entries):
    every write failed, every call was a BYPASS, and the warning said the
    store had failed and calls would be live "until it answers again",
    which it never would."""
    setting = django_redis_caches(
        django_redis_url(own_redis), SERIALIZER="django_redis.serializers.json.JSONSerializer"
    )
    message = refused(setting)
    assert "whose SERIALIZER (django_redis.serializers.json.JSONSerializer)" in message
    assert "does not give back bytes values as they were" in message
    assert "Use django_redis.serializers.pickle.PickleSerializer (the default)" in message


@pytest.mark.parametrize("store", on("django-redis"), indirect=True)
def test_a_key_prefix_and_version_of_the_alias(store):
    """The alias's ``KEY_PREFIX`` and ``VERSION`` go before every key
    django-redis writes (``KEY_PREFIX:VERSION:key``): restflow's keys fit
    after a long prefix, its invalidations reach them, and another
    ``VERSION`` of the alias is another cache (nothing shared)."""
    setting = {name: dict(alias) for name, alias in django_settings.CACHES.items()}
    setting["djredis"] |= {"KEY_PREFIX": "p" * 60, "VERSION": 3}
    with override_settings(CACHES=setting):
        assert served(report, "a", 1) == ("a/1/1", CacheStatus.MISS)
        assert served(report, "a", 1) == ("a/1/1", CacheStatus.HIT)
        keys = [key.decode() for key in store.djredis.keys()]
        assert keys and all(key.startswith("p" * 60 + ":3:") for key in keys), keys
        report.delete_by_prefix(tenant="a")
        assert served(report, "a", 1) == ("a/1/2", CacheStatus.MISS)
        other = {**setting, "djredis": {**setting["djredis"], "VERSION": 4}}
        with override_settings(CACHES=other):
            assert served(report, "a", 1) == ("a/1/3", CacheStatus.MISS)
        assert served(report, "a", 1) == ("a/1/2", CacheStatus.HIT)


@cache_result(ttl=None)
def forever(n):
    calls.append(n)
    return n


@cache_result(ttl=1.5)
def briefly(n):
    calls.append(n)
    return n


def redis_ttl(store, key: str) -> int:
    """The milliseconds Redis gives ``key`` (as restflow names it) to
    live: -1 for never."""
    return store.djredis.pttl(f":1:{key}")


@pytest.mark.parametrize("store", on("django-redis"), indirect=True)
def test_timeouts_on_django_redis(store):
    """A ttl of None is an entry Redis never expires (django-redis
    ``PERSIST``s it, no ``PX``); a fraction of a second is whole seconds,
    rounded up, plus one (1.5 s: 3 s); a sub-second ``LOCK_TIMEOUT`` still
    stores (tests/test_memcached.py: memcached alike)."""
    assert served(forever, 1) == (1, CacheStatus.MISS)
    assert served(forever, 1) == (1, CacheStatus.HIT)
    assert redis_ttl(store, forever.get_cache_key(1)) == -1
    assert served(briefly, 1) == (1, CacheStatus.MISS)
    assert 2000 < redis_ttl(store, briefly.get_cache_key(1)) <= 3000
    with store.configured(LOCK_TIMEOUT=0.5):
        assert served(profile, 1) == ({"id": 1, "n": 3}, CacheStatus.MISS)
        assert served(profile, 1) == ({"id": 1, "n": 3}, CacheStatus.HIT)
    assert calls == [1, 1, 1]


@cache_result(ttl=60)
def page(n):
    calls.append(n)
    return "row " * 500  # compressed: over every compressor's minimum length


@pytest.mark.parametrize(
    "compressor", ["zlib.ZlibCompressor", "lzma.LzmaCompressor", "gzip.GzipCompressor"]
)
@pytest.mark.parametrize("store", on("django-redis"), indirect=True)
def test_a_compressed_alias(store, compressor):
    """django-redis's ``COMPRESSOR`` compresses what restflow writes (its
    entries, signed bytes, pickled, and its lock tokens): served as
    written, and invalidated."""
    setting = {**django_settings.CACHES}
    options = {"COMPRESSOR": f"django_redis.compressors.{compressor}"}
    setting["djredis"] = {**setting["djredis"], "OPTIONS": options}
    with override_settings(CACHES=setting):
        assert served(page, 1) == ("row " * 500, CacheStatus.MISS)
        assert served(page, 1) == ("row " * 500, CacheStatus.HIT)
        stored = store.djredis.get(f":1:{page.get_cache_key(1)}")
        assert not stored.startswith(b"\x80"), "a pickle: not compressed"
        assert len(stored) < 1000
        page.invalidate_all()
        assert served(page, 1) == ("row " * 500, CacheStatus.MISS)
    assert calls == [1, 1]


def test_a_full_redis_refusing_writes_is_an_answer_not_a_failure(own_redis, caplog):
    """Under ``maxmemory`` with ``noeviction`` Redis refuses every write
    (``OOM command not allowed``: redis-py's ``OutOfMemoryError``, a
    ``ResponseError``, which
    django-redis and Django's own backend raise as they get it): that one
    operation failed, the store is up. Misses are computed live (BYPASS),
    entries already stored stay HITs (the circuit breaker does not open),
    and an invalidation still lands (a full Redis takes ``DEL``), as on
    restflow's own Redis backend."""
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
    own_redis.client().config_set("maxmemory", 1)
    with caplog.at_level(logging.WARNING, logger="restflow"):
        for user_id in (2, 3, 4, 5):  # more than the breaker's three in a row
            assert served(profile, user_id) == ({"id": user_id, "n": user_id}, CacheStatus.BYPASS)
        assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "refused an operation" in warnings[0]
    assert "command not allowed when used memory > 'maxmemory'" in warnings[0]
    stats = profile.shared_backend().stats()
    assert stats["breaker_trips"] == 0
    profile.invalidate_all()
    assert served(profile, 1) == ({"id": 1, "n": 6}, CacheStatus.BYPASS)
    assert calls == [1, 2, 3, 4, 5, 1]
