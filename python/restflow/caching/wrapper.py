"""drf-restflow's ``restflow.caching.wrapper``, for code that imports from it.

Every name is restflow's own object: :class:`SyncCachedWrapper` is
:class:`~restflow._engine.CachedWrapper` (what ``cache_result`` returns for a
plain function), :class:`AsyncCachedWrapper` what it returns for an
``async def``.
"""

from restflow._engine import CachedWrapper
from restflow.caching.asynchronous import AsyncCachedWrapper
from restflow.caching.decorators import TtlArg, cache_result
from restflow.caching.headers import set_response_cache_header

__all__ = [
    "AsyncCachedWrapper",
    "CachedWrapper",
    "SyncCachedWrapper",
    "TTLArg",
    "cache_result",
    "set_response_cache_header",
]

#: The wrapper of a sync function: restflow's engine class itself.
SyncCachedWrapper = CachedWrapper

#: What ``ttl`` accepts (drf-restflow's name).
TTLArg = TtlArg
