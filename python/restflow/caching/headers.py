"""``set_response_cache_header``: cache metadata as response headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

R = TypeVar("R")

#: (header, metadata key, older restflow's key read as an alias)
_HEADERS = (
    ("X-Cache-status", "cache_status", None),
    ("X-Cached-at", "cached_at", None),
    ("X-Cache-reset-at", "reset_at", "cache_reset_at"),
)


def _header_value(value: Any) -> str:
    # A str enum member is written as its bare value ("MISS"), never as
    # "CacheStatus.MISS"; CR and LF would split the header, so they go.
    text = value.value if hasattr(value, "value") and isinstance(value, str) else value
    return str(text).replace("\r", " ").replace("\n", " ")


def _set(response: Any, name: str, value: str) -> None:
    headers = getattr(response, "headers", None)
    if headers is not None:
        headers[name] = value
    else:  # Django before 3.2 and other mapping-style responses
        response[name] = value


def set_response_cache_header(response: R, metadata: Mapping[str, Any] | None) -> R:
    """Writes ``X-Cache-status``, ``X-Cached-at`` and ``X-Cache-reset-at``.

    Each header comes from ``metadata["cache_status"]``, ``["cached_at"]`` and
    ``["reset_at"]`` (the older ``"cache_reset_at"`` is read as an alias). A
    missing or ``None`` field skips its header; ``None`` or empty metadata
    leaves the response as it is. Works on DRF ``Response``, Django
    ``HttpResponse`` and any object with a ``headers`` mapping (Starlette,
    Flask), and returns the same response object.
    """
    if not metadata:
        return response
    for header, key, alias in _HEADERS:
        value = metadata.get(key)
        if value is None and alias is not None:
            value = metadata.get(alias)
        if value is not None and value != "":
            _set(response, header, _header_value(value))
    return response
