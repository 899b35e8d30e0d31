"""What a cached response is, and which responses may become one.

An entry is the plain tuple ``(status_code, content, headers, vary)``: the
rendered bytes, the status and the header pairs, as the view and DRF's
``finalize_response`` left them, and the request header values the
response's ``Vary`` names (whom it may be served to; see
:mod:`restflow.caching.response_privacy`). A tuple of bytes and strings pickles for
stores that serialize, and shares nothing with the live response, so
middleware that changes a response later never changes what is cached. It
never holds a request, a serializer or a queryset.

Under ``SERIALIZER="json"`` a shared store (``cache_response`` uses the
``BACKEND`` setting's) keeps only exact JSON values
(no tuple, no bytes), so there the entry is the same four parts as plain
JSON: ``[status_code, content decoded as UTF-8, [[name, value], ...],
[[name, value or None], ...]]``. A body that is not UTF-8 cannot be one, and
is served but not stored. :func:`thaw` and
:func:`~restflow.caching.response_privacy.serves` read both forms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from django.utils.cache import has_vary_header

from restflow.caching.response_privacy import vary_record
from restflow.caching.settings import cache_settings
from restflow.caching.twins import Steps

__all__ = ["Entry", "freeze", "never_storable", "storable", "thaw"]

Entry = tuple[int, bytes, tuple[tuple[str, str], ...], tuple[tuple[str, str | None], ...]]

#: Headers that say how one response was answered (restflow's ``X-Cache-*``,
#: ``Cache-Status``, ``Age``), by lower-cased name. A view that caches its
#: payload with ``cache_result`` writes them for its render; replayed from an
#: entry they would tell every later client about a lookup that never
#: happened for it, so an entry never keeps them (each answer writes its own).
_PER_ANSWER_HEADERS = frozenset(
    {"x-cache-status", "x-cached-at", "x-cache-reset-at", "cache-status", "age"}
)

#: ``Cache-Control`` directives that forbid a shared cache to keep a response.
_PRIVATE_DIRECTIVES = frozenset({"private", "no-store"})


def freeze(response: Any, request: Any) -> Entry | None:
    """The entry of a rendered, non-streaming response to ``request``: a
    tuple, or its JSON form for a shared store under ``SERIALIZER="json"``
    (``None`` when the body is not UTF-8 and so has no JSON form)."""
    content = bytes(response.content)
    vary = vary_record(response, request)
    kept = [
        (name, value) for name, value in response.items() if name.lower() not in _PER_ANSWER_HEADERS
    ]
    current = cache_settings()
    if current["SERIALIZER"] != "json" or current["BACKEND"] == "memory":
        return (response.status_code, content, tuple(kept), vary)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    headers = [[name, value] for name, value in kept]
    return [response.status_code, text, headers, [list(pair) for pair in vary]]  # type: ignore[return-value]


def thaw(entry: Entry) -> HttpResponse:
    """A new ``HttpResponse`` with the entry's status, content and headers
    (``Content-Type`` included): a fresh object per request, so nothing one
    client's middleware does reaches another's response."""
    status_code, content, headers = entry[:3]
    if isinstance(content, str):  # the JSON form
        content = content.encode("utf-8")
    return HttpResponse(content, status=status_code, headers=dict(headers))


def _cache_control(response: Any) -> set[str]:
    value = response.get("Cache-Control", "")
    return {part.split("=", 1)[0].strip().lower() for part in value.split(",") if part.strip()}


def never_storable(response: Any) -> str | None:
    """Why ``response`` may never be stored, whatever ``cache_if`` says, or ``None``.

    These responses would be wrong for the next client, not merely stale:
    a streamed body cannot be replayed; cookies belong to one client, set
    with ``set_cookie`` (an entry keeps no cookies, so a hit would silently
    drop them) or written as a ``Set-Cookie`` header (an entry would keep
    it, and hand one visitor's cookie to every client); ``Vary: *`` says
    no two requests are alike; ``Cache-Control: private`` or ``no-store``
    forbids shared caches to keep the response at all.
    """
    if getattr(response, "streaming", False):
        return "it is streamed"
    if getattr(response, "cookies", None) or response.has_header("Set-Cookie"):
        return "it sets cookies"
    if has_vary_header(response, "*"):
        return "it carries Vary: *"
    if _cache_control(response) & _PRIVATE_DIRECTIVES:
        return "its Cache-Control is private or no-store"
    return None


def storable(
    response: Any,
    cache_if: Callable[..., Any] | None,
    cache_unless: Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Steps[bool]:
    """Whether a rendered response becomes an entry, as steps that yield the
    predicates' answers (see :mod:`restflow.caching.twins`): an async view's
    ``cache_if`` and ``cache_unless`` may be ``async def``.

    Only 2xx responses by default: an error is usually about this moment (a
    timeout, a missing row about to be created) and caching it would repeat
    it for the whole ttl. ``cache_if(response, *args, **kwargs)`` replaces
    that rule (to cache 404s, say); ``cache_unless`` narrows it. Neither can
    override :func:`never_storable`.
    """
    if never_storable(response) is not None:
        return False
    if cache_if is not None:
        return bool((yield cache_if(response, *args, **kwargs)))
    if not 200 <= response.status_code < 300:
        return False
    return not (cache_unless is not None and (yield cache_unless(response, *args, **kwargs)))
