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

from restflow._engine import CachedWrapper
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

__all__ = [
    "CACHE_MISSING",
    "ArgsKeyField",
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
]
