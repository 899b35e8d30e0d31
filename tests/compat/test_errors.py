"""Part 6 of issue 12: the exceptions drf-restflow 2.0.1 code catches.

Where restflow checks earlier than the origin (at decoration instead of at
the first signal), it raises the origin's exception type, so an ``except``
or ``pytest.raises`` written for the origin still catches it.
"""

from __future__ import annotations

import pytest

from restflow.caching import InvalidationRule, cache_result
from restflow.caching.registry import CacheRegister
from tests.testapp.models import Article


def test_an_invalidator_string_without_a_dot_is_a_value_error():
    with pytest.raises(ValueError, match="dotted import path"):
        InvalidationRule(Article, invalidator="drop_everything")


def test_an_invalidator_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="invalidator"):
        InvalidationRule(Article, invalidator=42)


def test_field_mapping_with_an_invalidator_is_a_value_error():
    with pytest.raises(ValueError, match="mutually exclusive"):
        InvalidationRule(Article, field_mapping={"a": "pk"}, invalidator="x.y")


def undecorated(article_id):
    return article_id


def test_adding_an_undecorated_function_is_an_attribute_error():
    rule = InvalidationRule(Article, field_mapping={"article_id": "pk"})
    with pytest.raises(AttributeError, match="decorated function"):
        CacheRegister.add(Article, undecorated, rule)
    # ...and a TypeError, which restflow raised before.
    with pytest.raises(TypeError):
        CacheRegister.add(model=Article, func=undecorated, invalidation_rule=rule)
    assert CacheRegister.get_status()["models"] == {}


class NotAModel:
    """A stand-in some test suites give rules: not a Django model."""


def test_a_rule_on_a_stand_in_is_made_and_refused_at_registration():
    rule = InvalidationRule(NotAModel, require_args=False)
    assert rule.model is NotAModel
    with pytest.raises(TypeError, match="model class"):

        @cache_result(ttl=60, invalidates_on=[rule])
        def feed():
            return []

    with pytest.raises(TypeError, match="model class"):
        CacheRegister.add(NotAModel, _cached_feed, InvalidationRule(NotAModel, require_args=False))
    assert CacheRegister.get_status()["models"] == {}


@cache_result(ttl=60)
def _cached_feed():
    return []


def test_get_status_answers_by_bare_model_name():
    CacheRegister.add(Article, _cached_feed, InvalidationRule(Article, require_args=False))
    models = CacheRegister.get_status()["models"]
    assert list(models) == ["testapp.Article"]
    assert models["Article"] == models["testapp.Article"]
    assert models.get("Article") == models["testapp.Article"]
    assert "Article" in models
    assert "Comment" not in models
    with pytest.raises(KeyError):
        models["Comment"]


def test_a_bare_name_shared_by_two_apps_is_not_guessed():
    from restflow.caching.registry import ModelStatus

    models = ModelStatus({"shop.Item": [1], "blog.Item": [2], "blog.Post": [3]})
    assert models["Post"] == [3]
    assert "Item" not in models
    with pytest.raises(KeyError, match=r"shop\.Item"):
        models["Item"]
