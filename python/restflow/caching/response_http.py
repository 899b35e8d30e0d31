"""HTTP caching semantics on cached responses: what a client or a CDN reads.

``@cache_response`` answers like an HTTP cache in front of the view, and says
so in the headers HTTP defines for it:

- ``Cache-Status`` (RFC 9211): how this request was handled. ``hit`` (RFC
  9211 §2.1) for a fresh entry, with ``ttl`` its remaining freshness in
  whole seconds (§2.4); ``fwd=stale`` (§2.2) for an entry past its ttl that
  was served while its refresh went to the view, with a negative ``ttl``
  (§2.4: negative means stale); ``fwd=miss`` when the view ran, with
  ``stored`` (§2.5) when its response was kept and ``collapsed`` (§2.6)
  when this request waited for another request's render of the same key
  and was answered with it; ``fwd=vary-miss`` when an entry exists but its
  ``Vary`` headers do not match this request; ``fwd=method`` for methods
  that never use the cache (POST, ...); ``fwd=bypass`` when the cache was
  skipped on purpose (``bypass_cache``, a user without a key, a failing
  store); ``fwd=request`` for ``refresh()``: an entry could have been used,
  but the caller asked for a new render (§2.2 "request": the request's
  semantics did not allow its use, as a ``no-cache`` request would not).
- ``Age`` (RFC 9111 §5.1): whole seconds since the entry was stored, on
  responses served from an entry (never on one rendered for this request,
  whose presence of ``Age`` would say it came from a cache).
- ``ETag`` (RFC 9110 §8.8.3): a strong validator of the stored body,
  computed once when the response is stored (:func:`tag`), and
  ``Last-Modified`` (§8.8.2) from when it was stored. A ``GET`` / ``HEAD``
  whose ``If-None-Match`` (weak comparison, §13.1.2) or, without one,
  ``If-Modified-Since`` matches gets ``304 Not Modified`` built from the
  entry: the view does not run. Django's ``get_conditional_response``
  evaluates the preconditions (RFC 9110 §13.2.2 order, 2xx only) and keeps
  the headers §15.4.5 asks a 304 to keep.
- ``Cache-Control`` (RFC 9111 §5.2.2, RFC 5861): off unless the decorator's
  ``cache_control`` says ``"public"`` or ``"private"``; then ``max-age``
  is the entry's ttl, and ``stale-while-revalidate`` / ``stale-if-error``
  its windows. A view's own ``Cache-Control`` is never replaced.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from django.utils.cache import get_conditional_response
from django.utils.http import http_date, parse_http_date_safe

from restflow.caching.headers import Served, age_and_status, timestamp
from restflow.caching.settings import cache_settings

__all__ = [
    "CACHE_CONTROL_CHOICES",
    "HttpSemantics",
    "Served",
    "check_cache_control",
    "tag",
]

#: What ``cache_control=`` accepts: who may keep the response downstream.
CACHE_CONTROL_CHOICES = ("public", "private")


def tag(response: Any) -> None:
    """Gives a response about to be stored a strong ``ETag`` of its body,
    unless the view chose its own. Done once, at store time: every hit
    serves the stored header, and no hit hashes the body again."""
    if response.has_header("ETag"):
        return
    digest = hashlib.blake2b(bytes(response.content), digest_size=16).hexdigest()
    response["ETag"] = f'"{digest}"'


def check_cache_control(cache_control: str | None) -> str | None:
    """Refuses a ``cache_control`` other than ``None``, ``"public"`` or ``"private"``."""
    if cache_control is None or cache_control in CACHE_CONTROL_CHOICES:
        return cache_control
    raise ValueError(
        'cache_control must be None (no Cache-Control header is written), "public" (any cache, '
        'a CDN too, may keep the response) or "private" (only the client\'s own cache may); '
        f"got {cache_control!r}"
    )


class HttpSemantics:
    """One ``@cache_response``'s HTTP choices, applied to each response it gives."""

    def __init__(
        self,
        *,
        cache_status: bool,
        conditional: bool,
        cache_control: str | None,
        stale_while_revalidate: float | None,
        stale_if_error: float | None,
    ) -> None:
        self.cache_status = cache_status
        self.conditional = conditional
        self.cache_control = check_cache_control(cache_control)
        self._stale = stale_while_revalidate
        self._if_error = stale_if_error

    def finish(self, request: Any, response: Any, served: Served) -> Any:
        """The response to send: ``response`` with its HTTP caching headers,
        or the ``304`` its request's preconditions call for."""
        metadata = served.metadata
        cached_at = timestamp(metadata.get("cached_at"))
        if cached_at is not None and served.forward is None:
            # In the cache (served from it, or stored by this render).
            if self.cache_control is not None and not response.has_header("Cache-Control"):
                value = self._cache_control_value(cached_at, metadata)
                if value is not None:
                    response["Cache-Control"] = value
            if self.conditional:
                response = self._conditional(request, response, cached_at)
        if self.cache_status:
            age_and_status(response, served)
        return response

    def _cache_control_value(self, cached_at: float, metadata: Mapping[str, Any]) -> str | None:
        """``max-age`` from the entry's ttl (``None`` without one: an entry that
        never expires has no lifetime to advertise), and the stale windows."""
        reset_at = timestamp(metadata.get("reset_at"), "reset_at")
        if reset_at is None:
            return None
        directives = [self.cache_control, f"max-age={math.floor(reset_at - cached_at)}"]
        current = cache_settings()
        stale = self._stale if self._stale is not None else current["STALE_WHILE_REVALIDATE"]
        if_error = self._if_error if self._if_error is not None else current["STALE_IF_ERROR"]
        if stale:
            directives.append(f"stale-while-revalidate={math.floor(stale)}")
        if if_error:
            directives.append(f"stale-if-error={math.floor(if_error)}")
        return ", ".join(directives)

    @staticmethod
    def _conditional(request: Any, response: Any, cached_at: float) -> Any:
        own = response.get("Last-Modified")
        last_modified = parse_http_date_safe(own) if own else None
        if last_modified is None:
            last_modified, response["Last-Modified"] = _last_modified(cached_at)
        if request.method not in ("GET", "HEAD"):
            return response
        meta = request.META
        if not any(name in meta for name in _PRECONDITIONS):
            return response  # the common request: nothing to evaluate
        return get_conditional_response(request, response.get("ETag"), last_modified, response)


#: The request headers ``get_conditional_response`` evaluates (RFC 9110 §13.1).
_PRECONDITIONS = (
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_MATCH",
    "HTTP_IF_UNMODIFIED_SINCE",
)


@functools.lru_cache(maxsize=1024)
def _last_modified(cached_at: float) -> tuple[int, str]:
    """``Last-Modified`` of an entry stored at ``cached_at``: whole seconds
    (HTTP dates have no fraction) and their HTTP-date. Every hit on an entry
    asks for the same one: formatted once, not per hit."""
    whole = math.floor(cached_at)
    return whole, http_date(whole)
