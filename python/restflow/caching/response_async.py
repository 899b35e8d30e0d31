"""``@cache_response`` on ``async def`` views.

:class:`AsyncCachedResponseWrapper` is what ``cache_response`` returns for an
``async def`` handler. It asks an
:class:`~restflow.caching.asynchronous.AsyncCachedWrapper` (``cached_render``)
for an entry; that wrapper caches the coroutine function
:func:`~restflow.caching.response_wrapper.make_renderer` makes, which awaits
the handler, renders its response and returns the entry, or ``None`` for a
response that may not be stored. The policy (which
responses, which keys) is the sync one, documented in
:mod:`restflow.caching.cache_response`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.utils.functional import LazyObject, empty

from restflow.caching.asynchronous import refuses_sync_names
from restflow.caching.response_keys import (
    LOCALE_ATTR,
    USER_ATTR,
    is_drf_request,
    locale_of,
    user_of,
)
from restflow.caching.response_wrapper import (
    CachedResponseWrapper,
)
from restflow.caching.twins import arun

__all__ = ["AsyncCachedResponseWrapper"]


async def _aresolve_user(request: Any) -> None:
    """Fetches a plain Django request's user without blocking the loop.

    ``AuthenticationMiddleware``'s ``request.user`` is lazy and reads the
    session and the database when first touched, which Django forbids on the
    event loop; ``await request.auser()`` is its async twin. The user is
    stamped on the request for the key (:func:`~.response_keys.user_of`). A
    DRF request's user is DRF's to authenticate: it is read as it is.
    """
    if is_drf_request(request) or USER_ATTR in getattr(request, "__dict__", {}):
        return
    auser = getattr(request, "auser", None)
    if callable(auser):
        setattr(request, USER_ATTR, await auser())
        return
    user = getattr(request, "user", None)
    if isinstance(user, LazyObject) and user._wrapped is empty:
        await sync_to_async(user_of, thread_sensitive=True)(request)  # evaluates it


async def _response_of(serving: Coroutine[Any, Any, tuple[Any, dict[str, Any]]]) -> Any:
    return (await serving)[0]


@refuses_sync_names("an async view")
class AsyncCachedResponseWrapper(CachedResponseWrapper):
    """What ``@cache_response`` returns for an ``async def`` view handler.

    Calling it returns a coroutine (Django sees a coroutine function, so an
    async class-based view stays async and a function view is awaited). The
    other methods are the sync wrapper's under ``a``-names, awaited:
    ``aget_with_metadata``, ``arefresh(_with_metadata)``,
    ``abypass_cache(_with_metadata)``, ``aget_cache_only``,
    ``aget_cached_metadata``, ``adelete_cache``, ``adelete_by_prefix``,
    ``ainvalidate_all`` and ``aget_cache_key``; the sync names raise a
    ``TypeError`` naming the async one. ``get_cache_key`` stays sync (it does
    no I/O) but reads ``request.user``: give it a request whose user is
    loaded, or await ``aget_cache_key``. ``cached_render`` is the underlying
    ``AsyncCachedWrapper``, whose values are the entries.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Django runs a view, and an async class-based view's handlers, by
        # whether they are coroutine functions: this object is one.
        markcoroutinefunction(self)
        # adrf asks inspect.iscoroutinefunction, which before Python 3.12
        # ignores that mark and takes an object for a function only when it
        # looks like one: the handler's code, defaults and annotations. Without
        # them adrf runs the wrapper through sync_to_async, which refuses it.
        func = self.func
        self.__code__ = func.__code__
        self.__defaults__ = func.__defaults__
        self.__kwdefaults__ = func.__kwdefaults__

    def __repr__(self) -> str:
        return f"<AsyncCachedResponseWrapper of {self.__module__}.{self.__qualname__}>"

    # -- calls that return a response ----------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        self._refuse_sync_dispatch(args, kwargs)
        return _response_of(arun(self._serving("get_with_metadata", args, kwargs)))

    async def aget_with_metadata(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """``(response, metadata)``: HIT, MISS, STALE or BYPASS."""
        return await arun(self._serving("get_with_metadata", args, kwargs))

    async def arefresh(self, *args: Any, **kwargs: Any) -> Any:
        return (await self.arefresh_with_metadata(*args, **kwargs))[0]

    async def arefresh_with_metadata(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Runs the view now and overwrites the entry: REFRESH."""
        return await arun(self._serving("refresh_with_metadata", args, kwargs))

    async def abypass_cache(self, *args: Any, **kwargs: Any) -> Any:
        return (await self.abypass_cache_with_metadata(*args, **kwargs))[0]

    async def abypass_cache_with_metadata(
        self, *args: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        """Runs the view live, storing nothing: BYPASS."""
        return await arun(self._bypass(args, kwargs))

    async def aget_cache_only(self, *args: Any, **kwargs: Any) -> Any:
        """The cached response (fresh or stale) rebuilt, or ``CACHE_MISSING``."""
        args, kwargs = self._dispatched(args, kwargs)
        async with self._keyed(args, kwargs):
            entry = await self.cached_render.aget_cache_only(*args, **kwargs)
        return self._rebuilt(entry, args, kwargs)

    # -- keys and invalidation: the underlying wrapper's ----------------------

    async def aget_cached_metadata(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        args, kwargs = self._dispatched(args, kwargs)
        async with self._keyed(args, kwargs):
            return await self.cached_render.aget_cached_metadata(*args, **kwargs)

    async def aget_cache_key(self, *args: Any, **kwargs: Any) -> str:
        """``get_cache_key`` after loading the request's user without blocking."""
        args, kwargs = self._dispatched(args, kwargs)
        async with self._keyed(args, kwargs):
            return self.cached_render.get_cache_key(*args, **kwargs)

    async def adelete_cache(self, *args: Any, **kwargs: Any) -> bool:
        args, kwargs = self._dispatched(args, kwargs)
        async with self._keyed(args, kwargs):
            return await self.cached_render.adelete_cache(*args, **kwargs)

    async def adelete_by_prefix(self, *args: Any, **kwargs: Any) -> None:
        async with self._keyed(args, kwargs):
            return await self.cached_render.adelete_by_prefix(*args, **kwargs)

    async def ainvalidate_all(self) -> None:
        return await self.cached_render.ainvalidate_all()

    # -- the hooks of the steps every response call takes (the sync wrapper's) --

    def _cached(self, method: str) -> Callable[..., Any]:
        return getattr(self.cached_render, "a" + method)

    def _load_user(self, request: Any) -> Any:
        return _aresolve_user(request)

    @asynccontextmanager
    async def _keyed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[None]:
        """Around a key-only call: the user loaded, and the caller's language
        and time zone stamped (a shared store computes the key on a worker
        thread, where neither is active), unless a served call stamped them."""
        try:
            request = self._call.request(args, kwargs, self._offset)
        except TypeError:  # adelete_by_prefix(pk=1): the partition, no request
            yield
            return
        await _aresolve_user(request)
        stamp = LOCALE_ATTR not in getattr(request, "__dict__", {LOCALE_ATTR: None})
        if stamp:
            setattr(request, LOCALE_ATTR, locale_of())
        try:
            yield
        finally:
            if stamp:
                delattr(request, LOCALE_ATTR)

    def _refuse_sync_dispatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """DRF's own ``APIView.dispatch`` calls a handler without awaiting it and
        would fail on the coroutine: say so, with what works instead."""
        views = sys.modules.get("rest_framework.views")
        if views is None:
            return
        try:
            request = self._call.request(args, kwargs, self._offset)
            if not is_drf_request(request):
                return
            view = self._call.view((self.__self__, *args) if self._offset else args, request)
        except (TypeError, IndexError):
            return  # the serve steps report a call without its request
        if type(view).dispatch is views.APIView.dispatch:
            from rest_framework import VERSION

            raise TypeError(
                f"{self.__qualname__} is an async def handler, and DRF {VERSION}'s "
                "APIView.dispatch (used by APIView, ViewSet and @api_view) calls handlers "
                "without awaiting them. Cache an async Django view (django.views.View with "
                "async def get, or an async def function view), or use an APIView whose "
                "dispatch awaits async handlers (adrf's)."
            )
