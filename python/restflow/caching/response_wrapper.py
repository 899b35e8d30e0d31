"""The wrapper ``@cache_response`` returns, and the function it caches.

:class:`CachedResponseWrapper` is what a view calls; it asks a
:class:`~restflow.caching.CachedWrapper` (``cached_render``) for an entry.
That wrapper caches :func:`make_renderer`'s function, which runs the real
handler, finalizes and renders its response as DRF's ``dispatch`` would, and
returns the entry, or ``None`` for a response that may not be stored. The
policy (which responses, which keys) is documented in
:mod:`restflow.caching.cache_response`.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.utils import timezone, translation

from restflow._engine import CachedWrapper, RefreshDeclined
from restflow.caching.asynchronous import in_background_refresh
from restflow.caching.headers import set_response_cache_header
from restflow.caching.response_entries import Entry, freeze, storable, thaw
from restflow.caching.response_http import HttpSemantics, Served, tag
from restflow.caching.response_keys import LOCALE_ATTR, is_drf_request, locale_of, user_of
from restflow.caching.response_negotiation import can_negotiate, negotiate
from restflow.caching.response_privacy import private_reason, serves, watching
from restflow.caching.status import CACHE_MISSING, CacheStatus
from restflow.caching.twins import Steps, arun, run

__all__ = [
    "CACHED_METHODS",
    "CachedResponseWrapper",
    "HandlerCall",
    "ResponseTtl",
    "entry_serves",
    "is_entry",
    "make_renderer",
    "mark_when_handled",
]

#: Request methods whose responses may be served from the cache.
CACHED_METHODS = frozenset({"GET", "HEAD"})

#: The live responses rendered for the current call. Set by the wrapper
#: around its one call into the engine, so a miss returns the response the
#: view produced (cookies, ``.data`` and all) rather than a copy; empty in
#: engine threads, whose renders nobody is waiting for.
_live: ContextVar[list[Any] | None] = ContextVar("restflow_live_responses", default=None)

#: What the current call's own render raised, set beside ``_live``: a
#: call whose render failed, and which the engine answered with the entry
#: kept for stale-if-error, may find that entry is for another variant.
_raised: ContextVar[list[Exception] | None] = ContextVar("restflow_raised", default=None)

#: Set by the wrapper around a call that runs the view live and stores
#: nothing (``bypass_cache``, a method or a user the cache skips, a Vary
#: miss): its render makes no entry, so its response gets no ``ETag`` (a
#: validator of a stored body, which a later request could never match).
#: Unset in engine threads, whose renders (background refreshes) store.
_bypassing: ContextVar[bool] = ContextVar("restflow_bypassing", default=False)


class HandlerCall:
    """Where a handler's request (and view) are among its arguments."""

    def __init__(self, func: Callable[..., Any]) -> None:
        parameters = list(inspect.signature(func).parameters.values())
        self.method = bool(parameters) and parameters[0].name == "self"
        self.index = 1 if self.method else 0
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if len(parameters) <= self.index or parameters[self.index].kind not in positional:
            raise TypeError(
                f"@cache_response decorates view handlers that take the request first: "
                f"def get(self, request, ...) or def view(request, ...); "
                f"{func.__qualname__} does not."
            )
        self.name = parameters[self.index].name

    def request(self, args: tuple[Any, ...], kwargs: dict[str, Any], offset: int = 0) -> Any:
        index = self.index - offset
        if len(args) > index:
            return args[index]
        if self.name in kwargs:
            return kwargs[self.name]
        raise TypeError(f"a cached view handler was called without its {self.name!r} argument")

    def view(self, args: tuple[Any, ...], request: Any) -> Any:
        if self.method:
            return args[0]
        # An @api_view function runs inside the APIView DRF made for it.
        context = getattr(request, "parser_context", None) or {}
        if "view" not in context:
            raise TypeError(
                "@cache_response needs the DRF Request of a view; apply it beneath @api_view."
            )
        return context["view"]


@contextmanager
def _request_locale(request: Any) -> Iterator[None]:
    """Runs in the language and time zone of the request that asked, which a
    background refresh on an engine thread would otherwise lose."""
    stamped = getattr(request, LOCALE_ATTR, None)
    if stamped is None or stamped == locale_of():
        yield
        return
    language, time_zone = stamped
    with translation.override(language), timezone.override(time_zone):
        yield


class ResponseTtl:
    """A callable ``ttl(response, *args, **kwargs)`` given the live response.

    The engine asks for the ttl with the entry it was given, on the thread
    that rendered it, right after the render; the render leaves its choice
    here. Should the two ever not match, the ttl is asked with a response
    rebuilt from the entry.
    """

    def __init__(self, ttl: Callable[..., Any]) -> None:
        self.ttl = ttl
        self._chosen = threading.local()

    def remember(self, entry: Entry, chosen: Any) -> None:
        """Leaves the ttl chosen for ``entry`` (an async view awaits its ttl first)."""
        self._chosen.last = (entry, chosen)

    def __call__(self, entry: Entry, *args: Any, **kwargs: Any) -> Any:
        last, self._chosen.last = getattr(self._chosen, "last", None), None
        if last is not None and last[0] is entry:
            return last[1]
        return self.ttl(thaw(entry), *args, **kwargs)


def render_steps(
    func: Callable[..., Any],
    call: HandlerCall,
    cache_if: Callable[..., Any] | None,
    cache_unless: Callable[..., Any] | None,
    response_ttl: ResponseTtl | None,
    etag: bool,
    asynchronous: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Steps[Entry | None]:
    """What the engine's cached function does, for sync and async handlers
    alike (see :mod:`restflow.caching.twins`): runs the handler, finalizes
    its response as DRF's ``dispatch`` would, renders it, and returns the
    entry, or ``None`` for a response that must not be stored (so a request
    that waited for it runs the view itself instead of sharing it). With
    ``etag``, a response to be stored gets its ``ETag`` first, so the entry
    keeps it.

    A sync handler is always a DRF view's (the view is found before the
    handler runs, so a function view without ``@api_view`` fails first); an
    async one may be a plain Django view's, finalized only when its request
    is DRF's (an APIView whose dispatch awaits handlers, adrf's say)."""
    request = call.request(args, kwargs)
    finalizes = not asynchronous or is_drf_request(request)
    view = call.view(args, request) if finalizes else None
    with _request_locale(request), watching(request) as watch:
        response = yield func(*args, **kwargs)
        if view is not None:
            url_args = args[call.index + 1 :]
            url_kwargs = {name: value for name, value in kwargs.items() if name != call.name}
            response = view.finalize_response(request, response, *url_args, **url_kwargs)
        response = yield (_arender if asynchronous else _render)(response)
    live = _live.get()
    if live is not None:
        live.append(response)
    if _bypassing.get():
        return None  # nothing is stored: no entry to make, no ETag to give
    if private_reason(request, watch) is not None:
        if in_background_refresh():
            # The render is its requester's own (it read the session, say),
            # not the stale entry's next value: the entry stays, for a
            # request it answers to refresh, rather than being dropped.
            raise RefreshDeclined(
                f"{func.__qualname__} rendered a response private to the request that "
                "found its entry stale; the stale entry is kept"
            )
        return None
    if not (yield from storable(response, cache_if, cache_unless, args, kwargs)):
        return None
    if etag:
        tag(response)
    entry = freeze(response, request)
    if entry is None:
        return None
    if response_ttl is not None:
        response_ttl.remember(entry, (yield response_ttl.ttl(response, *args, **kwargs)))
    return entry


def _render(response: Any) -> Any:
    """Renders a sync view's response with deferred rendering (DRF's ``Response``)."""
    if hasattr(response, "render"):
        response.render()
    return response


async def _arender(response: Any) -> Any:
    """Renders a response with deferred rendering (``TemplateResponse``, DRF's
    ``Response``) as Django's async handler would: a sync ``render`` runs in
    a thread, since templates may query the database."""
    render = getattr(response, "render", None)
    if not callable(render):
        return response
    if iscoroutinefunction(render):
        rendered = await render()
    elif getattr(response, "is_rendered", False):
        return response
    else:
        rendered = await sync_to_async(render, thread_sensitive=True)()
    return response if rendered is None else rendered


def make_renderer(
    func: Callable[..., Any],
    call: HandlerCall,
    cache_if: Callable[..., Any] | None,
    cache_unless: Callable[..., Any] | None,
    response_ttl: ResponseTtl | None,
    etag: bool = False,
) -> Callable[..., Any]:
    """The function the engine caches: :func:`render_steps`, run for a sync
    handler, awaited by a coroutine function for an ``async def`` one."""
    asynchronous = inspect.iscoroutinefunction(func)
    steps = functools.partial(
        render_steps, func, call, cache_if, cache_unless, response_ttl, etag, asynchronous
    )
    if asynchronous:

        async def arender(*args: Any, **kwargs: Any) -> Entry | None:
            try:
                return await arun(steps(args, kwargs))
            except Exception as error:
                _note_raised(error)
                raise

        return functools.wraps(func)(arender)

    def render(*args: Any, **kwargs: Any) -> Entry | None:
        try:
            return run(steps(args, kwargs))
        except Exception as error:
            _note_raised(error)
            raise

    return functools.wraps(func)(render)


def _note_raised(error: Exception) -> None:
    """Keeps what a render raised for the call that ran it (none in engine
    threads: a background refresh's error is the engine's to log)."""
    raised = _raised.get()
    if raised is not None:
        raised.append(error)


def is_entry(entry: Entry | None, *args: Any, **kwargs: Any) -> bool:
    return entry is not None


def entry_serves(
    call: HandlerCall, entry: Entry, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> bool:
    """Whether the entry found for a call may answer its request (its
    ``Vary`` headers match): the engine asks before it refreshes a stale
    entry with that call, so a request of another variant, which is
    answered live, never replaces the entry with its own render."""
    return serves(entry, call.request(args, kwargs or {}))


class CachedResponseWrapper:
    """What ``@cache_response`` returns: a view handler that serves its
    rendered responses from the cache.

    It binds like the handler (``view.get`` is bound to the view) and has
    every :class:`~restflow.caching.CachedWrapper` method. Methods that
    return a value return a response: the live one when this call ran the
    view, else an ``HttpResponse`` rebuilt from the entry.
    ``cached_render`` is the underlying ``CachedWrapper``, whose values are
    the entries.
    """

    is_cached_function = True

    def __init__(
        self,
        func: Callable[..., Any],
        cached_render: CachedWrapper,
        call: HandlerCall,
        set_cache_headers: bool,
        http: HttpSemantics,
    ) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.cached_render = cached_render
        self.set_cache_headers = set_cache_headers
        self.http = http
        self.__self__: Any = None
        self._call = call
        self._offset = 0
        # An async handler may be a plain Django view's, whose request is Django's.
        self._django_requests = inspect.iscoroutinefunction(func)

    def __get__(self, instance: Any, owner: type | None = None) -> CachedResponseWrapper:
        if instance is None or not self._call.method:
            return self
        # A copy shares what decorators such as @action set on the handler.
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound.cached_render = self.cached_render.__get__(instance, owner)
        bound.__self__ = instance
        bound._offset = 1
        return bound

    @property
    def key_constructor(self) -> Any:
        return self.cached_render.key_constructor

    def __repr__(self) -> str:
        return f"<CachedResponseWrapper of {self.__module__}.{self.__qualname__}>"

    # -- calls that return a response ----------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run(self._serving("get_with_metadata", args, kwargs))[0]

    def get_with_metadata(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return run(self._serving("get_with_metadata", args, kwargs))

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return run(self._serving("refresh_with_metadata", args, kwargs))[0]

    def refresh_with_metadata(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return run(self._serving("refresh_with_metadata", args, kwargs))

    def bypass_cache(self, *args: Any, **kwargs: Any) -> Any:
        return self.bypass_cache_with_metadata(*args, **kwargs)[0]

    def bypass_cache_with_metadata(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return run(self._bypass(args, kwargs))

    def get_cache_only(self, *args: Any, **kwargs: Any) -> Any:
        """The cached response (fresh or stale) rebuilt, or ``CACHE_MISSING``
        (also when its ``Vary`` headers do not match this request's)."""
        args, kwargs = self._dispatched(args, kwargs)
        entry = self.cached_render.get_cache_only(*args, **kwargs)
        return self._rebuilt(entry, args, kwargs)

    def _rebuilt(self, entry: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The response of a stored entry, if this call's request may have it."""
        if entry is CACHE_MISSING:
            return entry
        request = self._call.request(args, kwargs, self._offset)
        return thaw(entry) if serves(entry, request) else CACHE_MISSING

    # -- keys and invalidation: the underlying wrapper's ----------------------

    def get_cached_metadata(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        args, kwargs = self._dispatched(args, kwargs)
        return self.cached_render.get_cached_metadata(*args, **kwargs)

    def get_cache_key(self, *args: Any, **kwargs: Any) -> str:
        args, kwargs = self._dispatched(args, kwargs)
        return self.cached_render.get_cache_key(*args, **kwargs)

    def delete_cache(self, *args: Any, **kwargs: Any) -> bool:
        args, kwargs = self._dispatched(args, kwargs)
        return self.cached_render.delete_cache(*args, **kwargs)

    def delete_by_prefix(self, *args: Any, **kwargs: Any) -> None:
        return self.cached_render.delete_by_prefix(*args, **kwargs)

    def invalidate_all(self) -> None:
        return self.cached_render.invalidate_all()

    def stats(self) -> dict[str, Any]:
        """This view's statistics (see :mod:`restflow.caching.statistics`)."""
        return self.cached_render.stats()

    def reset_stats(self) -> None:
        self.cached_render.reset_stats()

    # -- the one path every response call takes --------------------------------

    def _view(self, args: tuple[Any, ...]) -> Any:
        return self.__self__ if self._offset else (args[0] if self._call.method else None)

    def _outside_dispatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the call carries a plain Django request where DRF's dispatch
        would pass its own (an async handler of a plain Django view takes Django's)."""
        request = self._call.request(args, kwargs, self._offset)
        if is_drf_request(request):
            return False
        return not self._django_requests or can_negotiate(self._view(args))

    def _dispatched(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call as DRF's dispatch makes it: a plain Django request (a test's,
        a command's) beside a bare view is negotiated first (see
        :mod:`restflow.caching.response_negotiation`), so the key is the one a
        served request made, never a key no request has."""
        request = self._call.request(args, kwargs, self._offset)
        if is_drf_request(request):
            return args, kwargs
        view = self._view(args)
        if not can_negotiate(view):
            if self._django_requests:
                return args, kwargs
            raise TypeError(
                f"{self.__qualname__} keys by what DRF negotiated for the request: pass the "
                "DRF Request the view received, or call it on an APIView/ViewSet handler with "
                "its view (MyView.get.delete_cache(MyView(), request, pk=1)), which negotiates "
                f"a plain Django request; got {request!r}."
            )
        index = self._call.index - self._offset
        positional = len(args) > index
        url_args = args[index + 1 :] if positional else args[index:]
        url_kwargs = {name: value for name, value in kwargs.items() if name != self._call.name}
        drf_request = negotiate(view, request, self.__name__, url_args, url_kwargs)
        if positional:
            return (*args[:index], drf_request, *args[index + 1 :]), kwargs
        return args, {**kwargs, self._call.name: drf_request}

    # Each step function below is the sync and the async wrapper's alike
    # (see restflow.caching.twins): it yields what it calls through the two
    # hooks that follow, which an async wrapper's drivers await.

    def _cached(self, method: str) -> Callable[..., Any]:
        """The ``cached_render`` method a response call uses (the async
        wrapper's is its ``a``-named twin)."""
        return getattr(self.cached_render, method)

    def _load_user(self, request: Any) -> Any:
        """What loads the request's user before it is keyed, or ``None``: a
        sync view's is read where the key is made (an async view's must not
        touch the database on the event loop)."""
        return None

    def _bypass(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps[tuple[Any, dict]]:
        """``bypass_cache_with_metadata``: the view live, storing nothing."""
        if self._outside_dispatch(args, kwargs):
            # drf-restflow's documented use outside a request: just the handler.
            receiver = (self.__self__,) if self._offset else ()
            response = yield self.func(*receiver, *args, **kwargs)
            return response, {"cache_status": CacheStatus.BYPASS}
        return (yield from self._serving("bypass_cache_with_metadata", args, kwargs))

    def _serving(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Steps[tuple[Any, dict[str, Any]]]:
        """The one path every response call takes: ``method`` is the sync
        name of the ``cached_render`` method that answers it."""
        args, kwargs = self._dispatched(args, kwargs)
        request = self._call.request(args, kwargs, self._offset)
        setattr(request, LOCALE_ATTR, locale_of())
        loading = self._load_user(request)
        if loading is not None:
            yield loading
        forward = None
        if method == "get_with_metadata" and not _uses_cache(request):
            method = "bypass_cache_with_metadata"
            forward = _bypass_reason(request)
        # How a response DRF makes of an exception the view raised is
        # answered: as the same response returned, which is never stored.
        raised = Served({"cache_status": _RAISED_STATUS[method]}, True, forward)
        response, served = yield from self._answer(method, args, kwargs, request, raised)
        if forward is not None:
            served = Served(served.metadata, served.rendered_here, forward)
        return self._finish(request, response, served), served.metadata

    def _answer(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        request: Any,
        raised: Served,
    ) -> Steps[tuple[Any, Served]]:
        """The response to ``request`` and how it was found, before headers
        (``raised``: how it was found should the view raise)."""
        live: list[Any] = []
        failures: list[Exception] = []
        token, failed = _live.set(live), _raised.set(failures)
        bypassing = _bypassing.set(method == "bypass_cache_with_metadata")
        try:
            entry, metadata = yield self._cached(method)(*args, **kwargs)
        except Exception as error:
            self._when_handled(args, request, error, raised)
            raise
        finally:
            _bypassing.reset(bypassing)
            _raised.reset(failed)
            _live.reset(token)
        if live:
            return live[-1], Served(metadata, rendered_here=True)
        if entry is not None and serves(entry, request):
            # Nothing ran here: a hit, the entry kept for stale-if-error when
            # the render raised, or another request's render we waited for.
            return thaw(entry), Served(metadata, rendered_here=False)
        unshared = _unshared(entry)
        if failures:
            # This call's render raised, and the entry kept for
            # stale-if-error that answered it is another variant's: the
            # error is this request's answer, as with no entry at all (a
            # second render would only run the failing view again).
            self._when_handled(args, request, failures[-1], unshared)
            raise failures[-1]
        # Another request rendered this key at the same moment, and its
        # response may not be stored (it sets cookies, say), or the entry
        # varies on a header this request sends otherwise: not ours to share.
        bypass = "bypass_cache_with_metadata"
        response = (yield from self._answer(bypass, args, kwargs, request, unshared))[0]
        return response, unshared

    def _when_handled(
        self, args: tuple[Any, ...], request: Any, error: Exception, raised: Served
    ) -> None:
        """Has the response DRF makes of ``error`` carry the headers of the
        same response returned (``raised``). DRF's dispatch turns what a
        handler raises into a response outside the handler (the view's
        ``handle_exception``), after this wrapper has returned; the view of
        the call is asked to mark it there, so DRF's own handling (exception
        handler, status, body, the re-raise of what it does not handle) is
        unchanged. A plain Django view has no such step: Django answers
        what it raises, without these headers."""
        view = self._view(args)
        if view is None:  # an @api_view function runs inside the APIView DRF made
            view = (getattr(request, "parser_context", None) or {}).get("view")
        if view is None or not callable(getattr(view, "handle_exception", None)):
            return
        mark_when_handled(view, error, lambda response: self._finish(request, response, raised))

    def _finish(self, request: Any, response: Any, served: Served) -> Any:
        """The response with its HTTP caching headers (or the 304 it becomes)."""
        response = self.http.finish(request, response, served)
        if self.set_cache_headers:
            set_response_cache_header(response, served.metadata)
        return response


#: The status a call reports when the view raised, by the ``cached_render``
#: method that ran it: the one it reports for a response it may not store.
_RAISED_STATUS = {
    "get_with_metadata": CacheStatus.MISS,
    "bypass_cache_with_metadata": CacheStatus.BYPASS,
    "refresh_with_metadata": CacheStatus.REFRESH,
}

#: Where a view keeps the exception a cached handler raised, beside how to
#: mark the response DRF makes of it, and the flag that its
#: ``handle_exception`` is wrapped (see :func:`mark_when_handled`).
_RAISED_ATTR = "_restflow_raised"
_HOOKED_ATTR = "_restflow_hooked"


def mark_when_handled(view: Any, error: Exception, mark: Callable[[Any], Any]) -> None:
    """Calls ``mark`` with the response ``view.handle_exception`` makes of
    ``error``, when DRF's dispatch hands it the exception the handler raised.

    The view's ``handle_exception`` is wrapped on this instance (a view
    serves one request) until its next call, which restores it: that call
    runs the view's own, once, as dispatch would (the exception handler,
    ``raise_uncaught_exception`` and DEBUG's re-raise included), and marks
    its response only when the exception is ``error`` itself. A call made
    outside dispatch (a command's ``refresh()``) just raises: nothing calls
    the wrapper, which goes with the view. Of cached handlers nested in one
    view, the outermost's mark is the one kept: its response is the view's.
    """
    own = vars(view)
    own[_RAISED_ATTR] = (error, mark)
    if _HOOKED_ATTR in own:
        return  # wrapped already, by an inner cached handler of this view
    previous = own.get("handle_exception")  # an instance's own, if it had one
    handle = view.handle_exception

    def handle_exception(exc: Exception) -> Any:
        if previous is None:
            del own["handle_exception"]
        else:
            own["handle_exception"] = previous
        del own[_HOOKED_ATTR]
        pending = own.pop(_RAISED_ATTR, None)
        response = handle(exc)
        if pending is not None and pending[0] is exc:
            pending[1](response)
        return response

    own["handle_exception"] = handle_exception
    own[_HOOKED_ATTR] = True


def _unshared(entry: Entry | None) -> Served:
    """How a request was answered that ran the view because the entry it
    found (or waited for) was not for it: MISS, and why (RFC 9211 §2.2)."""
    forward = "miss" if entry is None else "vary-miss"
    return Served({"cache_status": CacheStatus.MISS}, rendered_here=True, forward=forward)


def _bypass_reason(request: Any) -> str:
    """Why a request skips the cache, as RFC 9211 §2.2 names it: its method
    never uses the cache (``method``), or there is no key for its user."""
    return "bypass" if request.method in CACHED_METHODS else "method"


def _uses_cache(request: Any) -> bool:
    """Safe defaults 1 and 6: only GET and HEAD, and only users there is a key for."""
    return request.method in CACHED_METHODS and user_of(request) is not CACHE_MISSING
