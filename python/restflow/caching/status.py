"""What a cached call did, and the marker for "nothing cached"."""

import enum
from typing import Final, final


class CacheStatus(enum.StrEnum):
    """How a cached call resolved.

    A ``str`` enum, so ``CacheStatus.HIT == "HIT"`` and ``str(status)`` is the
    bare word a client sees in ``X-Cache-status``.
    """

    #: A fresh entry was served.
    HIT = "HIT"
    #: No usable entry: the function ran and its value was stored. A caller
    #: that waited for another caller's computation of the same key also
    #: gets MISS.
    MISS = "MISS"
    #: The entry's freshness had ended but it was inside its stale window:
    #: it was served at once while one background refresh ran.
    STALE = "STALE"
    #: The cache was skipped on purpose (``bypass_cache``).
    BYPASS = "BYPASS"
    #: A forced recompute (``refresh``) overwrote the entry.
    REFRESH = "REFRESH"


@final
class _Missing:
    """The type of :data:`CACHE_MISSING`: one instance, falsy, and itself
    again after a copy or a pickle round trip, so ``is`` checks hold."""

    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "CACHE_MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "CACHE_MISSING"


#: Returned by ``get_cache_only`` when nothing is cached, so a cached ``None``
#: can be told apart from a miss: test it with ``is CACHE_MISSING``.
CACHE_MISSING: Final = _Missing()
