"""``cache_response`` never serves one client's response to another (issue 10, item 15).

Each test sends two requests that differ only in what a URL-keyed cache
would miss (the session, a header the view varies on, the host or scheme,
a CSRF token on the page, the order of repeated query parameters, the
method) and checks that the second client gets what was rendered for it.
The requests go through DRF's ``APIRequestFactory`` and the view's
``as_view()``, with Django's ``SessionMiddleware`` where the session is the
point. Every test runs on every store (tests/stores.py): memory, a Django
cache and the Redis servers, where entries go through the serializer and the
vary record survives a round trip.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from adrf.views import APIView as AsyncAPIView
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.test import AsyncRequestFactory, override_settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow import _engine
from restflow.caching import CACHE_MISSING, KeyConstructor, RequestValueKeyField
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.cache_response import ResponseCacheKeyConstructor, cache_response
from restflow.caching.testing import frozen_clock, seeded_early_refresh, wait_for_refreshes

STATUS = "X-Cache-status"
RUNS: Counter = Counter()

SESSIONS = {"SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies"}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]


@pytest.fixture(autouse=True)
def _fresh_runs():
    RUNS.clear()
    yield
    RUNS.clear()


def body(response) -> dict:
    return json.loads(response.content)


def served(view, request, *, session: bool = False):
    """The response ``view`` gives ``request`` (through ``SessionMiddleware`` when asked)."""
    handler = view.as_view()
    if session:
        return SessionMiddleware(handler)(request)
    return handler(request)


def session_cookie(**data) -> str:
    """A signed-cookie session holding ``data``: what a returning visitor sends."""
    session = SessionStore()
    session.update(data)
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


class TwoPerPage(PageNumberPagination):
    page_size = 2


# --- the session -----------------------------------------------------------------


class CartView(APIView):
    """An anonymous page that shows the visitor's cart, kept in the session."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["cart"] += 1
        return Response({"cart": request.session.get("cart")})


class SessionPeek(BaseAuthentication):
    """Reads the session before the view runs, as ``SessionAuthentication`` does."""

    def authenticate(self, request):
        request._request.session.get("_auth_user_id")
        return None


class NewsView(APIView):
    """The same for every visitor; only authentication looked at the session."""

    renderer_classes = (JSONRenderer,)
    authentication_classes = (SessionPeek,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["news"] += 1
        return Response({"news": "same for all"})


@override_settings(**SESSIONS)
def test_a_response_that_read_the_session_is_never_shared(store):
    factory = APIRequestFactory()
    alice = served(
        CartView, factory.get("/", HTTP_COOKIE=session_cookie(cart="alice's")), session=True
    )
    bob = served(CartView, factory.get("/", HTTP_COOKIE=session_cookie(cart="bob's")), session=True)
    assert (body(alice), body(bob)) == ({"cart": "alice's"}, {"cart": "bob's"})
    assert (alice[STATUS], bob[STATUS]) == ("MISS", "MISS")
    assert RUNS["cart"] == 2
    # The middleware still sees the session was read, and says so downstream.
    assert "Cookie" in bob["Vary"]


@override_settings(**SESSIONS)
def test_a_session_read_before_the_view_does_not_stop_caching(store):
    factory = APIRequestFactory()
    first = served(NewsView, factory.get("/", HTTP_COOKIE=session_cookie(cart="a")), session=True)
    second = served(NewsView, factory.get("/", HTTP_COOKIE=session_cookie(cart="b")), session=True)
    assert (first[STATUS], second[STATUS]) == ("MISS", "HIT")
    assert RUNS["news"] == 1
    assert "Cookie" in first["Vary"]


def test_a_session_that_cannot_be_watched_is_taken_as_read(store):
    factory = APIRequestFactory()
    responses = []
    for _ in range(2):
        request = factory.get("/")
        request.session = {"cart": "someone's"}  # not a Django session: reads go unseen
        responses.append(served(NewsView, request))
    assert [r[STATUS] for r in responses] == ["MISS", "MISS"]
    assert RUNS["news"] == 2


# --- cookies read by the view --------------------------------------------------------


class ThemeView(APIView):
    """Shows the visitor's theme, kept in a cookie of its own (no session)."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["theme"] += 1
        return Response({"theme": request.COOKIES.get("theme", "light")})


class CookiePeek(BaseAuthentication):
    """Reads a cookie before the view runs, as a CSRF check or an auth class does."""

    def authenticate(self, request):
        request._request.COOKIES.get("theme")
        return None


class PlainNewsView(APIView):
    renderer_classes = (JSONRenderer,)
    authentication_classes = (CookiePeek,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["plain-news"] += 1
        return Response({"news": "same for all"})


def test_a_response_that_read_the_cookies_is_never_shared(store):
    factory = APIRequestFactory()
    dark = served(ThemeView, factory.get("/", HTTP_COOKIE="theme=dark"))
    light = served(ThemeView, factory.get("/", HTTP_COOKIE="theme=light"))
    assert (body(dark), body(light)) == ({"theme": "dark"}, {"theme": "light"})
    assert (dark[STATUS], light[STATUS]) == ("MISS", "MISS")
    assert RUNS["theme"] == 2


def test_cookies_read_before_the_view_do_not_stop_caching(store):
    factory = APIRequestFactory()
    first = served(PlainNewsView, factory.get("/", HTTP_COOKIE="theme=dark"))
    second = served(PlainNewsView, factory.get("/", HTTP_COOKIE="theme=light"))
    assert (first[STATUS], second[STATUS]) == ("MISS", "HIT")
    assert RUNS["plain-news"] == 1


# A request whose render would read its session (here: one sending X-Cart)
# finds a stale entry rendered without it: it is served the stale entry, and
# the background refresh it claimed renders with its request, privately. That
# render is not the entry's next value: the entry stays (not dropped), for a
# request it answers to refresh, and nothing is logged or counted as an error.
CART_RUNS: list[str | None] = []


def cart_if_asked(request) -> Response:
    cart = request.session.get("cart") if "X-Cart" in request.headers else None
    CART_RUNS.append(cart)
    return Response({"cart": cart, "n": len(CART_RUNS)})


class StaleCartView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, set_cache_headers=True)
    def get(self, request):
        return cart_if_asked(request)


class AsyncStaleCartView(AsyncAPIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, set_cache_headers=True)
    async def get(self, request):
        return cart_if_asked(request)


def stale_private_scenario(ask, peek, settle):
    """A plain visitor's entry; 70 s later (stale) a visitor whose render
    reads their cart, then the plain visitor twice."""
    CART_RUNS.clear()
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)) as clock:
        responses = [ask(cart=False)]
        clock.advance(70)
        responses.append(ask(cart=True))
        settle()
        after_cart = (list(CART_RUNS), peek())
        responses.append(ask(cart=False))  # STALE: its own refresh
        settle()
        responses.append(ask(cart=False))
    return responses, after_cart


def check_stale_private(responses, after_cart, wrapper, caplog):
    # The cart visitor's refresh ran (privately) and the entry stayed.
    assert after_cart == ([None, "alice's"], {"cart": None, "n": 1})
    assert [(r[STATUS], r["Cache-Status"], body(r)) for r in responses] == [
        ("MISS", "restflow; fwd=miss; stored", {"cart": None, "n": 1}),
        ("STALE", "restflow; fwd=stale; ttl=-10", {"cart": None, "n": 1}),
        ("STALE", "restflow; fwd=stale; ttl=-10", {"cart": None, "n": 1}),
        ("HIT", "restflow; hit; ttl=60", {"cart": None, "n": 3}),
    ]
    assert CART_RUNS == [None, "alice's", None]
    assert wrapper.cached_render.counters()["errors"] == 0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("restflow")] == []


@override_settings(**SESSIONS)
def test_a_stale_entrys_refresh_private_to_its_requester_keeps_the_entry(store, caplog):
    factory = APIRequestFactory()
    view = StaleCartView.as_view()

    def ask(cart):
        if cart:
            request = factory.get("/", HTTP_COOKIE=session_cookie(cart="alice's"), HTTP_X_CART="1")
        else:
            request = factory.get("/")
        return SessionMiddleware(view)(request)

    def peek():
        found = StaleCartView.get.get_cache_only(StaleCartView(), factory.get("/"))
        return None if found is CACHE_MISSING else body(found)

    scenario = stale_private_scenario(ask, peek, wait_for_refreshes)
    check_stale_private(*scenario, StaleCartView.get, caplog)


@override_settings(**SESSIONS)
def test_an_async_stale_entrys_private_refresh_keeps_the_entry_too(store, caplog):
    view = SessionMiddleware(AsyncStaleCartView.as_view())

    async def aask(cart):
        factory = AsyncRequestFactory()
        if cart:
            factory.cookies.load(session_cookie(cart="alice's"))
        request = factory.get("/", headers={"X-Cart": "1"} if cart else {})
        response = await view(request)
        await wait_for_async_refreshes()
        return response

    async def apeek():
        request = AsyncRequestFactory().get("/")
        found = await AsyncStaleCartView.get.aget_cache_only(AsyncStaleCartView(), request)
        return None if found is CACHE_MISSING else body(found)

    scenario = stale_private_scenario(
        lambda cart: async_to_sync(aask)(cart),
        lambda: async_to_sync(apeek)(),
        wait_for_refreshes,
    )
    check_stale_private(*scenario, AsyncStaleCartView.get, caplog)


# --- the view's own Vary ------------------------------------------------------------


class TenantView(APIView):
    """Says itself that its body depends on the X-Tenant header."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["tenant"] += 1
        response = Response({"tenant": request.headers.get("X-Tenant")})
        response["Vary"] = "X-Tenant"
        return response


class TenantKey(ResponseCacheKeyConstructor):
    tenant = RequestValueKeyField("META.HTTP_X_TENANT")


class KeyedTenantView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(TenantKey, ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["keyed-tenant"] += 1
        response = Response({"tenant": request.headers.get("X-Tenant")})
        response["Vary"] = "X-Tenant"
        return response


def test_a_response_is_served_only_to_requests_its_vary_headers_match(store):
    factory = APIRequestFactory()

    def ask(tenant):
        return served(TenantView, factory.get("/", HTTP_X_TENANT=tenant))

    acme, globex = ask("acme"), ask("globex")
    assert (body(acme), body(globex)) == ({"tenant": "acme"}, {"tenant": "globex"})
    acme_again, globex_again = ask("acme"), ask("globex")
    assert (body(acme_again), body(globex_again)) == ({"tenant": "acme"}, {"tenant": "globex"})
    # The entry is acme's (the first stored); globex is rendered live each time.
    assert [r[STATUS] for r in (acme, globex, acme_again, globex_again)] == [
        "MISS",
        "MISS",
        "HIT",
        "MISS",
    ]
    assert RUNS["tenant"] == 3


def test_a_key_that_reads_the_vary_header_caches_every_variant(store):
    factory = APIRequestFactory()

    def ask(tenant):
        return served(KeyedTenantView, factory.get("/", HTTP_X_TENANT=tenant))

    statuses = [ask(t)[STATUS] for t in ("acme", "globex", "acme", "globex")]
    assert statuses == ["MISS", "MISS", "HIT", "HIT"]
    assert body(ask("globex")) == {"tenant": "globex"}
    assert RUNS["keyed-tenant"] == 2


# A request of another variant that finds the entry stale is answered live,
# and leaves the entry to the variant it was rendered for: the stale
# entry's background refresh would run with this request (the one that
# claimed it) and replace the entry with a render for the wrong variant.
RENDERED: list[str | None] = []


def tenant_body(request) -> Response:
    RENDERED.append(request.headers.get("X-Tenant"))
    response = Response({"tenant": request.headers.get("X-Tenant"), "n": len(RENDERED)})
    response["Vary"] = "X-Tenant"
    return response


class StaleTenantView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, set_cache_headers=True)
    def get(self, request):
        return tenant_body(request)


class AsyncStaleTenantView(AsyncAPIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, set_cache_headers=True)
    async def get(self, request):
        return tenant_body(request)


def stale_variant_scenario(ask, peek, settle):
    """acme stored; 70 s later (stale) globex, then acme twice: what each
    got, and the entry acme's request finds after globex's."""
    RENDERED.clear()
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)) as clock:
        responses = [ask("acme")]
        clock.advance(70)
        responses.append(ask("globex"))
        settle()
        after_globex = (list(RENDERED), peek("acme"), peek("globex"))
        responses.append(ask("acme"))  # STALE: its own refresh
        settle()
        responses.append(ask("acme"))
    return responses, after_globex


def check_stale_variant(responses, after_globex):
    rendered, acme_peek, globex_peek = after_globex
    # globex was rendered live, and nothing else ran: the entry is acme's.
    assert rendered == ["acme", "globex"]
    assert (acme_peek, globex_peek) == ({"tenant": "acme", "n": 1}, None)
    assert [(r[STATUS], r["Cache-Status"]) for r in responses] == [
        ("MISS", "restflow; fwd=miss; stored"),
        ("MISS", "restflow; fwd=vary-miss"),
        ("STALE", "restflow; fwd=stale; ttl=-10"),
        ("HIT", "restflow; hit; ttl=60"),
    ]
    assert [body(r) for r in responses] == [
        {"tenant": "acme", "n": 1},
        {"tenant": "globex", "n": 2},
        {"tenant": "acme", "n": 1},
        {"tenant": "acme", "n": 3},  # acme's own refresh
    ]
    assert RENDERED == ["acme", "globex", "acme"]


def test_a_vary_miss_on_a_stale_entry_does_not_refresh_it_with_the_other_variant(store):
    factory = APIRequestFactory()

    def ask(tenant):
        return served(StaleTenantView, factory.get("/", HTTP_X_TENANT=tenant))

    def peek(tenant):
        request = factory.get("/", HTTP_X_TENANT=tenant)
        found = StaleTenantView.get.get_cache_only(StaleTenantView(), request)
        return None if found is CACHE_MISSING else body(found)

    check_stale_variant(*stale_variant_scenario(ask, peek, wait_for_refreshes))


def test_an_async_vary_miss_on_a_stale_entry_does_not_refresh_it_either(store):
    factory = AsyncRequestFactory()

    async def aask(tenant):
        response = await AsyncStaleTenantView.as_view()(
            factory.get("/", headers={"X-Tenant": tenant})
        )
        await wait_for_async_refreshes()
        return response

    async def apeek(tenant):
        request = factory.get("/", headers={"X-Tenant": tenant})
        found = await AsyncStaleTenantView.get.aget_cache_only(AsyncStaleTenantView(), request)
        return None if found is CACHE_MISSING else body(found)

    check_stale_variant(
        *stale_variant_scenario(
            lambda tenant: async_to_sync(aask)(tenant),
            lambda tenant: async_to_sync(apeek)(tenant),
            wait_for_refreshes,
        )
    )


# The same for a fresh entry's early refresh (XFetch): a Vary miss that
# draws it does not run it. The view takes 10 s on the engine clock and
# beta is huge, so every read past the first draws the early refresh.
class EarlyTenantView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, early_refresh=True, beta=1e9, set_cache_headers=True)
    def get(self, request):
        _engine.advance_clock(10)
        return tenant_body(request)


def test_a_vary_miss_that_draws_an_early_refresh_does_not_run_it(store):
    factory = APIRequestFactory()
    view = EarlyTenantView.as_view()
    RENDERED.clear()
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)), seeded_early_refresh(0):
        acme = view(factory.get("/", HTTP_X_TENANT="acme"))
        globex = view(factory.get("/", HTTP_X_TENANT="globex"))
        wait_for_refreshes()
        after_globex = list(RENDERED)
        request = factory.get("/", HTTP_X_TENANT="acme")
        kept = EarlyTenantView.get.get_cache_only(EarlyTenantView(), request)
        again = view(factory.get("/", HTTP_X_TENANT="acme"))  # HIT, refreshed early
        wait_for_refreshes()
    assert after_globex == ["acme", "globex"]
    assert body(kept) == {"tenant": "acme", "n": 1}
    assert [(r[STATUS], body(r)) for r in (acme, globex, again)] == [
        ("MISS", {"tenant": "acme", "n": 1}),
        ("MISS", {"tenant": "globex", "n": 2}),
        ("HIT", {"tenant": "acme", "n": 1}),
    ]
    assert RENDERED == ["acme", "globex", "acme"]  # acme's own early refresh


# A request whose render raises, answered with the entry kept for
# stale-if-error, which is another variant's: the view's error is its
# answer, with the view run once (not a second time to answer it live).
FAILING = [False]


class Down(APIException):
    status_code = 503
    default_detail = "down"


def failing_tenant_body(request) -> Response:
    if FAILING[0]:
        RENDERED.append(request.headers.get("X-Tenant"))
        raise Down()
    return tenant_body(request)


class KeptTenantView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, stale_if_error=100, set_cache_headers=True)
    def get(self, request):
        return failing_tenant_body(request)


class AsyncKeptTenantView(AsyncAPIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, stale_if_error=100, set_cache_headers=True)
    async def get(self, request):
        return failing_tenant_body(request)


def rendered(response):
    """A DRF response rendered (an error's is not yet); a rebuilt one as it is."""
    if hasattr(response, "render"):
        response.render()
    return response


def kept_variant_scenario(ask):
    """acme stored; 100 s later (past the stale window, kept for
    stale-if-error) the view fails: globex, then acme."""
    RENDERED.clear()
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)) as clock:
        responses = [ask("acme")]
        clock.advance(100)
        FAILING[0] = True
        try:
            responses += [ask("globex"), ask("acme")]
        finally:
            FAILING[0] = False
    return responses


def check_kept_variant(responses):
    assert [(r.status_code, r[STATUS], r["Cache-Status"]) for r in responses] == [
        (200, "MISS", "restflow; fwd=miss; stored"),
        (503, "MISS", "restflow; fwd=vary-miss"),
        (200, "STALE", "restflow; fwd=stale; ttl=-40"),
    ]
    assert [body(r) for r in responses] == [
        {"tenant": "acme", "n": 1},
        {"detail": "down"},
        {"tenant": "acme", "n": 1},  # the kept entry is acme's
    ]
    assert RENDERED == ["acme", "globex", "acme"]  # globex's failing view ran once


def test_a_failed_render_answered_with_another_variants_kept_entry_is_the_error(store):
    factory = APIRequestFactory()

    def ask(tenant):
        return rendered(served(KeptTenantView, factory.get("/", HTTP_X_TENANT=tenant)))

    check_kept_variant(kept_variant_scenario(ask))


def test_an_async_failed_render_answered_with_another_variants_kept_entry_too(store):
    factory = AsyncRequestFactory()

    async def aask(tenant):
        request = factory.get("/", headers={"X-Tenant": tenant})
        return rendered(await AsyncKeptTenantView.as_view()(request))

    check_kept_variant(kept_variant_scenario(lambda tenant: async_to_sync(aask)(tenant)))


# --- Host, scheme and path ------------------------------------------------------------


class LinksView(APIView):
    """Links to itself by absolute URL, as DRF's hyperlinked serializers do."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["links"] += 1
        return Response({"self": request.build_absolute_uri()})


def test_host_and_scheme_are_part_of_the_key(store):
    factory = APIRequestFactory()

    def ask(host, secure=False):
        return served(LinksView, factory.get("/links/", HTTP_HOST=host, secure=secure))

    first = ask("localhost")
    other_host = ask("127.0.0.1")
    https = ask("localhost", secure=True)
    assert body(first)["self"] == "http://localhost/links/"
    assert body(other_host)["self"] == "http://127.0.0.1/links/"
    assert body(https)["self"] == "https://localhost/links/"
    assert [r[STATUS] for r in (first, other_host, https)] == ["MISS", "MISS", "MISS"]
    again = ask("localhost", secure=True)
    assert (again[STATUS], body(again)["self"]) == ("HIT", "https://localhost/links/")
    assert RUNS["links"] == 3


class PagedView(GenericAPIView):
    """A paginated list, as DRF's ListAPIView renders one: its ``next`` link
    is ``request.build_absolute_uri()`` with the page replaced."""

    renderer_classes = (JSONRenderer,)
    pagination_class = TwoPerPage

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["paged"] += 1
        page = self.paginate_queryset(list(range(5)))
        return self.get_paginated_response(page)


def test_the_path_is_part_of_the_key(store):
    # Two URLs routed to one view with the same URL kwargs (an API served
    # under /api/ and /api/v1/, a router whose trailing slash is optional):
    # each page's links must point where its client asked.
    factory = APIRequestFactory()

    def ask(path):
        return served(PagedView, factory.get(path, {"page": 1}))

    old, new, no_slash = ask("/api/items/"), ask("/api/v1/items/"), ask("/api/v1/items")
    assert body(old)["next"] == "http://testserver/api/items/?page=2"
    assert body(new)["next"] == "http://testserver/api/v1/items/?page=2"
    assert body(no_slash)["next"] == "http://testserver/api/v1/items?page=2"
    assert [r[STATUS] for r in (old, new, no_slash)] == ["MISS", "MISS", "MISS"]
    again = ask("/api/v1/items/")
    assert (again[STATUS], body(again)["next"]) == ("HIT", "http://testserver/api/v1/items/?page=2")
    assert RUNS["paged"] == 3


# --- query strings that mean the same ---------------------------------------------------


class EchoQueryView(APIView):
    """Renders what ``query_params`` holds, as a filter or a paginator reads it."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request, slug="-"):
        RUNS["echo"] += 1
        return Response({"slug": slug, "query": sorted(request.query_params.lists())})


def test_query_strings_that_mean_the_same_share_and_a_huge_one_is_digested(store):
    # DRF hands the view the decoded query_params: "?a=1&b=2" and "?b=2&a=1",
    # "%C3%A9" and "é", are one request to it, so they are one entry; the
    # order of one parameter's repeated values is not (see above).
    def ask(query, slug="-"):
        response = EchoQueryView.as_view()(APIRequestFactory().get(f"/echo/?{query}"), slug=slug)
        return response[STATUS], body(response)

    assert ask("a=1&b=2") == ("MISS", {"slug": "-", "query": [["a", ["1"]], ["b", ["2"]]]})
    assert ask("b=2&a=1")[0] == "HIT"
    assert ask("q=%C3%A9") == ("MISS", {"slug": "-", "query": [["q", ["é"]]]})
    assert ask("q=é")[0] == "HIT"
    huge, slug = "x=" + "y" * 100_000, "z" * 10_000
    assert [ask(huge, slug)[0] for _ in range(2)] == ["MISS", "HIT"]
    view = EchoQueryView()
    view.setup(APIRequestFactory().get(f"/echo/?{huge}"))
    key = view.get.get_cache_key(view.initialize_request(view.request), slug=slug)
    assert len(key) < 1_000 and "yyyy" not in key and "zzzz" not in key
    assert RUNS["echo"] == 3


# --- users of two kinds ----------------------------------------------------------------


class Principal:
    """A user an authentication class gives, not a row of the user model."""

    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


class StaffMember(Principal):
    pass


class Customer(Principal):
    pass


class KindHeader(BaseAuthentication):
    """Staff sign in one way and customers another; each kind numbers its own."""

    def authenticate(self, request):
        kind = {"staff": StaffMember, "customer": Customer}[request.headers["X-Kind"]]
        return kind(int(request.headers["X-Id"])), None


class WhoAmIView(APIView):
    renderer_classes = (JSONRenderer,)
    authentication_classes = (KindHeader,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["whoami"] += 1
        return Response({"kind": type(request.user).__name__, "id": request.user.pk})


def test_users_of_two_kinds_with_one_pk_never_share(store):
    factory = APIRequestFactory()

    def ask(kind, pk=1):
        return served(WhoAmIView, factory.get("/", HTTP_X_KIND=kind, HTTP_X_ID=str(pk)))

    staff, customer, staff_again = ask("staff"), ask("customer"), ask("staff")
    assert body(staff) == {"kind": "StaffMember", "id": 1}
    assert body(customer) == {"kind": "Customer", "id": 1}
    assert (body(staff_again), staff_again[STATUS]) == ({"kind": "StaffMember", "id": 1}, "HIT")
    assert [r[STATUS] for r in (staff, customer)] == ["MISS", "MISS"]
    assert RUNS["whoami"] == 2


class ApiKey(BaseAuthentication):
    """Authenticates a client, not a user: DRF's ``request.user`` stays
    anonymous and ``request.auth`` is the client's key (an API key, a
    tenant's token)."""

    def authenticate(self, request):
        key = request.headers.get("X-Api-Key")
        return None if key is None else (AnonymousUser(), key)


class TenantDataView(APIView):
    renderer_classes = (JSONRenderer,)
    authentication_classes = (ApiKey,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["tenant-data"] += 1
        return Response({"data": f"{request.auth}'s"})


def test_a_client_authenticated_without_a_user_never_shares(store):
    # The key holds users; a request.auth without one has nothing safe to
    # key by, so such requests run live, as a user without a pk does.
    factory = APIRequestFactory()

    def ask(key=None):
        headers = {} if key is None else {"HTTP_X_API_KEY": key}
        return served(TenantDataView, factory.get("/", **headers))

    acme, globex = ask("acme"), ask("globex")
    assert (body(acme), body(globex)) == ({"data": "acme's"}, {"data": "globex's"})
    assert (acme[STATUS], globex[STATUS], ask("acme")[STATUS]) == ("BYPASS", "BYPASS", "BYPASS")
    # Requests without credentials still share an entry.
    assert [ask()[STATUS] for _ in range(2)] == ["MISS", "HIT"]
    assert RUNS["tenant-data"] == 4


# --- permissions that change -----------------------------------------------------------

GRANTED: set[int] = set()


class Granted(BasePermission):
    """A permission an administrator can take away between two requests."""

    def has_permission(self, request, view):
        return request.user.pk in GRANTED


class ReportView(APIView):
    renderer_classes = (JSONRenderer,)
    authentication_classes = (KindHeader,)
    permission_classes = (Granted,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["report"] += 1
        return Response({"report": "confidential"})


def test_a_revoked_permission_is_refused_even_with_a_cached_response(store):
    # DRF checks the view's permissions in initial(), before the handler, on
    # every request: a cached entry never answers a user who lost access.
    factory = APIRequestFactory()

    def ask():
        return served(ReportView, factory.get("/", HTTP_X_KIND="staff", HTTP_X_ID="7"))

    GRANTED.add(7)
    try:
        assert [ask()[STATUS] for _ in range(2)] == ["MISS", "HIT"]
        GRANTED.discard(7)
        refused = ask()
        assert refused.status_code == 403
        assert STATUS not in refused
        assert RUNS["report"] == 1
    finally:
        GRANTED.clear()


# --- cookies written by hand ----------------------------------------------------------


class HandCookieView(APIView):
    """Writes its cookie as a header, not with ``set_cookie``."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True, cache_if=lambda *args, **kwargs: True)
    def get(self, request):
        RUNS["hand-cookie"] += 1
        response = Response({"ok": True})
        response["Set-Cookie"] = f"visitor={RUNS['hand-cookie']}; Path=/; HttpOnly"
        return response


def test_a_set_cookie_header_written_by_hand_is_never_stored(store):
    factory = APIRequestFactory()
    first, second = (served(HandCookieView, factory.get("/")) for _ in range(2))
    # Each visitor gets its own cookie, never the first visitor's.
    assert (first["Set-Cookie"], second["Set-Cookie"]) == (
        "visitor=1; Path=/; HttpOnly",
        "visitor=2; Path=/; HttpOnly",
    )
    assert (first[STATUS], second[STATUS]) == ("MISS", "MISS")
    assert RUNS["hand-cookie"] == 2


# --- SERIALIZER="json" -----------------------------------------------------------------


class BinaryView(APIView):
    """A body that is not UTF-8: no JSON form."""

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["binary"] += 1
        return HttpResponse(b"\xff\xfe", content_type="application/octet-stream")


def test_responses_are_cached_under_the_json_serializer(store):
    # The entry is restflow's own, so SERIALIZER="json" must not stop every
    # cache_response view from caching (it did: one error logged per view).
    factory = APIRequestFactory()

    def ask(tenant):
        return served(TenantView, factory.get("/", HTTP_X_TENANT=tenant))

    with store.configured(SERIALIZER="json"):
        first, again, other = ask("acmé"), ask("acmé"), ask("globex")
        assert [r[STATUS] for r in (first, again, other)] == ["MISS", "HIT", "MISS"]
        assert (body(again), body(other)) == ({"tenant": "acmé"}, {"tenant": "globex"})
        assert (again["Content-Type"], again["Vary"]) == ("application/json", "X-Tenant")
        assert again.content == first.content
        assert RUNS["tenant"] == 2
        # A body that is not UTF-8 has no JSON form: served, and kept only
        # by the memory store, which serializes nothing.
        binary = [served(BinaryView, factory.get("/")) for _ in range(2)]
        second = "HIT" if store.kind == "memory" else "MISS"
        assert [(r[STATUS], r.content) for r in binary] == [
            ("MISS", b"\xff\xfe"),
            (second, b"\xff\xfe"),
        ]


# --- the CSRF token ---------------------------------------------------------------------


class BrowsableView(APIView):
    renderer_classes = (JSONRenderer, BrowsableAPIRenderer)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["browsable"] += 1
        return Response({"title": "hello"})


class TokenView(APIView):
    """Hands the client its CSRF token in the body (for a JavaScript client)."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["token"] += 1
        return Response({"csrf": get_token(request)})


@override_settings(TEMPLATES=TEMPLATES, STATIC_URL="/static/")
def test_a_browsable_api_page_carrying_a_csrf_token_is_never_stored(store):
    factory = APIRequestFactory()
    pages = [served(BrowsableView, factory.get("/", HTTP_ACCEPT="text/html")) for _ in range(2)]
    assert [p.status_code for p in pages] == [200, 200]
    assert b"csrfToken" in pages[1].content
    assert [p[STATUS] for p in pages] == ["MISS", "MISS"]
    # The JSON rendering carries no token: it is stored as usual.
    as_json = [served(BrowsableView, factory.get("/", HTTP_ACCEPT="application/json"))]
    as_json.append(served(BrowsableView, factory.get("/", HTTP_ACCEPT="application/json")))
    assert [r[STATUS] for r in as_json] == ["MISS", "HIT"]
    assert RUNS["browsable"] == 3


def test_a_response_built_with_the_csrf_token_is_never_stored(store):
    factory = APIRequestFactory()
    first, second = (served(TokenView, factory.get("/")) for _ in range(2))
    assert (first[STATUS], second[STATUS]) == ("MISS", "MISS")
    assert body(first)["csrf"] != body(second)["csrf"]
    assert RUNS["token"] == 2


# --- repeated query parameters -------------------------------------------------------------


class SortedView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["sorted"] += 1
        return Response({"sort": request.query_params.getlist("sort")})


def test_the_order_of_repeated_query_parameters_is_part_of_the_key(store):
    factory = APIRequestFactory()
    ab = served(SortedView, factory.get("/?sort=a&sort=b"))
    ba = served(SortedView, factory.get("/?sort=b&sort=a"))
    assert (body(ab), body(ba)) == ({"sort": ["a", "b"]}, {"sort": ["b", "a"]})
    assert (ab[STATUS], ba[STATUS]) == ("MISS", "MISS")
    assert served(SortedView, factory.get("/?sort=b&sort=a"))[STATUS] == "HIT"
    assert RUNS["sorted"] == 2


# --- HEAD and GET ------------------------------------------------------------------------


class HeadAwareView(APIView):
    """Skips the expensive body for HEAD, as a view may."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS[request.method] += 1
        if request.method == "HEAD":
            return Response(None)
        return Response({"body": "full"})


def test_a_get_never_receives_the_head_render(store):
    factory = APIRequestFactory()
    head = served(HeadAwareView, factory.head("/"))
    get = served(HeadAwareView, factory.get("/"))
    assert (head[STATUS], get[STATUS]) == ("MISS", "MISS")
    assert body(get) == {"body": "full"}
    assert served(HeadAwareView, factory.get("/"))[STATUS] == "HIT"
    again = served(HeadAwareView, factory.head("/"))
    assert (again[STATUS], again.content) == ("HIT", head.content)
    assert (RUNS["HEAD"], RUNS["GET"]) == (1, 1)


# --- a custom constructor keeps all of it ---------------------------------------------------


class Bare(KeyConstructor):
    """Keys nothing of its own: every rule above must still hold."""


class BareLinksView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(Bare, ttl=60, set_cache_headers=True)
    def get(self, request):
        RUNS["bare"] += 1
        return Response({"self": request.build_absolute_uri(), "m": request.method})


def test_a_custom_constructor_still_keys_host_scheme_and_method(store):
    factory = APIRequestFactory()
    responses = [
        served(BareLinksView, factory.get("/", HTTP_HOST="localhost")),
        served(BareLinksView, factory.get("/", HTTP_HOST="127.0.0.1")),
        served(BareLinksView, factory.get("/", HTTP_HOST="localhost", secure=True)),
        served(BareLinksView, factory.head("/", HTTP_HOST="localhost")),
    ]
    assert [r[STATUS] for r in responses] == ["MISS"] * 4
    assert RUNS["bare"] == 4


# --- async views: the same rules ---------------------------------------------------------


@cache_response(ttl=60, set_cache_headers=True)
async def async_cart(request):
    RUNS["async-cart"] += 1
    # (session.aget is Django 5.0+)
    cart = await sync_to_async(request.session.get)("cart") if "cart" in request.GET else None
    response = JsonResponse({"cart": cart})
    response["Vary"] = "X-Tenant"
    response["X-Host"] = request.build_absolute_uri()
    return response


@override_settings(**SESSIONS)
def test_an_async_view_keeps_sessions_vary_and_hosts_apart(store):
    factory = AsyncRequestFactory()
    view = SessionMiddleware(async_cart)

    async def scenario():
        plain = [await view(factory.get("/", headers={"X-Tenant": t})) for t in ("a", "b", "a")]
        hosts = [await view(factory.get("/", HTTP_HOST=h)) for h in ("localhost", "127.0.0.1")]
        carts = []
        for cart in ("alice's", "bob's"):
            visitor = AsyncRequestFactory()
            visitor.cookies.load(session_cookie(cart=cart))
            carts.append(await view(visitor.get("/?cart")))
        return plain, hosts, carts

    plain, hosts, carts = async_to_sync(scenario)()
    assert [r[STATUS] for r in plain] == ["MISS", "MISS", "HIT"]
    assert [r[STATUS] for r in hosts] == ["MISS", "MISS"]
    assert [body(r)["cart"] for r in carts] == ["alice's", "bob's"]
    assert RUNS["async-cart"] == 6
