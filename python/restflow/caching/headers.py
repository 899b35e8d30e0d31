"""``set_response_cache_header``: cache metadata as response headers.

Besides restflow's own ``X-Cache-*`` headers, this is where the standard
ones are made that say the same to any HTTP client: ``Cache-Status`` (RFC
9211) and ``Age`` (RFC 9111 §5.1). ``@cache_response`` writes those by
default (see :mod:`restflow.caching.response_http`);
``set_response_cache_header`` writes them when asked (``cache_status=True``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from restflow import _engine
from restflow.caching.settings import cache_settings
from restflow.caching.status import CacheStatus

R = TypeVar("R")

__all__ = ["Served", "age_and_status", "cache_status_value", "set_response_cache_header"]

#: (header, metadata key, older restflow's key read as an alias)
_HEADERS = (
    ("X-Cache-status", "cache_status", None),
    ("X-Cached-at", "cached_at", None),
    ("X-Cache-reset-at", "reset_at", "cache_reset_at"),
)

#: How each status that went to the function reads in ``Cache-Status``
#: (RFC 9211 §2.2; ``REFRESH`` is ``request``: an entry could have been
#: used, but the caller asked for a new value).
_FORWARDED = {
    CacheStatus.MISS: "fwd=miss",
    CacheStatus.STALE: "fwd=stale",
    CacheStatus.BYPASS: "fwd=bypass",
    CacheStatus.REFRESH: "fwd=request",
}


def _header_value(value: Any) -> str:
    # A str enum member is written as its bare value ("MISS"), never as
    # "CacheStatus.MISS"; a datetime as the ISO-8601 text metadata carries
    # (never str()'s "2026-11-27 04:12:17+00:00"); CR and LF would split the
    # header, so they go.
    if isinstance(value, datetime):
        text: Any = value.isoformat()
    else:
        text = value.value if hasattr(value, "value") and isinstance(value, str) else value
    return str(text).replace("\r", " ").replace("\n", " ")


def _set(response: Any, name: str, value: str) -> None:
    headers = getattr(response, "headers", None)
    if headers is not None:
        headers[name] = value
    else:  # Django before 3.2 and other mapping-style responses
        response[name] = value


def _get(response: Any, name: str) -> str | None:
    headers = getattr(response, "headers", None)
    return (headers if headers is not None else response).get(name)


def timestamp(value: Any, key: str = "cached_at") -> float | None:
    """Seconds since the epoch of a metadata time (``cached_at``, ``reset_at``):
    the ISO-8601 string metadata carries, or a ``datetime``; ``None`` for
    none. Anything else is a ``ValueError`` that names the key: an ``Age``
    or a ``ttl`` cannot be computed from it."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise ValueError(
        f"metadata[{key!r}] must be an ISO-8601 time as get_with_metadata() gives it "
        f"('2026-11-27T04:12:17+00:00') or a datetime; got {value!r}."
    )


class Served(NamedTuple):
    """How one request was answered, as its ``Cache-Status`` tells it."""

    #: The metadata of the call (``cache_status``, ``cached_at``, ``reset_at``).
    metadata: Mapping[str, Any]
    #: Whether this request's own call produced the value (a MISS that did
    #: not is ``collapsed``: it waited for another request's computation).
    rendered_here: bool
    #: The ``fwd`` reason when it is not the status's own (``vary-miss``, ``method``).
    forward: str | None = None


def cache_status_value(served: Served, now: float) -> str | None:
    """The ``Cache-Status`` member of one response (RFC 9211 §2), or ``None``
    for a status restflow does not know.

    ``ttl`` (§2.4) is the remaining freshness in whole seconds, negative
    once stale; ``stored`` (§2.5) says a forwarded response was kept;
    ``collapsed`` (§2.6) that this request was answered with another's.
    """
    metadata = served.metadata
    status = metadata.get("cache_status")
    if status == CacheStatus.HIT:
        outcome = "hit"
    elif served.forward is not None:
        outcome = f"fwd={served.forward}"
    elif status in _FORWARDED:
        outcome = _FORWARDED[status]
    else:
        return None
    parts = [cache_settings()["CACHE_STATUS_NAME"], outcome]
    if status in (CacheStatus.HIT, CacheStatus.STALE):
        reset_at = timestamp(metadata.get("reset_at"), "reset_at")
        if reset_at is not None:
            parts.append(f"ttl={math.floor(reset_at - now)}")
    elif served.forward is None and status in (CacheStatus.MISS, CacheStatus.REFRESH):
        if metadata.get("cached_at"):
            parts.append("stored")
        if status == CacheStatus.MISS and not served.rendered_here:
            parts.append("collapsed")
    return "; ".join(parts)


def age_and_status(response: Any, served: Served) -> None:
    """Writes ``Cache-Status`` (after any member already there: RFC 9211 §2
    lists caches from the origin outwards) and, on a response served from
    the cache, ``Age``: whole seconds since it was stored, never negative
    (RFC 9111 §5.1). Both read the engine's clock, so a frozen clock in
    tests gives exact values."""
    now = _engine.now()
    member = cache_status_value(served, now)
    if member is not None:
        earlier = _get(response, "Cache-Status")
        _set(response, "Cache-Status", f"{earlier}, {member}" if earlier else member)
    cached_at = timestamp(served.metadata.get("cached_at"))
    if cached_at is not None and not served.rendered_here:
        _set(response, "Age", str(max(0, math.floor(now - cached_at))))


def set_response_cache_header(
    response: R, metadata: Mapping[str, Any] | None, *, cache_status: bool = False
) -> R:
    """Writes ``X-Cache-status``, ``X-Cached-at`` and ``X-Cache-reset-at``.

    Each header comes from ``metadata["cache_status"]``, ``["cached_at"]`` and
    ``["reset_at"]`` (the older ``"cache_reset_at"`` is read as an alias). A
    missing or ``None`` field skips its header; ``None`` or empty metadata
    leaves the response as it is. Works on DRF ``Response``, Django
    ``HttpResponse`` and any object with a ``headers`` mapping (Starlette,
    Flask), and returns the same response object.

    With ``cache_status=True`` it also writes ``Cache-Status`` (RFC 9211:
    ``restflow; hit; ttl=12``, ``restflow; fwd=miss; stored``, ...) and, for
    a HIT or STALE value, ``Age`` (RFC 9111). Metadata does not say whether
    a MISS waited for another caller's computation, so ``collapsed`` is
    never written here (``@cache_response`` knows, and writes it).
    """
    if not metadata:
        return response
    values = {}
    for _header, key, alias in _HEADERS:
        given = key
        value = metadata.get(key)
        if value is None and alias is not None:
            given, value = alias, metadata.get(alias)
        values[key] = value
        if cache_status and key != "cache_status":
            # Checked before any header is written: a time that cannot be
            # read fails the call and leaves the response as it was.
            timestamp(value, given)
    for header, key, _alias in _HEADERS:
        value = values[key]
        if value is not None and value != "":
            _set(response, header, _header_value(value))
    if cache_status:
        status = values["cache_status"]
        served_from_cache = status in (CacheStatus.HIT, CacheStatus.STALE)
        # The alias counts for the ttl too, as it does for X-Cache-reset-at.
        known = {key: value for key, value in values.items() if value is not None}
        age_and_status(response, Served(known, rendered_here=not served_from_cache))
    return response
