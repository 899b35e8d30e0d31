"""drf-restflow 2.0.1's README caching example, as written there, on restflow.

The one change a migration needs is the one restflow makes on purpose: a
``QueryParamsKeyField`` refuses to key a call that has no request (the
origin keyed it as if the query string were empty), so the example's
calls pass the request.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from restflow.caching import (
    ArgsKeyField,
    CacheStatus,
    ConstantKeyField,
    InvalidationRule,
    KeyConstructor,
    QueryParamsKeyField,
    cache_result,
)
from restflow.caching.key_fields import KeyFieldError

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()

LOOKUPS: list[int] = []


def expensive_lookup(user_id):
    LOOKUPS.append(user_id)
    return {"id": user_id, "email": User.objects.get(pk=user_id).email}


class UserKey(KeyConstructor):
    user = ArgsKeyField("user_id", partition=True)
    version = ConstantKeyField("v", "1")
    page = QueryParamsKeyField(["page", "size"])

    class Meta:
        namespace = "users"


def make_cached():
    @cache_result(
        key_constructor=UserKey,
        ttl=300,
        invalidates_on=[
            InvalidationRule(
                model=User,
                field_mapping={"user_id": "id"},
                watch_fields=["email"],
                rewarm=True,
            ),
        ],
    )
    def get_user_payload(user_id: int, request=None):
        return expensive_lookup(user_id)

    return get_user_payload


def page(number):
    return Request(APIRequestFactory().get(f"/users?page={number}&size=10"))


def test_the_readme_example_caches_and_invalidates(store):
    LOOKUPS.clear()
    get_user_payload = make_cached()
    user = User.objects.create(username="ada", email="ada@example.org")

    first = page(1)
    assert get_user_payload(user.pk, request=first)["email"] == "ada@example.org"
    value, metadata = get_user_payload.get_with_metadata(user.pk, request=page(1))
    assert value["id"] == user.pk
    assert metadata["cache_status"] is CacheStatus.HIT
    get_user_payload(user.pk, request=page(2))
    assert LOOKUPS == [user.pk, user.pk]

    # A watched field changes: the rule drops the user's partition (both pages).
    user.email = "ada@lovelace.org"
    user.save(update_fields=["email"])
    assert get_user_payload(user.pk, request=page(1))["email"] == "ada@lovelace.org"
    assert LOOKUPS == [user.pk] * 3

    # An unwatched field does not.
    user.first_name = "Ada"
    user.save(update_fields=["first_name"])
    get_user_payload(user.pk, request=page(1))
    assert LOOKUPS == [user.pk] * 3


def test_without_a_request_restflow_refuses_to_key(store):
    get_user_payload = make_cached()
    with pytest.raises(KeyFieldError, match="found no request"):
        get_user_payload(1)
