"""``cache_response``: whole-view caching on APIViews, ViewSets and ``@api_view``.

The views live in ``tests/response_views.py`` with their URLconf. Every view
body, serializer and renderer run is counted there, and every payload says
what it was rendered for, so each test can tell a hit from a render and see
which variant it was served.
"""

from __future__ import annotations

import json
import pickle
import threading
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.utils import timezone, translation
from rest_framework.decorators import api_view
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import (
    CACHE_MISSING,
    CachedWrapper,
    CacheStatus,
    RequestValueKeyField,
    ViewKwargsKeyField,
)
from restflow.caching.cache_response import (
    CachedResponseWrapper,
    ResponseCacheKeyConstructor,
    cache_response,
)
from restflow.caching.response_keys import ResponseVariantKeyField
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests import response_views
from tests.parking import wait_until_waiting
from tests.response_views import CALLS, ArticleView

pytestmark = pytest.mark.urls("tests.response_views")

STATUS, CACHED_AT, RESET_AT = "X-Cache-status", "X-Cached-at", "X-Cache-reset-at"


@pytest.fixture(autouse=True)
def _fresh_counts():
    CALLS.clear()
    yield
    CALLS.clear()


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def body(response) -> dict | list:
    return json.loads(response.content)


def renders() -> tuple[int, int]:
    """How many times a serializer and a renderer ran."""
    return CALLS["serializer"], CALLS["render"]


def initialized_view(view_class, url, **kwargs):
    """A view DRF has set up for a request, as ``dispatch`` does before the handler."""
    view = view_class()
    view.setup(APIRequestFactory().get(url), **kwargs)
    request = view.initialize_request(view.request, **kwargs)
    view.request = request
    view.headers = view.default_response_headers
    view.initial(request, **kwargs)
    return view, request


# --- where it works -----------------------------------------------------------


def test_apiview_hit_skips_the_view_body_serializer_and_renderer(client):
    miss = client.get("/articles/1/")
    assert miss.status_code == 200
    assert miss[STATUS] == "MISS"
    assert CALLS["ArticleView.get"] == 1
    assert renders() == (1, 1)

    hit = client.get("/articles/1/")
    assert hit[STATUS] == "HIT"
    assert isinstance(hit, HttpResponse) and not isinstance(hit, Response)
    assert (hit.status_code, hit.content, hit["Content-Type"]) == (
        miss.status_code,
        miss.content,
        miss["Content-Type"],
    )
    assert hit["Content-Type"] == "application/json"
    assert hit["Vary"] == "Accept"  # DRF's own header survives, once
    assert CALLS["ArticleView.get"] == 1
    assert renders() == (1, 1)


def test_api_view_function_with_a_policy_decorator_between(client):
    miss = client.get("/function/2/")
    hit = client.get("/function/2/")
    assert (miss[STATUS], hit[STATUS]) == ("MISS", "HIT")
    assert hit.content == miss.content and body(hit)["id"] == 2
    assert hit["Content-Type"] == "application/json"
    assert CALLS["article_function_view"] == 1
    # @renderer_classes applied beneath @api_view reached the view: its renderer ran.
    assert renders() == (1, 1)
    assert client.get("/function/3/")[STATUS] == "MISS"
    assert CALLS["article_function_view"] == 2


def test_viewset_list_retrieve_and_actions_through_a_router(client):
    for url, counter in [
        ("/set/", "ArticleViewSet.list"),
        ("/set/4/", "ArticleViewSet.retrieve"),
        ("/set/4/summary/", "ArticleViewSet.summary"),  # @action above @cache_response
        ("/set/recent/", "ArticleViewSet.recent"),  # @cache_response above @action
    ]:
        miss, hit = client.get(url), client.get(url)
        assert (miss.status_code, miss[STATUS], hit[STATUS]) == (200, "MISS", "HIT"), url
        assert hit.content == miss.content, url
        assert CALLS[counter] == 1, url
    assert renders() == (4, 4)
    assert client.get("/set/5/")[STATUS] == "MISS"


def test_head_uses_the_cache_keyed_apart_from_get(client):
    head = client.head("/articles/1/")
    assert head[STATUS] == "MISS"
    # A view may render HEAD otherwise (an empty body): a GET never gets that.
    get = client.get("/articles/1/")
    assert get[STATUS] == "MISS"
    assert body(get)["id"] == 1
    assert (client.head("/articles/1/")[STATUS], client.get("/articles/1/")[STATUS]) == (
        "HIT",
        "HIT",
    )
    assert CALLS["ArticleView.get"] == 2


# --- headers ------------------------------------------------------------------


def test_set_cache_headers_reports_miss_hit_and_stale(client):
    with frozen_clock() as clock:
        miss = client.get("/articles/1/")
        cached_at = datetime.fromisoformat(miss[CACHED_AT])
        assert datetime.fromisoformat(miss[RESET_AT]) - cached_at == timedelta(seconds=60)

        clock.advance(10)
        hit = client.get("/articles/1/")
        assert (hit[STATUS], hit[CACHED_AT], hit[RESET_AT]) == (
            "HIT",
            miss[CACHED_AT],
            miss[RESET_AT],
        )

        clock.advance(55)  # past the ttl, inside the project's 60 s stale window
        stale = client.get("/articles/1/")
        assert (stale[STATUS], stale.content) == ("STALE", miss.content)
        wait_for_refreshes()
        refreshed = client.get("/articles/1/")
        assert refreshed[STATUS] == "HIT"
        assert refreshed[CACHED_AT] != miss[CACHED_AT]
        assert body(refreshed)["run"] == 2


def test_without_set_cache_headers_no_header_is_written(client):
    client.get("/missing/2/")
    response = client.get("/missing/2/")
    assert CALLS["MissingView.get"] == 1  # a hit
    assert not {STATUS, CACHED_AT, RESET_AT} & set(response.headers)


# --- safe default: which responses are stored ---------------------------------


@pytest.mark.parametrize(("case", "status"), [("plain", 200), ("created", 201), ("public", 200)])
def test_2xx_responses_are_stored(client, case, status):
    first, second = client.get(f"/behaviour/{case}/"), client.get(f"/behaviour/{case}/")
    assert (first.status_code, first[STATUS], second[STATUS]) == (status, "MISS", "HIT")
    assert CALLS[f"behaviour.{case}"] == 1


def test_other_statuses_are_not_stored(client):
    first, second = client.get("/behaviour/missing/"), client.get("/behaviour/missing/")
    assert (first.status_code, second.status_code) == (404, 404)
    assert (first[STATUS], second[STATUS]) == ("MISS", "MISS")
    assert CACHED_AT not in second
    assert CALLS["behaviour.missing"] == 2


def test_cache_if_replaces_the_status_rule(client):
    assert client.get("/missing/1/").status_code == 404
    again = client.get("/missing/1/")
    assert (again.status_code, body(again)) == (404, {"pk": 1})
    assert CALLS["MissingView.get"] == 1


def test_cache_unless_narrows_it_and_sees_the_live_drf_response(client):
    client.get("/drafts/1/"), client.get("/drafts/1/")
    assert CALLS["DraftView.get"] == 2  # a draft: never stored
    client.get("/drafts/2/"), client.get("/drafts/2/")
    assert CALLS["DraftView.get"] == 3


@pytest.mark.parametrize("case", ["cookie", "vary-star", "private", "no-store", "stream"])
def test_responses_for_one_client_are_never_stored(client, case):
    first, second = client.get(f"/behaviour/{case}/"), client.get(f"/behaviour/{case}/")
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first[STATUS], second[STATUS]) == ("MISS", "MISS")
    assert CALLS[f"behaviour.{case}"] == 2
    if case == "cookie":
        assert second.cookies["session"].value == "for-one-client"
    if case == "stream":
        assert b"".join(second.streaming_content) == b"streamed"


class CookieView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, cache_if=lambda response, *args, **kwargs: True)
    def get(self, request):
        CALLS["CookieView.get"] += 1
        response = Response({"ok": True})
        response.set_cookie("session", "abc")
        return response


def test_cache_if_cannot_store_a_response_that_sets_cookies():
    view = CookieView.as_view()
    for _ in range(2):
        response = view(APIRequestFactory().get("/"))
        assert response.cookies["session"].value == "abc"
    assert CALLS["CookieView.get"] == 2


# --- safe default: what is part of the key ------------------------------------


def test_the_negotiated_media_type_is_part_of_the_key(client):
    as_json = client.get("/articles/1/", HTTP_ACCEPT="application/json")
    as_text = client.get("/articles/1/", HTTP_ACCEPT="text/plain")
    assert (as_json[STATUS], as_text[STATUS]) == ("MISS", "MISS")
    assert as_text.content == b"text:1"
    hit_text = client.get("/articles/1/", HTTP_ACCEPT="text/plain")
    hit_json = client.get("/articles/1/", HTTP_ACCEPT="application/json")
    assert (hit_text[STATUS], hit_json[STATUS]) == ("HIT", "HIT")
    assert hit_text["Content-Type"].startswith("text/plain")
    assert hit_text.content == b"text:1"
    assert hit_json["Content-Type"] == "application/json"
    assert body(hit_json)["id"] == 1


def test_the_active_language_is_part_of_the_key(client):
    with translation.override("fr"):
        french = client.get("/articles/1/")
    with translation.override("de"):
        german = client.get("/articles/1/")
    with translation.override("fr"):
        french_again = client.get("/articles/1/")
    assert (french[STATUS], german[STATUS], french_again[STATUS]) == ("MISS", "MISS", "HIT")
    assert (body(french)["language"], body(german)["language"]) == ("fr", "de")
    assert body(french_again)["language"] == "fr"


def test_the_active_time_zone_is_part_of_the_key(client):
    with timezone.override("Europe/Paris"):
        paris = client.get("/articles/1/")
    with timezone.override("Asia/Tokyo"):
        tokyo = client.get("/articles/1/")
    assert (paris[STATUS], tokyo[STATUS]) == ("MISS", "MISS")
    assert body(tokyo)["time_zone"] == "Asia/Tokyo"


def test_the_api_version_is_part_of_the_key(client):
    v1 = client.get("/articles/1/", HTTP_X_API_VERSION="1")
    v2 = client.get("/articles/1/", HTTP_X_API_VERSION="2")
    assert (v1[STATUS], v2[STATUS]) == ("MISS", "MISS")
    assert body(v2)["version"] == "2"
    assert client.get("/articles/1/", HTTP_X_API_VERSION="2")[STATUS] == "HIT"


def test_query_parameters_and_url_kwargs_are_part_of_the_key(client):
    assert client.get("/articles/1/?page=1")[STATUS] == "MISS"
    assert client.get("/articles/1/?page=2")[STATUS] == "MISS"
    assert client.get("/articles/2/?page=1")[STATUS] == "MISS"
    assert client.get("/articles/1/?page=1")[STATUS] == "HIT"
    assert CALLS["ArticleView.get"] == 3


def test_positional_url_arguments_are_part_of_the_key(client):
    four, five = client.get("/positional/4/"), client.get("/positional/5/")
    assert (body(four)["id"], body(five)["id"]) == (4, 5)
    assert body(client.get("/positional/4/"))["id"] == 4
    assert CALLS["PositionalArticleView.get"] == 2


def test_the_view_class_is_part_of_the_key(client):
    parent, child = client.get("/articles/1/"), client.get("/other-articles/1/")
    assert (parent[STATUS], child[STATUS]) == ("MISS", "MISS")
    assert CALLS["ArticleView.get"] == 2
    view, request = initialized_view(ArticleView, "/articles/1/", pk=1)
    other, other_request = initialized_view(response_views.OtherArticleView, "/", pk=1)
    key = view.get.get_cache_key(request, pk=1)
    other_key = other.get.get_cache_key(other_request, pk=1)
    assert key.split("::")[1] == "tests.response_views.ArticleView.get"
    assert other_key.split("::")[1] == "tests.response_views.OtherArticleView.get"


def test_authenticated_requests_are_keyed_by_user_and_anonymous_ones_share(client):
    alice, bob = User(pk=1, username="alice"), User(pk=2, username="bob")
    client.force_authenticate(alice)
    assert body(client.get("/articles/1/"))["user"] == 1
    client.force_authenticate(bob)
    as_bob = client.get("/articles/1/")
    assert (as_bob[STATUS], body(as_bob)["user"]) == ("MISS", 2)
    client.force_authenticate(alice)
    as_alice = client.get("/articles/1/")
    assert (as_alice[STATUS], body(as_alice)["user"]) == ("HIT", 1)

    anonymous = APIClient().get("/articles/1/")
    assert (anonymous[STATUS], body(anonymous)["user"]) == ("MISS", None)
    assert APIClient().get("/articles/1/")[STATUS] == "HIT"


class TokenUser:
    """An authenticated user with no primary key (a stateless token, say)."""

    is_authenticated = True
    pk = None


def test_an_authenticated_user_without_a_pk_is_served_live(client):
    client.force_authenticate(TokenUser())
    statuses = [client.get("/articles/1/")[STATUS] for _ in range(2)]
    assert statuses == ["BYPASS", "BYPASS"]
    assert CALLS["ArticleView.get"] == 2
    assert APIClient().get("/articles/1/")[STATUS] == "MISS"


def test_only_get_and_head_use_the_cache(client):
    posted = client.post("/set/4/summary/")
    assert (posted.status_code, posted[STATUS]) == (200, "BYPASS")
    assert client.get("/set/4/summary/")[STATUS] == "MISS"  # the POST stored nothing
    assert client.post("/set/4/summary/")[STATUS] == "BYPASS"  # nor reads the GET's entry
    assert CALLS["ArticleViewSet.summary"] == 3


def test_a_background_refresh_renders_in_the_language_of_the_request(client):
    with frozen_clock() as clock, translation.override("fr"), timezone.override("Asia/Tokyo"):
        assert client.get("/articles/1/")[STATUS] == "MISS"
        clock.advance(61)
        assert client.get("/articles/1/")[STATUS] == "STALE"
        wait_for_refreshes()
        refreshed = client.get("/articles/1/")
    assert refreshed[STATUS] == "HIT"
    assert body(refreshed)["run"] == 2  # rendered by the refresh on an engine thread
    assert (body(refreshed)["language"], body(refreshed)["time_zone"]) == ("fr", "Asia/Tokyo")


# --- the key constructor --------------------------------------------------------


class TenantKey(ResponseCacheKeyConstructor):
    tenant = RequestValueKeyField("META.HTTP_X_TENANT", partition=True)


class TenantView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(TenantKey, 60)
    def get(self, request, pk):
        CALLS["TenantView.get"] += 1
        return Response({"pk": pk, "language": translation.get_language()})


def tenant_get(pk, tenant="acme", language="en"):
    with translation.override(language):
        request = APIRequestFactory().get("/", HTTP_X_TENANT=tenant)
        return TenantView.as_view()(request, pk=pk)


def test_a_custom_constructor_keeps_the_safe_defaults_and_its_identity():
    tenant_get(1), tenant_get(1), tenant_get(1, tenant="other"), tenant_get(1, language="fr")
    assert CALLS["TenantView.get"] == 3
    constructor = TenantView.get.key_constructor
    assert isinstance(constructor, TenantKey)
    assert "response_variant" in constructor.get_fields()
    assert type(constructor).get_owner() == TenantKey.get_owner()  # versions and wipe reach it
    assert TenantKey.wipe() == 1
    tenant_get(1)
    assert CALLS["TenantView.get"] == 4


def test_the_default_constructor_hashes_the_query_and_partitions_by_url_kwargs():
    fields = ResponseCacheKeyConstructor().get_fields()
    assert fields["query_params"].hash_value and not fields["query_params"].partition
    assert fields["path_params"].partition
    assert ResponseCacheKeyConstructor._meta.namespace == "ResponseCache"
    view, request = initialized_view(ArticleView, "/articles/1/?secret=s3cr3t", pk=1)
    key = view.get.get_cache_key(request, pk=1)
    assert key.startswith("ResponseCache::") and "s3cr3t" not in key


# --- every wrapper method -------------------------------------------------------


def test_every_wrapper_method_is_reachable():
    view, request = initialized_view(ArticleView, "/articles/1/", pk=1)
    handler = view.get
    assert isinstance(handler, CachedResponseWrapper) and handler.__self__ is view
    assert ArticleView.get.__self__ is None and ArticleView.get.is_cached_function
    assert handler.func is ArticleView.get.__wrapped__
    assert (handler.__name__, handler.__qualname__) == ("get", "ArticleView.get")
    assert isinstance(handler.cached_render, CachedWrapper)
    assert isinstance(handler.key_constructor, ResponseCacheKeyConstructor)

    response, meta = handler.get_with_metadata(request, pk=1)
    assert meta["cache_status"] is CacheStatus.MISS and isinstance(response, Response)
    assert response[STATUS] == "MISS"
    hit = handler(request, pk=1)
    assert hit[STATUS] == "HIT" and hit.content == response.content

    assert handler.get_cached_metadata(request, pk=1)["cache_status"] is CacheStatus.HIT
    assert handler.get_cache_only(request, pk=1).content == response.content
    entry = handler.cached_render.get_cache_only(request, pk=1)
    assert pickle.loads(pickle.dumps(entry)) == entry
    assert entry[:2] == (200, response.content)
    key = handler.get_cache_key(request, pk=1)
    assert key.startswith("ResponseCache::tests.response_views.ArticleView.get::")

    refreshed, meta = handler.refresh_with_metadata(request, pk=1)
    assert meta["cache_status"] is CacheStatus.REFRESH and body(refreshed)["run"] == 2
    assert body(handler.refresh(request, pk=1))["run"] == 3
    live, meta = handler.bypass_cache_with_metadata(request, pk=1)
    assert meta == {"cache_status": CacheStatus.BYPASS} and body(live)["run"] == 4
    assert body(handler.bypass_cache(request, pk=1))["run"] == 5
    assert body(handler(request, pk=1))["run"] == 3  # bypass wrote nothing

    assert handler.delete_cache(request, pk=1) is True
    assert handler.get_cache_only(request, pk=1) is CACHE_MISSING
    assert handler.get_cached_metadata(request, pk=1) is None
    handler(request, pk=1)
    handler.delete_by_prefix(pk=1)
    assert handler.get_cache_only(request, pk=1) is CACHE_MISSING
    handler(request, pk=1)
    handler.invalidate_all()
    assert handler.get_cache_only(request, pk=1) is CACHE_MISSING


def test_delete_by_prefix_drops_every_variant_of_one_object(client):
    client.get("/articles/1/", HTTP_ACCEPT="text/plain")
    client.get("/articles/1/?page=2")
    client.get("/articles/2/")
    view, _ = initialized_view(ArticleView, "/articles/1/", pk=1)
    view.get.delete_by_prefix(pk=1)
    assert client.get("/articles/1/", HTTP_ACCEPT="text/plain")[STATUS] == "MISS"
    assert client.get("/articles/1/?page=2")[STATUS] == "MISS"
    assert client.get("/articles/2/")[STATUS] == "HIT"


def test_a_callable_ttl_is_given_the_rendered_response(client):
    with frozen_clock():
        error, ok = client.get("/ttl/1/"), client.get("/ttl/2/")
    for response, seconds in [(error, 5), (ok, 600)]:
        cached_at = datetime.fromisoformat(response[CACHED_AT])
        assert datetime.fromisoformat(response[RESET_AT]) - cached_at == timedelta(seconds=seconds)


# --- concurrency ---------------------------------------------------------------


class SlowCookieView(APIView):
    renderer_classes = (JSONRenderer,)
    entered = threading.Event()
    release = threading.Event()

    @cache_response(ttl=60)
    def get(self, request):
        CALLS["SlowCookieView.get"] += 1
        self.entered.set()
        self.release.wait(5)
        response = Response({"ok": True})
        response.set_cookie("who", request.META["HTTP_X_WHO"])
        return response


def test_a_request_that_waited_for_an_unstorable_response_renders_its_own():
    view = SlowCookieView.as_view()
    results = {}

    def fetch(who):
        results[who] = view(APIRequestFactory().get("/", HTTP_X_WHO=who))

    first = threading.Thread(target=fetch, args=("a",))
    first.start()
    assert SlowCookieView.entered.wait(5)
    second = threading.Thread(target=fetch, args=("b",))
    second.start()
    wait_until_waiting(1)  # the second request waits on the first's render
    SlowCookieView.release.set()
    first.join(5), second.join(5)
    assert results["a"].cookies["who"].value == "a"
    assert results["b"].cookies["who"].value == "b"
    assert CALLS["SlowCookieView.get"] == 2


# --- a request parameter by another name -----------------------------------------


class ShortNameView(APIView):
    """Names its request ``req``, as DRF allows."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, req, pk):
        CALLS["ShortNameView.get"] += 1
        return Response({"pk": pk, "q": req.query_params.get("q")})


@api_view(["GET"])
@cache_response(ttl=60, set_cache_headers=True)
def short_name_function(r, pk):
    CALLS["short_name_function"] += 1
    return Response({"pk": pk, "q": r.query_params.get("q")})


@pytest.mark.parametrize("kind", ["method", "function"])
def test_a_request_parameter_by_another_name_is_keyed_like_request(kind):
    # The default constructor reads the query from that parameter and never
    # keys the request itself as a URL kwarg (which failed on every call).
    factory = APIRequestFactory()
    if kind == "method":
        view, counter = ShortNameView.as_view(), "ShortNameView.get"
    else:
        view, counter = short_name_function, "short_name_function"

    def ask(query, pk=1):
        response = view(factory.get("/", {"q": query}), pk=pk)
        return response[STATUS], json.loads(response.content)

    assert ask("a") == ("MISS", {"pk": 1, "q": "a"})
    assert ask("a") == ("HIT", {"pk": 1, "q": "a"})
    assert ask("b") == ("MISS", {"pk": 1, "q": "b"})
    assert ask("a", pk=2) == ("MISS", {"pk": 2, "q": "a"})
    assert CALLS[counter] == 3


def test_url_kwargs_of_a_request_parameter_by_another_name_are_the_partition():
    factory = APIRequestFactory()
    view = ShortNameView.as_view()
    for pk in (1, 1, 2):
        view(factory.get("/"), pk=pk)
    ShortNameView.get.delete_by_prefix(pk=1)
    assert [view(factory.get("/"), pk=pk)[STATUS] for pk in (1, 2)] == ["MISS", "HIT"]


class KeyedByKwargs(ResponseCacheKeyConstructor):
    path_params = ViewKwargsKeyField("*", partition=True)


class KeyedByKwargsOfReq(ResponseCacheKeyConstructor):
    path_params = ViewKwargsKeyField("*", request_arg="req", partition=True)


def test_a_constructor_that_would_key_the_request_as_a_url_kwarg_is_refused():
    def handler(self, req, pk):
        return Response({})

    with pytest.raises(
        TypeError,
        match=r"KeyedByKwargs.path_params is a ViewKwargsKeyField that would key .*handler\(\)'s "
        r"request parameter 'req' as a URL kwarg: give it request_arg='req'",
    ):
        cache_response(KeyedByKwargs)(handler)
    assert isinstance(cache_response(KeyedByKwargsOfReq)(handler), CachedResponseWrapper)


# --- mistakes fail at decoration ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: cache_response(cache_if=bool, cache_unless=bool), ValueError, "not both"),
        (lambda: cache_response(ttl=-1), ValueError, "ttl"),
        (lambda: cache_response(cache_if=1), TypeError, "cache_if"),
        (lambda: cache_response(lambda request: None), TypeError, "parentheses"),
        (
            lambda: cache_response()(api_view(["GET"])(lambda request: Response({}))),
            TypeError,
            "beneath @api_view",
        ),
        (lambda: cache_response()(lambda: None), TypeError, "request first"),
        (lambda: cache_response()(classmethod(lambda cls, request: None)), TypeError, "beneath"),
        (lambda: cache_response()(ArticleView), TypeError, "view class"),
        (lambda: cache_response({"x": ViewKwargsKeyField()}, ttl="soon"), TypeError, "ttl"),
    ],
)
def test_mistakes_fail_at_decoration(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_constructor_cannot_declare_the_variant_field():
    with pytest.raises(TypeError, match="response_variant"):
        cache_response({"response_variant": ResponseVariantKeyField()})(
            lambda request: Response({})
        )
