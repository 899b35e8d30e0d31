"""A cached handler that raises: DRF's answer, with the cache's headers.

DRF's dispatch turns what a handler raises into a response outside the
handler (``handle_exception``: the exception handler, or the re-raise of
what it does not handle). The response it makes must carry ``Cache-Status``
and ``X-Cache-status`` as the same response returned by the handler would
(``fwd=miss``, nothing stored), and be otherwise exactly DRF's: status,
body, exception handler called once, unhandled exceptions propagating.
Sync APIViews, ViewSets, ``@api_view`` functions and adrf's async APIView.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from adrf.views import APIView as AsyncAPIView
from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.test import AsyncRequestFactory, override_settings
from rest_framework import VERSION, exceptions, viewsets
from rest_framework.decorators import api_view, renderer_classes
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView, exception_handler

from restflow.caching.cache_response import cache_response

RUNS: Counter = Counter()
#: What the views raise (or return, for ``returned``), set per test.
RAISE: list[BaseException | None] = [None]
#: The exceptions the counting exception handler was handed.
HANDLED: list[BaseException] = []

#: DRF 3.15 keeps an ``Http404``'s message; 3.14 answers "Not found.".
DRF_VERSION = tuple(int(part) for part in VERSION.split(".")[:2])
HTTP404_DETAIL = "no such row" if DRF_VERSION >= (3, 15) else "Not found."

#: DRF's answer to each exception: (status, body).
CASES = {
    "not-found": (exceptions.NotFound(), 404, {"detail": "Not found."}),
    "permission": (
        exceptions.PermissionDenied(),
        403,
        {"detail": "You do not have permission to perform this action."},
    ),
    "validation": (exceptions.ValidationError({"name": ["bad"]}), 400, {"name": ["bad"]}),
    "http404": (Http404("no such row"), 404, {"detail": HTTP404_DETAIL}),
    "django-permission": (
        DjangoPermissionDenied(),
        403,
        {"detail": "You do not have permission to perform this action."},
    ),
}


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    HANDLED.clear()
    RAISE[0] = None
    yield
    RAISE[0] = None


def counting_handler(exc, context):
    """DRF's handler, counting its calls."""
    HANDLED.append(exc)
    return exception_handler(exc, context)


def handling_everything(exc, context):
    """A project's handler that answers every exception, as a 500 for the unknown."""
    HANDLED.append(exc)
    response = exception_handler(exc, context)
    return response if response is not None else Response({"error": "internal"}, status=500)


def body_of(request):
    RUNS["view"] += 1
    if RAISE[0] is not None:
        raise RAISE[0]
    response = Response({"tenant": request.headers.get("X-Tenant")})
    response["Vary"] = "X-Tenant"
    return response


class View(APIView):
    renderer_classes = (JSONRenderer,)

    def get_exception_handler(self):
        return counting_handler

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        return body_of(request)

    post = get


class Plain(APIView):
    """The same handler uncached: DRF's own answer, to compare with."""

    renderer_classes = (JSONRenderer,)

    def get_exception_handler(self):
        return counting_handler

    def get(self, request):
        return body_of(request)


class Returning(APIView):
    """Returns the response DRF makes of the exception instead of raising it."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["view"] += 1
        return exception_handler(RAISE[0], {"view": self, "request": request})


class EverythingHandled(View):
    def get_exception_handler(self):
        return handling_everything


class ItemViewSet(viewsets.ViewSet):
    renderer_classes = (JSONRenderer,)

    def get_exception_handler(self):
        return counting_handler

    @cache_response(ttl=60, set_cache_headers=True)
    def retrieve(self, request, pk=None):
        return body_of(request)


@api_view(["GET"])
@renderer_classes([JSONRenderer])
@cache_response(ttl=60, set_cache_headers=True)
def function_view(request):
    return body_of(request)


class AsyncView(AsyncAPIView):
    renderer_classes = (JSONRenderer,)

    def get_exception_handler(self):
        return counting_handler

    @cache_response(ttl=60, set_cache_headers=True)
    async def get(self, request):
        return body_of(request)


class Deny(BasePermission):
    def has_permission(self, request, view):
        return False


class Guarded(View):
    permission_classes = (Deny,)


class Catching(View):
    """A handler that calls the cached one, catches what it raises and
    raises something else: the response is its own, not the cached one's."""

    def post(self, request):
        try:
            self.get(request)
        except exceptions.NotFound:
            raise exceptions.NotAcceptable() from None


#: The headers the cache writes; a raised exception's response has only
#: the first two (nothing stored, nothing served from an entry).
CACHE_HEADERS = ("Cache-Status", "X-Cache-status", "X-Cached-at", "ETag", "Age", "Last-Modified")


def cache_headers(response) -> dict:
    return {name: response.get(name) for name in CACHE_HEADERS}


def answered(status: str, cache_status: str) -> dict:
    return dict.fromkeys(CACHE_HEADERS) | {"X-Cache-status": status, "Cache-Status": cache_status}


def rendered(response):
    response.render()
    return response.status_code, json.loads(response.content)


@pytest.mark.parametrize("case", CASES)
def test_a_raised_exception_is_answered_as_drf_answers_it_with_cache_status(store, case):
    exc, status, body = CASES[case]
    RAISE[0] = exc
    factory = APIRequestFactory()
    responses = [View.as_view()(factory.get("/")) for _ in range(2)]
    assert [rendered(r) for r in responses] == [(status, body)] * 2
    assert [cache_headers(r) for r in responses] == [answered("MISS", "restflow; fwd=miss")] * 2
    assert RUNS["view"] == 2  # nothing stored
    assert HANDLED == [exc, exc]  # DRF's handler, once per request
    # DRF's own answer, uncached: the same.
    plain = Plain.as_view()(factory.get("/"))
    assert rendered(plain) == (status, body)
    assert responses[0]["Content-Type"] == plain["Content-Type"]


@pytest.mark.parametrize("case", CASES)
def test_raising_gets_the_headers_of_returning_the_same_response(case):
    exc, status, body = CASES[case]
    RAISE[0] = exc
    factory = APIRequestFactory()
    raised = View.as_view()(factory.get("/"))
    returned = Returning.as_view()(factory.get("/"))
    assert rendered(raised) == rendered(returned) == (status, body)
    assert cache_headers(raised) == cache_headers(returned)


def test_a_viewset_a_function_view_and_an_async_view_mark_it_too():
    RAISE[0] = exceptions.NotFound()
    factory = APIRequestFactory()
    viewset = ItemViewSet.as_view({"get": "retrieve"})(factory.get("/1/"), pk="1")
    function = function_view(factory.get("/"))

    async def asynchronous():
        return await AsyncView.as_view()(AsyncRequestFactory().get("/"))

    async_response = async_to_sync(asynchronous)()
    for response in (viewset, function, async_response):
        assert rendered(response) == (404, {"detail": "Not found."})
        assert cache_headers(response) == answered("MISS", "restflow; fwd=miss")
    assert RUNS["view"] == 3


def test_an_exception_a_project_handler_answers_gets_the_headers():
    RAISE[0] = RuntimeError("the source is down")
    response = EverythingHandled.as_view()(APIRequestFactory().get("/"))
    assert rendered(response) == (500, {"error": "internal"})
    assert cache_headers(response) == answered("MISS", "restflow; fwd=miss")
    assert HANDLED == [RAISE[0]]


@pytest.mark.parametrize("debug", [False, True])
def test_an_exception_drf_does_not_handle_propagates_as_before(debug):
    error = RuntimeError("the source is down")
    RAISE[0] = error
    with override_settings(DEBUG=debug), pytest.raises(RuntimeError) as raised:
        View.as_view()(APIRequestFactory().get("/"))
    assert raised.value is error
    assert HANDLED == [error]  # the handler ran once, as without the cache


def test_the_views_own_handle_exception_is_back_after_dispatch():
    RAISE[0] = exceptions.NotFound()
    view = View()
    request = APIRequestFactory().get("/")
    view.setup(request)
    response = view.dispatch(request)
    assert cache_headers(response) == answered("MISS", "restflow; fwd=miss")
    assert "handle_exception" not in vars(view)
    # The view's next exception is DRF's alone: no cache headers on it.
    other = view.handle_exception(exceptions.NotFound())
    assert (other.status_code, other.get("Cache-Status")) == (404, None)


def test_a_method_that_bypasses_the_cache_says_so_when_it_raises():
    RAISE[0] = exceptions.NotFound()
    response = View.as_view()(APIRequestFactory().post("/"))
    assert rendered(response) == (404, {"detail": "Not found."})
    assert cache_headers(response) == answered("BYPASS", "restflow; fwd=method")


def test_a_vary_miss_that_raises_says_vary_miss():
    factory = APIRequestFactory()
    stored = View.as_view()(factory.get("/", HTTP_X_TENANT="acme"))
    RAISE[0] = exceptions.NotFound()
    response = View.as_view()(factory.get("/", HTTP_X_TENANT="globex"))
    assert stored["Cache-Status"] == "restflow; fwd=miss; stored"
    assert rendered(response) == (404, {"detail": "Not found."})
    assert cache_headers(response) == answered("MISS", "restflow; fwd=vary-miss")


def test_only_the_cached_handlers_own_exception_is_marked():
    RAISE[0] = exceptions.NotFound()
    response = Catching.as_view()(APIRequestFactory().post("/"))
    assert response.status_code == 406
    assert cache_headers(response) == dict.fromkeys(CACHE_HEADERS)


def test_a_request_refused_before_the_handler_never_reached_the_cache():
    response = Guarded.as_view()(APIRequestFactory().get("/"))
    assert response.status_code == 403
    assert cache_headers(response) == dict.fromkeys(CACHE_HEADERS)
    assert RUNS["view"] == 0
