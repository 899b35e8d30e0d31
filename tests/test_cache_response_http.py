"""HTTP caching semantics of ``cache_response`` (issue 15, item 4).

``Cache-Status`` (RFC 9211), ``Age`` (RFC 9111 §5.1), ``ETag`` /
``Last-Modified`` with ``304 Not Modified`` (RFC 9110 §13), and the opt-in
``Cache-Control`` (RFC 9111 §5.2.2, RFC 5861). Requests go through DRF's
``APIRequestFactory`` and the views' ``as_view()``; every view counts its
runs, so a test sees the 304 path never ran the view. The engine's clock is
frozen, so ``Age`` and ``ttl`` are exact. Each test taking ``store`` runs
on every store (tests/stores.py): memory, a Django cache and the Redis
servers, where the stored ``ETag`` and the entry's times go through the
serializer and a round trip.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import sys
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from django.test import AsyncRequestFactory, override_settings
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import CacheKeyField, cache_result, set_response_cache_header
from restflow.caching.cache_response import ResponseCacheKeyConstructor, cache_response
from restflow.caching.testing import frozen_clock, wait_for_refreshes

RUNS: Counter = Counter()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_HTTP = "Thu, 01 Jan 2026 00:00:00 GMT"


@pytest.fixture(autouse=True)
def _fresh_runs():
    RUNS.clear()
    yield
    RUNS.clear()


def get(view, path="/", **headers):
    return view.as_view()(APIRequestFactory().get(path, **headers))


class ArticleView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30)
    def get(self, request):
        RUNS["article"] += 1
        return Response({"run": RUNS["article"]}, headers={"Vary": "Accept-Language"})

    @cache_response(ttl=60)
    def post(self, request):
        RUNS["article.post"] += 1
        return Response({"posted": True})


def dispatched(view, request):
    """The DRF request ``view``'s dispatch would hand its handler, with the view set up."""
    view.setup(request)
    drf_request = view.initialize_request(request)
    view.request, view.headers = drf_request, view.default_response_headers
    view.initial(drf_request)
    return drf_request


def body_etag(response) -> str:
    return '"' + hashlib.blake2b(response.content, digest_size=16).hexdigest() + '"'


# --- Cache-Status and Age ------------------------------------------------------------


def test_cache_status_and_age_follow_the_entry(store):
    with frozen_clock(T0) as clock:
        miss = get(ArticleView)
        assert miss["Cache-Status"] == "restflow; fwd=miss; stored"
        assert "Age" not in miss  # rendered for this request: no cache in between
        clock.advance(48.5)
        hit = get(ArticleView)
        assert hit["Cache-Status"] == "restflow; hit; ttl=11"
        assert hit["Age"] == "48"
        clock.advance(16.5)  # 65 s: past the ttl of 60, inside the stale window
        stale = get(ArticleView)
        assert stale["Cache-Status"] == "restflow; fwd=stale; ttl=-5"
        assert stale["Age"] == "65"
        wait_for_refreshes()
    assert RUNS["article"] == 2  # the render, and the stale entry's refresh


def test_age_is_never_negative(store):
    with frozen_clock(T0) as clock:
        get(ArticleView)
        clock.set(datetime(2025, 12, 31, 23, 59, tzinfo=UTC))  # the clock stepped back
        hit = get(ArticleView)
    assert hit["Cache-Status"] == "restflow; hit; ttl=120"
    assert hit["Age"] == "0"


class RefusedView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, cache_if=lambda response, *args, **kwargs: False)
    def get(self, request):
        RUNS["refused"] += 1
        return Response({"run": RUNS["refused"]})


def test_a_response_cache_if_refuses_is_a_miss_not_stored(store):
    first, second = get(RefusedView), get(RefusedView)
    assert first["Cache-Status"] == second["Cache-Status"] == "restflow; fwd=miss"
    assert "ETag" not in first and "Age" not in second
    assert RUNS["refused"] == 2


def test_bypass_method_and_refresh_say_why_the_view_ran(store):
    view = ArticleView()
    factory = APIRequestFactory()
    posted = ArticleView.as_view()(factory.post("/"))
    assert posted["Cache-Status"] == "restflow; fwd=method"
    get(ArticleView)
    refreshed = ArticleView.get.refresh(view, factory.get("/"))
    assert refreshed["Cache-Status"] == "restflow; fwd=request; stored"
    bypassed = ArticleView.get.bypass_cache(view, dispatched(view, factory.get("/")))
    assert bypassed["Cache-Status"] == "restflow; fwd=bypass"
    assert RUNS["article"] == 3 and "Age" not in refreshed


def test_a_response_that_is_not_stored_carries_no_etag(store):
    # ETag validates a stored body (README): a response the view rendered
    # live and nothing kept (another method, bypass_cache, a Vary miss) has
    # none, as one cache_if refused has none. Found by
    # tests/test_cache_response_model.py.
    factory = APIRequestFactory()
    view = ArticleView()
    posted = ArticleView.as_view()(factory.post("/"))
    bypassed = ArticleView.get.bypass_cache(view, dispatched(view, factory.get("/")))
    stored = get(TenantView, HTTP_X_TENANT="a")
    vary_miss = get(TenantView, HTTP_X_TENANT="b")
    assert [r["Cache-Status"] for r in (posted, bypassed, vary_miss)] == [
        "restflow; fwd=method",
        "restflow; fwd=bypass",
        "restflow; fwd=vary-miss",
    ]
    assert [r.get("ETag") for r in (posted, bypassed, vary_miss)] == [None, None, None]
    assert stored["ETag"] == body_etag(stored)


class TenantView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60)
    def get(self, request):
        RUNS["tenant"] += 1
        return Response({"run": RUNS["tenant"]}, headers={"Vary": "X-Tenant"})


def test_an_entry_for_other_vary_values_is_a_vary_miss(store):
    get(TenantView, HTTP_X_TENANT="a")
    other = get(TenantView, HTTP_X_TENANT="b")
    assert other["Cache-Status"] == "restflow; fwd=vary-miss"
    assert RUNS["tenant"] == 2


def test_the_cache_name_is_a_setting():
    settings = {"CACHE_SETTINGS": {"CACHE_STATUS_NAME": "api-edge"}}
    with override_settings(RESTFLOW_SETTINGS=settings):
        assert get(ArticleView)["Cache-Status"] == "api-edge; fwd=miss; stored"
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"CACHE_STATUS_NAME": "my cache"}}):
        with pytest.raises(ImproperlyConfigured, match=r"CACHE_STATUS_NAME.*HTTP token"):
            get(ArticleView)


# --- collapsed: a request answered with another's render --------------------------


LEADER_RENDERING = threading.Event()
FOLLOWER_KEYED = threading.Event()


class ArrivalField(CacheKeyField):
    """Tells the leader's view that the second request is being keyed."""

    def payload(self, bound, shape):
        if threading.current_thread().name == "follower":
            FOLLOWER_KEYED.set()
        return {}


class ArrivalKey(ResponseCacheKeyConstructor):
    arrival = ArrivalField()


class CollapsingView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ArrivalKey, ttl=60)
    def get(self, request):
        RUNS["collapsing"] += 1
        LEADER_RENDERING.set()
        assert FOLLOWER_KEYED.wait(30)  # a hang guard, not a timing
        return Response({"run": RUNS["collapsing"]})


@pytest.fixture
def no_thread_switches():
    """No forced GIL hand-over: a thread that holds the GIL keeps it until it
    blocks. The follower holds it from its key to its wait on the leader's
    render, so the leader, woken by the key, renders only once the follower
    waits."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000)
    LEADER_RENDERING.clear()
    FOLLOWER_KEYED.clear()
    yield
    sys.setswitchinterval(interval)


def test_a_request_that_waited_for_another_render_is_collapsed(no_thread_switches):
    """On the memory store, whose follower joins the leader's flight without
    releasing the GIL after its key (a shared store's lookup releases it, so
    there the leader could finish first). How a request was answered is
    read the same way for every store: a MISS this request did not render."""
    results = {}

    def fetch(name):
        results[name] = get(CollapsingView)

    leader = threading.Thread(target=fetch, args=("leader",), name="leader")
    leader.start()
    assert LEADER_RENDERING.wait(30)
    follower = threading.Thread(target=fetch, args=("follower",), name="follower")
    follower.start()
    leader.join(60), follower.join(60)
    assert RUNS["collapsing"] == 1
    assert results["leader"]["Cache-Status"] == "restflow; fwd=miss; stored"
    assert results["follower"]["Cache-Status"] == "restflow; fwd=miss; stored; collapsed"
    assert results["follower"].content == results["leader"].content


class TaskArrivalField(CacheKeyField):
    """The async twin of :class:`ArrivalField`: tells the leading task that
    the task named ``follower`` is being keyed."""

    def payload(self, bound, shape):
        task = asyncio.current_task()
        if task is not None and task.get_name() == "follower":
            ASYNC_EVENTS.get()["follower keyed"].set()
        return {}


class TaskArrivalKey(ResponseCacheKeyConstructor):
    arrival = TaskArrivalField()


#: The events of one test's loop: "leader rendering", "follower keyed".
ASYNC_EVENTS: contextvars.ContextVar[dict[str, asyncio.Event]] = contextvars.ContextVar("events")


@cache_response(TaskArrivalKey, ttl=60)
async def async_collapsing(request):
    RUNS["async collapsing"] += 1
    events = ASYNC_EVENTS.get()
    events["leader rendering"].set()
    await asyncio.wait_for(events["follower keyed"].wait(), 30)  # a hang guard
    return JsonResponse({"run": RUNS["async collapsing"]})


def test_an_async_request_that_awaited_another_render_is_collapsed():
    """Two tasks on one loop, memory store: the follower is keyed and awaits
    the leader's render without yielding in between, so the leader (waiting
    for that key) renders only once the follower waits."""
    factory = AsyncRequestFactory()

    async def both():
        events = {"leader rendering": asyncio.Event(), "follower keyed": asyncio.Event()}
        ASYNC_EVENTS.set(events)
        leader = asyncio.create_task(async_collapsing(factory.get("/")), name="leader")
        await asyncio.wait_for(events["leader rendering"].wait(), 30)
        follower = asyncio.create_task(async_collapsing(factory.get("/")), name="follower")
        return await asyncio.gather(leader, follower)

    leader, follower = async_to_sync(both)()
    assert RUNS["async collapsing"] == 1
    assert leader["Cache-Status"] == "restflow; fwd=miss; stored"
    assert follower["Cache-Status"] == "restflow; fwd=miss; stored; collapsed"
    assert follower.content == leader.content


# --- ETag, Last-Modified and 304 ---------------------------------------------------


def test_a_matching_if_none_match_is_a_304_without_running_the_view(store):
    with frozen_clock(T0) as clock:
        miss = get(ArticleView)
        etag = miss["ETag"]
        assert etag == body_etag(miss)  # strong: quoted, no W/
        assert miss["Last-Modified"] == T0_HTTP
        clock.advance(10)
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            not_modified = get(ArticleView, HTTP_IF_NONE_MATCH=sent)
            assert not_modified.status_code == 304
            assert not_modified.content == b""
            assert not_modified["ETag"] == etag
            assert not_modified["Vary"] == "Accept-Language"
            assert not_modified["Last-Modified"] == T0_HTTP
            assert not_modified["Cache-Status"] == "restflow; hit; ttl=50"
            assert not_modified["Age"] == "10"
        assert RUNS["article"] == 1  # the 304s never ran the view
        changed = get(ArticleView, HTTP_IF_NONE_MATCH='"other"')
    assert changed.status_code == 200 and changed["ETag"] == etag
    assert changed.content == miss.content


@pytest.mark.urls("tests.response_views")
def test_the_drf_test_client_gets_a_304_and_the_x_cache_headers_stay(store):
    from tests.response_views import CALLS

    CALLS.clear()
    client = APIClient()
    with frozen_clock(T0) as clock:
        miss = client.get("/articles/7/")
        clock.advance(2)
        not_modified = client.get("/articles/7/", HTTP_IF_NONE_MATCH=miss["ETag"])
    assert CALLS["ArticleView.get"] == 1 and CALLS["render"] == 1  # no view, no renderer
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified["ETag"] == miss["ETag"]
    assert not_modified["Cache-Status"] == "restflow; hit; ttl=58"
    assert not_modified["Age"] == "2"
    assert not_modified["X-Cache-status"] == "HIT"  # set_cache_headers=True, as before
    assert not_modified["X-Cached-at"] == miss["X-Cached-at"] == "2026-01-01T00:00:00+00:00"


def test_the_etag_is_computed_when_stored_not_per_hit(store, monkeypatch):
    hashed = []
    blake2b = hashlib.blake2b

    def counting(*args, **kwargs):
        hashed.append(args)
        return blake2b(*args, **kwargs)

    monkeypatch.setattr(hashlib, "blake2b", counting)
    etags = {get(ArticleView)["ETag"] for _ in range(3)}
    assert len(etags) == 1 and len(hashed) == 1


def test_if_modified_since_and_if_none_match_wins(store):
    with frozen_clock(T0) as clock:
        get(ArticleView)
        clock.advance(5)
        since = get(ArticleView, HTTP_IF_MODIFIED_SINCE=T0_HTTP)
        assert since.status_code == 304
        earlier = get(ArticleView, HTTP_IF_MODIFIED_SINCE="Wed, 31 Dec 2025 23:59:59 GMT")
        assert earlier.status_code == 200
        # If-None-Match is evaluated instead of If-Modified-Since (RFC 9110 §13.1.3).
        both = get(ArticleView, HTTP_IF_MODIFIED_SINCE=T0_HTTP, HTTP_IF_NONE_MATCH='"other"')
        assert both.status_code == 200
        # A failed If-Match is a 412 (RFC 9110 §13.1.1), also without running the view.
        assert get(ArticleView, HTTP_IF_MATCH='"other"').status_code == 412
    assert RUNS["article"] == 1


def test_head_is_answered_304_and_other_methods_run_the_view(store):
    factory = APIRequestFactory()
    etag = get(ArticleView)["ETag"]
    head = ArticleView.as_view()(factory.head("/"))
    head_304 = ArticleView.as_view()(factory.head("/", HTTP_IF_NONE_MATCH=head["ETag"]))
    assert head_304.status_code == 304
    posted = ArticleView.as_view()(factory.post("/", HTTP_IF_NONE_MATCH=etag))
    assert posted.status_code == 200
    assert RUNS["article.post"] == 1


def test_a_stored_error_is_never_answered_304(store):
    class MissingView(APIView):
        renderer_classes = (JSONRenderer,)

        @cache_response(ttl=60, cache_if=lambda response, *args, **kwargs: True)
        def get(self, request):
            RUNS["missing"] += 1
            return Response({"detail": "no"}, status=404)

    etag = get(MissingView)["ETag"]
    again = get(MissingView, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 404 and RUNS["missing"] == 1  # RFC 9110 §13.2.1


class OwnValidatorsView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, cache_control="public")
    def get(self, request):
        RUNS["own"] += 1
        return Response(
            {"run": 1},
            headers={
                "ETag": '"v1"',
                "Last-Modified": "Mon, 01 Dec 2025 00:00:00 GMT",
                "Cache-Control": "max-age=5",
            },
        )


def test_a_views_own_validators_and_cache_control_are_kept(store):
    first = get(OwnValidatorsView)
    assert first["ETag"] == '"v1"'
    assert first["Last-Modified"] == "Mon, 01 Dec 2025 00:00:00 GMT"
    assert first["Cache-Control"] == "max-age=5"
    assert get(OwnValidatorsView, HTTP_IF_NONE_MATCH='"v1"').status_code == 304
    since = get(OwnValidatorsView, HTTP_IF_MODIFIED_SINCE="Mon, 01 Dec 2025 00:00:00 GMT")
    assert since.status_code == 304 and RUNS["own"] == 1


class QuietView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, cache_status=False, conditional=False)
    def get(self, request):
        RUNS["quiet"] += 1
        return Response({"run": RUNS["quiet"]})


def test_the_headers_can_be_turned_off(store):
    first = get(QuietView)
    second = get(QuietView, HTTP_IF_NONE_MATCH="*")
    assert second.status_code == 200 and RUNS["quiet"] == 1
    for response in (first, second):
        assert not {"Cache-Status", "Age", "ETag", "Last-Modified", "Cache-Control"} & set(
            response.headers
        )


# --- Cache-Control ------------------------------------------------------------------


class PublicView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60, stale_while_revalidate=30, stale_if_error=120, cache_control="public")
    def get(self, request):
        RUNS["public"] += 1
        status = 200 if request.query_params.get("ok", "1") == "1" else 500
        return Response({"run": RUNS["public"]}, status=status)


class PrivateView(APIView):
    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=300, stale_while_revalidate=0, cache_control="private")
    def get(self, request):
        return Response({"private": True})


def test_cache_control_is_derived_from_the_decorator(store):
    directives = "public, max-age=60, stale-while-revalidate=30, stale-if-error=120"
    with frozen_clock(T0) as clock:
        assert get(PublicView)["Cache-Control"] == directives
        clock.advance(20)
        hit = get(PublicView)
        assert hit["Cache-Control"] == directives and hit["Age"] == "20"
        assert get(PublicView, HTTP_IF_NONE_MATCH=hit["ETag"])["Cache-Control"] == directives
        # Not stored (a 500): not the cache's to describe.
        assert "Cache-Control" not in get(PublicView, "/?ok=0")
    assert get(PrivateView)["Cache-Control"] == "private, max-age=300"


def test_cache_control_is_off_by_default_and_checked(store):
    assert "Cache-Control" not in get(ArticleView)
    with pytest.raises(ValueError, match=r'"public".*"private"'):
        cache_response(cache_control="public, max-age=5")
    with pytest.raises(TypeError, match="cache_status must be True or False"):
        cache_response(cache_status="yes")


# --- async views ----------------------------------------------------------------------


@cache_response(ttl=60)
async def async_article(request):
    RUNS["async"] += 1
    return JsonResponse({"run": RUNS["async"]})


def test_an_async_view_answers_304_without_running(store):
    factory = AsyncRequestFactory()
    with frozen_clock(T0) as clock:
        miss = async_to_sync(async_article)(factory.get("/"))
        assert miss["Cache-Status"] == "restflow; fwd=miss; stored"
        clock.advance(3)
        request = factory.get("/", headers={"If-None-Match": miss["ETag"]})
        not_modified = async_to_sync(async_article)(request)
    assert not_modified.status_code == 304
    assert not_modified["Cache-Status"] == "restflow; hit; ttl=57"
    assert not_modified["Age"] == "3"
    assert RUNS["async"] == 1


# --- set_response_cache_header(..., cache_status=True) ---------------------------------


@cache_result(ttl=30)
def payload(n):
    RUNS["payload"] += 1
    return {"n": n}


def test_set_response_cache_header_writes_cache_status_when_asked(store):
    with frozen_clock(T0) as clock:
        value, metadata = payload.get_with_metadata(1)
        plain = set_response_cache_header(Response(value), metadata)
        assert "Cache-Status" not in plain and "Age" not in plain  # the default is unchanged
        miss = set_response_cache_header(Response(value), metadata, cache_status=True)
        assert miss["Cache-Status"] == "restflow; fwd=miss; stored"
        assert "Age" not in miss
        clock.advance(12)
        value, metadata = payload.get_with_metadata(1)
        hit = set_response_cache_header(Response(value), metadata, cache_status=True)
    assert hit["Cache-Status"] == "restflow; hit; ttl=18"
    assert hit["Age"] == "12"
    assert hit["X-Cache-status"] == "HIT"


class PayloadView(APIView):
    """Caches its payload and says so, as the spec shows, and is itself cached."""

    renderer_classes = (JSONRenderer,)

    @cache_response(ttl=60)
    def get(self, request):
        RUNS["payload-view"] += 1
        value, metadata = payload.get_with_metadata(1)
        return set_response_cache_header(Response(value), metadata, cache_status=True)


def test_an_entry_never_replays_the_headers_of_the_render_that_made_it(store):
    # The payload lookup's X-Cache-* / Cache-Status / Age are about that one
    # render; a hit on the response never looked the payload up.
    with frozen_clock(T0) as clock:
        first = get(PayloadView)
        clock.advance(5)
        hit = get(PayloadView)
    assert first["X-Cache-status"] == "MISS"
    assert first["Cache-Status"] == "restflow; fwd=miss; stored, restflow; fwd=miss; stored"
    assert hit["Cache-Status"] == "restflow; hit; ttl=55"
    assert hit["Age"] == "5"
    assert "X-Cache-status" not in hit and "X-Cached-at" not in hit
    assert RUNS["payload-view"] == 1
