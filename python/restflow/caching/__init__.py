"""restflow.caching: cache what your DRF views compute, and say so in the headers.

::

    from restflow.caching import cache_result, set_response_cache_header

    @cache_result(ttl=300)
    def get_user_payload(user_id: int):
        return expensive_lookup(user_id)

    @api_view(["GET"])
    def user_view(request, user_id):
        value, metadata = get_user_payload.get_with_metadata(user_id)
        return set_response_cache_header(Response(value), metadata)
"""

import sys
import types

from restflow._engine import CacheBackendError, CachedWrapper
from restflow.caching.decorators import cache_result
from restflow.caching.engine import install as _install
from restflow.caching.headers import set_response_cache_header
from restflow.caching.key_constructor import (
    DefaultKeyConstructor,
    InlineKeyConstructor,
    KeyConstructor,
)
from restflow.caching.key_fields import (
    ArgsKeyField,
    CacheKeyField,
    ConstantKeyField,
    DjangoModelKeyField,
    DrfSerializerKeyField,
    QueryParamsKeyField,
    RequestValueKeyField,
    ViewKwargsKeyField,
)
from restflow.caching.statistics import reset_stats, stats
from restflow.caching.status import CACHE_MISSING, CacheStatus

_install()

#: drf-restflow's name for the wrapper of a sync function.
SyncCachedWrapper = CachedWrapper

#: Names whose modules import Django's models, signals or DRF: loaded on
#: first use, so ``import restflow.caching`` works before Django is set up
#: and in programs without Django.
_LAZY = {
    "cache_response": "restflow.caching.cache_response",
    "CachedResponseWrapper": "restflow.caching.response_wrapper",
    "AsyncCachedResponseWrapper": "restflow.caching.response_async",
    "AsyncCachedWrapper": "restflow.caching.asynchronous",
    "ResponseCacheKeyConstructor": "restflow.caching.response_keys",
    "InvalidationRule": "restflow.caching.rules",
    "CacheRegister": "restflow.caching.registry",
    "Dispatcher": "restflow.caching.dispatchers",
    "register_dispatcher": "restflow.caching.dispatchers",
    "registered_dispatcher_names": "restflow.caching.dispatchers",
    "AsyncIODispatcher": "restflow.caching.dispatchers",
    "CeleryDispatcher": "restflow.caching.dispatchers",
    "DjangoQDispatcher": "restflow.caching.dispatchers",
    "DjangoRqDispatcher": "restflow.caching.dispatchers",
    "DramatiqDispatcher": "restflow.caching.dispatchers",
    "InlineDispatcher": "restflow.caching.dispatchers",
    "ThreadPoolDispatcher": "restflow.caching.dispatchers",
}


class _Package(types.ModuleType):
    """This package, keeping the decorator under its name.

    Importing the submodule ``restflow.caching.cache_response`` binds it on
    the package under the decorator's name, so ``from restflow.caching
    import cache_response`` would give the module once anything had
    imported it; the decorator keeps the name instead, as in drf-restflow
    (the submodule stays in ``sys.modules`` for ``from ... import``)."""

    def __setattr__(self, name: str, value: object) -> None:
        if _LAZY.get(name, "").rpartition(".")[2] == name and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'restflow.caching' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CACHE_MISSING",
    "ArgsKeyField",
    "CacheBackendError",
    "CacheKeyField",
    "CacheStatus",
    "CachedWrapper",
    "ConstantKeyField",
    "DefaultKeyConstructor",
    "DjangoModelKeyField",
    "DrfSerializerKeyField",
    "InlineKeyConstructor",
    "KeyConstructor",
    "QueryParamsKeyField",
    "RequestValueKeyField",
    "SyncCachedWrapper",
    "ViewKwargsKeyField",
    "cache_result",
    "reset_stats",
    "set_response_cache_header",
    "stats",
    *_LAZY,
]

sys.modules[__name__].__class__ = _Package
