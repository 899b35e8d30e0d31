"""What a render shows about its client, beyond what the key holds.

A response is keyed before its view runs, from what the request says (see
:mod:`restflow.caching.response_keys`). Three things the view may depend on
only show while or after it runs, and each would hand one client's response
to another if it were ignored:

- **the session**: a view that reads ``request.session`` (an anonymous cart,
  a flash message) rendered that visitor's data. ``SessionMiddleware`` says
  so with ``Vary: Cookie``, but only on the way out, after the entry is
  stored. Reads are watched during the render (:func:`watching`), and a
  render that read the session is not stored. Reads before the view
  (authentication loading the user) do not count: the user is keyed.
- **the cookies**: a view that reads ``request.COOKIES`` itself (a theme, a
  cart id, a flash message in ``CookieStorage``) rendered for that client's
  cookies, which the key does not hold. Reads are watched during the render
  as the session's are, and a render that read a cookie is not stored.
  Reads before the view (middleware, CSRF checks, authentication) do not
  count.
- **the CSRF token**: a page that carries one (the browsable API, a form)
  hands every client the first one's token. A render after which Django
  marks the token used (``get_token``, ``rotate_token``) is not stored.
- **the view's own ``Vary``**: ``Vary: X-Tenant`` says the body depends on a
  header the key may not read. The entry records the request's value of
  every header its ``Vary`` names (:func:`vary_record`), and is served only
  to requests that send the same values (:func:`serves`); any other request
  runs the view live. ``Accept`` is keyed already (as the media type DRF
  negotiated, or the whole header for a plain Django view). To give every
  value its own entry, key the header too (``RequestValueKeyField``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.utils.cache import cc_delim_re

__all__ = ["RenderWatch", "private_reason", "serves", "vary_record", "watching"]

#: ``request.META`` flags Django sets when the CSRF token is handed out or
#: rotated (``CSRF_COOKIE_USED`` before Django 4.1).
_CSRF_FLAGS = ("CSRF_COOKIE_NEEDS_UPDATE", "CSRF_COOKIE_USED")

#: ``Vary`` names the key already reads: the negotiated media type is keyed.
_KEYED_VARY = frozenset({"accept"})


class RenderWatch:
    """What one render touched."""

    __slots__ = ("cookies_read", "session_read", "unwatched_session")

    def __init__(self) -> None:
        self.session_read = False
        self.unwatched_session = False
        self.cookies_read = False


#: The render running in this context, if any.
_current: ContextVar[RenderWatch | None] = ContextVar("restflow_render_watch", default=None)


def _note_session_read() -> None:
    watch = _current.get()
    if watch is not None:
        watch.session_read = True


class _WatchedSession:
    """Put in front of a session's own class: every read of its data (each
    goes through ``_get_session`` / ``_aget_session``, which is where Django
    sets ``accessed``) is noted in the render running in that context. Reads
    from other contexts (middleware, a concurrent request) are not. The
    session behaves exactly as before otherwise: ``accessed`` and
    ``modified`` are Django's, so ``SessionMiddleware`` still adds
    ``Vary: Cookie`` and saves."""

    def _get_session(self, no_load: bool = False) -> Any:
        _note_session_read()
        return super()._get_session(no_load)  # type: ignore[misc]

    _session = property(_get_session)

    async def _aget_session(self, no_load: bool = False) -> Any:
        _note_session_read()
        return await super()._aget_session(no_load)  # type: ignore[misc]


def _note_cookies_read() -> None:
    watch = _current.get()
    if watch is not None:
        watch.cookies_read = True


class _WatchedCookies(dict):
    """``request.COOKIES``, noting every read in the render running in that
    context (reads from other contexts, middleware's, are not noted). Still
    the plain ``dict`` of the cookies otherwise."""

    def __getitem__(self, key: Any) -> Any:
        _note_cookies_read()
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        _note_cookies_read()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        _note_cookies_read()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Any]:
        _note_cookies_read()
        return super().__iter__()

    def __len__(self) -> int:
        _note_cookies_read()
        return super().__len__()

    def keys(self) -> Any:
        _note_cookies_read()
        return super().keys()

    def values(self) -> Any:
        _note_cookies_read()
        return super().values()

    def items(self) -> Any:
        _note_cookies_read()
        return super().items()

    def copy(self) -> dict[Any, Any]:
        _note_cookies_read()
        return dict(super().items())


def _watch_cookies(request: Any) -> None:
    """Makes the Django request's ``COOKIES`` (a DRF request's is its
    ``_request``'s) report reads to the watching render; once per request."""
    django_request = getattr(request, "_request", request)
    state = getattr(django_request, "__dict__", None)
    if state is None:
        return
    cookies = state.get("COOKIES")
    if isinstance(cookies, _WatchedCookies):
        return
    if cookies is None:
        cookies = getattr(django_request, "COOKIES", None)  # a cached_property: parsed now
    if isinstance(cookies, dict) and not isinstance(cookies, _WatchedCookies):
        state["COOKIES"] = _WatchedCookies(cookies)


@functools.cache
def _watched_class(base: type) -> type:
    return type(
        base.__name__,
        (_WatchedSession, base),
        {"__module__": base.__module__, "__qualname__": base.__qualname__},
    )


def _watch_session(request: Any, watch: RenderWatch) -> None:
    """Makes ``request.session`` (if any) report reads to the watching render.

    The session object keeps its identity; only its class gains
    :class:`_WatchedSession`, once (it stays: a session lives one request).
    A session that is not Django's ``SessionBase`` cannot be watched, so a
    render with one is treated as having read it.
    """
    session = getattr(request, "session", None)
    if session is None or isinstance(session, _WatchedSession):
        return
    from django.contrib.sessions.backends.base import SessionBase

    if isinstance(session, SessionBase):
        session.__class__ = _watched_class(type(session))
    else:
        watch.unwatched_session = True


@contextmanager
def watching(request: Any) -> Iterator[RenderWatch]:
    """Around one render of ``request``: what it touched. A render inside
    another (a cached view calling a cached view) reports to the outer too."""
    watch = RenderWatch()
    _watch_session(request, watch)
    _watch_cookies(request)
    outer = _current.get()
    token = _current.set(watch)
    try:
        yield watch
    finally:
        _current.reset(token)
        if outer is not None:
            outer.session_read |= watch.session_read
            outer.cookies_read |= watch.cookies_read


def private_reason(request: Any, watch: RenderWatch) -> str | None:
    """Why the response just rendered for ``request`` belongs to its client
    alone (see the module docs), or ``None``."""
    if watch.session_read:
        return "the view read the session"
    if watch.cookies_read:
        return "the view read the request's cookies"
    if watch.unwatched_session:
        return "the request's session is not a Django session, whose reads can be watched"
    meta = getattr(request, "META", None) or {}
    if any(meta.get(flag) for flag in _CSRF_FLAGS):
        return "it carries a CSRF token"
    return None


def vary_record(response: Any, request: Any) -> tuple[tuple[str, str | None], ...]:
    """The request's value of each header the response's ``Vary`` names and
    the key does not read, by lower-cased name: whom the entry may serve."""
    vary = response.get("Vary", "") if hasattr(response, "get") else ""
    names = {name.strip().lower() for name in cc_delim_re.split(vary) if name.strip()}
    names -= _KEYED_VARY
    if not names:
        return ()
    headers = request.headers
    return tuple(sorted((name, headers.get(name)) for name in names))


def serves(entry: tuple[Any, ...], request: Any) -> bool:
    """Whether ``entry`` may be served to ``request``: every header its
    ``Vary`` names has the value it had for the request that rendered it."""
    vary = entry[3] if len(entry) > 3 else ()
    if not vary:
        return True
    headers = request.headers
    return all(headers.get(name) == value for name, value in vary)
