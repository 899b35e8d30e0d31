"""``@cache_response``: cache what a DRF (or async Django) view renders, with safe defaults.

::

    from restflow.caching.cache_response import cache_response

    class ArticleView(APIView):
        @cache_response(ttl=60, set_cache_headers=True)
        def get(self, request, pk):
            return Response(ArticleSerializer(Article.objects.get(pk=pk)).data)

    @api_view(["GET"])
    @cache_response(ttl=60)                  # beneath @api_view
    def article_view(request, pk): ...

It works on ``APIView`` and ``ViewSet`` handlers (router actions and
``@action`` methods included) and on ``@api_view`` functions. A miss runs the
view, finalizes and renders its response as DRF would, and stores the
rendered bytes, the status code and the headers (see
:mod:`restflow.caching.response_entries`). A hit returns a new
``django.http.HttpResponse`` with that content, status and headers
(``Content-Type`` included): the view body, its serializers and the renderer
do not run.

Safe defaults. Each exists because the unsafe choice serves one client what
was rendered for another:

1. **Only GET and HEAD use the cache, each from its own entries.** Any
   other method runs the view live (status ``BYPASS``): a handler serving
   several methods (an ``@action`` with ``methods=["get", "post"]``) never
   answers a POST from a GET's entry. The method is part of the key: a view
   may render HEAD otherwise (an empty body), and a GET never gets that.
2. **Only 2xx responses are stored**, unless ``cache_if`` says otherwise
   (``cache_if(response, *args, **kwargs)`` replaces the status rule;
   ``cache_unless`` narrows it). An error is usually about this moment.
3. **Some responses are never stored**, whatever ``cache_if`` says: those
   that set cookies, carry ``Vary: *`` or ``Cache-Control: private`` /
   ``no-store``, and streamed ones; those rendered while the view read
   ``request.COOKIES`` or ``request.session`` (``SessionMiddleware`` adds
   ``Vary: Cookie`` only
   after the entry would be stored; reads before the view, by
   authentication, do not count); and those carrying a CSRF token (Django
   marked it used: the browsable API's pages, forms). They are returned as
   they are. See :mod:`restflow.caching.response_privacy`. A render that
   read the cookies or the session, or used the CSRF token, is its
   requester's, not the resource's: a stale entry's background refresh
   rendered so keeps the stale entry (``RefreshDeclined``) rather than
   dropping it.
4. **What was negotiated is part of the key**: the media type DRF chose
   (``request.accepted_media_type``), the API version (``request.version``),
   the active language (``get_language()``) and time zone, the scheme,
   host (``request.get_host()``) and path (absolute URLs from
   ``build_absolute_uri`` never cross hosts, go from http to https, or
   reach another URL routed to the same view), beside the URL kwargs and
   query string of :class:`ResponseCacheKeyConstructor` (repeated query
   parameters in the order sent: ``?sort=a&sort=b`` is not
   ``?sort=b&sort=a``). This is added to any key constructor given.
5. **The view class is part of the key**: two subclasses sharing one
   decorated handler never share entries (an ``@api_view`` function is its
   own view class).
6. **Authenticated requests are keyed by user**: when ``request.user`` is
   authenticated, its kind (the concrete model, or the class of a user that
   is not a model) and primary key are part of the key; anonymous requests
   share entries. An authenticated user without a primary key (a stateless
   token user), and a client DRF authenticated without a user
   (``request.auth`` beside an anonymous user: an API key), have nothing
   safe to key by, so their requests run live (``BYPASS``). To share one
   response among users, cache the payload with ``cache_result`` instead.
7. **The view's own ``Vary`` is honoured**: an entry whose response says
   ``Vary: X-Tenant`` records the X-Tenant its request sent, and is served
   only to requests sending the same; others run the view live (``MISS``,
   nothing stored) and leave the entry as it is: one that finds it stale
   does not refresh it (the refresh would render with its header, for
   another variant). ``Accept`` is keyed already (default 4). To cache every
   value, key the header too (``RequestValueKeyField("META.HTTP_X_TENANT")``).
8. **A background refresh renders like the request it replaces**: inside
   the stale window (``stale_while_revalidate``) the view runs again on an
   engine thread with the request that found the entry stale, under that
   request's language and time zone. Other per-request state held in
   thread-locals is not carried over: turn the stale window off
   (``stale_while_revalidate=0``) for views that read it.

Concurrent requests for one key run the view once (single-flight); a request
that waited for a response that may not be stored runs the view itself.

HTTP caching headers (:mod:`restflow.caching.response_http`). Every response
says how it was answered in ``Cache-Status`` (RFC 9211: ``restflow; hit;
ttl=12``, ``restflow; fwd=miss; stored``, ``collapsed`` for a request that
waited for another's render), and one served from an entry says how old it
is in ``Age``. So does the response DRF makes of an exception the handler
raised, as the same response returned would (``fwd=miss``, not stored):
the view's ``handle_exception`` marks it (see
:func:`~restflow.caching.response_wrapper.mark_when_handled`).

A stored response carries a strong ``ETag`` of its body (hashed once, when
stored) and a ``Last-Modified`` of when it was stored; a GET or HEAD whose
``If-None-Match`` or ``If-Modified-Since`` matches an entry is answered
``304`` from the entry, without running the view. These are on by default
(``cache_status=False`` / ``conditional=False`` turn them off): they
describe only the response the client gets. ``Cache-Control`` is
written only when ``cache_control="public"`` or ``"private"`` is chosen:
``public`` lets a CDN hand one client's response to every client.

Every :class:`~restflow.caching.CachedWrapper` method is on the wrapper
(:class:`CachedResponseWrapper`), taking the handler's own arguments:
``get_cache_key(request, pk=1)``, ``delete_by_prefix(pk=1)`` (the URL kwargs
are the partition), ``invalidate_all()``. The key of a request depends on
its URL (host, path, query) and on what DRF negotiated for it: given a bare
view and a plain Django request for the URL the view serves
(``MyView.get.delete_cache(MyView(), request, pk=1)``, drf-restflow's
documented use outside a request), the request is negotiated as DRF's
dispatch would (:mod:`restflow.caching.response_negotiation`);
``bypass_cache`` then just calls the handler. An ``@api_view`` function has
no view to negotiate with: its methods need the DRF request the view got.

Async views. On an ``async def`` handler, ``cache_response`` returns an
:class:`AsyncCachedResponseWrapper` (:mod:`restflow.caching.response_async`),
which Django awaits like the handler::

    @cache_response(ttl=60, set_cache_headers=True)
    async def article_view(request, pk): ...   # an async function view

    class ArticleView(View):                    # django.views.View
        @cache_response(ttl=60)
        async def get(self, request, pk): ...

DRF's own ``APIView.dispatch`` (DRF 3.x, used by ``APIView``, ``ViewSet`` and
``@api_view``) calls a handler without awaiting it, so an ``async def``
handler there raises a ``TypeError`` that says so when it is called. An
APIView whose ``dispatch`` awaits handlers (adrf's) works: the response is
finalized and rendered as on a sync APIView. For a plain Django view there
is no DRF request:

- the response is rendered if it defers rendering (``TemplateResponse``),
  in a thread as Django's async handler does, before any
  ``process_template_response`` middleware sees it;
- nothing negotiated a media type, so the whole ``Accept`` header the client
  sent is part of the key in its place (safe default 4: the view may choose
  by it);
- the user (safe default 6) is loaded with ``await request.auser()``:
  ``AuthenticationMiddleware``'s lazy ``request.user`` would query the
  database on the event loop. A lazy ``request.user`` without ``auser`` is
  loaded in a thread.

Every other default holds as above. ``cache_if``, ``cache_unless`` and a
callable ``ttl`` may be ``async def`` on an async view (on a sync view they
are refused at decoration). Memory-store hits are answered on the event
loop; shared stores make their round trips on worker threads (see
:mod:`restflow.caching.asynchronous`). The stale window's refresh runs as a
task on the loop of the request that found the entry stale: a loop that
closes right after the request (``async_to_sync`` under WSGI) may cancel it.
The wrapper's methods are the sync ones under ``a``-names, awaited:
``aget_with_metadata``, ``arefresh(_with_metadata)``,
``abypass_cache(_with_metadata)``, ``aget_cache_only``,
``aget_cached_metadata``, ``adelete_cache``, ``adelete_by_prefix``,
``ainvalidate_all`` and ``aget_cache_key``; the sync names raise a
``TypeError`` naming the async one (``get_cache_key`` stays sync).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from restflow.caching.decorators import check_policy, refuse_async_policy, result_cache
from restflow.caching.key_constructor import refuse_ttl_as_constructor
from restflow.caching.response_async import AsyncCachedResponseWrapper
from restflow.caching.response_http import HttpSemantics
from restflow.caching.response_keys import (
    ResponseCacheKeyConstructor,
    check_request_not_keyed,
    default_constructor,
    with_variant,
)
from restflow.caching.response_wrapper import (
    CachedResponseWrapper,
    HandlerCall,
    ResponseTtl,
    entry_serves,
    is_entry,
    make_renderer,
)
from restflow.caching.settings import seconds

__all__ = [
    "AsyncCachedResponseWrapper",
    "CachedResponseWrapper",
    "ResponseCacheKeyConstructor",
    "cache_response",
]


def _check_target(func: Any) -> None:
    if isinstance(func, (classmethod, staticmethod)):
        raise TypeError(
            f"@cache_response must be applied beneath @{type(func).__name__}, on the function."
        )
    if isinstance(func, type) or hasattr(func, "view_class"):
        raise TypeError(
            "@cache_response decorates a view's handler: put it on the APIView/ViewSet method, "
            "or beneath @api_view on the function, not on a view class or an as_view() result."
        )
    if not callable(func):
        raise TypeError(f"@cache_response decorates view handlers; got {func!r}")


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def cache_response(
    key_constructor: Any = None,
    ttl: int | float | timedelta | Callable[..., Any] | None = 3600,
    invalidates_on: list[Any] | None = None,
    cache_if: Callable[..., Any] | None = None,
    cache_unless: Callable[..., Any] | None = None,
    set_cache_headers: bool = False,
    *,
    stale_while_revalidate: int | float | timedelta | None = None,
    stale_if_error: int | float | timedelta | None = None,
    cache_status: bool = True,
    conditional: bool = True,
    cache_control: str | None = None,
    early_refresh: bool = False,
    beta: float | None = None,
) -> Callable[[Callable[..., Any]], CachedResponseWrapper]:
    """Caches a DRF view handler's rendered responses (see the module docs).

    :param key_constructor: what keys a response, as for ``cache_result``;
        ``None`` (the default) is :class:`ResponseCacheKeyConstructor` (query
        string and URL kwargs). The negotiated media type, API version, language, time zone
        and user are always added.
    :param ttl: seconds, a ``timedelta``, ``None`` (never expires) or a
        callable ``ttl(response, *args, **kwargs)`` returning one of those.
    :param stale_while_revalidate: as for ``cache_result``.
    :param early_refresh: as for ``cache_result``: refresh a hot response
        before it expires (XFetch).
    :param beta: as for ``cache_result`` (with ``early_refresh=True``).
    :param invalidates_on: ``InvalidationRule`` objects, as for ``cache_result``.
    :param cache_if: ``predicate(response, *args, **kwargs)``: store when
        truthy; replaces the 2xx rule.
    :param cache_unless: ``predicate(response, *args, **kwargs)``: do not
        store when truthy. Give at most one of the two.
    :param set_cache_headers: write ``X-Cache-status``, ``X-Cached-at`` and
        ``X-Cache-reset-at`` on every response the handler returns.
    :param stale_if_error: as for ``cache_result``.
    :param cache_status: write ``Cache-Status`` (RFC 9211) and, on responses
        served from an entry, ``Age`` (RFC 9111). On by default: both say
        only how old the response is and where it came from.
    :param conditional: give stored responses a strong ``ETag`` of their
        body and a ``Last-Modified`` of when they were stored, and answer a
        matching ``If-None-Match`` / ``If-Modified-Since`` with ``304`` from
        the entry, without running the view. On by default.
    :param cache_control: ``"public"`` or ``"private"`` writes
        ``Cache-Control: <that>, max-age=<ttl>`` (with
        ``stale-while-revalidate`` / ``stale-if-error`` when those windows
        are on) on responses in the cache. ``None`` (the default) writes
        none: ``public`` lets a CDN keep the response for everyone, which is
        wrong for per-user or per-session data. See the module docs.

    On an ``async def`` handler the result is an
    :class:`AsyncCachedResponseWrapper`, and ``cache_if``, ``cache_unless``
    and ``ttl`` may be ``async def`` too.
    """
    if inspect.isfunction(key_constructor):
        raise TypeError("@cache_response needs its parentheses: @cache_response(...).")
    refuse_ttl_as_constructor(key_constructor, "cache_response")
    check_policy(ttl, cache_if, cache_unless)
    response_ttl = ResponseTtl(ttl) if callable(ttl) else None
    http = HttpSemantics(
        cache_status=_flag(cache_status, "cache_status"),
        conditional=_flag(conditional, "conditional"),
        cache_control=cache_control,
        stale_while_revalidate=seconds(
            stale_while_revalidate, name="stale_while_revalidate", allow_none=True
        ),
        stale_if_error=seconds(stale_if_error, name="stale_if_error", allow_none=True),
    )

    def decorator(func: Callable[..., Any]) -> CachedResponseWrapper:
        _check_target(func)
        call = HandlerCall(func)
        if key_constructor is None:
            constructor: Any = default_constructor(call.name)
        else:
            constructor = key_constructor
            check_request_not_keyed(constructor, func, call.name)
        is_async = inspect.iscoroutinefunction(func)
        if not is_async:
            refuse_async_policy(ttl, cache_if, cache_unless, target="view")
        render = make_renderer(func, call, cache_if, cache_unless, response_ttl, http.conditional)
        cached = result_cache(
            with_variant(constructor, call.name),
            response_ttl or ttl,
            invalidates_on,
            is_entry,
            None,
            stale_while_revalidate=stale_while_revalidate,
            backend=None,
            stale_if_error=stale_if_error,
            early_refresh=early_refresh,
            beta=beta,
            near_cache=None,
            serves=functools.partial(entry_serves, call),
        )(render)
        wrapper_class = AsyncCachedResponseWrapper if is_async else CachedResponseWrapper
        return wrapper_class(func, cached, call, set_cache_headers, http)

    return decorator
