"""``cache_response`` against a model of what every request must be answered.

A seeded run of random operations drives three cached views (a DRF
``APIView``, a ``ViewSet`` and an adrf async ``APIView``) through Django's
test clients (``Client``; ``AsyncClient`` for the async one), with the
session and authentication middleware, and checks every response exactly
against a small model: its status code, its body (byte for byte), its
``Content-Type``, ``X-Cache-status``, ``X-Cached-at``, ``Cache-Status``,
``Age``, ``ETag`` and ``Last-Modified``, or the ``304`` its
``If-None-Match`` / ``If-Modified-Since`` calls for.

Clients: anonymous, two session-authenticated users (``force_login``), a
user authenticated by a token header, and a client DRF authenticates
without a user (an API key: always ``BYPASS``). Requests vary in query
string (reordered parameters share an entry; repeated keys are keyed in
order), ``Accept`` and ``?format=`` (what DRF negotiated is keyed: ``*/*``
and ``application/json`` share), method (HEAD is keyed apart from GET; POST
runs live), ``X-Tenant`` (which a flag makes the view ``Vary`` on), and
flags that make the response unstorable (``Set-Cookie``,
``Cache-Control: private``, a read of the session).

The views' data is kept in module-level dicts (the background refresh of a
stale entry renders on an engine thread, which sees them without a
database): a version per object, one per (user, object), and a global one.
A change of an object is a real ORM save or delete of its ``Article``,
whose ``InvalidationRule`` (on each view) drops the object's entries when
the transaction commits; other changes are followed by the invalidation a
rule would make (``delete_by_prefix``, ``invalidate_all``), or by none (the
cache legitimately keeps serving what it holds); explicit drops go through
``delete_cache`` with a plain Django request (keyed as the served one). The
engine clock moves through the ttl, the stale window and the stale-if-error
window, and the views now and then answer ``500`` or raise (a DRF
``APIException``, which DRF answers ``503``: with the cache headers the
same response returned would get, nothing stored). A request of another
``X-Tenant`` that finds an entry stale is answered live and leaves the
entry as it is.

The users and articles are rows of the test database (``db``; the rules run
on commit through ``django_capture_on_commit_callbacks``): only the request
thread reads them; a background refresh renders with the request's user
already loaded. ``MODEL_SEEDS=40`` in the environment runs more seeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from adrf.views import APIView as AsyncAPIView
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.urls import path
from django.utils.http import http_date, urlencode
from rest_framework import viewsets
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import APIException
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from restflow import _engine
from restflow.caching import CACHE_MISSING, CacheStatus
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.cache_response import cache_response
from restflow.caching.registry import CacheRegister
from restflow.caching.rules import InvalidationRule
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.stores import on
from tests.testapp.models import Article

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _views():
    """This test's views, and its rules forgotten after it."""
    VIEWS.update(made_views())
    yield
    VIEWS.clear()
    CacheRegister.clear()


TTL, STALE, IF_ERROR = 30, 20, 60
PKS = (1, 2, 3)
#: The raising view's answer, as DRF renders its exception.
UNAVAILABLE = {"detail": "the source is down"}

#: The data the views read, changed by the run.
items: dict[int, int] = {}
mine: dict[tuple[str | None, int], int] = {}
epoch = [0]
#: ``None``, ``"500"`` (the views answer 500) or ``"raise"`` (they raise).
failing: list[str | None] = [None]


class Unavailable(APIException):
    status_code = 503
    default_detail = "the source is down"


class PlainRenderer(BaseRenderer):
    """A second rendering of the same data: ``Accept: text/plain`` or ``?format=txt``."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return ("TXT " + json.dumps(data, sort_keys=True)).encode()


class TokenAuth(BaseAuthentication):
    """``Authorization: Token <username>``: a user authenticated by a token."""

    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Token "):
            return None
        return User.objects.get(username=header.removeprefix("Token ")), header


class ApiKey(BaseAuthentication):
    """A client DRF authenticates without a user (``request.auth`` only)."""

    def authenticate(self, request):
        key = request.headers.get("X-Api-Key")
        return None if key is None else (AnonymousUser(), key)


def payload(request, pk, view):
    """What both views render: only what the key holds, and the data."""
    if failing[0] == "raise":
        raise Unavailable()
    user = request.user
    who = user.username if user is not None and user.is_authenticated else None
    if failing[0] == "500":
        return Response({"error": "down", "view": view}, status=500)
    query = request.query_params
    body = {
        "view": view,
        "pk": pk,
        "who": who,
        "item": items[pk],
        "mine": mine[who, pk],
        "epoch": epoch[0],
        "method": request.method,
        "q": sorted(query.lists()),
    }
    if "cart" in query:
        body["cart"] = request.session.get("cart")
    if "vary" in query:
        body["tenant"] = request.headers.get("X-Tenant")
    response = Response(body)
    if "vary" in query:
        response["Vary"] = "X-Tenant"
    if "cookie" in query:
        response.set_cookie("seen", "1")
    if "private" in query:
        response["Cache-Control"] = "private"
    return response


LIFETIMES = dict(
    ttl=TTL, stale_while_revalidate=STALE, stale_if_error=IF_ERROR, set_cache_headers=True
)


def made_views() -> dict[str, tuple[type, object]]:
    """The three views, each cached with a rule on ``Article`` (a save or
    delete of article ``pk`` drops every variant of ``/…/items/<pk>/``),
    by name: ``(view class, its cached handler)``. Made per test: other
    tests forget every rule after theirs (``CacheRegister.clear()``)."""
    rules = [InvalidationRule(Article, field_mapping={"pk": "pk"})]
    options = dict(LIFETIMES, invalidates_on=rules)

    class ItemView(APIView):
        renderer_classes = (JSONRenderer, PlainRenderer)
        authentication_classes = (SessionAuthentication, TokenAuth, ApiKey)

        @cache_response(**options)
        def get(self, request, pk):
            return payload(request, pk, "item")

        post = get

    class ItemViewSet(viewsets.ViewSet):
        renderer_classes = (JSONRenderer, PlainRenderer)
        authentication_classes = (SessionAuthentication, TokenAuth, ApiKey)

        @cache_response(**options, cache_control="public")
        def retrieve(self, request, pk=None):
            return payload(request, int(pk), "viewset")

    class AsyncItemView(AsyncAPIView):
        """adrf's APIView, whose dispatch awaits an ``async def`` handler."""

        renderer_classes = (JSONRenderer, PlainRenderer)
        authentication_classes = (SessionAuthentication, TokenAuth, ApiKey)

        @cache_response(**options)
        async def get(self, request, pk):
            await asyncio.sleep(0)  # a real suspension point
            return payload(request, pk, "async")

        post = get

    return {
        "item": (ItemView, ItemView.get),
        "viewset": (ItemViewSet, ItemViewSet.retrieve),
        "async": (AsyncItemView, AsyncItemView.get),
    }


#: This test's views (``made_views``), which the URLs route to.
VIEWS: dict[str, tuple[type, object]] = {}


def routed(name: str, actions: dict | None = None):
    """A URL's view: this test's ``name`` view, as ``as_view`` makes it."""
    made: dict = {}

    def view(request, *args, **kwargs):
        view_class = VIEWS[name][0]
        if made.get("class") is not view_class:
            made["class"] = view_class
            made["view"] = view_class.as_view(*(() if actions is None else (actions,)))
        return made["view"](request, *args, **kwargs)

    if name != "async":
        return view

    async def aview(request, *args, **kwargs):
        return await view(request, *args, **kwargs)

    return aview


URLS = {"item": "/items/{}/", "viewset": "/vs/items/{}/", "async": "/async/items/{}/"}


def invalidate(name: str, **partition) -> None:
    """``delete_by_prefix(**partition)``, or ``invalidate_all()`` without one."""
    wrapper = VIEWS[name][1]
    if name == "async":
        call = wrapper.adelete_by_prefix if partition else wrapper.ainvalidate_all
        async_to_sync(call)(**partition)
    elif partition:
        wrapper.delete_by_prefix(**partition)
    else:
        wrapper.invalidate_all()


async def asked(client, method, url, query, headers):
    """One request through the async client, and the refresh it started."""
    try:
        if method == "POST":
            target = url + "?" + urlencode(query) if query else url
            return await client.post(target, headers=headers)
        return await getattr(client, method.lower())(url, query, headers=headers)
    finally:
        await wait_for_async_refreshes()


urlpatterns = [
    path("items/<int:pk>/", routed("item")),
    path("vs/items/<str:pk>/", routed("viewset", {"get": "retrieve", "post": "retrieve"})),
    path("async/items/<int:pk>/", routed("async")),
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
SESSIONS = "django.contrib.sessions.backends.signed_cookies"

#: Query strings (as sent, pairs in order), with what each means to the key.
QUERIES = (
    [],
    [("a", "1"), ("b", "2")],
    [("b", "2"), ("a", "1")],  # reordered: the same request to DRF
    [("sort", "x"), ("sort", "y")],
    [("sort", "y"), ("sort", "x")],  # a repeated key in another order: another entry
    [("format", "txt")],
    [("format", "json"), ("a", "1")],
    [("cookie", "1")],  # sets a cookie: never stored
    [("private", "1")],  # Cache-Control: private: never stored
    [("cart", "1")],  # reads the session: never stored
    [("vary", "1")],  # Vary: X-Tenant: served only to the X-Tenant it was rendered for
)
UNSTORABLE = ("cookie", "private", "cart")
ACCEPTS = (None, "application/json", "text/plain", "*/*")
TENANTS = (None, "acme", "globex")
CLIENTS = ("anon", "alice", "bob", "carol", "apikey")
ADVANCES = (1, 1, 1, 2, 2, 5, 5, 10, 10, 19, 20, 21, 29, 30, 31, 49, 50, 51, 60, 80, 109, 110, 111)


def media_of(query, accept) -> str:
    formats = [value for name, value in query if name == "format"]
    if formats:
        return {"json": "application/json", "txt": "text/plain"}[formats[-1]]
    return "text/plain" if accept == "text/plain" else "application/json"


def pick_accept(rng, query) -> str | None:
    """An ``Accept`` for ``query``: ``?format=`` overrides it, and one it does
    not satisfy is DRF's 406 (before the handler), so none of those."""
    if any(name == "format" for name, _ in query):
        return rng.choice((None, "*/*", media_of(query, None)))
    return rng.choice(ACCEPTS)


def content_of(body, media) -> bytes:
    if media == "text/plain":
        return PlainRenderer().render(body)
    return JSONRenderer().render(body)


def content_type_of(media) -> str:
    return "text/plain; charset=utf-8" if media == "text/plain" else "application/json"


def etag_of(content: bytes) -> str:
    return '"' + hashlib.blake2b(content, digest_size=16).hexdigest() + '"'


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


@dataclass
class Held:
    body: dict
    media: str
    stored_at: float
    #: The X-Tenant of the request it was rendered for (its Vary record).
    tenant: str | None = None


@dataclass
class Expected:
    """One response as the model says it must be."""

    status: int
    body: dict
    media: str
    x_cache: str
    cache_status: str | None
    stored_at: float | None = None  # when the entry served or stored was stored
    served_from_entry: bool = False


@dataclass
class Model:
    now: float
    held: dict[tuple, Held] = field(default_factory=dict)

    def phase(self, key) -> str | None:
        if key not in self.held:
            return None
        age = self.now - self.held[key].stored_at
        if age < TTL:
            return "fresh"
        if age < TTL + STALE:
            return "stale"
        return "kept" if age < TTL + STALE + IF_ERROR else "gone"


def render_of(view, pk, who, method, query, tenant=None) -> dict:
    """What the view renders now (failing aside)."""
    lists: dict[str, list[str]] = {}
    for name, value in query:
        lists.setdefault(name, []).append(value)
    body = {
        "view": view,
        "pk": pk,
        "who": who,
        "item": items[pk],
        "mine": mine[who, pk],
        "epoch": epoch[0],
        "method": method,
        "q": [[name, values] for name, values in sorted(lists.items())],
    }
    if "cart" in lists:
        body["cart"] = None
    if "vary" in lists:
        body["tenant"] = tenant
    return body


def key_of(view, method, pk, who, query, media):
    lists: dict[str, list[str]] = {}
    for name, value in query:
        lists.setdefault(name, []).append(value)
    return (view, method, pk, who, tuple(sorted((k, tuple(v)) for k, v in lists.items())), media)


def status_line(outcome: str, *params: str) -> str:
    return "; ".join(("restflow", outcome, *params))


def expect(model: Model, view, client, method, pk, query, accept, tenant) -> Expected:
    """The answer to one request, and the model's entries after it."""
    who = {"anon": None, "apikey": None}.get(client, client)
    media = media_of(query, accept)
    live = render_of(view, pk, who, method, query, tenant)
    unstorable = any(name in UNSTORABLE for name, _ in query)
    varies = any(name == "vary" for name, _ in query)
    if client == "apikey" or method == "POST":
        forward = "method" if method == "POST" else "bypass"
        if failing[0] == "raise":
            return Expected(503, UNAVAILABLE, media, "BYPASS", status_line(f"fwd={forward}"))
        if failing[0] == "500":
            live = {"error": "down", "view": view}
        return Expected(
            500 if failing[0] else 200, live, media, "BYPASS", status_line(f"fwd={forward}")
        )
    key = key_of(view, method, pk, who, query, media)
    phase = model.phase(key)
    now = model.now
    if phase is not None and varies and model.held[key].tenant != tenant:
        # An entry for another X-Tenant: the view runs live for this one,
        # nothing stored, and the entry is left as it is (a stale one is not
        # refreshed with this request: that render is for this X-Tenant).
        if failing[0] == "raise" and phase in ("fresh", "stale", "kept"):
            return Expected(503, UNAVAILABLE, media, "MISS", status_line("fwd=vary-miss"))
        if phase in ("fresh", "stale") or (phase == "kept" and failing[0] == "raise"):
            if failing[0] == "500":
                live = {"error": "down", "view": view}
            return Expected(
                500 if failing[0] else 200, live, media, "MISS", status_line("fwd=vary-miss")
            )
    if phase == "fresh":
        held = model.held[key]
        ttl = held.stored_at + TTL - now
        return Expected(
            200, held.body, media, "HIT", status_line("hit", f"ttl={ttl:.0f}"), held.stored_at, True
        )
    if phase == "stale" or (phase == "kept" and failing[0] == "raise"):
        held = model.held[key]
        ttl = held.stored_at + TTL - now
        answer = Expected(
            200,
            held.body,
            media,
            "STALE",
            status_line("fwd=stale", f"ttl={ttl:.0f}"),
            held.stored_at,
            True,
        )
        if phase == "stale":  # the background refresh
            if failing[0] == "500" or unstorable:
                del model.held[key]
            elif failing[0] is None:
                model.held[key] = Held(live, media, now, tenant)
        return answer
    if failing[0] == "raise":
        return Expected(503, UNAVAILABLE, media, "MISS", status_line("fwd=miss"))
    if failing[0] == "500" or unstorable:
        model.held.pop(key, None)
        if failing[0] == "500":
            live = {"error": "down", "view": view}
        return Expected(500 if failing[0] else 200, live, media, "MISS", status_line("fwd=miss"))
    model.held[key] = Held(live, media, now, tenant)
    return Expected(200, live, media, "MISS", status_line("fwd=miss", "stored"), now)


#: The ``Cache-Control`` the ViewSet's ``cache_control="public"`` writes on
#: responses in the cache: ``max-age`` the ttl, and the two windows.
PUBLIC = f"public, max-age={TTL}, stale-while-revalidate={STALE}, stale-if-error={IF_ERROR}"


def cache_control_of(view, query, expected: Expected) -> str | None:
    if expected.stored_at is not None:
        return PUBLIC if view == "viewset" else None
    flagged = any(name == "private" for name, _ in query)
    return "private" if flagged and expected.status == 200 else None


def check(response, expected: Expected, request, if_none_match, if_modified_since, step):
    """``response`` is exactly what the model says (``step`` names the operation)."""
    view, method, query = request
    headers = response.headers
    stored = expected.stored_at is not None
    content = content_of(expected.body, expected.media)
    etag = etag_of(content) if stored else None
    if if_none_match is not None:
        not_modified = stored and if_none_match == etag
    else:  # If-Modified-Since counts only without If-None-Match (RFC 9110 §13.1.3)
        not_modified = (
            stored and if_modified_since is not None and expected.stored_at <= if_modified_since
        )
    status = 304 if not_modified else expected.status
    got = {
        "status": response.status_code,
        "x_cache": headers.get("X-Cache-status"),
        "cache_status": headers.get("Cache-Status"),
        "age": headers.get("Age"),
        "etag": headers.get("ETag"),
        "last_modified": headers.get("Last-Modified"),
        "cached_at": headers.get("X-Cached-at"),
        "cache_control": headers.get("Cache-Control"),
    }
    want = {
        "status": status,
        "x_cache": expected.x_cache,
        "cache_status": expected.cache_status,
        "age": (
            f"{_engine.now() - expected.stored_at:.0f}" if expected.served_from_entry else None
        ),
        "etag": etag,
        "last_modified": http_date(expected.stored_at) if stored else None,
        "cached_at": iso(expected.stored_at) if stored else None,
        "cache_control": cache_control_of(view, query, expected),
    }
    if status != 304:
        got["content_type"] = headers.get("Content-Type")
        want["content_type"] = content_type_of(expected.media)
        if method == "GET":
            got["content"] = response.content
            want["content"] = content
    assert got == want, step


class Run:
    """The clients and the model of one seeded run."""

    def __init__(self, seed: int, commits) -> None:
        self.rng = random.Random(seed)
        #: pytest-django's ``django_capture_on_commit_callbacks``: the test
        #: runs in a transaction, whose commit callbacks (the rules) it runs.
        self.commits = commits
        for pk in PKS:
            Article.objects.create(pk=pk, title=f"article {pk}")
        names = ("alice", "bob", "carol")
        self.users = {name: User.objects.create(username=name) for name in names}
        self.clients = {}
        self.aclients = {}
        for name in CLIENTS:
            client = Client()
            if name in ("alice", "bob"):
                client.force_login(self.users[name])
            self.clients[name] = client
            aclient = AsyncClient()
            if name in ("alice", "bob"):
                aclient.force_login(self.users[name])
            self.aclients[name] = aclient
        self.headers = {"carol": {"Authorization": "Token carol"}, "apikey": {"X-Api-Key": "k1"}}
        #: ETags the clients were given, offered back now and then.
        self.etags: list[str] = ['"not-an-etag"']
        #: Requests made, some of which are made again.
        self.recent: list[tuple] = []
        items.clear()
        items.update({pk: 0 for pk in PKS})
        mine.clear()
        mine.update({(who, pk): 0 for who in (None, "alice", "bob", "carol") for pk in PKS})
        epoch[0] = 0
        failing[0] = None

    def request(self, model: Model, step: int) -> None:
        rng = self.rng
        if self.recent and rng.random() < 0.6:
            # The same request again (a hit, or what ended its entry), or a
            # variant that shares its entry (reordered query, */*).
            view, client, method, pk, query, accept = rng.choice(self.recent[-6:])
        else:
            view = rng.choice(tuple(VIEWS))
            client = rng.choices(CLIENTS, (4, 3, 3, 3, 1))[0]
            method = rng.choices(("GET", "HEAD", "POST"), (12, 1, 1))[0]
            pk = rng.choice(PKS)
            query = rng.choice(QUERIES)
            accept = pick_accept(rng, query)
        self.recent.append((view, client, method, pk, query, accept))
        headers = dict(self.headers.get(client, {}))
        if accept is not None:
            headers["Accept"] = accept
        tenant = rng.choice(TENANTS)
        if tenant is not None:
            headers["X-Tenant"] = tenant
        if_none_match = if_modified_since = None
        if method != "POST" and rng.random() < 0.2:
            if_none_match = rng.choice(self.etags[-4:])
            headers["If-None-Match"] = if_none_match
        if method != "POST" and rng.random() < 0.15:
            if_modified_since = model.now + rng.choice((-100, -30, -1, 0, 1, 100))
            headers["If-Modified-Since"] = http_date(if_modified_since)
        url = URLS[view].format(pk)
        expected = expect(model, view, client, method, pk, query, accept, tenant)
        if view == "async":
            response = async_to_sync(asked)(self.aclients[client], method, url, query, headers)
        elif method == "POST":
            response = self.clients[client].post(
                url + "?" + urlencode(query) if query else url, headers=headers
            )
        else:
            response = getattr(self.clients[client], method.lower())(url, query, headers=headers)
        wait_for_refreshes()
        step_name = f"step {step}: {client} {method} {url}?{query} accept={accept} "
        step_name += f"inm={if_none_match} ims={if_modified_since} tenant={tenant} "
        step_name += f"failing={failing[0]}"
        request = (view, method, query)
        check(response, expected, request, if_none_match, if_modified_since, step_name)
        if response.headers.get("ETag"):
            self.etags.append(response.headers["ETag"])

    def change(self, model: Model) -> None:
        """A change of the data, and the invalidation the views' rules make."""
        rng = self.rng
        kind = rng.choice(("item", "deleted", "mine", "epoch", "silent", "drop", "refresh", "peek"))
        pk = rng.choice(PKS)
        if kind in ("item", "deleted"):
            # A real save (or delete) of the article: the views' rule drops
            # its partition when the transaction commits.
            items[pk] += 1
            with self.commits(execute=True):
                if kind == "item":
                    Article.objects.filter(pk=pk).get().save()
                else:
                    Article.objects.filter(pk=pk).delete()
            if kind == "deleted":
                Article.objects.create(pk=pk, title=f"article {pk}")  # no rule on create
            for key in [key for key in model.held if key[2] == pk]:
                del model.held[key]
            return
        if kind == "mine":
            mine[rng.choice((None, "alice", "bob", "carol")), pk] += 1
        elif kind == "epoch":
            epoch[0] += 1
        elif kind == "silent":
            items[pk] += 1  # changed, nothing invalidated: the cache keeps what it has
            return
        if kind == "mine":
            for name in VIEWS:
                invalidate(name, pk=pk)
            for key in [key for key in model.held if key[2] == pk]:
                del model.held[key]
        elif kind == "epoch":
            for name in VIEWS:
                invalidate(name)
            model.held.clear()
        elif kind == "refresh":
            self.refresh(model, pk)
        elif kind == "peek":
            self.peek(model, pk)
        else:  # one anonymous variant of one object, dropped outside a request
            query = rng.choice(QUERIES)
            accept = pick_accept(rng, query)
            extra = {} if accept is None else {"HTTP_ACCEPT": accept}
            request = RequestFactory().get(f"/items/{pk}/", query, **extra)
            key = key_of("item", "GET", pk, None, query, media_of(query, accept))
            view_class, wrapper = VIEWS["item"]
            assert wrapper.delete_cache(view_class(), request, pk=pk) is (key in model.held)
            model.held.pop(key, None)

    def peek(self, model: Model, pk: int) -> None:
        """``get_cache_only`` and ``get_cached_metadata`` of one anonymous
        variant outside a request: the entry if fresh or stale (an expired
        one kept for stale-if-error is not served), never a render."""
        rng = self.rng
        query = rng.choice([query for query in QUERIES if ("cart", "1") not in query])
        accept = pick_accept(rng, query)
        extra = {} if accept is None else {"HTTP_ACCEPT": accept}
        factory = RequestFactory()
        media = media_of(query, accept)
        key = key_of("item", "GET", pk, None, query, media)
        view_class, wrapper = VIEWS["item"]
        phase = model.phase(key)
        held = model.held.get(key)
        # A plain request sends no X-Tenant: an entry that varies on it is
        # served only if it was rendered for none.
        served = phase in ("fresh", "stale") and held.tenant is None
        request = factory.get(f"/items/{pk}/", query, **extra)
        response = wrapper.get_cache_only(view_class(), request, pk=pk)
        request = factory.get(f"/items/{pk}/", query, **extra)
        metadata = wrapper.get_cached_metadata(view_class(), request, pk=pk)
        step = f"peek /items/{pk}/?{query} accept={accept} phase={phase}"
        got = (
            None if response is CACHE_MISSING else (response.status_code, response.content),
            None if metadata is None else (metadata["cache_status"], metadata["cached_at"]),
        )
        status = {"fresh": CacheStatus.HIT, "stale": CacheStatus.STALE}.get(phase)
        want = (
            (200, content_of(held.body, media)) if served else None,
            (status, iso(held.stored_at)) if status is not None else None,
        )
        assert got == want, step

    def refresh(self, model: Model, pk: int) -> None:
        """``refresh()`` of one anonymous variant outside a request (as a
        command or a rule's rewarm would): rendered now, and stored."""
        rng = self.rng
        # A plain request has no session to read (the middleware gives one).
        query = rng.choice([query for query in QUERIES if ("cart", "1") not in query])
        accept = pick_accept(rng, query)
        extra = {} if accept is None else {"HTTP_ACCEPT": accept}
        request = RequestFactory().get(f"/items/{pk}/", query, **extra)
        media = media_of(query, accept)
        key = key_of("item", "GET", pk, None, query, media)
        view_class, wrapper = VIEWS["item"]
        step = f"refresh /items/{pk}/?{query} accept={accept} failing={failing[0]}"
        if failing[0] == "raise":
            with pytest.raises(Unavailable):
                wrapper.refresh(view_class(), request, pk=pk)
            return  # a refresh that raises keeps the entry
        response = wrapper.refresh(view_class(), request, pk=pk)
        live = render_of("item", pk, None, "GET", query)
        if failing[0] == "500" or any(name in UNSTORABLE for name, _ in query):
            model.held.pop(key, None)  # a refresh whose response is not stored drops the entry
            if failing[0] == "500":
                live = {"error": "down", "view": "item"}
            status = 500 if failing[0] else 200
            expected = Expected(status, live, media, "REFRESH", status_line("fwd=request"))
        else:
            model.held[key] = Held(live, media, model.now)
            expected = Expected(
                200, live, media, "REFRESH", status_line("fwd=request", "stored"), model.now
            )
        check(response, expected, ("item", "GET", query), None, None, step)


def run_model(seed: int, steps: int, commits) -> None:
    run = Run(seed, commits)
    rng = run.rng
    # Whole seconds: Age, ttl= and Last-Modified are then exact.
    with frozen_clock(datetime.fromtimestamp(math.floor(time.time()), UTC)) as clock:
        for name in VIEWS:
            invalidate(name)
        model = Model(now=_engine.now())
        for step in range(steps):
            roll = rng.random()
            if roll < 0.78:
                run.request(model, step)
            elif roll < 0.85:
                run.change(model)
            elif roll < 0.95:
                clock.advance(rng.choice(ADVANCES))
                model.now = _engine.now()
            else:
                failing[0] = rng.choice((None, None, None, "500", "raise"))


@pytest.mark.parametrize("store", on("memory", "django", "redis"), indirect=True)
@pytest.mark.parametrize("seed", range(int(os.environ.get("MODEL_SEEDS", "4"))))
@override_settings(MIDDLEWARE=MIDDLEWARE, SESSION_ENGINE=SESSIONS)
def test_cache_response_matches_the_model(store, seed, django_capture_on_commit_callbacks):
    run_model(seed, steps=600, commits=django_capture_on_commit_callbacks)
