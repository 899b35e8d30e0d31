"""Part 2 of issue 12: the names and module paths drf-restflow 2.0.1 code imports.

Each is an alias of restflow's own object, so ``isinstance`` checks and
identity comparisons written against either name agree.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.test import override_settings

import restflow.caching as caching
from restflow.caching import cache_result

ROOT = Path(__file__).resolve().parents[2]

#: ``restflow.caching.__all__`` of drf-restflow 2.0.1.
ORIGIN_EXPORTS = [
    "CACHE_MISSING",
    "ArgsKeyField",
    "AsyncCachedWrapper",
    "AsyncIODispatcher",
    "CacheKeyField",
    "CacheRegister",
    "CacheStatus",
    "CachedResponseWrapper",
    "CachedWrapper",
    "CeleryDispatcher",
    "ConstantKeyField",
    "DefaultKeyConstructor",
    "Dispatcher",
    "DjangoModelKeyField",
    "DjangoQDispatcher",
    "DjangoRqDispatcher",
    "DramatiqDispatcher",
    "DrfSerializerKeyField",
    "InlineDispatcher",
    "InlineKeyConstructor",
    "InvalidationRule",
    "KeyConstructor",
    "QueryParamsKeyField",
    "RequestValueKeyField",
    "ResponseCacheKeyConstructor",
    "SyncCachedWrapper",
    "ThreadPoolDispatcher",
    "ViewKwargsKeyField",
    "cache_response",
    "cache_result",
    "register_dispatcher",
    "registered_dispatcher_names",
    "set_response_cache_header",
]

DISPATCHERS = {
    "AsyncIODispatcher": "asyncio",
    "CeleryDispatcher": "celery",
    "DjangoQDispatcher": "django_q",
    "DjangoRqDispatcher": "django_rq",
    "DramatiqDispatcher": "dramatiq",
    "InlineDispatcher": "inline",
    "ThreadPoolDispatcher": "threadpool",
}


@pytest.mark.parametrize("name", ORIGIN_EXPORTS)
def test_every_origin_export_is_importable_and_listed(name):
    module = importlib.import_module("restflow.caching")
    assert getattr(module, name) is not None
    assert name in caching.__all__


@pytest.mark.parametrize(("name", "registered"), sorted(DISPATCHERS.items()))
def test_dispatcher_classes_are_the_registered_ones(name, registered):
    from restflow.caching.dispatchers import Dispatcher, get_dispatcher

    cls = getattr(caching, name)
    assert issubclass(cls, Dispatcher)
    assert cls.name == registered
    assert name in caching.__all__
    if registered in ("inline", "threadpool", "asyncio"):  # no broker package needed
        assert type(get_dispatcher(registered, {})) is cls


def test_sync_and_async_wrappers_are_what_cache_result_returns():
    @cache_result(ttl=60)
    def plain(x):
        return x

    @cache_result(ttl=60)
    async def coroutine(x):
        return x

    assert isinstance(plain, caching.SyncCachedWrapper)
    assert isinstance(plain, caching.CachedWrapper)
    assert not isinstance(plain, caching.AsyncCachedWrapper)
    assert isinstance(coroutine, caching.AsyncCachedWrapper)
    assert not isinstance(coroutine, caching.SyncCachedWrapper)


def test_the_constants_module():
    from restflow.caching import constants

    assert constants.CACHE_MISSING is caching.CACHE_MISSING
    assert constants.CacheStatus is caching.CacheStatus
    assert [s.value for s in constants.CacheStatus][:5] == [
        "HIT",
        "MISS",
        "STALE",
        "BYPASS",
        "REFRESH",
    ]


def test_the_metadata_key_constants_read_restflows_metadata():
    from restflow.caching.constants import (
        METADATA_CACHE_STATUS,
        METADATA_CACHED_AT_KEY,
        METADATA_RESET_AT_KEY,
    )

    @cache_result(ttl=60)
    def f(x):
        return x

    f(1)
    _value, metadata = f.get_with_metadata(1)
    assert metadata[METADATA_CACHE_STATUS] is caching.CacheStatus.HIT
    assert metadata[METADATA_CACHED_AT_KEY]
    assert metadata[METADATA_RESET_AT_KEY]


def test_the_wrapper_module():
    from restflow.caching import wrapper

    assert wrapper.cache_result is caching.cache_result
    assert wrapper.CachedWrapper is caching.CachedWrapper
    assert wrapper.SyncCachedWrapper is caching.SyncCachedWrapper
    assert wrapper.AsyncCachedWrapper is caching.AsyncCachedWrapper
    assert wrapper.set_response_cache_header is caching.set_response_cache_header


def test_the_hashing_module():
    import hashlib

    from restflow.caching.hashing import hash_string

    assert hash_string("abc") == hashlib.sha256(b"abc").hexdigest()
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"KEY_HASH_ALGORITHM": "md5"}}):
        assert hash_string("abc") == hashlib.md5(b"abc").hexdigest()
    upper = {"CACHE_SETTINGS": {"KEY_HASH_ALGORITHM": str.upper}}
    with override_settings(RESTFLOW_SETTINGS=upper):
        assert hash_string("abc") == "ABC"


def test_the_origins_key_settings_are_accepted_and_checked():
    from django.core.exceptions import ImproperlyConfigured

    from restflow.caching.settings import cache_settings

    origin = {
        "MAX_KEY_SUFFIX_LENGTH": 120,
        "HASH_SUFFIX_ON_OVERFLOW": True,
        "KEY_HASH_ALGORITHM": "blake2b",
    }
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": origin}):
        assert cache_settings()["MAX_KEY_SUFFIX_LENGTH"] == 120

        @cache_result(ttl=60)
        def f(x):
            return x

        assert f(1) == 1
    for key, bad in (
        ("MAX_KEY_SUFFIX_LENGTH", "long"),
        ("HASH_SUFFIX_ON_OVERFLOW", 1),
        ("KEY_HASH_ALGORITHM", "no-such-hash"),
    ):
        with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": {key: bad}}):
            with pytest.raises(ImproperlyConfigured, match=key):
                cache_settings()


def test_the_dispatchers_module_names():
    from restflow.caching import dispatchers

    assert dispatchers.register is dispatchers.register_dispatcher
    assert dispatchers.registered_names is dispatchers.registered_dispatcher_names
    built = dispatchers.resolve("threadpool", {})
    assert type(built) is caching.ThreadPoolDispatcher
    with pytest.raises(KeyError, match="Unknown dispatcher"):
        dispatchers.resolve("no-such-dispatcher")


def test_cache_response_module_names():
    module = importlib.import_module("restflow.caching.cache_response")

    assert module.ResponseCacheKeyConstructor is caching.ResponseCacheKeyConstructor
    assert module.CachedResponseWrapper is caching.CachedResponseWrapper


def test_the_decorator_keeps_its_name_after_the_submodule_is_imported():
    """``import restflow.caching.cache_response`` (drf-restflow's module path)
    must not turn ``restflow.caching.cache_response`` into the module."""
    script = textwrap.dedent(
        """
        import django

        django.setup()
        import types
        import restflow.caching.cache_response
        from restflow.caching.cache_response import ResponseCacheKeyConstructor
        from restflow.caching import cache_response
        import restflow.caching as package

        assert not isinstance(cache_response, types.ModuleType), cache_response
        assert package.cache_response is cache_response
        assert cache_response.__module__ == "restflow.caching.cache_response"
        print("ok")
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.django_project.settings"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_get_key_version_on_sync_and_async_wrappers():
    from restflow.caching import ArgsKeyField, InlineKeyConstructor

    versioned = InlineKeyConstructor(fields={"x": ArgsKeyField("x")}, version="4")

    @cache_result(versioned, ttl=60)
    def plain(x):
        return x

    @cache_result(versioned, ttl=60)
    async def coroutine(x):
        return x

    class Holder:
        @cache_result(ttl=60)
        async def method(self, x):
            return x

    assert plain.get_key_version() == 4
    assert coroutine.get_key_version() == 4
    assert Holder().method.get_key_version() == 1
