"""Views (and their URLconf) for the ``cache_response`` tests.

Every payload says what it was rendered for (language, time zone, user,
version, query) and every view body, serializer and renderer run is counted
in ``CALLS``, so a test can tell a hit (nothing ran) from a render, and which
variant it was served.
"""

from collections import Counter
from datetime import timedelta

from django.http import StreamingHttpResponse
from django.urls import include, path, re_path
from django.utils import timezone
from django.utils.translation import get_language
from rest_framework import serializers, viewsets
from rest_framework.decorators import action, api_view, renderer_classes
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.versioning import BaseVersioning
from rest_framework.views import APIView

from restflow.caching.cache_response import cache_response

CALLS: Counter = Counter()


class CountingJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        CALLS["render"] += 1
        return super().render(data, accepted_media_type, renderer_context)


class TextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        CALLS["render"] += 1
        return f"text:{data['id']}".encode()


class HeaderVersioning(BaseVersioning):
    """The version rides in a header: the URL is the same for every version."""

    def determine_version(self, request, *args, **kwargs):
        return request.META.get("HTTP_X_API_VERSION", "1")


class ArticleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    language = serializers.CharField(allow_null=True)
    time_zone = serializers.CharField()
    user = serializers.IntegerField(allow_null=True)
    version = serializers.CharField(allow_null=True)
    query = serializers.CharField(allow_blank=True)
    run = serializers.IntegerField()

    def to_representation(self, instance):
        CALLS["serializer"] += 1
        return super().to_representation(instance)


def article(request, pk, counter):
    CALLS[counter] += 1
    user = getattr(request, "user", None)
    return ArticleSerializer(
        {
            "id": int(pk),
            "language": get_language(),
            "time_zone": timezone.get_current_timezone_name(),
            "user": user.pk if getattr(user, "is_authenticated", False) else None,
            "version": request.version,
            "query": request.query_params.urlencode(),
            "run": CALLS[counter],
        }
    ).data


# --- an APIView, and a subclass that inherits its cached handler -----------


class ArticleView(APIView):
    renderer_classes = (CountingJSONRenderer, TextRenderer)
    versioning_class = HeaderVersioning

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request, pk):
        return Response(article(request, pk, "ArticleView.get"))


class OtherArticleView(ArticleView):
    pass


class PositionalArticleView(APIView):
    """Reached through an unnamed regex group: the pk arrives in *args."""

    renderer_classes = (CountingJSONRenderer,)

    @cache_response(ttl=60)
    def get(self, request, *args, **kwargs):
        return Response(article(request, args[0], "PositionalArticleView.get"))


# --- a ViewSet, routed ------------------------------------------------------


class ArticleViewSet(viewsets.ViewSet):
    renderer_classes = (CountingJSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def list(self, request):
        return Response([article(request, 0, "ArticleViewSet.list")])

    @cache_response(ttl=60, set_cache_headers=True)
    def retrieve(self, request, pk=None):
        return Response(article(request, pk, "ArticleViewSet.retrieve"))

    @action(detail=True, methods=["get", "post"])
    @cache_response(ttl=60, set_cache_headers=True)
    def summary(self, request, pk=None):
        return Response(article(request, pk, "ArticleViewSet.summary"))

    @cache_response(ttl=60, set_cache_headers=True)
    @action(detail=False)
    def recent(self, request):
        return Response([article(request, 1, "ArticleViewSet.recent")])


router = SimpleRouter()
router.register("set", ArticleViewSet, basename="article-set")


# --- an @api_view function, with a policy decorator between ----------------


@api_view(["GET"])
@renderer_classes([CountingJSONRenderer])
@cache_response(ttl=60, set_cache_headers=True)
def article_function_view(request, pk):
    return Response(article(request, pk, "article_function_view"))


# --- responses that must not be stored ---------------------------------------


class BehaviourView(APIView):
    """One response per ``case``: which of them are stored is the test."""

    renderer_classes = (CountingJSONRenderer,)

    @cache_response(ttl=60, set_cache_headers=True)
    def get(self, request, case):
        CALLS[f"behaviour.{case}"] += 1
        body = {"case": case, "run": CALLS[f"behaviour.{case}"]}
        if case == "stream":
            return StreamingHttpResponse(iter([b"streamed"]))
        response = Response(body, status={"missing": 404, "created": 201}.get(case, 200))
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


class MissingView(APIView):
    """Returns 404 for odd pks; cache_if decides that 404s are stored too."""

    renderer_classes = (CountingJSONRenderer,)

    @cache_response(ttl=60, cache_if=lambda response, *args, **kwargs: response.status_code < 500)
    def get(self, request, pk):
        CALLS["MissingView.get"] += 1
        return Response({"pk": pk}, status=404 if pk % 2 else 200)


class DraftView(APIView):
    """cache_unless keeps drafts out, given the live DRF response."""

    renderer_classes = (CountingJSONRenderer,)

    @cache_response(ttl=60, cache_unless=lambda response, *args, **kwargs: response.data["draft"])
    def get(self, request, pk):
        CALLS["DraftView.get"] += 1
        return Response({"pk": pk, "draft": pk % 2 == 1})


def _short_for_errors(response, *args, **kwargs):
    return 5 if response.status_code >= 400 else timedelta(minutes=10)


class TtlView(APIView):
    renderer_classes = (CountingJSONRenderer,)

    @cache_response(
        ttl=_short_for_errors,
        cache_if=lambda response, *args, **kwargs: True,
        set_cache_headers=True,
    )
    def get(self, request, pk):
        CALLS["TtlView.get"] += 1
        return Response({"pk": pk}, status=404 if pk % 2 else 200)


urlpatterns = [
    path("articles/<int:pk>/", ArticleView.as_view()),
    path("other-articles/<int:pk>/", OtherArticleView.as_view()),
    re_path(r"^positional/(\d+)/$", PositionalArticleView.as_view()),
    path("function/<int:pk>/", article_function_view),
    path("behaviour/<str:case>/", BehaviourView.as_view()),
    path("missing/<int:pk>/", MissingView.as_view()),
    path("drafts/<int:pk>/", DraftView.as_view()),
    path("ttl/<int:pk>/", TtlView.as_view()),
    path("", include(router.urls)),
]
