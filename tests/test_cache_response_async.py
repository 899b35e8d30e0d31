"""``cache_response`` on ``async def`` views, through ``django.test.AsyncClient``.

DRF 3.x's ``APIView.dispatch`` calls handlers without awaiting them, so the
async views are Django's (``tests/response_views_async.py``): ``async def``
function views, ``django.views.View`` with ``async def get``, and an APIView
whose dispatch awaits (a stand-in for adrf's). Each test runs its requests in
one event loop (``async_to_sync``): pytest-asyncio is not installed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import AsyncClient, AsyncRequestFactory, override_settings
from django.utils import timezone, translation
from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import CACHE_MISSING, CacheStatus, InvalidationRule
from restflow.caching.asynchronous import AsyncCachedWrapper, wait_for_async_refreshes
from restflow.caching.cache_response import (
    AsyncCachedResponseWrapper,
    CachedResponseWrapper,
    cache_response,
)
from restflow.caching.testing import frozen_clock
from tests import response_views_async as views
from tests.parking import until_following
from tests.response_views_async import CALLS
from tests.stores import on

pytestmark = pytest.mark.urls("tests.response_views_async")

STATUS, CACHED_AT, RESET_AT = "X-Cache-status", "X-Cached-at", "X-Cache-reset-at"


@pytest.fixture(autouse=True)
def _fresh_counts():
    CALLS.clear()
    yield
    CALLS.clear()


def run(scenario, *args):
    """Runs ``scenario(*args)`` in one event loop, as a sync test can."""
    return async_to_sync(scenario)(*args)


def body(response) -> dict:
    return json.loads(response.content)


async def get_all(client, *urls, **extra) -> list:
    return [await client.get(url, **extra) for url in urls]


# --- where it works -------------------------------------------------------------


def test_function_view_miss_then_hit_skips_the_view_body():
    async def scenario():
        client = AsyncClient()
        return await get_all(client, "/articles/1/", "/articles/1/")

    miss, hit = run(scenario)
    assert (miss.status_code, miss[STATUS], hit[STATUS]) == (200, "MISS", "HIT")
    assert isinstance(hit, HttpResponse)
    assert (hit.status_code, hit.content, hit["Content-Type"]) == (
        miss.status_code,
        miss.content,
        miss["Content-Type"],
    )
    assert hit["Content-Type"] == "application/json"
    assert body(hit)["run"] == 1
    assert CALLS["article_view"] == 1


def test_class_based_view_miss_then_hit_and_head():
    assert views.ArticleView.view_is_async  # Django still sees an async view

    async def scenario():
        client = AsyncClient()
        miss, hit = await get_all(client, "/class-articles/1/", "/class-articles/1/")
        head = await client.head("/class-articles/2/")
        after_head = await client.get("/class-articles/2/")
        head_again = await client.head("/class-articles/2/")
        return miss, hit, head, after_head, head_again

    miss, hit, head, after_head, head_again = run(scenario)
    assert (miss[STATUS], hit[STATUS]) == ("MISS", "HIT")
    assert hit.content == miss.content and body(hit)["id"] == 1
    # HEAD uses the cache too, keyed apart from GET: a GET never gets a HEAD render.
    assert (head.status_code, head[STATUS], after_head[STATUS]) == (200, "MISS", "MISS")
    assert body(after_head)["id"] == 2
    assert head_again[STATUS] == "HIT"
    assert CALLS["ArticleView.get"] == 3


def test_an_apiview_whose_dispatch_awaits_handlers_keys_the_negotiated_media_type():
    async def scenario():
        client = AsyncClient()
        as_json = await client.get("/drf-articles/1/", headers={"accept": "application/json"})
        as_text = await client.get("/drf-articles/1/", headers={"accept": "text/plain"})
        hit_json = await client.get("/drf-articles/1/", headers={"accept": "application/json"})
        hit_text = await client.get("/drf-articles/1/", headers={"accept": "text/plain"})
        return as_json, as_text, hit_json, hit_text

    as_json, as_text, hit_json, hit_text = run(scenario)
    assert [r[STATUS] for r in (as_json, as_text, hit_json, hit_text)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
    ]
    assert body(hit_json) == {"id": 1, "media_type": "application/json"}
    assert hit_json["Content-Type"] == "application/json"
    assert hit_text.content == b"text:1" and hit_text["Content-Type"].startswith("text/plain")
    assert hit_json["Vary"] == "Accept"  # DRF's finalize_response ran on the miss
    assert CALLS["DrfArticleView.get"] == 2 and CALLS["render"] == 2


# --- headers --------------------------------------------------------------------


def test_set_cache_headers_reports_miss_hit_and_stale_and_the_refresh_keeps_the_locale():
    async def scenario(clock):
        client = AsyncClient()
        with translation.override("fr"), timezone.override("Asia/Tokyo"):
            miss = await client.get("/articles/1/")
            clock.advance(10)
            hit = await client.get("/articles/1/")
            clock.advance(55)  # past the ttl, inside the project's 60 s stale window
            stale = await client.get("/articles/1/")
            await wait_for_async_refreshes()
            refreshed = await client.get("/articles/1/")
        return miss, hit, stale, refreshed

    with frozen_clock() as clock:
        miss, hit, stale, refreshed = run(scenario, clock)
    cached_at = datetime.fromisoformat(miss[CACHED_AT])
    assert datetime.fromisoformat(miss[RESET_AT]) - cached_at == timedelta(seconds=60)
    assert (hit[STATUS], hit[CACHED_AT], hit[RESET_AT]) == ("HIT", miss[CACHED_AT], miss[RESET_AT])
    assert (stale[STATUS], stale.content) == ("STALE", miss.content)
    assert refreshed[STATUS] == "HIT" and refreshed[CACHED_AT] != miss[CACHED_AT]
    assert body(refreshed)["run"] == 2  # rendered by the background refresh task
    assert (body(refreshed)["language"], body(refreshed)["time_zone"]) == ("fr", "Asia/Tokyo")


def test_without_set_cache_headers_no_header_is_written():
    async def scenario():
        return await get_all(AsyncClient(), "/missing/2/", "/missing/2/")

    _, response = run(scenario)
    assert CALLS["missing_view"] == 1  # a hit
    assert not {STATUS, CACHED_AT, RESET_AT} & set(response.headers)


# --- safe default: only GET and HEAD --------------------------------------------


def test_only_get_and_head_use_the_cache():
    async def scenario():
        client = AsyncClient()
        posted = await client.post("/any-method/")
        got = await client.get("/any-method/")
        posted_again = await client.post("/any-method/")
        deleted = await client.delete("/any-method/")
        return posted, got, posted_again, deleted

    posted, got, posted_again, deleted = run(scenario)
    assert (posted.status_code, posted[STATUS]) == (200, "BYPASS")
    assert got[STATUS] == "MISS"  # the POST stored nothing
    assert (body(posted_again), posted_again[STATUS]) == ({"method": "POST"}, "BYPASS")
    assert deleted[STATUS] == "BYPASS"
    assert (CALLS["any_method_view.POST"], CALLS["any_method_view.GET"]) == (2, 1)


# --- safe default: which responses are stored ------------------------------------


def behaviour(case: str) -> tuple:
    async def scenario():
        return await get_all(AsyncClient(), f"/behaviour/{case}/", f"/behaviour/{case}/")

    return run(scenario)


@pytest.mark.parametrize(("case", "status"), [("plain", 200), ("created", 201), ("public", 200)])
def test_2xx_responses_are_stored(case, status):
    first, second = behaviour(case)
    assert (first.status_code, first[STATUS], second[STATUS]) == (status, "MISS", "HIT")
    assert CALLS[f"behaviour.{case}"] == 1


def test_other_statuses_are_not_stored():
    first, second = behaviour("missing")
    assert (first.status_code, second.status_code) == (404, 404)
    assert (first[STATUS], second[STATUS]) == ("MISS", "MISS")
    assert CALLS["behaviour.missing"] == 2


def test_a_template_response_is_rendered_once_and_served_rendered():
    first, second = behaviour("template")
    assert (first[STATUS], second[STATUS]) == ("MISS", "HIT")
    assert first.content == second.content == b"<p>template 1</p>"
    assert CALLS["template"] == 1


@pytest.mark.parametrize("case", ["cookie", "vary-star", "private", "no-store", "stream"])
def test_responses_for_one_client_are_never_stored(case):
    async def scenario():
        client = AsyncClient()
        responses, streamed = [], []
        for _ in range(2):
            response = await client.get(f"/behaviour/{case}/")
            if response.streaming:
                streamed.append(b"".join([chunk async for chunk in response.streaming_content]))
            responses.append(response)
        return responses, streamed

    (first, second), streamed = run(scenario)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first[STATUS], second[STATUS]) == ("MISS", "MISS")
    assert CALLS[f"behaviour.{case}"] == 2
    if case == "cookie":
        assert second.cookies["session"].value == "for-one-client"
    if case == "stream":
        assert streamed == [b"streamed", b"streamed"]


def test_an_async_cache_if_replaces_the_status_rule():
    async def scenario():
        return await get_all(AsyncClient(), "/missing/1/", "/missing/1/")

    first, again = run(scenario)
    assert (first.status_code, again.status_code, body(again)) == (404, 404, {"pk": 1})
    assert CALLS["missing_view"] == 1


def test_an_async_cache_unless_narrows_it():
    async def scenario():
        return await get_all(AsyncClient(), *["/drafts/1/"] * 2, *["/drafts/2/"] * 2)

    run(scenario)
    assert CALLS["draft_view"] == 3  # the draft twice, the other once


def test_an_async_ttl_is_given_the_rendered_response():
    async def scenario():
        return await get_all(AsyncClient(), "/ttl/1/", "/ttl/2/")

    with frozen_clock():
        error, ok = run(scenario)
    for response, seconds in [(error, 5), (ok, 600)]:
        cached_at = datetime.fromisoformat(response[CACHED_AT])
        assert datetime.fromisoformat(response[RESET_AT]) - cached_at == timedelta(seconds=seconds)


# --- safe default: what is part of the key ---------------------------------------


def test_the_accept_header_is_part_of_the_key_of_a_django_view():
    async def scenario():
        client = AsyncClient()
        return [
            await client.get("/negotiated/1/", headers={"accept": accept})
            for accept in ("application/json", "text/plain", "text/plain", "application/json")
        ]

    as_json, as_text, hit_text, hit_json = run(scenario)
    assert [r[STATUS] for r in (as_json, as_text, hit_text, hit_json)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
    ]
    assert (hit_text.content, hit_text["Content-Type"]) == (b"text:1", "text/plain")
    assert (body(hit_json), hit_json["Content-Type"]) == ({"id": 1}, "application/json")
    assert CALLS["negotiated_view"] == 2


def test_the_active_language_and_time_zone_are_part_of_the_key():
    async def scenario():
        client = AsyncClient()
        responses = []
        for language, zone in [("fr", "UTC"), ("de", "UTC"), ("fr", "Asia/Tokyo"), ("fr", "UTC")]:
            with translation.override(language), timezone.override(zone):
                responses.append(await client.get("/articles/1/"))
        return responses

    french, german, tokyo, french_again = run(scenario)
    assert [r[STATUS] for r in (french, german, tokyo, french_again)] == [
        "MISS",
        "MISS",
        "MISS",
        "HIT",
    ]
    assert (body(german)["language"], body(tokyo)["time_zone"]) == ("de", "Asia/Tokyo")
    assert body(french_again)["language"] == "fr"


def test_query_parameters_and_url_kwargs_are_part_of_the_key():
    async def scenario():
        urls = ["/articles/1/?page=1", "/articles/1/?page=2", "/articles/2/?page=1"]
        return await get_all(AsyncClient(), *urls, "/articles/1/?page=1")

    statuses = [r[STATUS] for r in run(scenario)]
    assert statuses == ["MISS", "MISS", "MISS", "HIT"]
    assert CALLS["article_view"] == 3


def test_the_view_class_is_part_of_the_key():
    async def scenario():
        return await get_all(AsyncClient(), "/class-articles/1/", "/other-class-articles/1/")

    parent, child = run(scenario)
    assert (parent[STATUS], child[STATUS]) == ("MISS", "MISS")
    assert (CALLS["ArticleView.get"], CALLS["OtherArticleView.get"]) == (1, 1)
    request = AsyncRequestFactory().get("/")
    keys = []
    for view_class in (views.ArticleView, views.OtherArticleView):
        view = view_class()
        view.setup(request, pk=1)
        keys.append(view.get.get_cache_key(request, pk=1))
        assert run(view.get.aget_cache_key, request, 1) == keys[-1]
    assert [key.split("::")[1] for key in keys] == [
        "tests.response_views_async.ArticleView.get",
        "tests.response_views_async.OtherArticleView.get",
    ]


AUTH_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.mark.django_db
@override_settings(
    MIDDLEWARE=AUTH_MIDDLEWARE,
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
)
def test_authenticated_requests_are_keyed_by_user_and_anonymous_ones_share():
    alice = User.objects.create(username="alice")
    bob = User.objects.create(username="bob")

    async def as_user(user):
        client = AsyncClient()
        if user is not None:
            await sync_to_async(client.force_login)(user)  # aforce_login: Django 5.0+
        return await client.get("/articles/1/")

    async def scenario():
        # request.user is lazy and would query the database on the event
        # loop (SynchronousOnlyOperation): the wrapper awaits request.auser().
        return [await as_user(user) for user in (alice, bob, alice, None, None)]

    as_alice, as_bob, alice_again, anonymous, anonymous_again = run(scenario)
    assert [r[STATUS] for r in (as_alice, as_bob, alice_again, anonymous, anonymous_again)] == [
        "MISS",
        "MISS",
        "HIT",
        "MISS",
        "HIT",
    ]
    assert [body(r)["user"] for r in (as_bob, alice_again, anonymous)] == [bob.pk, alice.pk, None]


@override_settings(MIDDLEWARE=["tests.response_views_async.TokenUserMiddleware"])
def test_an_authenticated_user_without_a_pk_is_served_live():
    async def scenario():
        return await get_all(AsyncClient(), "/articles/1/", "/articles/1/")

    statuses = [r[STATUS] for r in run(scenario)]
    assert statuses == ["BYPASS", "BYPASS"]
    assert CALLS["article_view"] == 2


# --- concurrency -----------------------------------------------------------------


def test_concurrent_requests_for_one_key_run_the_view_once():
    async def scenario():
        client = AsyncClient()
        views.gate.close()
        try:
            requests = [asyncio.create_task(client.get("/slow/")) for _ in range(3)]
            await until_following(2)
        finally:
            views.gate.open()
        return await asyncio.gather(*requests)

    responses = run(scenario)
    assert CALLS["slow_view"] == 1
    assert {body(r)["run"] for r in responses} == {1}
    assert sorted(r[STATUS] for r in responses) == ["MISS", "MISS", "MISS"]


def test_a_request_that_waited_for_an_unstorable_response_renders_its_own():
    async def scenario():
        client = AsyncClient()
        views.gate.close()
        try:
            requests = [
                asyncio.create_task(client.get("/slow-cookie/", headers={"x-who": who}))
                for who in "ab"
            ]
            await until_following(1)  # "b" waits on "a"'s render, then renders its own
        finally:
            views.gate.open()
        return await asyncio.gather(*requests)

    first, second = run(scenario)
    assert (first.cookies["who"].value, second.cookies["who"].value) == ("a", "b")
    assert CALLS["slow_cookie_view"] == 2


# --- a shared store ------------------------------------------------------------------


@pytest.mark.parametrize("store", on("django", "redis"), indirect=True)
def test_a_shared_store_serves_hits_and_returns_the_live_response_of_a_miss(store):
    async def scenario():
        client = AsyncClient()
        with translation.override("fr"):
            miss, hit = await get_all(client, "/articles/1/", "/articles/1/")
            # A key-only call computes the key on a worker thread, in French still.
            request = AsyncRequestFactory().get("/articles/1/")
            assert (await views.article_view.aget_cache_only(request, pk=1)).content == hit.content
        cookies = await get_all(client, "/behaviour/cookie/", "/behaviour/cookie/")
        return miss, hit, *cookies

    miss, hit, *cookies = run(scenario)
    assert (miss[STATUS], hit[STATUS], hit.content) == ("MISS", "HIT", miss.content)
    assert body(hit)["language"] == "fr"  # rendered on the loop in the request's language
    assert CALLS["article_view"] == 1
    # The render runs as a task started from a worker thread; its live response
    # (cookie and all) still reaches the request: the view ran once per request.
    assert [r.cookies["session"].value for r in cookies] == ["for-one-client"] * 2
    assert CALLS["behaviour.cookie"] == 2


# --- the wrapper ---------------------------------------------------------------------


def test_every_async_wrapper_method_is_reachable():
    handler = views.article_view
    assert isinstance(handler, AsyncCachedResponseWrapper)
    assert isinstance(handler, CachedResponseWrapper) and handler.is_cached_function
    assert iscoroutinefunction(handler)  # Django awaits it
    assert isinstance(handler.cached_render, AsyncCachedWrapper)
    request = AsyncRequestFactory().get("/articles/1/")

    async def scenario():
        response, meta = await handler.aget_with_metadata(request, pk=1)
        assert meta["cache_status"] is CacheStatus.MISS and response[STATUS] == "MISS"
        hit = await handler(request, pk=1)
        assert hit[STATUS] == "HIT" and hit.content == response.content

        assert (await handler.aget_cached_metadata(request, pk=1))["cache_status"] is (
            CacheStatus.HIT
        )
        assert (await handler.aget_cache_only(request, pk=1)).content == response.content
        entry = await handler.cached_render.aget_cache_only(request, pk=1)
        assert entry[:2] == (200, response.content)
        key = await handler.aget_cache_key(request, pk=1)
        assert key == handler.get_cache_key(request, pk=1)
        assert key.startswith("ResponseCache::tests.response_views_async.article_view::")

        refreshed, meta = await handler.arefresh_with_metadata(request, pk=1)
        assert meta["cache_status"] is CacheStatus.REFRESH and body(refreshed)["run"] == 2
        assert body(await handler.arefresh(request, pk=1))["run"] == 3
        live, meta = await handler.abypass_cache_with_metadata(request, pk=1)
        assert meta == {"cache_status": CacheStatus.BYPASS} and body(live)["run"] == 4
        assert body(await handler.abypass_cache(request, pk=1))["run"] == 5
        assert body(await handler(request, pk=1))["run"] == 3  # bypass wrote nothing

        assert await handler.adelete_cache(request, pk=1) is True
        assert await handler.aget_cache_only(request, pk=1) is CACHE_MISSING
        assert await handler.aget_cached_metadata(request, pk=1) is None
        await handler(request, pk=1)
        await handler.adelete_by_prefix(pk=1)
        assert await handler.aget_cache_only(request, pk=1) is CACHE_MISSING
        await handler(request, pk=1)
        await handler.ainvalidate_all()
        assert await handler.aget_cache_only(request, pk=1) is CACHE_MISSING

    run(scenario)


def test_a_bound_handler_has_the_async_methods():
    request = AsyncRequestFactory().get("/")
    view = views.ArticleView()
    view.setup(request, pk=3)
    handler = view.get
    assert handler.__self__ is view and iscoroutinefunction(handler)

    async def scenario():
        miss = await handler(request, pk=3)
        hit, meta = await handler.aget_with_metadata(request, pk=3)
        assert (miss[STATUS], meta["cache_status"]) == ("MISS", CacheStatus.HIT)
        assert hit.content == miss.content
        assert (await handler.aget_cache_only(request, pk=3)).content == miss.content
        await handler.adelete_by_prefix(pk=3)
        assert await handler.aget_cache_only(request, pk=3) is CACHE_MISSING

    run(scenario)


@pytest.mark.parametrize(
    ("name", "async_name"),
    [
        ("get_with_metadata", "aget_with_metadata"),
        ("refresh", "arefresh"),
        ("refresh_with_metadata", "arefresh_with_metadata"),
        ("bypass_cache", "abypass_cache"),
        ("bypass_cache_with_metadata", "abypass_cache_with_metadata"),
        ("get_cache_only", "aget_cache_only"),
        ("get_cached_metadata", "aget_cached_metadata"),
        ("delete_cache", "adelete_cache"),
        ("delete_by_prefix", "adelete_by_prefix"),
        ("invalidate_all", "ainvalidate_all"),
    ],
)
def test_sync_names_raise_a_type_error_naming_the_async_one(name, async_name):
    request = AsyncRequestFactory().get("/")
    with pytest.raises(TypeError, match=rf"article_view is an async view: use .*{async_name}\(\)"):
        getattr(views.article_view, name)(request, pk=1)
    view = views.ArticleView()
    view.setup(request, pk=1)
    with pytest.raises(TypeError, match=async_name):
        getattr(view.get, name)(request, pk=1)


# --- what does not work, said clearly --------------------------------------------------


class StockAPIView(APIView):
    @cache_response(ttl=60)
    async def get(self, request):
        return Response({})


@api_view(["GET"])
@cache_response(ttl=60)
async def stock_function_view(request):
    return Response({})


@pytest.mark.parametrize("view", [StockAPIView.as_view(), stock_function_view])
def test_drfs_own_dispatch_cannot_run_an_async_handler_and_says_so(view):
    # Django sees an async APIView (its handler is a coroutine function) and
    # awaits it; an @api_view function stays sync. DRF's dispatch runs either way.
    call = async_to_sync(view) if iscoroutinefunction(view) else view
    with pytest.raises(TypeError, match=r"APIView.dispatch .* without awaiting them"):
        call(APIRequestFactory().get("/"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: cache_response(cache_if=views.below_500)(lambda request: None), "cache_if"),
        (lambda: cache_response(cache_unless=views.is_draft)(lambda request: None), "cache_unless"),
        (lambda: cache_response(ttl=views.short_for_errors)(lambda request: None), "ttl"),
    ],
)
def test_async_policies_are_refused_on_sync_views(make, message):
    with pytest.raises(TypeError, match=rf"{message} is an async def; on a sync view"):
        make()


# --- invalidation rules ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_invalidation_rules_reach_an_async_view():
    from tests.testapp.models import Article

    @cache_response(ttl=60, invalidates_on=[InvalidationRule(Article, field_mapping={"pk": "pk"})])
    async def article(request, pk):
        CALLS["article"] += 1
        return HttpResponse(f"{pk}")

    row = Article.objects.create(title="a")
    request = AsyncRequestFactory().get("/")
    run(article, request, row.pk), run(article, request, row.pk)
    assert CALLS["article"] == 1
    row.save()
    run(article, request, row.pk)
    assert CALLS["article"] == 2
