"""Crafted calls that must not share an entry (DESIGN.md §4: "two different
calls never share an entry").

A key part longer than ``MAX_KEY_PART_LENGTH``, a ``hash_value`` field and a
Django-store key that does not suit memcached are replaced by a digest. The
digest decides which entry a call gets, so it must hold against inputs
chosen to collide: a caller who controls an argument (a query parameter, a
URL kwarg) must not be able to pick a second argument that lands on a
victim's entry.
"""

from __future__ import annotations

import enum
import json
import sys

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import cache_result
from restflow.caching.cache_response import cache_response
from restflow.caching.key_fields import ArgsKeyField, CacheKeyField
from tests.testapp.models import Article

#: xxh3's default secret at bytes 60..64 and 180..184: the inputs below put
#: them where stripe 0 and stripe 15 of the first 1024-byte block read lane
#: 7's high half, which zeroes that lane's 32x32 product; swapping the lane's
#: low halves between the two stripes then leaves every accumulator, and so
#: the 128-bit digest, unchanged. (A public constant: anyone can do this.)
_SECRET_60 = bytes.fromhex("813a264c")
_SECRET_180 = bytes.fromhex("95160428")


def crafted_pair(head_len: int, total: int = 1200) -> tuple[bytes, bytes]:
    """Two different byte strings that xxh3-128 digests alike when each
    follows ``head_len`` fixed bytes (the label of the key part, the tag of
    an encoded value). Valid UTF-8, so they work as text arguments too."""
    size = total - head_len

    def build(low_0: bytes, low_15: bytes) -> bytes:
        out = bytearray(b"A" * size)
        for stripe, low, high in ((0, low_0, _SECRET_60), (15, low_15, _SECRET_180)):
            at = stripe * 64 + 56 - head_len
            # `\xc2` ends each low half: it makes the secret's bytes after it
            # valid UTF-8 (`\xc2\x81`, `\xc2\x95`).
            out[at : at + 8] = low + high
        return bytes(out)

    x, y = b"xyz\xc2", b"XYZ\xc2"
    return build(x, y), build(y, x)


computed: list = []


@cache_result(ttl=60)
def echo_text(text):
    computed.append(text)
    return text


@cache_result(ttl=60, key_constructor={"blob": ArgsKeyField("blob", hash_value=True)})
def echo_blob(blob):
    computed.append(blob)
    return blob


@pytest.fixture(autouse=True)
def _reset():
    computed.clear()


def test_crafted_long_arguments_never_share_an_entry(store):
    # The suffix part is "arguments.text=s<len>:<text>", digested past 250 bytes.
    head = len("arguments.text=s1182:")
    raw_a, raw_b = crafted_pair(head, total=head + 1182)
    a, b = raw_a.decode(), raw_b.decode()
    assert a != b and len(raw_a) == len(raw_b) == 1182
    assert echo_text.get_cache_key(a) != echo_text.get_cache_key(b)
    assert echo_text(a) == a
    # Computed, never served a's entry.
    assert echo_text(b) == b
    assert computed == [a, b]
    assert (echo_text(a), echo_text(b)) == (a, b)
    assert len(computed) == 2


def test_crafted_values_of_a_hash_value_field_never_share_an_entry(store):
    # A hashed field keeps only the digest of the value's encoding: a bytes
    # value's tag and 32-bit length, then its bytes.
    a, b = crafted_pair(5)
    assert a != b
    assert echo_blob.get_cache_key(a) != echo_blob.get_cache_key(b)
    assert echo_blob(a) == a
    assert echo_blob(b) == b
    assert computed == [a, b]


class WholePayload(CacheKeyField):
    """A field of one's own, drf-restflow style, whose payload keys are data:
    the mapping it is given, as it is (query parameters, say)."""

    def get_key_payload(self, func, args, kwargs):
        return dict(args[0])


@cache_result(ttl=60, key_constructor={"q": WholePayload()})
def echo_params(params):
    computed.append(params)
    return dict(params)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        # A key's type: one label, "q.1", for both.
        ({1: "a"}, {"1": "a"}),
        # A key that spells out the key text of another payload.
        ({"a": "x", "b": 5}, {"a=s1:x,q.b": 5}),
    ],
    ids=["int-or-str", "forged-label"],
)
def test_payload_keys_that_are_data_never_share_an_entry(store, left, right):
    assert echo_params.get_cache_key(left) != echo_params.get_cache_key(right)
    assert echo_params(left) == left
    assert echo_params(right) == right
    assert computed == [left, right]


def test_a_payload_of_names_keeps_its_labels_and_any_other_is_one_dict():
    assert echo_params.get_cache_key({"page": 2, "X-Tenant": "a"}) == (
        "default::tests.test_key_collisions.echo_params::::q.X-Tenant=s1:a,q.page=i2"
    )
    # Mixed key types are keyed too (they cannot be sorted as labels).
    assert echo_params.get_cache_key({"page": 2, 7: "b"}) == (
        "default::tests.test_key_collisions.echo_params::::q=d2{i7=s1:b,s4:page=i2}"
    )
    assert WholePayload().get_cache_key_part(None, ({1: "a"},), {}) == "WholePayload=d1{i1=s1:a}"


def test_a_payload_that_is_not_a_dict_says_so():
    class Listing(CacheKeyField):
        def get_key_payload(self, func, args, kwargs):
            return [("a", 1)]

    @cache_result(ttl=60, key_constructor={"listing": Listing()})
    def listed(x):
        return x

    with pytest.raises(TypeError, match=r"Listing 'listing' must return a dict .* got list"):
        listed(1)


class Report:
    @cache_result(ttl=60)
    def describe(self, x):
        computed.append(("report", x))
        return ("report", x)


class MonthlyReport(Report):
    @cache_result(ttl=60)
    def describe(self, x):
        computed.append(("monthly", x))
        return ("monthly", super().describe(x))


class YearlyReport(Report):
    pass


def test_an_override_and_the_method_it_reaches_through_super_never_share_an_entry(store):
    monthly = MonthlyReport()
    inner, outer = Report.describe.get_cache_key(monthly, 1), monthly.describe.get_cache_key(1)
    assert outer == "default::tests.test_key_collisions.MonthlyReport.describe::::arguments.x=i1"
    assert inner == (
        "default::tests.test_key_collisions.MonthlyReport.describe"
        "[tests.test_key_collisions.Report.describe]::::arguments.x=i1"
    )
    # generate_key names them as the wrappers do.
    constructor = Report.describe.key_constructor
    assert constructor.generate_key(super(MonthlyReport, monthly).describe, (1,), {}) == inner
    assert constructor.generate_key(monthly.describe, (1,), {}) == outer
    assert monthly.describe(1) == ("monthly", ("report", 1))
    # Each served its own entry (HIT), never the other's.
    assert Report.describe(monthly, 1) == ("report", 1)
    assert super(MonthlyReport, monthly).describe(1) == ("report", 1)
    assert monthly.describe(1) == ("monthly", ("report", 1))
    assert computed == [("monthly", 1), ("report", 1)]
    # A subclass that inherits the method keeps the plain name.
    assert YearlyReport().describe.get_cache_key(1) == (
        "default::tests.test_key_collisions.YearlyReport.describe::::arguments.x=i1"
    )


class PlainListing(APIView):
    @cache_response(ttl=60)
    def get(self, request):
        computed.append("plain")
        return Response({"from": "plain"})


class DecoratedListing(PlainListing):
    @cache_response(ttl=60)
    def get(self, request):
        computed.append("decorated")
        inner = json.loads(super().get(request).content)
        return Response({"from": "decorated", "inner": inner})


def test_a_view_override_that_calls_its_cached_parent_handler(store):
    # Before: one key for both handlers; on a shared store the parent's
    # call found the override's computation of that key in flight and
    # raised "called itself with the same arguments".
    decorated = DecoratedListing.as_view()
    first = decorated(APIRequestFactory().get("/listing"))
    assert json.loads(first.content) == {"from": "decorated", "inner": {"from": "plain"}}
    assert json.loads(decorated(APIRequestFactory().get("/listing")).content)["from"] == "decorated"
    assert computed == ["decorated", "plain"]


def refusal(make_class) -> TypeError:
    """The TypeError that making a class raised from a ``__set_name__``:
    as it is, or as the cause of the RuntimeError Python 3.11's ``type``
    wraps it in (3.12 and an Enum's metaclass let it through)."""
    try:
        make_class()
    except RuntimeError as wrapped:
        assert sys.version_info < (3, 12)
        assert str(wrapped).startswith("Error calling __set_name__")
        error = wrapped.__cause__
    except TypeError as raised:
        error = raised
    else:
        pytest.fail("the class was made")
    assert type(error) is TypeError
    return error


def test_a_cached_method_of_a_model_or_an_enum_is_refused_when_the_class_is_made():
    # Keyed by class, every row (member) would be served the first one's
    # value: drf-restflow keyed self by its str(), "Article object (1)".
    def model():
        class Shouting(Article):
            class Meta:
                proxy = True
                app_label = "testapp"

            @cache_result(ttl=60)
            def shout(self):
                return self.title.upper()

    error = refusal(model)
    assert "every row of Shouting would share one entry" in str(error)
    assert "ArgsKeyField('self', path='pk')" in str(error)

    def members():
        class Level(enum.Enum):
            LOW = 1
            HIGH = 2

            @cache_result(ttl=60)
            async def label(self, prefix):
                return f"{prefix}{self.name}"

    error = refusal(members)
    assert "every member of Level would share one entry" in str(error)
    assert "ArgsKeyField('self', path='value')" in str(error)


class Grade(enum.Enum):
    LOW = 1
    HIGH = 2

    @cache_result({"fields": {"row": ArgsKeyField("self", path="value")}}, ttl=60)
    def label(self):
        computed.append(self)
        return self.name.lower()

    @classmethod
    @cache_result(ttl=60)
    def names(cls):
        return [member.name for member in cls]


def test_a_method_keyed_by_its_instance_or_a_classmethod_is_allowed():
    assert (Grade.LOW.label(), Grade.HIGH.label(), Grade.LOW.label()) == ("low", "high", "low")
    assert computed == [Grade.LOW, Grade.HIGH]
    assert Grade.names() == ["LOW", "HIGH"]


class ShoutingMixin:
    """A plain mixin: nothing to refuse when its body is run."""

    @cache_result(ttl=60)
    def shout(self):
        return self.title.upper()


class ShoutingArticle(ShoutingMixin, Article):
    class Meta:
        proxy = True
        app_label = "testapp"


@pytest.mark.django_db(transaction=True)
def test_a_cached_method_a_model_inherits_from_a_mixin_is_refused_at_its_first_call():
    first, second = Article.objects.create(title="a"), Article.objects.create(title="b")
    rows = ShoutingArticle.objects.get(pk=first.pk), ShoutingArticle.objects.get(pk=second.pk)
    for row in rows:  # refused each time, never keyed
        with pytest.raises(TypeError, match="every row of ShoutingArticle would share one entry"):
            row.shout()


def test_a_cached_method_of_a_manager_or_a_queryset_is_refused_when_the_class_is_made():
    # One manager class serves many models, and a queryset is its query:
    # keyed by class, Comment.objects.top() would be served Article's.
    from django.db import models

    def manager():
        class TopManager(models.Manager):
            @cache_result(ttl=60)
            def top(self):
                return list(self.order_by("-pk")[:3])

    error = refusal(manager)
    assert "so the TopManager of every model would share one entry" in str(error)
    assert "ArgsKeyField('self', path='model._meta.label')" in str(error)

    def queryset():
        class Listed(models.QuerySet):
            @cache_result(ttl=60)
            def titles(self):
                return list(self.values_list("title", flat=True))

    error = refusal(queryset)
    assert "so every Listed query would share one entry" in str(error)
    assert "Cache a function that takes what the query filters by instead." in str(error)
