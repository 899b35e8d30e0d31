"""The README's examples run, and do what the text around them says.

Which blocks run: a fenced block of README.md preceded by the line
``<!-- runs: NAME -->`` (an HTML comment, invisible on the rendered page).
Every such NAME has one test here (``EXAMPLES``), and every test here has
its block: ``test_every_marked_block_has_a_test`` fails on either side, so a
block cannot lose its check by being renamed or unmarked.

How a block runs: its code is executed as it is, as the body of a fresh
module (``docs_example_<name>``), so the functions it decorates get stable
dotted paths. A block may use names its text takes as given (the spec's
``expensive_lookup``, a ``request``, a model and its serializer, DRF classes
it does not import): ``given`` supplies them, and nothing else. The test
then asserts exactly what the text claims the code prints or returns.

Blocks that need a Redis server, a running web server or a project of your
own (the Prometheus ``urls.py`` / middleware snippets, the shell commands)
stay unmarked; the settings snippets for Redis are marked and checked by the
settings validator, which connects to nothing.

Beside the blocks, the README's reference tables are checked against the
code: the settings table against ``settings.DEFAULTS``, the wrapper's
members, the async method list, the statuses and the metadata keys.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import re
import string
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import CacheStatus, cache_result, settings
from restflow.caching.registry import CacheRegister
from restflow.caching.testing import clear_caches, frozen_clock, wait_for_refreshes

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = re.compile(r"^<!-- runs: ([a-z0-9-]+) -->$")


def marked_blocks() -> dict[str, str]:
    """Every ``<!-- runs: NAME -->`` block of the README, by name."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: dict[str, str] = {}
    for number, line in enumerate(lines):
        found = MARKER.match(line)
        if found is None:
            continue
        name = found.group(1)
        assert name not in blocks, f"README.md:{number + 1}: a second block named {name!r}"
        fence = lines[number + 1]
        assert fence.startswith("```"), f"README.md:{number + 1}: {name!r} marks no block"
        end = lines.index("```", number + 2)
        blocks[name] = "\n".join(lines[number + 2 : end]) + "\n"
    return blocks


BLOCKS = marked_blocks()


def run_block(name: str, **given: Any) -> types.ModuleType:
    """Runs the block ``name`` as a fresh module's body, with ``given`` names."""
    module = types.ModuleType(f"docs_example_{name.replace('-', '_')}")
    module.__dict__.update(given)
    sys.modules[module.__name__] = module
    try:
        exec(compile(BLOCKS[name], f"README.md<{name}>", "exec"), module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    return module


def section(title: str) -> str:
    """The README text from the heading ``title`` to the next heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n#", start + len(title) + 2)
    return text[start:end]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text``, header and rule lines left out."""
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines):
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if not line.startswith("|") or _is_rule(line) or _is_rule(following):
            continue
        # A cell's own "|" is written "\|" (GitHub's tables).
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def _is_rule(line: str) -> bool:
    """Whether ``line`` is a table's ``|---|---|`` line (below its header)."""
    return line.startswith("|") and set(line) <= {"|", "-", ":", " "}


def status(metadata: dict) -> str:
    return metadata["cache_status"].value


# --- the marked blocks ---------------------------------------------------------


def check_spec_view():
    computed = []

    def expensive_lookup(user_id):
        computed.append(user_id)
        return {"id": user_id}

    example = run_block("spec-view", expensive_lookup=expensive_lookup)
    factory = APIRequestFactory()
    first = example.user_view(factory.get("/users/42/"), 42)
    second = example.user_view(factory.get("/users/42/"), 42)
    assert first.data == second.data == {"id": 42}
    assert computed == [42]
    assert first["X-Cache-status"] == "MISS"
    assert second["X-Cache-status"] == "HIT"
    assert second["X-Cached-at"] == first["X-Cached-at"]
    cached_at = datetime.fromisoformat(first["X-Cached-at"])
    reset_at = datetime.fromisoformat(first["X-Cache-reset-at"])
    assert reset_at - cached_at == timedelta(seconds=300)
    # "The same call works inside an APIView.get, unchanged."
    body = BLOCKS["spec-view"].split("def user_view(request, user_id):\n")[1]

    class UserView(APIView):
        pass

    namespace = {**example.__dict__}
    exec("def get(self, request, user_id):\n" + body, namespace)
    UserView.get = namespace["get"]
    third = UserView.as_view()(factory.get("/users/42/"), user_id=42)
    assert third["X-Cache-status"] == "HIT"
    assert computed == [42]


def check_report_key():
    request = RequestFactory().get("/reports/?page=2&ordering=name", HTTP_X_TENANT="acme")
    example = run_block("report-key", request=request)
    account = types.SimpleNamespace(id=7)
    # The key the Keys section shows for this constructor.
    shown = re.search(r"`(reports:v2::[^`]*)`", section("### Keys")).group(1)
    key = example.build_report.get_cache_key(request, account)
    assert key == shown.replace("myapp.views", example.__name__).replace(
        "{...}", "{s4:page=l1[s1:2],s8:ordering=l1[s4:name]}"
    )
    # And the default constructor's key, from the same paragraph.
    default = re.search(r"e\.g\.\n`(default::[^`]*)`", section("### Keys")).group(1)

    @cache_result(ttl=300)
    def get_user_payload(user_id: int):
        return user_id

    identity = get_user_payload.function_id
    assert default.replace("myapp.views.get_user_payload", identity) == (
        get_user_payload.get_cache_key(42)
    )
    assert status(example.build_report.get_with_metadata(request, account)[1]) == "MISS"
    assert status(example.build_report.get_with_metadata(request, account)[1]) == "HIT"
    # "every cached report of that tenant": the block dropped it once...
    example.build_report.delete_by_prefix(request=request)
    assert example.build_report.get_cached_metadata(request, account) is None
    other = RequestFactory().get("/reports/?page=2&ordering=name", HTTP_X_TENANT="other")
    example.build_report(request, account)
    example.build_report(other, account)
    example.build_report.delete_by_prefix(request=request)
    assert example.build_report.get_cached_metadata(request, account) is None
    assert status(example.build_report.get_cached_metadata(other, account)) == "HIT"
    # ... wipe() drops every function keyed by ReportKey ...
    example.ReportKey.wipe()
    assert example.build_report.get_cached_metadata(other, account) is None


def check_async_views():
    import adrf.views

    async def expensive_lookup(user_id):
        return {"id": user_id}

    example = run_block("async-views", expensive_lookup=expensive_lookup)
    assert isinstance(example.UserView(), adrf.views.APIView)

    async def requests():
        factory = RequestFactory()
        miss = await example.user_view(factory.get("/users/1/"), 1)
        hit = await example.user_view(factory.get("/users/1/"), 1)
        view = example.UserView.as_view()
        adrf_hit = await view(factory.get("/users/1/"), user_id=1)
        return miss, hit, adrf_hit

    miss, hit, adrf_hit = asyncio.run(requests())
    assert miss.content == b'{"id": 1}'
    assert [miss["X-Cache-status"], hit["X-Cache-status"]] == ["MISS", "HIT"]
    assert adrf_hit["X-Cache-status"] == "HIT"
    assert adrf_hit.data == {"id": 1}


def check_redis_settings():
    example = run_block("redis-settings")
    validated = settings._validate(example.RESTFLOW_SETTINGS["CACHE_SETTINGS"])
    assert validated["BACKEND"] == "redis://127.0.0.1:6379/0"
    assert validated["STALE_WHILE_REVALIDATE"] == 30.0
    assert validated["STALE_IF_ERROR"] == 300.0
    # Every backend the comment lists is one the setting accepts.
    comment = BLOCKS["redis-settings"].split('"BACKEND":')[1].split('"STALE_WHILE')[0]
    backends = re.findall(r'"([^"]+)"', comment)
    assert backends == [
        "redis://127.0.0.1:6379/0",
        "rediss://...",
        "redis+cluster://h:p,h:p",
        "redis+sentinel://h:p,h:p/<service>",
        "django",
        "django:<alias>",
    ]
    for backend in backends:
        assert settings.validate_backend(backend) == backend


def check_near_cache_settings():
    example = run_block("near-cache-settings", cache_result=cache_result)
    validated = settings._validate(example.RESTFLOW_SETTINGS["CACHE_SETTINGS"])
    assert validated["NEAR_CACHE"] is True
    assert validated["KEY_PREFIX"] == "myapp:"
    # "True: 10 000"
    assert settings._near_cache_size(True) == 10_000
    assert example.balance.is_cached_function
    # near_cache=False is accepted, and anything but a bool or None is not.
    with pytest.raises(TypeError, match="near_cache must be True, False or None"):
        cache_result(ttl=60, near_cache=1)


class _Articles:
    """The cache-response block's model and serializer, from the test app."""

    @staticmethod
    def given() -> dict[str, Any]:
        from rest_framework import serializers

        from tests.testapp.models import Article

        class ArticleSerializer(serializers.ModelSerializer):
            class Meta:
                model = Article
                fields = ("id", "title")

        return {
            "APIView": APIView,
            "Response": Response,
            "api_view": api_view,
            "Article": Article,
            "ArticleSerializer": ArticleSerializer,
        }


def check_cache_response():
    from tests.testapp.models import Article

    article = Article.objects.create(title="hello")
    example = run_block("cache-response", **_Articles.given())
    view = example.ArticleView.as_view()
    factory = APIRequestFactory()
    miss = view(factory.get(f"/articles/{article.pk}/"), pk=article.pk)
    miss.render()
    Article.objects.filter(pk=article.pk).update(title="changed")
    hit = view(factory.get(f"/articles/{article.pk}/"), pk=article.pk)
    assert miss["X-Cache-status"] == "MISS"
    assert hit["X-Cache-status"] == "HIT"
    assert hit.content == miss.content == b'{"id":%d,"title":"hello"}' % article.pk
    # "a hit returns a django.http.HttpResponse ... without running the view"
    assert type(hit).__name__ == "HttpResponse"
    assert type(example.ArticleView.get).__name__ == "CachedResponseWrapper"
    # "Outside a request ... as drf-restflow documents"
    plain = RequestFactory().get(f"/articles/{article.pk}/")
    assert example.ArticleView.get.delete_cache(example.ArticleView(), plain, pk=article.pk)
    assert not example.ArticleView.get.delete_cache(example.ArticleView(), plain, pk=article.pk)


def check_http_headers():
    """The exchange the block shows, on a frozen clock: the same headers."""
    shown = BLOCKS["http-headers"]
    lines = [line.strip() for line in shown.splitlines()]
    assert (
        lines[0].startswith("GET /articles/1/")
        and "(ttl=60, stale_while_revalidate=30)" in lines[0]
    )

    from restflow.caching import cache_response

    class ArticleView(APIView):
        @cache_response(ttl=60, stale_while_revalidate=30)
        def get(self, request, pk):
            return Response({"id": pk, "title": "hello"})

    view = ArticleView.as_view()
    factory = APIRequestFactory()
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)) as clock:
        first = view(factory.get("/articles/1/"), pk=1)
        first.render()
        clock.advance(48)
        later = view(factory.get("/articles/1/"), pk=1)
        etag = later["ETag"]
        conditional = view(factory.get("/articles/1/", HTTP_IF_NONE_MATCH=etag), pk=1)
    expected_etag = f'"{hashlib.blake2b(first.content, digest_size=16).hexdigest()}"'
    assert first["ETag"] == etag == expected_etag
    assert re.fullmatch(r'ETag: "[0-9a-f]{32}"', lines[2])
    assert lines[1] == f"Cache-Status: {first['Cache-Status']}"
    assert lines[3] == f"Last-Modified: {first['Last-Modified']}"
    assert "48 s later" in lines[4]
    assert lines[5] == f"Cache-Status: {later['Cache-Status']}"
    assert lines[6] == f"Age: {later['Age']}"
    assert lines[7].startswith("GET /articles/1/  If-None-Match:")
    assert conditional.status_code == 304
    assert lines[8].startswith("304 Not Modified")
    assert conditional.content == b""


def check_invalidation_rule():
    from tests.testapp.models import Article, Comment

    example = run_block("invalidation-rule", Article=Article, Comment=Comment)
    payload = example.article_payload
    article = Article.objects.create(title="a")
    other = Article.objects.create(title="b")
    assert status(payload.get_with_metadata(article.pk)[1]) == "MISS"
    assert status(payload.get_with_metadata(other.pk)[1]) == "MISS"
    article.title = "changed"
    article.save()
    assert payload.get_cached_metadata(article.pk) is None
    assert status(payload.get_cached_metadata(other.pk)) == "HIT"
    payload(article.pk)
    Comment.objects.create(article=article, body="first")  # trigger_on_create=True
    assert payload.get_cached_metadata(article.pk) is None
    assert status(payload.get_cached_metadata(other.pk)) == "HIT"


def check_stats():
    @cache_result(ttl=300)
    def get_user_payload(user_id):
        return {"id": user_id}

    get_user_payload(1)
    get_user_payload(1)
    one = get_user_payload.stats()
    assert (one["hit"], one["miss"], one["calls"], one["hit_ratio"]) == (1, 1, 2, 0.5)
    # The block ends with reset_stats(): every function starts over.
    example = run_block("stats", get_user_payload=get_user_payload)
    assert get_user_payload.stats()["calls"] == 0
    assert get_user_payload.stats()["hit_ratio"] is None
    shown = BLOCKS["stats"].split("get_user_payload.stats()\n")[1].split("\nstats()")[0]
    shown_keys = re.findall(r'"([a-z_0-9]+)":', shown)
    # The "..." of the example stands for the near cache's and early
    # refresh's counts, which the Counts paragraph below names.
    hidden = ["near_hits", "near_misses", "near_invalidations", "early_refreshes"]
    top = [key for key in shown_keys if key not in ("count", "sum", "p50", "p99", "buckets")]
    assert sorted(set(top) | set(hidden)) == sorted(one)
    assert sorted(one["compute"]) == ["buckets", "count", "p50", "p99", "sum"]
    assert one["backend"] == "memory"
    get_user_payload(1)
    everything = example.stats()
    assert sorted(everything) == ["backends", "functions"]
    assert everything["functions"][get_user_payload.function_id]["hit"] == 1
    assert everything["backends"]["memory"]["hit"] >= 1


def check_testing_frozen_clock():
    example = run_block("testing-frozen-clock")
    example.test_user_payload_goes_stale(Client())
    assert example.clear_caches() == 1


def check_seeded_early_refresh():
    """ "which hit refreshes is exact": the same seed, the same refreshes."""

    def observe(report, clock):
        seen = []
        for _ in range(20):
            seen.append(status(report.get_with_metadata(1)[1]))
            wait_for_refreshes()
            seen.append(report.stats()["early_refreshes"])
            clock.advance(5)
        return seen

    code = BLOCKS["seeded-early-refresh"]
    assert code.endswith("        return build_report(n)\n    ...\n")
    runs = []

    def run(computed):
        module = types.ModuleType("docs_example_seeded_early_refresh")
        module.__dict__.update(
            cache_result=cache_result,
            build_report=lambda n: computed.append(n) or {"n": n},
            observe=lambda report, clock: runs.append((observe(report, clock), list(computed))),
        )
        exec(code.replace("\n    ...\n", "\n    observe(report, clock)\n"), module.__dict__)

    for _ in range(2):
        # The two runs define one piece of code under one name, which share
        # entries (README, "Functions whose name repeats"): start empty.
        clear_caches()
        run([])
    assert runs[0] == runs[1]
    statuses, computed = runs[0]
    # Every call a HIT after the first MISS: one refresh ran early, before the
    # 100 s ttl ran out, with the clock advanced 5 s per call.
    assert statuses[0] == "MISS"
    assert set(statuses[2::2]) == {"HIT"}
    assert statuses[-1] == 1
    assert computed == [1, 1]


EXAMPLES = {
    "spec-view": check_spec_view,
    "report-key": check_report_key,
    "async-views": check_async_views,
    "redis-settings": check_redis_settings,
    "near-cache-settings": check_near_cache_settings,
    "cache-response": check_cache_response,
    "http-headers": check_http_headers,
    "invalidation-rule": check_invalidation_rule,
    "stats": check_stats,
    "testing-frozen-clock": check_testing_frozen_clock,
    "seeded-early-refresh": check_seeded_early_refresh,
}
NEEDS_DATABASE = {"cache-response", "invalidation-rule"}


def test_every_marked_block_has_a_test():
    assert sorted(BLOCKS) == sorted(EXAMPLES)


@pytest.mark.parametrize(
    "name",
    [
        # Rules act on commit: the saves of those blocks commit for real.
        pytest.param(name, marks=pytest.mark.django_db(transaction=True))
        if name in NEEDS_DATABASE
        else name
        for name in sorted(EXAMPLES)
    ],
)
def test_example(name):
    try:
        EXAMPLES[name]()
    finally:
        # A block's rules are its own: registered for its functions only.
        if name in NEEDS_DATABASE:
            CacheRegister.clear()


# --- the reference tables ------------------------------------------------------


def test_settings_table_is_settings_defaults():
    rows = table_rows(section("## Settings"))
    assert {len(row) for row in rows} == {3}
    documented: dict[str, str] = {}
    for row in rows:
        names = re.findall(r"`([A-Z_]+)`", row[0])
        defaults = [d.strip() for d in row[1].split(",")] if len(names) > 1 else [row[1]]
        documented.update(zip(names, defaults, strict=True))
    assert sorted(documented) == sorted(settings.DEFAULTS)
    for name, default in documented.items():
        value = settings.DEFAULTS[name]
        if name == "SIGNING_KEY":
            assert value is None and default == "derived from `SECRET_KEY`"
            continue
        assert ast.literal_eval(default.strip("`")) == value, (name, default, value)


def test_wrapper_members_table():
    rows = table_rows(section("### `CachedWrapper`"))

    @cache_result(ttl=1)
    def f(x):
        return x

    names = set()
    for row in rows:
        names.update(re.findall(r"`([a-z_]+)(?:\(|`)", row[0]))
    names.discard("wrapper")
    assert names == {
        "get_with_metadata",
        "refresh",
        "refresh_with_metadata",
        "bypass_cache",
        "bypass_cache_with_metadata",
        "get_cache_only",
        "get_cached_metadata",
        "get_cache_key",
        "delete_cache",
        "delete_by_prefix",
        "invalidate_all",
        "stats",
        "reset_stats",
        "counters",
        "counted_events",
        "counts",
        "shared_backend",
        "steps",
        "key_constructor",
        "func",
        "is_cached_function",
    }
    for name in names:
        assert hasattr(f, name), name
    for name in ("__name__", "__qualname__", "__doc__", "__module__", "__wrapped__"):
        assert hasattr(f, name), name
    assert f.is_cached_function is True


def test_async_method_list():
    text = section("## `async def`")
    listed = text.split("- The methods are ")[1].split("A sync-named method")[0]
    names = re.findall(r"`([a-z_]+)`", listed)

    @cache_result(ttl=1)
    async def f(x):
        return x

    from restflow.caching import KeyConstructor

    for name in names:
        assert hasattr(f, name) or hasattr(KeyConstructor, name), name
    shared = text.split("What makes no round\n  trip is shared with sync wrappers, not async: ")[1]
    for name in re.findall(r"`([a-z_]+)(?:\(\))?`", shared.split(".\n")[0]):
        assert hasattr(f, name), name
    with pytest.raises(TypeError, match=r"use aget_with_metadata\(\) instead"):
        f.get_with_metadata(1)


def test_statuses_and_metadata_tables():
    statuses = [row[0].strip("`") for row in table_rows(section("## Statuses"))]
    assert statuses == [member.value for member in CacheStatus]
    assert CacheStatus.HIT == "HIT" and isinstance(CacheStatus.HIT, str)
    keys = [row[0].strip("`") for row in table_rows(section("## Metadata and headers"))]
    assert keys[:3] == ["cache_status", "cached_at", "reset_at"]
    assert keys[3:] == ["X-Cache-status", "X-Cached-at", "X-Cache-reset-at"]

    @cache_result(ttl=300)
    def f(x):
        return x

    assert sorted(f.get_with_metadata(1)[1]) == sorted(keys[:3])
    assert sorted(f.bypass_cache_with_metadata(1)[1]) == ["cache_status"]


def test_spec_status_comparison_runs_unchanged():
    """SPEC-response-headers: ``if metadata["cache_status"] == CacheStatus.MISS``."""

    @cache_result(ttl=300)
    def get_user_payload(user_id: int):
        return {"id": user_id}

    logged = []

    def log_cache_miss(*args):
        logged.append(args)

    for _ in range(2):
        value, metadata = get_user_payload.get_with_metadata(1)
        if metadata["cache_status"] == CacheStatus.MISS:
            log_cache_miss(value)
    assert logged == [({"id": 1},)]


def test_migrating_query_params_payload():
    """docs/migrating.md: the payload keeps request order; the key does unless sort_lists."""
    from restflow.caching import QueryParamsKeyField

    request = RequestFactory().get("/?sort=b&sort=a")

    def view(request):
        return None

    field = QueryParamsKeyField(["sort"])
    assert field.get_key_payload(view, (request,), {}) == {"query": {"sort": ["b", "a"]}}

    @cache_result(ttl=1, key_constructor={"q": QueryParamsKeyField(["sort"])})
    def ordered(request):
        return 1

    @cache_result(ttl=1, key_constructor={"q": QueryParamsKeyField(["sort"], sort_lists=True)})
    def unordered(request):
        return 1

    other = RequestFactory().get("/?sort=a&sort=b")
    assert ordered.get_cache_key(request) != ordered.get_cache_key(other)
    assert unordered.get_cache_key(request) == unordered.get_cache_key(other)


def test_settings_wording_matches_the_checks():
    """The settings table's words for CACHE_STATUS_NAME and KEY_PREFIX."""
    row = next(r for r in table_rows(section("## Settings")) if r[0] == "`CACHE_STATUS_NAME`")
    listed = re.search(r"``(.+?)``", row[2]).group(1)
    for char in string.punctuation:
        name = f"a{char}"
        if char in listed:
            assert settings._validate({"CACHE_STATUS_NAME": name})["CACHE_STATUS_NAME"] == name
        else:
            with pytest.raises(ImproperlyConfigured, match="must be an HTTP token"):
                settings._validate({"CACHE_STATUS_NAME": name})
    for good in ("restflow", "*edge", "cdn'1", "a:b/c"):
        assert settings._validate({"CACHE_STATUS_NAME": good})["CACHE_STATUS_NAME"] == good
    for bad in ("1cdn", "a b", "a,b", "a;b", 'a"b', "a(b"):
        with pytest.raises(ImproperlyConfigured, match="must be an HTTP token"):
            settings._validate({"CACHE_STATUS_NAME": bad})
    with pytest.raises(ImproperlyConfigured, match='KEY_PREFIX"\\] must be a str without "::"'):
        settings._validate({"KEY_PREFIX": "a::b"})
