"""Part 4 of issue 12: cache_response's wrapper methods outside DRF's dispatch.

drf-restflow documents calling them on the class's handler with a bare view
and the request a test (or a management command) made, such as
``MyView.get.delete_cache(MyView(), RequestFactory().get(...), pk=1)``.
restflow negotiates such a request as DRF's ``dispatch`` would, so the key
is the one a real request made; ``bypass_cache`` just calls the handler.
A call it cannot key (a function view, which has no view to negotiate with)
raises a ``TypeError`` that says what to pass, never a silent ``False``.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.test import RequestFactory
from rest_framework import viewsets
from rest_framework.decorators import api_view
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import CACHE_MISSING, CacheStatus, cache_response
from tests.response_views_async import AwaitingAPIView

RUNS = {"view": 0, "viewset": 0}


class ArticleView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request, pk):
        RUNS["view"] += 1
        return Response({"pk": pk, "run": RUNS["view"], "q": request.GET.get("q")})


class ArticleViewSet(viewsets.ViewSet):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60)
    def retrieve(self, request, pk=None):
        RUNS["viewset"] += 1
        return Response({"pk": pk, "run": RUNS["viewset"]})


@cache_response(ttl=60)
def cached_article(request, pk):
    return Response({"pk": pk})


article_function = api_view(["GET"])(cached_article)


def body(response):
    return json.loads(response.content)


def served(pk=1, query="q=x"):
    """A request through DRF's dispatch, as a client makes it."""
    return ArticleView.as_view()(APIRequestFactory().get(f"/a/{pk}?{query}"), pk=pk)


def raw(pk=1, query="q=x", prefix="a"):
    """The request a test or a command makes: Django's, not negotiated, for
    the URL the view serves (the path is part of the key)."""
    return RequestFactory().get(f"/{prefix}/{pk}?{query}")


@pytest.fixture(autouse=True)
def _runs():
    RUNS.update(view=0, viewset=0)


def test_key_methods_find_the_entry_a_served_request_made(store):
    first = served()
    assert first["X-Cache-status"] == "MISS"
    handler = ArticleView.get
    view = ArticleView()
    assert handler.get_cache_only(view, raw(), pk=1) is not CACHE_MISSING
    assert handler.get_cached_metadata(view, raw(), pk=1)["cache_status"] is CacheStatus.HIT
    assert handler.get_cache_only(view, raw(query="q=y"), pk=1) is CACHE_MISSING

    assert handler.delete_cache(ArticleView(), raw(), pk=1) is True
    assert served()["X-Cache-status"] == "MISS"
    assert RUNS["view"] == 2


def test_the_key_is_the_served_requests_key(store):
    served()
    key = ArticleView.get.get_cache_key(ArticleView(), raw(), pk=1)
    assert key.startswith("ResponseCache::tests.compat.test_response_methods.ArticleView.get::")
    assert key == ArticleView.get.get_cache_key(ArticleView(), raw(), pk=1)
    assert key != ArticleView.get.get_cache_key(ArticleView(), raw(pk=2), pk=2)
    assert ArticleView.get.delete_cache(ArticleView(), raw(), pk=1) is True
    assert ArticleView.get.delete_cache(ArticleView(), raw(), pk=1) is False


def test_refresh_outside_dispatch_rewrites_the_served_entry(store):
    served()
    refreshed = ArticleView.get.refresh(ArticleView(), raw(), pk=1)
    assert refreshed.status_code == 200
    assert body(refreshed) == {"pk": 1, "run": 2, "q": "x"}
    hit = served()
    assert hit["X-Cache-status"] == "HIT"
    assert body(hit)["run"] == 2


def test_bypass_cache_just_calls_the_handler(store):
    served()
    view, request = ArticleView(), raw()
    response = ArticleView.get.bypass_cache(view, request, pk=1)
    assert isinstance(response, Response)
    assert response.data == {"pk": 1, "run": 2, "q": "x"}
    assert served()["X-Cache-status"] == "HIT"  # nothing was written
    assert body(served())["run"] == 1


def test_a_bare_viewset(store):
    retrieve = ArticleViewSet.as_view({"get": "retrieve"})
    assert retrieve(APIRequestFactory().get("/v/3"), pk=3).status_code == 200
    handler = ArticleViewSet.retrieve
    assert (
        handler.get_cache_only(ArticleViewSet(), raw(3, "", prefix="v"), pk=3) is not CACHE_MISSING
    )
    assert handler.delete_cache(ArticleViewSet(), raw(3, "", prefix="v"), pk=3) is True
    assert RUNS["viewset"] == 1


def test_a_function_view_with_a_raw_request_says_what_to_pass(store):
    assert article_function(APIRequestFactory().get("/f/1"), pk=1).status_code == 200
    with pytest.raises(TypeError, match="DRF Request"):
        cached_article.delete_cache(raw(), pk=1)
    with pytest.raises(TypeError, match="DRF Request"):
        cached_article.get_cache_key(raw(), pk=1)


# -- async DRF views (an APIView whose dispatch awaits, as adrf's does) -------------------------


class AsyncArticleView(AwaitingAPIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    async def get(self, request, pk):
        RUNS["view"] += 1
        return Response({"pk": pk, "run": RUNS["view"]})


def served_async(pk=1):
    return async_to_sync(AsyncArticleView.as_view())(APIRequestFactory().get(f"/b/{pk}"), pk=pk)


def test_async_methods_outside_dispatch_negotiate_too(store):
    assert served_async()["X-Cache-status"] == "MISS"
    handler = AsyncArticleView.get

    async def scenario():
        found = await handler.aget_cache_only(AsyncArticleView(), raw(query="", prefix="b"), pk=1)
        bypassed = await handler.abypass_cache(AsyncArticleView(), raw(query="", prefix="b"), pk=1)
        refreshed = await handler.arefresh(AsyncArticleView(), raw(query="", prefix="b"), pk=1)
        deleted = await handler.adelete_cache(AsyncArticleView(), raw(query="", prefix="b"), pk=1)
        return found, bypassed, refreshed, deleted

    found, bypassed, refreshed, deleted = async_to_sync(scenario)()
    assert found is not CACHE_MISSING
    assert isinstance(bypassed, Response) and bypassed.data == {"pk": 1, "run": 2}
    assert body(refreshed) == {"pk": 1, "run": 3}
    assert deleted is True
    assert served_async()["X-Cache-status"] == "MISS"


def test_async_bypass_cache_outside_dispatch_just_calls_the_handler(store):
    """``abypass_cache`` is ``abypass_cache_with_metadata``'s response, as
    ``bypass_cache`` is the sync one's: outside dispatch, the handler's own
    response, neither finalized nor given cache headers. (The async twin once
    sent ``abypass_cache`` through the engine and ``_with_metadata`` not.)"""
    handler = AsyncArticleView.get

    async def scenario():
        bypassed = await handler.abypass_cache(AsyncArticleView(), raw(query="", prefix="b"), pk=1)
        both = await handler.abypass_cache_with_metadata(
            AsyncArticleView(), raw(query="", prefix="b"), pk=1
        )
        return bypassed, both

    bypassed, (with_metadata, metadata) = async_to_sync(scenario)()
    assert metadata == {"cache_status": CacheStatus.BYPASS}
    for response, run in ((bypassed, 1), (with_metadata, 2)):
        assert isinstance(response, Response) and response.data == {"pk": 1, "run": run}
        assert not response.is_rendered
        assert "X-Cache-status" not in response and "Cache-Status" not in response


def test_drf_restflows_async_example_on_adrf(store):
    """drf-restflow's cache_response docstring: an adrf APIView with an async handler."""
    adrf_views = pytest.importorskip("adrf.views")

    class UserMeAPIView(adrf_views.APIView):
        renderer_classes = (JSONRenderer,)
        runs = 0

        @cache_response(ttl=60, set_cache_headers=True)
        async def get(self, request):
            UserMeAPIView.runs += 1
            return Response({"runs": UserMeAPIView.runs})

    view = UserMeAPIView.as_view()
    first = async_to_sync(view)(APIRequestFactory().get("/me"))
    second = async_to_sync(view)(APIRequestFactory().get("/me"))
    assert (first["X-Cache-status"], second["X-Cache-status"]) == ("MISS", "HIT")
    assert body(second) == {"runs": 1}
