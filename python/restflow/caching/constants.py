"""drf-restflow's ``restflow.caching.constants``, for code that imports from it.

The status enum and the miss sentinel are restflow's own objects
(:mod:`restflow.caching.status`); the ``METADATA_*`` names are the keys of
the metadata dict restflow returns (``get_with_metadata``). restflow keeps
the reset time under ``"reset_at"`` (drf-restflow: ``"cache_reset_at"``):
code that reads it through the constant needs no change.
"""

from restflow.caching.status import CACHE_MISSING, CacheStatus

__all__ = [
    "CACHE_MISSING",
    "METADATA_CACHED_AT_KEY",
    "METADATA_CACHE_STATUS",
    "METADATA_RESET_AT_KEY",
    "CacheStatus",
]

#: When the entry was stored (ISO 8601 text).
METADATA_CACHED_AT_KEY = "cached_at"
#: When it stops being fresh (ISO 8601 text); absent for an entry that never expires.
METADATA_RESET_AT_KEY = "reset_at"
#: How the call was answered: a :class:`CacheStatus`.
METADATA_CACHE_STATUS = "cache_status"
