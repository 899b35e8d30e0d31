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
from restflow.caching.status import CACHE_MISSING, CacheStatus

_install()

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
}


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
    "ViewKwargsKeyField",
    "cache_result",
    "set_response_cache_header",
    *_LAZY,
]
