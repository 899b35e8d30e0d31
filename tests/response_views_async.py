"""Async views (and their URLconf) for the async ``cache_response`` tests.

DRF's own ``APIView.dispatch`` does not await ``async def`` handlers, so the
views here are Django's: ``async def`` function views and
``django.views.View`` subclasses with ``async def get``, plus
:class:`AwaitingAPIView`, a stand-in for an APIView whose dispatch awaits
async handlers (as adrf's does). Every view body and template render is
counted in ``CALLS``, and every payload says what it was rendered for.
"""

import asyncio
import inspect
import json
from collections import Counter
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.template.response import SimpleTemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import get_language
from django.views import View
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from restflow.caching.cache_response import cache_response
from tests.parking import Gate

CALLS: Counter = Counter()


async def user_of_request(request):
    """The request's user, read without blocking the loop: ``auser()``
    (Django 5.0+), else the lazy ``request.user`` in a thread."""
    auser = getattr(request, "auser", None)
    if auser is not None:
        return await auser()

    def load():
        user = getattr(request, "user", None)
        if user is not None:
            user.is_authenticated  # noqa: B018 - evaluates the lazy user here
        return user

    return await sync_to_async(load)()


async def payload(request, pk, counter):
    CALLS[counter] += 1
    await asyncio.sleep(0)  # a real await inside the view body
    user = await user_of_request(request)
    return {
        "id": int(pk),
        "language": get_language(),
        "time_zone": timezone.get_current_timezone_name(),
        "user": user.pk if getattr(user, "is_authenticated", False) else None,
        "query": request.GET.urlencode(),
        "run": CALLS[counter],
    }


# --- an async function view ---------------------------------------------------


@cache_response(ttl=60, set_cache_headers=True)
async def article_view(request, pk):
    return JsonResponse(await payload(request, pk, "article_view"))


# --- an async class-based view, and a subclass that inherits its handler ------


class ArticleView(View):
    @cache_response(ttl=60, set_cache_headers=True)
    async def get(self, request, pk):
        return JsonResponse(await payload(request, pk, f"{type(self).__name__}.get"))


class OtherArticleView(ArticleView):
    pass


# --- a view that negotiates its media type itself ------------------------------


@cache_response(ttl=60, set_cache_headers=True)
async def negotiated_view(request, pk):
    CALLS["negotiated_view"] += 1
    # (get_preferred_type is Django 5.2+)
    if request.accepts("text/plain") and not request.accepts("application/json"):
        return HttpResponse(f"text:{pk}", content_type="text/plain")
    return JsonResponse({"id": pk})


# --- a view that serves every method ------------------------------------------


@cache_response(ttl=60, set_cache_headers=True)
async def any_method_view(request):
    CALLS[f"any_method_view.{request.method}"] += 1
    return JsonResponse({"method": request.method})


# --- responses that must not be stored ------------------------------------------


class CountingTemplate:
    """A template object ``SimpleTemplateResponse`` renders (no engine needed)."""

    def render(self, context=None, request=None):
        CALLS["template"] += 1
        return f"<p>{context['case']} {context['run']}</p>"


async def streamed():
    yield b"stream"
    yield b"ed"


class BehaviourView(View):
    """One response per ``case``: which of them are stored is the test."""

    @cache_response(ttl=60, set_cache_headers=True)
    async def get(self, request, case):
        CALLS[f"behaviour.{case}"] += 1
        body = {"case": case, "run": CALLS[f"behaviour.{case}"]}
        if case == "stream":
            return StreamingHttpResponse(streamed())
        if case == "template":
            return SimpleTemplateResponse(CountingTemplate(), body)
        response = JsonResponse(body, status={"missing": 404, "created": 201}.get(case, 200))
        if case == "cookie":
            response.set_cookie("session", "for-one-client")
        elif case == "vary-star":
            response["Vary"] = "*"
        elif case == "private":
            response["Cache-Control"] = "max-age=60, private"
        elif case == "no-store":
            response["Cache-Control"] = "no-store"
        elif case == "public":
            response["Cache-Control"] = "public, max-age=60"
        return response


# --- async policies ------------------------------------------------------------


async def below_500(response, *args, **kwargs):
    await asyncio.sleep(0)
    return response.status_code < 500


async def is_draft(response, *args, **kwargs):
    await asyncio.sleep(0)
    return json.loads(response.content)["draft"]


async def short_for_errors(response, *args, **kwargs):
    await asyncio.sleep(0)
    return 5 if response.status_code >= 400 else timedelta(minutes=10)


@cache_response(ttl=60, cache_if=below_500)
async def missing_view(request, pk):
    CALLS["missing_view"] += 1
    return JsonResponse({"pk": pk}, status=404 if pk % 2 else 200)


@cache_response(ttl=60, cache_unless=is_draft)
async def draft_view(request, pk):
    CALLS["draft_view"] += 1
    return JsonResponse({"pk": pk, "draft": pk % 2 == 1})


@cache_response(ttl=short_for_errors, cache_if=below_500, set_cache_headers=True)
async def ttl_view(request, pk):
    CALLS["ttl_view"] += 1
    return JsonResponse({"pk": pk}, status=404 if pk % 2 else 200)


# --- concurrency ---------------------------------------------------------------


#: Closed by a test that needs a render in flight while other requests arrive.
gate = Gate()


@cache_response(ttl=60, set_cache_headers=True)
async def slow_view(request):
    CALLS["slow_view"] += 1
    await gate.passed()
    return JsonResponse({"run": CALLS["slow_view"]})


@cache_response(ttl=60, set_cache_headers=True)
async def slow_cookie_view(request):
    CALLS["slow_cookie_view"] += 1
    await gate.passed()
    response = JsonResponse({"ok": True})
    response.set_cookie("who", request.headers["X-Who"])
    return response


# --- users -----------------------------------------------------------------------


class TokenUser:
    """An authenticated user with no primary key (a stateless token, say)."""

    is_authenticated = True
    pk = None


class TokenUserMiddleware:
    """Authenticates every request as a :class:`TokenUser`, through ``auser``
    only: ``request.user`` fails when touched, as a lazy user that would
    query the database on the event loop does."""

    async_capable, sync_capable = True, False

    def __init__(self, get_response):
        self.get_response = get_response

    async def __call__(self, request):
        async def auser():
            return TokenUser()

        request.auser = auser
        return await self.get_response(request)


# --- an APIView that awaits async handlers ---------------------------------------


class TextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        CALLS["render"] += 1
        return f"text:{data['id']}".encode()


class CountingJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        CALLS["render"] += 1
        return super().render(data, accepted_media_type, renderer_context)


class AwaitingAPIView(APIView):
    """DRF's dispatch, awaiting the handler: a stand-in for adrf's APIView."""

    async def dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
            response = handler(request, *args, **kwargs)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response


class DrfArticleView(AwaitingAPIView):
    renderer_classes = (CountingJSONRenderer, TextRenderer)

    @cache_response(ttl=60, set_cache_headers=True)
    async def get(self, request, pk):
        CALLS["DrfArticleView.get"] += 1
        return Response({"id": pk, "media_type": request.accepted_media_type})


urlpatterns = [
    path("articles/<int:pk>/", article_view),
    path("class-articles/<int:pk>/", ArticleView.as_view()),
    path("other-class-articles/<int:pk>/", OtherArticleView.as_view()),
    path("negotiated/<int:pk>/", negotiated_view),
    path("any-method/", any_method_view),
    path("behaviour/<str:case>/", BehaviourView.as_view()),
    path("missing/<int:pk>/", missing_view),
    path("drafts/<int:pk>/", draft_view),
    path("ttl/<int:pk>/", ttl_view),
    path("slow/", slow_view),
    path("slow-cookie/", slow_cookie_view),
    path("drf-articles/<int:pk>/", DrfArticleView.as_view()),
]
