"""Part 1 of issue 12: the decorators' positional order is drf-restflow 2.0.1's.

drf-restflow documents ``cache_result(key_constructor, ttl, invalidates_on,
cache_if, cache_unless)``, ``cache_response(key_constructor, ttl,
invalidates_on, cache_if, cache_unless, set_cache_headers)`` and
``InvalidationRule(model, rewarm, field_mapping, require_args,
trigger_on_create, watch_fields, invalidate_when, invalidator, dispatcher,
dispatcher_config, batch, raise_exception)``; code that passes them by
position must mean the same thing here.
"""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import (
    ArgsKeyField,
    CacheStatus,
    ConstantKeyField,
    InvalidationRule,
    KeyConstructor,
    cache_response,
    cache_result,
)
from tests.testapp.models import Article

ORIGIN_CACHE_RESULT = ["key_constructor", "ttl", "invalidates_on", "cache_if", "cache_unless"]
ORIGIN_CACHE_RESPONSE = [*ORIGIN_CACHE_RESULT, "set_cache_headers"]
ORIGIN_RULE = [
    "model",
    "rewarm",
    "field_mapping",
    "require_args",
    "trigger_on_create",
    "watch_fields",
    "invalidate_when",
    "invalidator",
    "dispatcher",
    "dispatcher_config",
    "batch",
    "raise_exception",
]


def positional(callable_) -> list[str]:
    """The names a caller may pass by position, in order."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(callable_).parameters.values() if p.kind in kinds]


class ByUser(KeyConstructor):
    """Keys by ``user_id`` only: ``verbose`` is not part of the key."""

    user = ArgsKeyField("user_id")

    class Meta:
        namespace = "compat"


def test_positional_orders_are_the_origins():
    assert positional(cache_result) == ORIGIN_CACHE_RESULT
    assert positional(cache_response) == ORIGIN_CACHE_RESPONSE
    assert positional(InvalidationRule) == ORIGIN_RULE


def test_a_positional_key_constructor_keys_the_function(store):
    calls = []

    @cache_result(ByUser, ttl=300)
    def profile(user_id, verbose=False):
        calls.append((user_id, verbose))
        return {"user": user_id}

    assert profile.get_cache_key(7).startswith("compat::")
    assert profile(7) == {"user": 7}
    # verbose is not in the key: the same entry answers.
    value, metadata = profile.get_with_metadata(7, verbose=True)
    assert (value, metadata["cache_status"]) == ({"user": 7}, CacheStatus.HIT)
    assert calls == [(7, False)]


def test_a_positional_dict_is_an_inline_constructor(store):
    calls = []

    @cache_result({"fields": {"user": ArgsKeyField("user_id")}, "namespace": "inline"}, ttl=60)
    def profile(user_id, verbose=False):
        calls.append(user_id)
        return user_id

    assert profile.get_cache_key(1).startswith("inline::")
    profile(1)
    profile(1, verbose=True)
    assert calls == [1]


def test_every_parameter_by_position():
    decided = []

    def cache_if(result, user_id, verbose=False):
        decided.append(result)
        return result != "no"

    @cache_result(ByUser, 60, [InvalidationRule(Article, False, {"user_id": "pk"})], cache_if)
    def profile(user_id, verbose=False):
        return "no" if user_id == 0 else "yes"

    profile(0)
    profile(0)
    profile(1)
    profile(1)
    assert decided == ["no", "no", "yes"]
    # The ttl is the second positional parameter: 60 seconds.
    assert profile.get_with_metadata(1)[1]["reset_at"] is not None


def test_the_seed_keyword_form_keeps_working():
    @cache_result(ttl=300)
    def double(x):
        return 2 * x

    assert double(2) == 4
    assert double.get_with_metadata(2)[1]["cache_status"] is CacheStatus.HIT


@pytest.mark.parametrize(
    ("given", "suggested"),
    [
        (300, "ttl=300"),
        (1.5, "ttl=1.5"),
        (timedelta(minutes=5), "ttl=datetime.timedelta"),
        (None, "ttl=None"),
    ],
)
def test_a_number_where_the_key_constructor_goes_says_ttl(given, suggested):
    with pytest.raises(TypeError, match="did you mean") as raised:
        cache_result(given)
    assert suggested in str(raised.value)
    assert "key_constructor" in str(raised.value)


@pytest.mark.parametrize("given", [60, timedelta(seconds=60)])
def test_cache_response_says_ttl_too(given):
    with pytest.raises(TypeError, match="did you mean ttl="):
        cache_response(given)


def test_a_bare_cache_result_says_what_to_change():
    with pytest.raises(TypeError, match=r"@cache_result\(\.\.\.\)|ttl="):

        @cache_result
        def f(x):
            return x


# -- cache_response --------------------------------------------------------------------------


class Page(KeyConstructor):
    """The response does not depend on anything the URL says."""

    page = ConstantKeyField("page", "about")


class AboutView(APIView):
    renders = 0

    @cache_response(Page, 120)
    def get(self, request):
        AboutView.renders += 1
        return Response({"renders": AboutView.renders})


class DefaultView(APIView):
    renders = 0

    @cache_response(None, ttl=120)
    def get(self, request):
        DefaultView.renders += 1
        return Response({"q": request.query_params.get("q")})


def test_cache_response_takes_its_key_constructor_and_ttl_by_position(store):
    AboutView.renders = 0
    view = AboutView.as_view()
    factory = APIRequestFactory()
    first = view(factory.get("/about?x=1"))
    second = view(factory.get("/about?x=2"))  # the query string is not in this key
    assert first.status_code == second.status_code == 200
    assert AboutView.renders == 1
    assert first.content == second.content


def test_cache_response_none_is_the_default_constructor(store):
    DefaultView.renders = 0
    view = DefaultView.as_view()
    factory = APIRequestFactory()
    view(factory.get("/d?q=a"))
    view(factory.get("/d?q=a"))
    view(factory.get("/d?q=b"))  # the default keys by the query string
    assert DefaultView.renders == 2


def test_cache_response_flags_by_position():
    class HeaderView(APIView):
        @cache_response(None, 60, None, None, None, True)
        def get(self, request):
            return Response({"ok": True})

    response = HeaderView.as_view()(APIRequestFactory().get("/h"))
    assert response["X-Cache-status"] == "MISS"


# -- InvalidationRule ----------------------------------------------------------------------


def test_invalidation_rule_by_position():
    def invalidate_when(instance):
        return True

    rule = InvalidationRule(
        Article,
        True,
        {"article_id": "pk"},
        ["article_id"],
        True,
        ["title"],
        invalidate_when,
        None,
        "inline",
        {},
        True,
        True,
    )
    assert rule.model is Article
    assert rule.rewarm is True
    assert rule.field_mapping == {"article_id": "pk"}
    assert tuple(rule.require_args) == ("article_id",)
    assert rule.trigger_on_create is True
    assert tuple(rule.watch_fields) == ("title",)
    assert rule.invalidate_when is invalidate_when
    assert rule.invalidator is None
    assert rule.dispatcher == "inline"
    assert rule.dispatcher_config == {}
    assert rule.batch is True
    assert rule.raise_exception is True


def test_invalidator_by_position():
    rule = InvalidationRule(
        Article, False, None, True, False, None, None, "tests.compat.test_signatures.drop"
    )
    assert rule.invalidator == "tests.compat.test_signatures.drop"
    assert rule.resolve_invalidator() is drop


def drop(wrapper, instance):
    wrapper.invalidate_all()
