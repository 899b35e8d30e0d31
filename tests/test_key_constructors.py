"""Key constructors, key fields and exact invalidation (issue 3, DESIGN.md §4)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.http import HttpRequest
from django.test import RequestFactory
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheKeyField,
    CacheStatus,
    ConstantKeyField,
    DefaultKeyConstructor,
    DjangoModelKeyField,
    DrfSerializerKeyField,
    InlineKeyConstructor,
    KeyConstructor,
    QueryParamsKeyField,
    RequestValueKeyField,
    ViewKwargsKeyField,
    cache_result,
)
from tests.testapp.models import Article, Comment

ROOT = Path(__file__).resolve().parent.parent
HEX32 = re.compile(r"[0-9a-f]{32}")


# -- helpers -----------------------------------------------------------------


def fid(func):
    """The function part of a key: ``module.qualname``."""
    return f"{func.__module__}.{func.__qualname__}"


def parts(key):
    """The four parts of a key whose values contain no ``::``."""
    found = key.split("::")
    assert len(found) == 4, key
    return found


def drf_request(path="/items", **extra):
    return Request(APIRequestFactory().get(path, **extra))


def missing(wrapper, *args, **kwargs):
    return wrapper.get_cache_only(*args, **kwargs) is CACHE_MISSING


class FakeUser:
    is_authenticated = True

    def __init__(self, id):
        self.id = id


class Obj:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


@pytest.fixture
def calls():
    return []


# -- 1. fields and options ---------------------------------------------------


def test_constant_field_puts_its_value_in_the_key(calls):
    class V1(KeyConstructor):
        api = ConstantKeyField("version", 1)
        arg = ArgsKeyField("x")

    class V2(KeyConstructor):
        api = ConstantKeyField("version", 2)
        arg = ArgsKeyField("x")

    def make(constructor):
        @cache_result(ttl=60, key_constructor=constructor)
        def f(x):
            calls.append(x)
            return x

        return f

    f1, f2 = make(V1), make(V2)
    assert f1.get_cache_key(5) == f"default::{fid(f1)}::::api.version=i1,arg.x=i5"
    assert f2.get_cache_key(5) == f"default::{fid(f2)}::::api.version=i2,arg.x=i5"
    assert V1().get_fields()["api"].get_key_payload(f1, (5,), {}) == {"version": 1}
    with pytest.raises(ValueError):
        ConstantKeyField("not an identifier", 1)


def test_args_field_star_keys_every_argument_but_self_with_defaults(calls):
    class K(KeyConstructor):
        arguments = ArgsKeyField("*")

    @cache_result(ttl=60, key_constructor=K)
    def f(a, b=2, *, c="c"):
        calls.append((a, b, c))
        return (a, b, c)

    assert K().get_fields()["arguments"].get_key_payload(f, (1,), {}) == {
        "a": 1,
        "b": 2,
        "c": "c",
    }
    key = f.get_cache_key(1)
    assert parts(key)[3] == "arguments.a=i1,arguments.b=i2,arguments.c=s1:c"
    assert f.get_cache_key(a=1, b=2) == key == f.get_cache_key(1, c="c")
    assert f.get_cache_key(1, 3) != key
    assert f(1) == f(a=1, b=2) == (1, 2, "c")
    assert calls == [(1, 2, "c")]

    class View:
        @cache_result(ttl=60, key_constructor=K)
        def get(self, pk):
            return pk

    # self is not an argument of the key (its class is the function id).
    assert parts(View().get.get_cache_key(3))[3] == "arguments.pk=i3"


def test_args_field_one_name_and_a_list_of_names(calls):
    class One(KeyConstructor):
        only = ArgsKeyField("x")

    class Several(KeyConstructor):
        some = ArgsKeyField(["x", "z"])

    @cache_result(ttl=60, key_constructor=One)
    def one(x, y):
        calls.append(("one", x, y))
        return (x, y)

    @cache_result(ttl=60, key_constructor=Several)
    def several(x, y, z=0):
        calls.append(("several", x, y, z))
        return (x, y, z)

    assert parts(one.get_cache_key(1, "a"))[3] == "only.x=i1"
    assert one.get_cache_key(1, "a") == one.get_cache_key(1, "b")
    assert one(1, "a") == (1, "a")
    assert one(1, "b") == (1, "a")  # y is not part of the key: a HIT
    assert one.get_cache_key(2, "a") != one.get_cache_key(1, "a")

    assert parts(several.get_cache_key(1, "a", 3))[3] == "some.x=i1,some.z=i3"
    assert several.get_cache_key(1, "a") == several.get_cache_key(1, "b", z=0)
    assert several.get_cache_key(1, "a", 1) != several.get_cache_key(1, "a", 2)
    several(1, "a", 1)
    several(1, "a", 2)
    assert [c for c in calls if c[0] == "several"] == [
        ("several", 1, "a", 1),
        ("several", 1, "a", 2),
    ]
    with pytest.raises(ValueError):
        ArgsKeyField(["x", "not valid"])


def test_args_field_path_reads_attributes_and_mapping_keys(calls):
    class ByUserId(KeyConstructor):
        user = ArgsKeyField("user", path="id")

    @cache_result(ttl=60, key_constructor=ByUserId)
    def profile(user):
        calls.append(user)
        return "profile"

    as_object = profile.get_cache_key(Obj(id=3, name="a"))
    assert parts(as_object)[3] == "user.user=i3"
    assert profile.get_cache_key(Obj(id=3, name="b")) == as_object
    assert profile.get_cache_key({"id": 3, "name": "c"}) == as_object
    assert profile.get_cache_key(Obj(id=4)) != as_object
    profile(Obj(id=3))
    profile({"id": 3})
    assert len(calls) == 1

    # A missing attribute is keyed apart from None.
    without_id = profile.get_cache_key(Obj(name="x"))
    with_none = profile.get_cache_key(Obj(id=None))
    assert without_id != with_none
    assert parts(with_none)[3] == "user.user=N"
    field = ByUserId().get_fields()["user"]
    assert field.get_key_payload(profile, (Obj(name="x"),), {}) == {"user": CACHE_MISSING}

    class Nested(KeyConstructor):
        by_owner = ArgsKeyField("item", path="owner.id")

    @cache_result(ttl=60, key_constructor=Nested)
    def item(item):
        return item

    assert parts(item.get_cache_key(Obj(owner=Obj(id=9))))[3] == "by_owner.item=i9"
    assert parts(item.get_cache_key({"owner": {"id": 9}}))[3] == "by_owner.item=i9"
    assert parts(item.get_cache_key(Obj(owner=None)))[3] != "by_owner.item=N"


def test_a_field_may_be_named_like_a_constructor_helper():
    """``owner`` is a natural field name; declaring it must not break decoration."""

    class K(KeyConstructor):
        owner = ArgsKeyField("item", path="owner.id")

    @cache_result(ttl=60, key_constructor=K)
    def item(item):
        return item

    assert parts(item.get_cache_key(Obj(owner=Obj(id=9))))[3] == "owner.item=i9"


@pytest.mark.parametrize("name", ["wipe", "generate_key", "get_fields", "compile", "fields"])
def test_a_field_named_like_a_constructor_method_does_not_hide_it(name):
    # Fields leave the class namespace (issue 12: as in drf-restflow), so any name works.
    made = type("Shadowing", (KeyConstructor,), {name: ArgsKeyField("x")})
    assert callable(getattr(made, name)) or name == "fields"
    assert made().get_fields()[name].name == name
    assert made().fields[name].arguments == "x"


def test_args_field_normalizer_is_applied_and_a_failing_one_keys_the_raw_value(calls):
    def to_int(value):
        return int(value)

    class K(KeyConstructor):
        page = ArgsKeyField("page", normalizer=to_int)
        term = ArgsKeyField("term", normalizer=str.lower)

    @cache_result(ttl=60, key_constructor=K)
    def search(page, term):
        calls.append((page, term))
        return (page, term)

    assert parts(search.get_cache_key("7", "ABC"))[3] == "page.page=i7,term.term=s3:abc"
    assert search.get_cache_key("7", "ABC") == search.get_cache_key(7, "abc")
    # int("x") raises: the raw value is keyed instead.
    assert parts(search.get_cache_key("x", "a"))[3] == "page.page=s1:x,term.term=s1:a"
    assert search("x", "a") == ("x", "a")
    assert search("7", "Q") == ("7", "Q")
    assert search(7, "q") == ("7", "Q")  # HIT: normalized to the same key
    assert calls == [("x", "a"), ("7", "Q")]

    class AfterPath(KeyConstructor):
        user = ArgsKeyField("user", path="name", normalizer=str.upper)

    @cache_result(ttl=60, key_constructor=AfterPath)
    def greet(user):
        return user

    assert parts(greet.get_cache_key(Obj(name="bob")))[3] == "user.user=s3:BOB"


def test_request_value_field_reads_user_id_and_a_header(calls):
    class K(KeyConstructor):
        user = RequestValueKeyField("user.id")
        tenant = RequestValueKeyField("META.HTTP_X_TENANT")

    @cache_result(ttl=60, key_constructor=K)
    def dashboard(request):
        calls.append(request)
        return "dashboard"

    first = drf_request(HTTP_X_TENANT="acme")
    first.user = FakeUser(7)
    same = drf_request(HTTP_X_TENANT="acme")
    same.user = FakeUser(7)
    other_user = drf_request(HTTP_X_TENANT="acme")
    other_user.user = FakeUser(8)
    other_tenant = drf_request(HTTP_X_TENANT="globex")
    other_tenant.user = FakeUser(7)

    key = dashboard.get_cache_key(first)
    assert parts(key)[3] == "tenant.META.HTTP_X_TENANT=s4:acme,user.user.id=i7"
    assert dashboard.get_cache_key(same) == key
    assert dashboard.get_cache_key(request=same) == key
    assert (
        len({key, dashboard.get_cache_key(other_user), dashboard.get_cache_key(other_tenant)}) == 3
    )
    for request in (first, same, other_user, other_tenant):
        dashboard(request)
    assert calls == [first, other_user, other_tenant]

    # No header: keyed apart from an empty or a "None" header.
    no_header = drf_request()
    no_header.user = FakeUser(7)
    keys = {
        dashboard.get_cache_key(no_header),
        dashboard.get_cache_key(drf_request(HTTP_X_TENANT="")),
        dashboard.get_cache_key(drf_request(HTTP_X_TENANT="None")),
    }
    assert len(keys) == 3


def test_request_value_field_finds_the_request_by_name_keyword_and_on_the_view():
    field = RequestValueKeyField("META.HTTP_X_TENANT")
    custom = RequestValueKeyField("META.HTTP_X_TENANT", request_arg="req")
    request = drf_request(HTTP_X_TENANT="acme")

    @cache_result(ttl=60, key_constructor={"t": field})
    def by_name(request, page=1):
        return page

    @cache_result(ttl=60, key_constructor={"t": field})
    def by_keyword(**kwargs):
        return kwargs

    @cache_result(ttl=60, key_constructor={"t": custom})
    def custom_name(page, req):
        return page

    class View:
        def __init__(self, request):
            self.request = request

        @cache_result(ttl=60, key_constructor={"t": field})
        def get(self, pk):
            return pk

    expected = "t.META.HTTP_X_TENANT=s4:acme"
    assert parts(by_name.get_cache_key(request))[3] == expected
    assert by_name.get_cache_key(request=request) == by_name.get_cache_key(request)
    assert parts(by_keyword.get_cache_key(request=request))[3] == expected
    assert parts(custom_name.get_cache_key(1, request))[3] == expected
    assert parts(View(request).get.get_cache_key(3))[3] == expected
    other = View(drf_request(HTTP_X_TENANT="globex")).get.get_cache_key(3)
    assert parts(other)[3] == "t.META.HTTP_X_TENANT=s6:globex"

    # No request to be found: a TypeError that says so, never a shared key.
    with pytest.raises(TypeError, match="request"):
        by_keyword.get_cache_key(page=1)
    with pytest.raises(TypeError, match="request"):
        View(None).get.get_cache_key(3)


def test_query_params_field_reads_all_or_listed_params_in_canonical_order():
    class All(KeyConstructor):
        q = QueryParamsKeyField()

    class AsSets(KeyConstructor):
        q = QueryParamsKeyField(sort_lists=True)

    class Listed(KeyConstructor):
        q = QueryParamsKeyField(["page", "size"])

    @cache_result(ttl=60, key_constructor=All)
    def everything(request):
        return 1

    @cache_result(ttl=60, key_constructor=Listed)
    def listed(request):
        return 1

    @cache_result(ttl=60, key_constructor=AsSets)
    def as_sets(request):
        return 1

    def key(wrapper, query):
        return wrapper.get_cache_key(drf_request(f"/items?{query}"))

    assert (
        parts(key(everything, "b=2&a=2&a=1"))[3] == "q.query=d2{s1:a=l2[s1:2,s1:1],s1:b=l1[s1:2]}"
    )
    assert key(everything, "a=1&b=2") == key(everything, "b=2&a=1")
    # Repeated values keep their order: ?sort=a&sort=b is another request (issue 10).
    assert key(everything, "a=2&a=1") != key(everything, "a=1&a=2")
    assert key(as_sets, "a=2&a=1") == key(as_sets, "a=1&a=2")
    assert key(as_sets, "a=1") != key(as_sets, "a=1&a=1")
    assert key(everything, "a=1") != key(everything, "a=2")
    assert key(everything, "a=1") != key(everything, "a=1&a=1")
    assert key(everything, "a=1") != key(everything, "a=1&b=")
    assert key(everything, "") != key(everything, "a=")

    assert key(listed, "page=1&other=x") == key(listed, "page=1&other=y")
    assert key(listed, "page=1") != key(listed, "page=2")
    assert key(listed, "size=3&page=2") == key(listed, "page=2&size=3")
    # A listed parameter that is absent is not the same as an empty one.
    assert key(listed, "") != key(listed, "page=")


def test_query_params_field_reads_drf_django_and_plain_dict_requests():
    class K(KeyConstructor):
        q = QueryParamsKeyField()

    @cache_result(ttl=60, key_constructor=K)
    def view(request):
        return 1

    drf = view.get_cache_key(drf_request("/items?a=2&b=z&a=1"))
    django = RequestFactory().get("/items?a=2&b=z&a=1")
    assert isinstance(django, HttpRequest)
    assert view.get_cache_key(django) == drf
    assert view.get_cache_key({"b": "z", "a": ["2", "1"]}) == drf
    assert view.get_cache_key({"a": ["1", "2"]}) != drf

    class Listed(KeyConstructor):
        q = QueryParamsKeyField("a")

    @cache_result(ttl=60, key_constructor=Listed)
    def only_a(request):
        return 1

    assert only_a.get_cache_key(django) == only_a.get_cache_key({"a": ["2", "1"], "b": "y"})


def test_view_kwargs_field_excludes_receiver_and_request_and_flattens_kwargs():
    def get(self, request, pk, *args, **kwargs):
        return pk

    def load(cls, request, pk):
        return pk

    every = ViewKwargsKeyField()
    listed = ViewKwargsKeyField(["pk"])
    request = drf_request()
    payload = every.get_key_payload(get, (object(), request, 1, "extra"), {"slug": "s"})
    # URL kwargs are keyed as the text of their URL: 1 is "1".
    assert payload == {"kwargs": {"pk": "1", "slug": "s"}}
    assert every.get_key_payload(load, (object, request, 2), {}) == {"kwargs": {"pk": "2"}}
    assert listed.get_key_payload(get, (object(), request, 1), {"slug": "s"}) == {"pk": "1"}
    assert listed.get_key_payload(get, (object(), request), {"pk": 5}) == {"pk": "5"}

    class View:
        @cache_result(ttl=60, key_constructor={"v": ViewKwargsKeyField()})
        def get(self, request, *args, **kwargs):
            return kwargs

        @cache_result(ttl=60, key_constructor={"v": ViewKwargsKeyField(["pk"])})
        def pk_only(self, request, **kwargs):
            return kwargs

    view = View()
    key = view.get.get_cache_key(request, pk=1, slug="s")
    assert parts(key)[3] == "v.kwargs=d2{s2:pk=s1:1,s4:slug=s1:s}"
    assert view.get.get_cache_key(drf_request("/other"), slug="s", pk=1) == key
    assert view.get.get_cache_key(request, pk=2, slug="s") != key
    assert parts(view.pk_only.get_cache_key(request, pk=1, slug="s"))[3] == "v.pk=s1:1"
    assert view.pk_only.get_cache_key(request, pk=1, slug="s") == view.pk_only.get_cache_key(
        request, pk=1, slug="t"
    )
    # A URL kwarg that is not there is keyed apart from None.
    assert view.pk_only.get_cache_key(request) != view.pk_only.get_cache_key(request, pk=None)


def _serializer_class(field):
    """A serializer class with the same module and qualname each time."""
    attrs = {"value": field, "__module__": __name__, "__qualname__": "ItemSerializer"}
    return type(serializers.Serializer)("ItemSerializer", (serializers.Serializer,), attrs)


def test_serializer_field_fingerprint_changes_with_the_serializer_fields():
    as_int = _serializer_class(serializers.IntegerField())
    as_str = _serializer_class(serializers.CharField())
    read_only = _serializer_class(serializers.IntegerField(read_only=True))
    assert fid(as_int) == fid(as_str) == fid(read_only)

    def make(serializer_class):
        class K(KeyConstructor):
            s = DrfSerializerKeyField(serializer_class)
            x = ArgsKeyField("x")

        @cache_result(ttl=60, key_constructor=K)
        def f(x):
            return x

        return f

    keys = {parts(make(cls).get_cache_key(1))[3] for cls in (as_int, as_str, read_only)}
    assert len(keys) == 3

    class Article2Serializer(serializers.Serializer):
        title = serializers.CharField()
        views = serializers.IntegerField(source="view_count", read_only=True)

    payload = DrfSerializerKeyField(Article2Serializer).get_key_payload(make, (None,), {})
    assert set(payload) == {"fingerprint"}
    text = repr(payload["fingerprint"])
    for word in ("title", "CharField", "views", "IntegerField", "view_count"):
        assert word in text


def test_serializer_field_fingerprint_is_computed_once_per_class(calls):
    instances = []

    class CountingSerializer(serializers.Serializer):
        name = serializers.CharField()

        def __init__(self, *args, **kwargs):
            instances.append(self)
            super().__init__(*args, **kwargs)

    class K(KeyConstructor):
        s = DrfSerializerKeyField(CountingSerializer)
        x = ArgsKeyField("x")

    @cache_result(ttl=60, key_constructor=K)
    def f(x):
        calls.append(x)
        return x

    for x in range(5):
        f(x)
        f(x)
        f.get_cache_key(x)
    assert calls == list(range(5))
    assert len(instances) == 1


def test_serializer_field_rejects_non_serializers_and_none_contributes_nothing():
    class S(serializers.Serializer):
        a = serializers.IntegerField()

    for bad in (int, "S", S(), Article, serializers.IntegerField):
        with pytest.raises(ValueError, match="serializer"):
            DrfSerializerKeyField(bad)

    class WithNone(KeyConstructor):
        s = DrfSerializerKeyField(None)
        x = ArgsKeyField("x")

    class Without(KeyConstructor):
        x = ArgsKeyField("x")

    @cache_result(ttl=60, key_constructor=WithNone)
    def f(x):
        return x

    assert WithNone().get_fields()["s"].get_key_payload(f, (1,), {}) == {}
    assert parts(f.get_cache_key(1))[3] == "x.x=i1"
    assert f.get_cache_key(1) == Without().generate_key(f, (1,), {})


def test_model_field_fingerprints_concrete_fields_once_and_validates():
    field = DjangoModelKeyField(Article)

    def f(x):
        return x

    payload = field.get_key_payload(f, (1,), {})
    assert payload == {
        "fingerprint": (
            "testapp.Article",
            (("id", "AutoField"), ("title", "CharField"), ("views", "IntegerField")),
        )
    }
    other = DjangoModelKeyField(Comment).get_key_payload(f, (1,), {})
    assert other != payload
    assert ("article", "ForeignKey") in other["fingerprint"][1]

    counted = []

    class Counting(DjangoModelKeyField):
        def fingerprint(self, target):
            counted.append(target)
            return super().fingerprint(target)

    class K(KeyConstructor):
        m = Counting(Article)
        x = ArgsKeyField("x")

    @cache_result(ttl=60, key_constructor=K)
    def g(x):
        return x

    for x in range(5):
        g(x)
        g.get_cache_key(x)
    assert counted == [Article]
    assert "testapp.Article" in g.get_cache_key(1)

    for bad in (object, "testapp.Article", Article(), serializers.Serializer, Article.objects):
        with pytest.raises(ValueError, match="model"):
            DjangoModelKeyField(bad)
    assert DjangoModelKeyField(None).get_key_payload(f, (1,), {}) == {}

    @cache_result(ttl=60, key_constructor={"m": DjangoModelKeyField(None), "x": ArgsKeyField("x")})
    def h(x):
        return x

    assert parts(h.get_cache_key(1))[3] == "x.x=i1"


@pytest.mark.django_db
def test_model_instances_keyed_by_primary_key_path(calls):
    first = Article.objects.create(title="a")
    second = Article.objects.create(title="b")

    @cache_result(ttl=60, key_constructor={"article": ArgsKeyField("article", path="pk")})
    def render(article):
        calls.append(article.pk)
        return article.title

    assert render(first) == "a"
    assert render(Article.objects.get(pk=first.pk)) == "a"  # another instance, same pk: HIT
    assert render(second) == "b"
    assert calls == [first.pk, second.pk]
    assert parts(render.get_cache_key(first))[3] == f"article.article=i{first.pk}"


def test_partition_option_moves_the_field_into_the_partition_part():
    class K(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        x = ArgsKeyField("x")

        class Meta:
            namespace = "reports"

    @cache_result(ttl=60, key_constructor=K)
    def report(tenant, x):
        return x

    key = report.get_cache_key("acme", 1)
    assert key == f"reports::{fid(report)}::tenant.tenant=s4:acme::x.x=i1"
    constructor = report.key_constructor
    assert constructor.generate_key(report, ("acme", 1), {}) == key
    assert constructor.build_partition(report, ("acme", 1), {}) == "tenant.tenant=s4:acme"
    assert constructor.build_key_prefix(report, ("acme", 1), {}) == (
        f"reports::{fid(report)}::tenant.tenant=s4:acme"
    )
    assert not constructor.has_only_partition_fields

    class OnlyPartition(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)

    assert OnlyPartition().has_only_partition_fields

    @cache_result(ttl=60, key_constructor=OnlyPartition)
    def whole(tenant, x):
        return x

    assert parts(whole.get_cache_key("acme", 1))[2:] == ["tenant.tenant=s4:acme", ""]


def test_hash_value_option_keys_a_fixed_digest(calls):
    class K(KeyConstructor):
        token = ArgsKeyField("token", hash_value=True)

    @cache_result(ttl=60, key_constructor=K)
    def hashed(token):
        calls.append(token)
        return token

    def digest(key):
        suffix = parts(key)[3]
        assert suffix.startswith("token.token=")
        found = HEX32.findall(suffix)
        assert len(found) == 1
        return found[0]

    long_value = "secret-token-" * 50
    key = hashed.get_cache_key(long_value)
    assert long_value[:20] not in key
    assert "password" not in hashed.get_cache_key("password")
    assert digest(key) == digest(hashed.get_cache_key(long_value))
    digests = {digest(hashed.get_cache_key(v)) for v in ("a", "b", 1, "1", None, long_value)}
    assert len(digests) == 6
    hashed("a")
    hashed("b")
    hashed("a")
    assert calls == ["a", "b"]


def test_sort_lists_option_makes_list_order_irrelevant(calls):
    class Sorted(KeyConstructor):
        ids = ArgsKeyField("ids", sort_lists=True)

    class Ordered(KeyConstructor):
        ids = ArgsKeyField("ids")

    @cache_result(ttl=60, key_constructor=Sorted)
    def by_set(ids):
        calls.append(("sorted", ids))
        return ids

    @cache_result(ttl=60, key_constructor=Ordered)
    def by_list(ids):
        calls.append(("ordered", ids))
        return ids

    assert by_set.get_cache_key([2, 1]) == by_set.get_cache_key([1, 2])
    assert by_set.get_cache_key([[4, 3], 1]) == by_set.get_cache_key([1, [3, 4]])
    assert by_set.get_cache_key([1, 1, 2]) != by_set.get_cache_key([1, 2])
    assert by_set.get_cache_key([1, 2]) != by_set.get_cache_key((1, 2))
    assert by_list.get_cache_key([2, 1]) != by_list.get_cache_key([1, 2])
    assert by_set([2, 1]) == [2, 1]
    assert by_set([1, 2]) == [2, 1]  # HIT
    by_list([2, 1])
    by_list([1, 2])
    assert calls == [("sorted", [2, 1]), ("ordered", [2, 1]), ("ordered", [1, 2])]


def test_long_parts_are_digested_and_helpers_agree():
    class K(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        x = ArgsKeyField("x")

    @cache_result(ttl=60, key_constructor=K)
    def f(tenant, x):
        return x

    long_a, long_b = "a" * 300, "a" * 299 + "b"
    key = f.get_cache_key(long_a, long_a)
    _, _, partition, suffix = parts(key)
    assert re.fullmatch(r"h[0-9a-f]{32}", partition)
    assert re.fullmatch(r"h[0-9a-f]{32}", suffix)
    assert f.get_cache_key(long_b, long_b) != key
    assert parts(f.get_cache_key(long_b, long_a))[3] == suffix
    assert K().generate_key(f, (long_a, long_a), {}) == key
    assert K().build_partition(f, (long_a, 1), {}) == partition


# -- 2. collisions -----------------------------------------------------------

COLLIDING = [
    (1, "1"),
    (1, 1.0),
    (1, True),
    (None, "null"),
    (None, "None"),
    (None, ""),
    ([1, 2], "1,2"),
    ([1, 2], (1, 2)),
    ([1, 2], "[1, 2]"),
    ("a::b", "a:b"),
    ("a,b", ["a", "b"]),
    ("a||b", ["a", "b"]),
    ("a=b", {"a": "b"}),
    ("s1:a", "a"),
]


@pytest.mark.parametrize("first, second", COLLIDING, ids=repr)
def test_values_that_look_alike_never_share_an_entry(first, second, calls):
    class K(KeyConstructor):
        x = ArgsKeyField("x")

    @cache_result(ttl=60, key_constructor=K)
    def labelled(x):
        calls.append(("labelled", x))
        return x

    @cache_result(ttl=60)
    def default(x):
        calls.append(("default", x))
        return x

    for wrapper in (labelled, default):
        assert wrapper.get_cache_key(first) != wrapper.get_cache_key(second)
        assert wrapper(first) == first
        assert wrapper(second) == second
        assert wrapper(first) == first
        assert type(wrapper(second)) is type(second)
    assert calls == [
        ("labelled", first),
        ("labelled", second),
        ("default", first),
        ("default", second),
    ]


def test_separators_inside_values_cannot_shift_parts(calls):
    class K(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        a = ArgsKeyField("a")
        b = ArgsKeyField("b")

    @cache_result(ttl=60, key_constructor=K)
    def f(tenant, a, b):
        calls.append((tenant, a, b))
        return (tenant, a, b)

    @cache_result(ttl=60)
    def g(tenant, a, b):
        calls.append(("g", tenant, a, b))
        return (tenant, a, b)

    triples = [
        ("t::a", "b", "c"),
        ("t", "a::b", "c"),
        ("t", "a", "b::c"),
        ("t:", ":a", "b"),
        ("t", "a,b.b=s1:c", "c"),
        ("t", "a", "c"),
        ("t,a.a=s1:a", "a", "c"),
        ("t", "a||b", "c"),
        ("t||a", "b", "c"),
        ("t", "a=b", "c"),
        ("t=a", "b", "c"),
        ("t", "a", "b,c"),
        ("t", "a,b", "c"),
        ("t", "", "a::b::c"),
    ]
    for wrapper in (f, g):
        keys = {wrapper.get_cache_key(*triple) for triple in triples}
        assert len(keys) == len(triples)
        for triple in triples:
            assert wrapper(*triple) == triple
    assert len(calls) == 2 * len(triples)
    # And a partition drop takes only its own partition.
    f.delete_by_prefix(tenant="t")
    assert missing(f, "t", "a", "c")
    for triple in triples:
        if triple[0] != "t":
            assert not missing(f, *triple), triple


def test_partition_helpers_survive_separators_in_values():
    class K(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        x = ArgsKeyField("x")

    @cache_result(ttl=60, key_constructor=K)
    def f(tenant, x):
        return x

    constructor = f.key_constructor
    for tenant in ("a", "a::b"):
        prefix = constructor.build_key_prefix(f, (tenant, "plain"), {})
        # Two calls in one partition have one prefix, whatever their suffix.
        assert constructor.build_key_prefix(f, (tenant, "p::q"), {}) == prefix
        assert "x.x=" not in prefix
        partition = constructor.build_partition(f, (tenant, "p::q"), {})
        assert partition == constructor.build_partition(f, (tenant, "plain"), {})
        assert partition.startswith("tenant.tenant=") and partition.endswith(tenant)
        key = f.get_cache_key(tenant, "p::q")
        assert key.startswith(prefix + "::")
        assert prefix == f"default::{fid(f)}::{partition}"


def test_missing_values_are_keyed_apart_from_none(calls):
    class K(KeyConstructor):
        user = ArgsKeyField("user", path="id")

    @cache_result(ttl=60, key_constructor=K)
    def f(user):
        calls.append(user)
        return user

    absent, none = Obj(), Obj(id=None)
    assert f.get_cache_key(absent) != f.get_cache_key(none)
    f(absent)
    f(none)
    assert calls == [absent, none]


# -- 3. subclasses and Meta --------------------------------------------------


def test_subclass_inherits_overrides_and_extends_fields_and_meta():
    class Base(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        x = ArgsKeyField("x")

        class Meta:
            namespace = "base"
            version = 2

    class Child(Base):
        x = ArgsKeyField("x", path="id")
        rev = ConstantKeyField("rev", 3)

    class Grandchild(Child):
        class Meta:
            namespace = "grand"

    class Reset(Child):
        class Meta:
            namespace = "reset"
            version = 1

    assert list(Base().get_fields()) == ["tenant", "x"]
    assert list(Child().get_fields()) == ["rev", "tenant", "x"]
    assert Child().get_fields()["x"].path == "id"
    assert Base().get_fields()["x"].path is None
    assert Grandchild().get_fields()["tenant"] is Base().get_fields()["tenant"]

    def make(constructor):
        @cache_result(ttl=60, key_constructor=constructor)
        def f(tenant, x):
            return x

        return f

    item = Obj(id=5)
    base = make(Base)
    assert base.get_cache_key("t", 5) == f"base:v2::{fid(base)}::tenant.tenant=s1:t::x.x=i5"
    child = make(Child)
    assert child.get_cache_key("t", item) == (
        f"base:v2::{fid(child)}::tenant.tenant=s1:t::rev.rev=i3,x.x=i5"
    )
    grand = make(Grandchild)
    assert parts(grand.get_cache_key("t", item))[0] == "grand:v2"
    assert parts(grand.get_cache_key("t", item))[3] == "rev.rev=i3,x.x=i5"
    assert parts(make(Reset).get_cache_key("t", item))[0] == "reset"


@pytest.mark.parametrize(
    "meta, option",
    [
        ({"ttl": 5}, "ttl"),
        ({"namespace": 3}, "namespace"),
        ({"namespace": "a:b"}, "namespace"),
        ({"namespace": "a::b"}, "namespace"),
        ({"version": "two"}, "version"),  # digits ("2") are accepted (issue 12)
        ({"version": True}, "version"),
        ({"version": 0}, "version"),
        ({"version": 2.0}, "version"),
        ({"key_identifier": 5}, "key_identifier"),
        ({"key_identifier": "a::b"}, "key_identifier"),
    ],
    ids=repr,
)
def test_meta_is_checked_at_class_creation(meta, option):
    with pytest.raises(TypeError, match=option):
        type("Bad", (KeyConstructor,), {"x": ArgsKeyField("x"), "Meta": type("Meta", (), meta)})
    with pytest.raises(TypeError, match=option):

        class Bad(KeyConstructor):
            Meta = type("Meta", (), meta)


# -- 4. InlineKeyConstructor and the key_constructor= forms ------------------


def test_inline_constructor_identity():
    def fields():
        return {"tenant": ArgsKeyField("tenant", partition=True), "x": ArgsKeyField("x")}

    first = InlineKeyConstructor(fields(), namespace="inline")
    assert issubclass(first, KeyConstructor)
    assert InlineKeyConstructor(fields(), namespace="inline") is first
    assert InlineKeyConstructor(fields(), 1, None, None, "inline", "") is first
    assert InlineKeyConstructor(dict(reversed(fields().items())), namespace="inline") is first
    different = [
        InlineKeyConstructor(fields()),
        InlineKeyConstructor(fields(), namespace="other"),
        InlineKeyConstructor(fields(), namespace="inline", version=2),
        InlineKeyConstructor(fields(), namespace="inline", key_identifier="shared"),
        InlineKeyConstructor(
            {**fields(), "x": ArgsKeyField("x", hash_value=True)}, namespace="inline"
        ),
        InlineKeyConstructor({**fields(), "x": ArgsKeyField("x", path="id")}, namespace="inline"),
        InlineKeyConstructor({**fields(), "y": ArgsKeyField("x")}, namespace="inline"),
        InlineKeyConstructor(
            {"tenant": ArgsKeyField("tenant"), "x": ArgsKeyField("x")}, namespace="inline"
        ),
    ]
    assert len({id(c) for c in [first, *different]}) == len(different) + 1
    assert first._meta.namespace == "inline"
    # One field object can serve under several names.
    shared = ArgsKeyField("x")
    both = InlineKeyConstructor({"a": shared, "b": shared})
    assert sorted(both().get_fields()) == ["a", "b"]
    assert [f.name for f in both().get_fields().values()] == ["a", "b"]


def test_inline_constructor_tells_different_normalizers_apart(calls):
    """Two lambdas share a qualname; they are still different normalizers."""

    @cache_result(ttl=60, key_constructor={"q": ArgsKeyField("q", normalizer=lambda v: v.lower())})
    def case_insensitive(q):
        calls.append(("ci", q))
        return q

    @cache_result(ttl=60, key_constructor={"q": ArgsKeyField("q", normalizer=lambda v: v)})
    def case_sensitive(q):
        calls.append(("cs", q))
        return q

    assert case_insensitive("Ab") == "Ab"
    assert case_insensitive("ab") == "Ab"  # HIT: case does not matter here
    assert case_sensitive("Ab") == "Ab"
    assert case_sensitive("ab") == "ab"  # case matters here: its own entry
    assert case_sensitive.get_cache_key("Ab") != case_sensitive.get_cache_key("ab")
    assert type(case_insensitive.key_constructor) is not type(case_sensitive.key_constructor)


def test_inline_constructor_keeps_constants_of_different_types_apart():
    with_int = InlineKeyConstructor({"c": ConstantKeyField("flag", 1)})
    with_bool = InlineKeyConstructor({"c": ConstantKeyField("flag", True)})
    with_list = InlineKeyConstructor({"c": ConstantKeyField("flag", [1, 2])})
    with_tuple = InlineKeyConstructor({"c": ConstantKeyField("flag", (1, 2))})
    assert with_bool is not with_int
    assert with_tuple is not with_list
    assert with_bool().get_fields()["c"].value is True
    assert with_tuple().get_fields()["c"].value == (1, 2)


def test_inline_constructor_accepts_an_unhashable_constant():
    # A class-based constructor takes a dict constant...
    class K(KeyConstructor):
        c = ConstantKeyField("filters", {"status": "open"})

    @cache_result(ttl=60, key_constructor=K)
    def f(x):
        return x

    assert parts(f.get_cache_key(1))[3] == "c.filters=d1{s6:status=s4:open}"

    # ... and so does the inline form of the same constructor.
    @cache_result(ttl=60, key_constructor={"c": ConstantKeyField("filters", {"status": "open"})})
    def g(x):
        return x

    assert parts(g.get_cache_key(1))[3] == "c.filters=d1{s6:status=s4:open}"


def test_the_accepted_key_constructor_forms():
    class K(KeyConstructor):
        x = ArgsKeyField("x")

        class Meta:
            namespace = "forms"

    def decorate(key_constructor):
        @cache_result(ttl=60, key_constructor=key_constructor)
        def f(x):
            return x

        return f

    by_class = decorate(K)
    assert type(by_class.key_constructor) is K
    instance = K()
    assert decorate(instance).key_constructor is instance
    assert parts(by_class.get_cache_key(1))[0::3] == ["forms", "x.x=i1"]

    inline_args = decorate({"fields": {"x": ArgsKeyField("x")}, "namespace": "forms", "version": 3})
    assert type(inline_args.key_constructor) is InlineKeyConstructor(
        {"x": ArgsKeyField("x")}, namespace="forms", version=3
    )
    assert parts(inline_args.get_cache_key(1))[0::3] == ["forms:v3", "x.x=i1"]

    plain_fields = decorate({"x": ArgsKeyField("x")})
    assert type(plain_fields.key_constructor) is InlineKeyConstructor({"x": ArgsKeyField("x")})
    assert parts(plain_fields.get_cache_key(1))[0::3] == ["default", "x.x=i1"]

    assert type(decorate(DefaultKeyConstructor).key_constructor) is DefaultKeyConstructor

    @cache_result(ttl=60)
    def default(x):
        return x

    assert type(default.key_constructor) is DefaultKeyConstructor

    class NotAConstructor:
        pass

    bad = [
        "K",
        {},
        {"x": "not a field"},
        {"x": ArgsKeyField("x"), "y": 1},
        NotAConstructor,
        NotAConstructor(),
        [ArgsKeyField("x")],
        {"fields": {"x": ArgsKeyField("x")}, "bogus": 1},
        {"fields": {"x": ArgsKeyField("x")}, "namespace": "a:b"},
    ]
    for value in bad:
        with pytest.raises(ValueError, match="Invalid KeyConstructor"):
            cache_result(ttl=60, key_constructor=value)
    for value in (42, None):  # a ttl in the key constructor's place (issue 12)
        with pytest.raises(TypeError, match="did you mean ttl="):
            cache_result(ttl=60, key_constructor=value)
    with pytest.raises(ValueError, match="CacheKeyField"):
        cache_result(ttl=60, key_constructor={"fields": {"x": "not a field"}})


def _assert_generate_key_matches(wrapper):
    constructor = wrapper.key_constructor
    for args in ((1,), (1, True), ("a" * 300,), ("a::b", "c,d=e")):
        key = wrapper.get_cache_key(*args)
        assert constructor.generate_key(wrapper, args, {}) == key
        assert constructor.generate_key(wrapper.func, args, {}) == key
        prefix = constructor.build_key_prefix(wrapper, args, {})
        assert key.startswith(prefix + "::")
        assert prefix.endswith("::" + constructor.build_partition(wrapper, args, {}))
    assert constructor.get_function_identifier(wrapper) == fid(wrapper)


def test_generate_key_matches_the_wrapper():
    class Named(KeyConstructor):
        x = ArgsKeyField("x", partition=True)
        flag = ArgsKeyField("flag", hash_value=True)
        api = ConstantKeyField("api", 2)

    class Computed(KeyConstructor):
        x = ArgsKeyField("x", normalizer=str, partition=True)
        every = ArgsKeyField("*", sort_lists=True)

    @cache_result(ttl=60, key_constructor=Named)
    def named(x, flag=False):
        return x

    @cache_result(ttl=60, key_constructor=Computed)
    def computed(x, flag=False):
        return x

    _assert_generate_key_matches(named)
    _assert_generate_key_matches(computed)


def test_default_constructor_generate_key_matches_the_wrapper():
    @cache_result(ttl=60)
    def plain(x, flag=False):
        return x

    assert plain.get_cache_key(1) != plain.get_cache_key(1, True)
    _assert_generate_key_matches(plain)


# -- 5. errors at decoration and for values ----------------------------------


def test_a_field_naming_a_missing_parameter_fails_at_decoration():
    with pytest.raises(TypeError, match=r"'nope'") as error:

        @cache_result(ttl=60, key_constructor={"user": ArgsKeyField("nope")})
        def f(x):
            return x

    assert "user" in str(error.value)

    with pytest.raises(TypeError, match="'y'"):

        @cache_result(ttl=60, key_constructor={"xy": ArgsKeyField(["x", "y"])})
        def g(x):
            return x

    with pytest.raises(TypeError, match="'req'"):

        @cache_result(
            ttl=60, key_constructor={"t": RequestValueKeyField("user.id", request_arg="req")}
        )
        def h(request):
            return request

    with pytest.raises(TypeError, match="'request'"):

        @cache_result(ttl=60, key_constructor={"q": QueryParamsKeyField()})
        def i(x):
            return x

    # **kwargs may carry the named argument: no error.
    @cache_result(ttl=60, key_constructor={"x": ArgsKeyField("x")})
    def j(**kwargs):
        return kwargs

    assert parts(j.get_cache_key(x=1))[3] == "x.x=i1"


def test_a_view_kwargs_field_naming_a_missing_parameter_fails_at_decoration():
    with pytest.raises(TypeError, match="'pk'"):

        @cache_result(ttl=60, key_constructor={"v": ViewKwargsKeyField(["pk"])})
        def get(self, request, slug):
            return slug


def test_a_value_the_encoder_cannot_represent_names_field_and_parameter(calls):
    @cache_result(ttl=60, key_constructor={"user": ArgsKeyField("account")})
    def f(account):
        calls.append(account)
        return account

    with pytest.raises(TypeError, match=r"'user\.account'") as error:
        f(object())
    assert "normalizer" in str(error.value)
    with pytest.raises(TypeError, match=r"'user\.account'"):
        f.get_cache_key([1, object()])
    assert calls == []

    @cache_result(ttl=60, key_constructor={"who": RequestValueKeyField("user")})
    def g(request):
        return 1

    request = drf_request()
    request.user = FakeUser(1)
    with pytest.raises(TypeError, match=r"'who\.user'"):
        g(request)

    @cache_result(ttl=60, key_constructor={"user": ArgsKeyField("account", path="id")})
    def fixed(account):
        return account.id

    assert fixed(Obj(id=1)) == 1


# -- 6. invalidation ----------------------------------------------------------


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    x = ArgsKeyField("x")

    class Meta:
        namespace = "tenants"


def test_delete_cache_and_delete_by_prefix_are_exact(calls):
    @cache_result(ttl=60, key_constructor=TenantKey)
    def f(tenant, x):
        calls.append((tenant, x))
        return (tenant, x)

    for tenant in ("a", "b"):
        for x in (1, 2):
            f(tenant, x)
    assert f.delete_cache("a", 1) is True
    assert missing(f, "a", 1)
    assert not missing(f, "a", 2)

    f.delete_by_prefix("a")
    assert missing(f, "a", 2)
    assert f.get_cache_only("b", 1) == ("b", 1)
    assert f.get_cache_only("b", 2) == ("b", 2)
    f("a", 2)
    assert calls.count(("a", 2)) == 2

    # Only partition fields need values; none given is an error.
    f.delete_by_prefix(tenant="b")
    assert missing(f, "b", 1) and missing(f, "b", 2)
    assert not missing(f, "a", 2)
    with pytest.raises(TypeError, match="tenant"):
        f.delete_by_prefix()
    with pytest.raises(TypeError, match="tenant"):
        f.delete_by_prefix(x=1)
    assert not missing(f, "a", 2)


def test_a_request_value_partition_is_dropped_by_the_request(calls):
    class K(KeyConstructor):
        tenant = RequestValueKeyField("META.HTTP_X_TENANT", partition=True)
        page = QueryParamsKeyField(["page"])

    @cache_result(ttl=60, key_constructor=K)
    def listing(request):
        calls.append(request)
        return request.META["HTTP_X_TENANT"]

    def request(tenant, page):
        return drf_request(f"/items?page={page}", HTTP_X_TENANT=tenant)

    for tenant in ("acme", "globex"):
        for page in (1, 2):
            listing(request(tenant, page))
    key = listing.get_cache_key(request("acme", 1))
    assert parts(key)[2:] == [
        "tenant.META.HTTP_X_TENANT=s4:acme",
        "page.query=d1{s4:page=l1[s1:1]}",
    ]
    # Any request of the tenant names the partition; the query does not matter.
    listing.delete_by_prefix(request("acme", 99))
    assert missing(listing, request("acme", 1)) and missing(listing, request("acme", 2))
    assert listing.get_cache_only(request("globex", 1)) == "globex"
    assert listing.get_cache_only(request("globex", 2)) == "globex"
    with pytest.raises(TypeError, match="request"):
        listing.delete_by_prefix()


def test_glob_characters_in_partition_values_are_data():
    @cache_result(ttl=60, key_constructor=TenantKey)
    def f(tenant, x):
        return tenant

    tenants = ["a*", "a1", "ab", "a", "a?", "[a]", "a%", "*", ".*", "a\\*"]
    for tenant in tenants:
        f(tenant, 1)
    f.delete_by_prefix(tenant="a*")
    assert missing(f, "a*", 1)
    for tenant in tenants[1:]:
        assert f.get_cache_only(tenant, 1) == tenant
    f.delete_by_prefix(tenant="*")
    f.delete_by_prefix(tenant="[a]")
    assert missing(f, "*", 1) and missing(f, "[a]", 1)
    for tenant in ("a1", "ab", "a", "a?", "a%", ".*", "a\\*"):
        assert f.get_cache_only(tenant, 1) == tenant


def test_invalidate_all_drops_only_that_function():
    @cache_result(ttl=60, key_constructor=TenantKey)
    def f(tenant, x):
        return x

    @cache_result(ttl=60, key_constructor=TenantKey)
    def g(tenant, x):
        return x

    @cache_result(ttl=60)
    def h(x):
        return x

    for wrapper in (f, g):
        wrapper("a", 1)
        wrapper("b", 2)
    h(1)
    f.invalidate_all()
    assert missing(f, "a", 1) and missing(f, "b", 2)
    assert g.get_cache_only("a", 1) == 1 and g.get_cache_only("b", 2) == 2
    assert h.get_cache_only(1) == 1
    h.invalidate_all()
    assert missing(h, 1)
    assert g.get_cache_only("a", 1) == 1


def test_delete_by_prefix_without_partition_fields_drops_the_function():
    @cache_result(ttl=60, key_constructor={"x": ArgsKeyField("x")})
    def f(x):
        return x

    @cache_result(ttl=60, key_constructor={"x": ArgsKeyField("x")})
    def g(x):
        return x

    f(1)
    f(2)
    g(1)
    f.delete_by_prefix()
    assert missing(f, 1) and missing(f, 2)
    assert g.get_cache_only(1) == 1


def test_wipe_spans_functions_and_subclass_constructors_only():
    class Base(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        x = ArgsKeyField("x")

    class Child(Base):
        rev = ConstantKeyField("rev", 2)

    class Unrelated(KeyConstructor):
        tenant = ArgsKeyField("tenant", partition=True)
        x = ArgsKeyField("x")

    # Four functions, each with its own dotted path.
    @cache_result(ttl=60, key_constructor=Base)
    def base_one(tenant, x):
        return (tenant, x)

    @cache_result(ttl=60, key_constructor=Base)
    def base_two(tenant, x):
        return (tenant, x)

    @cache_result(ttl=60, key_constructor=Child)
    def child(tenant, x):
        return (tenant, x)

    @cache_result(ttl=60, key_constructor=Unrelated)
    def unrelated(tenant, x):
        return (tenant, x)

    everything = (base_one, base_two, child, unrelated)

    def fill():
        for wrapper in everything:
            for tenant in ("a", "b"):
                wrapper(tenant, 1)

    fill()
    assert Child.wipe() == 1
    assert missing(child, "a", 1) and missing(child, "b", 1)
    assert not missing(base_one, "a", 1) and not missing(base_two, "b", 1)

    fill()
    assert Base.wipe() == 3
    for wrapper in (base_one, base_two, child):
        assert missing(wrapper, "a", 1) and missing(wrapper, "b", 1)
    assert unrelated.get_cache_only("a", 1) == ("a", 1)
    assert unrelated.get_cache_only("b", 1) == ("b", 1)

    fill()
    Base.wipe(tenant="a")
    for wrapper in (base_one, base_two, child):
        assert missing(wrapper, "a", 1)
        assert wrapper.get_cache_only("b", 1) == ("b", 1)
    assert unrelated.get_cache_only("a", 1) == ("a", 1)

    fill()
    Base.wipe("b")
    for wrapper in (base_one, base_two, child):
        assert missing(wrapper, "b", 1)
        assert wrapper.get_cache_only("a", 1) == ("a", 1)
    assert unrelated.get_cache_only("b", 1) == ("b", 1)


def _versioned(version, name="VersionedKey", namespace="versioned"):
    """A constructor class with one dotted path whatever its version: a redeploy."""
    meta = type("Meta", (), {"namespace": namespace, "version": version})
    return type(
        name,
        (KeyConstructor,),
        {"x": ArgsKeyField("x"), "Meta": meta, "__module__": __name__, "__qualname__": name},
    )


def _report(constructor, calls):
    """The same function (one module.qualname) decorated with ``constructor``."""

    @cache_result(ttl=60, key_constructor=constructor)
    def report(x):
        calls.append((constructor._meta.version, x))
        return (constructor._meta.version, x)

    return report


def _neighbour(constructor, calls):
    """Another function, keyed by another constructor in the same namespace."""

    @cache_result(ttl=60, key_constructor=constructor)
    def summary(x):
        calls.append(("summary", x))
        return ("summary", x)

    return summary


def test_version_bump_and_delete_previous_versions(calls):
    v1, v2, v3 = (_versioned(n) for n in (1, 2, 3))
    assert {(c.__module__, c.__qualname__) for c in (v1, v2, v3)} == {(__name__, "VersionedKey")}
    old, new, newest = _report(v1, calls), _report(v2, calls), _report(v3, calls)
    assert fid(old) == fid(new) == fid(newest)
    assert parts(old.get_cache_key(1))[0] == "versioned"
    assert parts(new.get_cache_key(1))[0] == "versioned:v2"
    # Another constructor in the same namespace, at version 1 and at version 2.
    neighbour = _neighbour(_versioned(1, name="SiblingKey"), calls)
    neighbour_v2 = _neighbour(_versioned(2, name="CousinKey"), calls)
    assert parts(neighbour.get_cache_key(1))[0] == "versioned"

    old(1)
    old(2)
    neighbour(1)
    neighbour_v2(1)
    assert v1.delete_previous_versions() == 0  # version 1: nothing before it
    assert old.get_cache_only(1) == (1, 1) and old.get_cache_only(2) == (1, 2)

    # A bump makes the old entries unreachable: the new version computes.
    assert missing(new, 1)
    assert new(1) == (2, 1)
    assert new(3) == (2, 3)
    assert v2.delete_previous_versions() == 1
    assert missing(old, 1) and missing(old, 2)
    assert new.get_cache_only(1) == (2, 1) and new.get_cache_only(3) == (2, 3)
    assert neighbour.get_cache_only(1) == ("summary", 1)
    assert neighbour_v2.get_cache_only(1) == ("summary", 1)

    old(1)
    assert v3.delete_previous_versions() == 2  # old (version 1) and new (version 2)
    assert missing(old, 1) and missing(new, 1) and missing(new, 3)
    assert neighbour.get_cache_only(1) == ("summary", 1)
    assert neighbour_v2.get_cache_only(1) == ("summary", 1)
    assert newest(1) == (3, 1)
    assert calls == [(1, 1), (1, 2), ("summary", 1), ("summary", 1), (2, 1), (2, 3), (1, 1), (3, 1)]


def test_an_inline_constructor_drops_its_previous_versions(calls):
    # The same inline constructor with its version bumped (a redeploy of
    # {"fields": ..., "version": 2}) is that constructor's next version.
    fields = {"x": ArgsKeyField("x")}
    v1 = InlineKeyConstructor(fields, version=1, namespace="inline")
    v2 = InlineKeyConstructor(fields, version=2, namespace="inline")
    other = InlineKeyConstructor({"y": ArgsKeyField("x")}, namespace="inline")
    assert v1 is not v2 and v1.get_owner() == v2.get_owner() != other.get_owner()
    old, new, neighbour = _report(v1, calls), _report(v2, calls), _neighbour(other, calls)
    old(1)
    neighbour(1)
    assert new(1) == (2, 1)
    assert v2.delete_previous_versions() == 1
    assert missing(old, 1)
    assert new.get_cache_only(1) == (2, 1)
    assert neighbour.get_cache_only(1) == ("summary", 1)


def test_key_identifier_lets_functions_share_entries(calls):
    class Shared(KeyConstructor):
        x = ArgsKeyField("x")

        class Meta:
            namespace = "shared"
            key_identifier = "reports.monthly"

    @cache_result(ttl=60, key_constructor=Shared)
    def writer(x):
        calls.append(("writer", x))
        return ("writer", x)

    @cache_result(ttl=60, key_constructor=Shared)
    def reader(x):
        calls.append(("reader", x))
        return ("reader", x)

    assert writer.get_cache_key(1) == reader.get_cache_key(1) == "shared::reports.monthly::::x.x=i1"
    assert writer(1) == ("writer", 1)
    value, metadata = reader.get_with_metadata(1)
    assert value == ("writer", 1)
    assert metadata["cache_status"] is CacheStatus.HIT
    assert reader(2) == ("reader", 2)
    assert writer(2) == ("reader", 2)
    assert calls == [("writer", 1), ("reader", 2)]


# -- 7. methods --------------------------------------------------------------


class BaseView:
    def __init__(self, tenant="a"):
        self.tenant = tenant

    @cache_result(ttl=60, key_constructor={"pk": ArgsKeyField("pk", partition=True)})
    def get(self, pk):
        CALLS.append((type(self).__name__, pk))
        return (type(self).__name__, pk)

    @classmethod
    @cache_result(ttl=60, key_constructor={"pk": ArgsKeyField("pk")})
    def load(cls, pk):
        CALLS.append((cls.__name__, "load", pk))
        return (cls.__name__, pk)


class UsersView(BaseView):
    pass


class GroupsView(BaseView):
    pass


CALLS: list = []


@pytest.fixture
def method_calls():
    CALLS.clear()
    yield CALLS
    CALLS.clear()


def test_subclasses_sharing_an_inherited_method_never_share_entries(method_calls):
    users, groups = UsersView(), GroupsView()
    users_key, groups_key = users.get.get_cache_key(1), groups.get.get_cache_key(1)
    assert users_key != groups_key
    assert parts(users_key)[1] == f"{__name__}.UsersView.get"
    assert parts(groups_key)[1] == f"{__name__}.GroupsView.get"
    constructor = BaseView.get.key_constructor
    assert constructor.generate_key(users.get, (1,), {}) == users_key
    assert constructor.get_function_identifier(users.get) == f"{__name__}.UsersView.get"

    assert users.get(1) == ("UsersView", 1)
    assert groups.get(1) == ("GroupsView", 1)
    assert UsersView().get(1) == ("UsersView", 1)  # HIT: another instance, same class
    assert method_calls == [("UsersView", 1), ("GroupsView", 1)]

    assert UsersView.load.get_cache_key(1) != GroupsView.load.get_cache_key(1)
    assert UsersView.load(1) == ("UsersView", 1)
    assert GroupsView.load(1) == ("GroupsView", 1)
    assert len(method_calls) == 4


def test_a_partition_drop_on_one_subclass_keeps_the_other(method_calls):
    users, groups = UsersView(), GroupsView()
    users.get(1)
    users.get(2)
    groups.get(1)
    users.get.delete_by_prefix(1)
    assert missing(users.get, 1)
    assert users.get.get_cache_only(2) == ("UsersView", 2)
    assert groups.get.get_cache_only(1) == ("GroupsView", 1)


# -- 8. keys do not depend on the hash seed ----------------------------------


class SeedKey(KeyConstructor):
    tags = ArgsKeyField("tags")
    filters = ArgsKeyField("filters", partition=True)
    labels = ArgsKeyField("labels", sort_lists=True)
    query = QueryParamsKeyField()
    raw = QueryParamsKeyField(request_arg="raw_query")

    class Meta:
        namespace = "seed"


@cache_result(ttl=60, key_constructor=SeedKey)
def seeded(request, raw_query, tags, filters, labels):
    return None


def seeded_key():
    """A key built from sets, dicts and query strings whose iteration order
    follows the process's hash seed."""
    words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
    return seeded.get_cache_key(
        drf_request("/items?" + "&".join(f"{w}={w.upper()}" for w in words)),
        dict.fromkeys(words, "1"),
        {*words, frozenset({"x", "y", "z"})},
        {w: {w.upper(), w[::-1]} for w in words},
        list(words),
    )


def test_the_same_key_in_processes_with_other_hash_seeds():
    script = textwrap.dedent(
        """
        import django

        django.setup()
        from tests.test_key_constructors import seeded_key

        print(seeded_key())
        """
    )
    keys = {seeded_key()}
    for seed in ("1", "2", "3"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        }
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        keys.add(out.stdout.strip())
    assert len(keys) == 1, keys
    (key,) = keys
    assert key.startswith("seed::tests.test_key_constructors.seeded::filters.filters=d6{")


def test_cache_key_field_base_class_needs_a_payload():
    class Broken(CacheKeyField):
        pass

    with pytest.raises(NotImplementedError):

        @cache_result(ttl=60, key_constructor={"b": Broken()})
        def f(x):
            return x

        f(1)


def test_delete_by_prefix_without_partition_fields_still_checks_the_call():
    @cache_result(ttl=60)
    def plain(x, y=1):
        return x

    plain(1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        plain.delete_by_prefix(bogus=3)
    assert plain.get_cache_only(1) == 1
    plain.delete_by_prefix()
    assert plain.get_cache_only(1) is CACHE_MISSING
