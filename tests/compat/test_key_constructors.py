"""Part 3 of issue 12: key constructors and key fields as drf-restflow 2.0.1 documents them."""

from __future__ import annotations

import pytest
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheKeyField,
    CacheStatus,
    ConstantKeyField,
    DrfSerializerKeyField,
    InlineKeyConstructor,
    KeyConstructor,
    QueryParamsKeyField,
    ViewKwargsKeyField,
    cache_result,
)

# -- .fields -------------------------------------------------------------------------------


class Base(KeyConstructor):
    user = ArgsKeyField("user_id", partition=True)
    lang = ArgsKeyField("lang")


class Child(Base):
    lang = ArgsKeyField("language")  # the subclass's field wins
    env = ConstantKeyField("env", "prod")


def test_instances_expose_their_declared_fields():
    fields = Child().fields
    assert sorted(fields) == ["env", "lang", "user"]
    assert fields["lang"].arguments == "language"
    assert fields["user"].partition is True
    assert Base().fields["lang"].arguments == "lang"


# -- ArgsKeyField.arguments ----------------------------------------------------------------


@pytest.mark.parametrize("given", ["*", "user_id", ["user_id", "lang"], ("a", "b")])
def test_args_key_field_keeps_its_arguments(given):
    assert ArgsKeyField(given).arguments == given
    assert ViewKwargsKeyField(given).arguments == given


def test_args_key_field_default_is_star():
    assert ArgsKeyField().arguments == "*"
    assert ViewKwargsKeyField().arguments == "*"
    assert QueryParamsKeyField().params == "*"
    assert QueryParamsKeyField(["page"]).params == ["page"]


def test_star_still_keys_every_argument(store):
    @cache_result({"fields": {"args": ArgsKeyField("*")}}, ttl=60)
    def add(a, b):
        return a + b

    add(1, 2)
    assert add.get_cache_only(1, 2) == 3
    assert add.get_cache_only(1, 3) is CACHE_MISSING


# -- digit-string versions -----------------------------------------------------------------


class Versioned(KeyConstructor):
    user = ArgsKeyField("user_id")

    class Meta:
        namespace = "reports"
        version = "2"


def test_meta_version_accepts_a_digit_string(store):
    @cache_result(Versioned, ttl=60)
    def report(user_id):
        return user_id

    assert report.get_cache_key(1).startswith("reports:v2::")
    report(1)
    assert report.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT


def test_inline_version_accepts_a_digit_string():
    fields = {"user": ArgsKeyField("user_id")}
    made = InlineKeyConstructor(fields=fields, namespace="n", version="3")

    @cache_result(made, ttl=60)
    def report(user_id):
        return user_id

    assert report.get_cache_key(1).startswith("n:v3::")
    # The same inputs are the same class, whichever way the number is written.
    assert made is InlineKeyConstructor(
        fields={"user": ArgsKeyField("user_id")}, namespace="n", version=3
    )


@pytest.mark.parametrize("bad", ["two", "", "-1", "1.5"])
def test_a_version_that_is_not_a_number_fails_at_class_creation(bad):
    with pytest.raises(TypeError, match="version"):

        class Bad(KeyConstructor):
            class Meta:
                version = bad


# -- max_key_suffix_length / hash_suffix_on_overflow ----------------------------------------


class LongArgs(KeyConstructor):
    text = ArgsKeyField("text")

    class Meta:
        max_key_suffix_length = 40
        hash_suffix_on_overflow = False


def test_suffix_length_options_are_accepted_and_long_parts_are_digested(store):
    @cache_result(LongArgs, ttl=60)
    def echo(text):
        return text

    long_text = "x" * 2000
    assert echo(long_text) == long_text
    assert echo.get_cache_only(long_text) == long_text
    # restflow never writes an over-long key: the long part is digested.
    assert len(echo.get_cache_key(long_text)) < 400
    assert echo.get_cache_only("y" * 2000) is CACHE_MISSING


def test_inline_suffix_length_options_are_accepted():
    made = InlineKeyConstructor(
        fields={"text": ArgsKeyField("text")},
        max_key_suffix_length=100,
        hash_suffix_on_overflow=True,
    )
    assert issubclass(made, KeyConstructor)


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ("max_key_suffix_length", "long"),
        ("max_key_suffix_length", True),
        ("hash_suffix_on_overflow", "yes"),
        ("max_key_suffix_length", 0),
    ],
)
def test_suffix_length_options_are_checked(option, bad):
    with pytest.raises(TypeError, match=option):
        type("Bad", (KeyConstructor,), {"Meta": type("Meta", (), {option: bad})})


# -- get_key_payload without a function ---------------------------------------------------------


def test_fields_that_do_not_read_the_call_need_no_function():
    assert ConstantKeyField("v", 1).get_key_payload(None, (), {}) == {"v": 1}
    assert DrfSerializerKeyField(None).get_key_payload(None, (), {}) == {}


class ItemSerializer(serializers.Serializer):
    name = serializers.CharField()


def test_a_serializer_fingerprint_needs_no_function():
    payload = DrfSerializerKeyField(ItemSerializer).get_key_payload(None, (), {})
    assert payload == DrfSerializerKeyField(ItemSerializer).get_key_payload(None, (), {})
    assert payload


# -- custom fields that override get_key_payload ------------------------------------------------


class HeaderKeyField(CacheKeyField):
    """drf-restflow's extension point: ``get_key_payload(func, args, kwargs)``."""

    def __init__(self, header, **kwargs):
        super().__init__(**kwargs)
        self.header = header

    def get_key_payload(self, func, args, kwargs):
        request = kwargs.get("request", args[0] if args else None)
        return {"value": request.headers.get(self.header)}


class TenantKey(KeyConstructor):
    tenant = HeaderKeyField("X-Tenant")
    page = ArgsKeyField("page")


def get(tenant):
    return APIRequestFactory().get("/", HTTP_X_TENANT=tenant)


def test_a_custom_field_overriding_get_key_payload_keys_the_call(store):
    calls = []

    @cache_result(TenantKey, ttl=60)
    def listing(request, page=1):
        calls.append((request.headers["X-Tenant"], page))
        return len(calls)

    assert listing(get("acme")) == 1
    assert listing(get("acme")) == 1  # a hit: same tenant, same page
    assert listing(get("globex")) == 2
    assert listing(get("acme"), page=2) == 3
    assert listing(request=get("globex")) == 2  # by keyword: same call, same entry
    assert calls == [("acme", 1), ("globex", 1), ("acme", 2)]


def test_a_custom_field_sees_the_function_and_the_call_as_given():
    seen = []

    class Spy(CacheKeyField):
        def get_key_payload(self, func, args, kwargs):
            seen.append((func.__name__, args, kwargs))
            return {"n": len(args) + len(kwargs)}

    @cache_result({"fields": {"spy": Spy()}}, ttl=60)
    def lookup(a, b=2, *, c=3):
        return a

    lookup(1, c=4)
    assert seen == [("lookup", (1, 2), {"c": 4})]


def test_custom_fields_with_different_options_are_different_constructors():
    first = InlineKeyConstructor(fields={"tenant": HeaderKeyField("X-Tenant")})
    second = InlineKeyConstructor(fields={"tenant": HeaderKeyField("X-Region")})
    assert first is not second
    assert first is InlineKeyConstructor(fields={"tenant": HeaderKeyField("X-Tenant")})


def test_a_custom_field_payload_from_generate_key():
    key = TenantKey().generate_key(_listing, (get("acme"),), {})
    assert key != TenantKey().generate_key(_listing, (get("globex"),), {})


def _listing(request, page=1):
    return page


def test_a_custom_field_base_class_without_get_key_payload_says_so():
    class Incomplete(CacheKeyField):
        pass

    with pytest.raises(NotImplementedError, match="get_key_payload"):
        Incomplete().get_key_payload(_listing, (None,), {})


def test_positional_flags_of_the_base_class():
    field = CacheKeyField(True, True)
    assert (field.partition, field.hash_value) == (True, True)


# -- DrfSerializerKeyField(serializer that needs arguments) --------------------------------------


class NeedsContext(serializers.Serializer):
    name = serializers.CharField()

    def __init__(self, tenant, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tenant = tenant


def test_a_serializer_that_cannot_be_built_fails_when_the_field_is_made():
    with pytest.raises(ValueError, match="Failed to initialize serializer class") as raised:
        DrfSerializerKeyField(NeedsContext)
    assert "NeedsContext" in str(raised.value)


class LowerArgs(ArgsKeyField):
    """A built-in field extended the drf-restflow way: override, call super()."""

    def get_key_payload(self, func, args, kwargs):
        payload = super().get_key_payload(func, args, kwargs)
        return {name: value.lower() for name, value in payload.items()}


def test_a_built_in_field_extended_through_get_key_payload(store):
    calls = []

    @cache_result({"fields": {"code": LowerArgs("code")}}, ttl=60)
    def country(code):
        calls.append(code)
        return code.upper()

    assert country("nl") == "NL"
    assert country("NL") == "NL"  # the override says these are one entry
    assert country(code="Nl") == "NL"
    assert calls == ["nl"]
    assert LowerArgs("code").get_key_payload(country.func, ("BE",), {}) == {"code": "be"}


# -- the rest of drf-restflow's constructor and field API -------------------------------------


class Named(KeyConstructor):
    # Named like constructor attributes: fine, as in drf-restflow.
    fields = QueryParamsKeyField(["fields"])
    namespace = ConstantKeyField("ns", "x")
    user = ArgsKeyField("user_id", partition=True)

    class Meta:
        namespace = "reports"
        version = 3
        key_identifier = "report"


def _report(request, user_id):
    return user_id


def test_meta_views_and_the_key_parts():
    constructor = Named()
    assert constructor.get_version() == 3
    assert constructor.namespace == "reports::"
    assert constructor.key_identifier == "report"
    assert sorted(constructor.fields) == ["fields", "namespace", "user"]
    request = APIRequestFactory().get("/?fields=a")
    key = constructor.generate_key(_report, (request, 7), {})
    prefix = constructor.build_key_prefix(_report, (request, 7), {})
    suffix = constructor.build_key_suffix(_report, (request, 7), {})
    assert key == f"{prefix}::{suffix}"
    assert suffix != constructor.build_key_suffix(_report, (get("acme"), 7), {})


class _Reports:
    def total(self, user_id):
        return user_id


def test_get_function_identifier_is_a_static_method_giving_the_dotted_path():
    # drf-restflow's is a @staticmethod: called on the class too, and the
    # function's dotted path whatever Meta.key_identifier says (the key
    # prefix is where the identifier goes).
    path = f"{__name__}._report"
    assert Named.get_function_identifier(_report) == path
    assert KeyConstructor.get_function_identifier(_report) == path
    assert Named().get_function_identifier(_report) == path
    bound = _Reports().total
    assert Named.get_function_identifier(bound) == f"{__name__}._Reports.total"
    # The key still names the function by the identifier.
    request = APIRequestFactory().get("/")
    assert Named().build_key_prefix(_report, (request, 7), {}).startswith("reports:v3::report::")


def test_register_wrapper_makes_wipe_reach_a_function(store):
    class Wiped(KeyConstructor):
        user = ArgsKeyField("user_id")

    @cache_result(ttl=60)
    def profile(user_id):
        return user_id

    profile(1)
    Wiped.register_wrapper(profile)
    assert Wiped.wipe() == 1
    assert profile.get_cache_only(1) is CACHE_MISSING


class TenantFromRequest(CacheKeyField):
    """A custom field written with drf-restflow's helper."""

    def get_key_payload(self, func, args, kwargs):
        request = self.extract_request_object(func, args, kwargs, normalize=True)
        return {"tenant": request.headers.get("X-Tenant") if request else None}


def test_extract_request_object_finds_the_request_however_it_is_passed(store):
    calls = []

    @cache_result({"fields": {"tenant": TenantFromRequest()}}, ttl=60)
    def listing(request):
        calls.append(request.headers["X-Tenant"])
        return len(calls)

    assert listing(get("acme")) == 1
    assert listing(request=get("acme")) == 1
    assert listing(get("globex")) == 2
    field = TenantFromRequest()

    class View:
        request = get("initech")

    def method(self):
        return None

    assert field.extract_request_object(method, (View(),), {}).headers["X-Tenant"] == "initech"
    assert field.extract_request_object(_listing, (), {}) is None


def test_get_cache_key_part_is_the_fields_text_in_the_key():
    part = ConstantKeyField("v", 1).get_cache_key_part(None, (), {})
    assert part != ConstantKeyField("v", "1").get_cache_key_part(None, (), {})  # typed
    hashed = ConstantKeyField("v", "x" * 500, hash_value=True).get_cache_key_part(None, (), {})
    assert len(hashed) < 100


class MappedHeaderField(CacheKeyField):
    """A custom field whose options hold a dict and a set."""

    def __init__(self, aliases, allowed, **kwargs):
        super().__init__(**kwargs)
        self.aliases, self.allowed = aliases, allowed

    def get_key_payload(self, func, args, kwargs):
        return {"n": len(self.aliases)}


def test_custom_fields_with_dict_or_set_options_stay_hashable_and_comparable():
    first = MappedHeaderField({"a": 1}, {"x", "y"})
    assert hash(first) == hash(MappedHeaderField({"a": 1}, {"y", "x"}))
    assert first == MappedHeaderField({"a": 1}, {"x", "y"})
    assert first != MappedHeaderField({"a": 2}, {"x", "y"})
    made = InlineKeyConstructor(fields={"h": first})
    assert made is InlineKeyConstructor(fields={"h": MappedHeaderField({"a": 1}, {"x", "y"})})


def test_without_a_call_the_prefix_is_the_whole_functions():
    constructor = Named()
    assert constructor.build_partition(_report, None, None) == ""
    prefix = constructor.build_key_prefix(_report, None, None)
    assert prefix == "reports:v3::report::"
    request = APIRequestFactory().get("/?fields=a")
    assert constructor.generate_key(_report, (request, 7), {}).startswith(prefix)
