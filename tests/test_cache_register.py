"""CacheRegister: registering, discovery, status, and bulk changes (issue 6)."""

import sys

import pytest
from django.apps import apps
from django.db import transaction

from restflow.caching import CACHE_MISSING, cache_result, registry
from restflow.caching.apps import RestflowCachingConfig
from restflow.caching.dispatchers.jobs import Job
from restflow.caching.registry import CacheRegister, CacheRegistry
from restflow.caching.rules import InvalidationRule
from restflow.caching.tasks import run_cache_rules
from tests.testapp.models import Article, Comment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _forget_rules():
    yield
    CacheRegister.clear()


@cache_result(ttl=None)
def title(article_id):
    return Article.objects.filter(pk=article_id).values_list("title", flat=True).first()


@cache_result(ttl=None)
def comment_count(article_id):
    return Comment.objects.filter(article_id=article_id).count()


def test_signal_types():
    assert CacheRegistry.SignalTypes is CacheRegister.SignalTypes
    assert [t.value for t in CacheRegister.SignalTypes] == ["POST_SAVE", "POST_DELETE"]
    assert CacheRegister.SignalTypes.POST_SAVE == "POST_SAVE"


def test_add_and_register_take_the_next_positions_and_show_in_the_status():
    CacheRegister.add(Article, title, InvalidationRule(Article, field_mapping={"article_id": "pk"}))
    CacheRegister.register(
        model=Comment,
        func=title,
        invalidation_rule=InvalidationRule(Comment, field_mapping={"article_id": "article_id"}),
    )

    path = f"{__name__}.title"
    assert CacheRegister.model_count == 2
    assert CacheRegister.get_status() == {
        "name": "default",
        "discovered": False,
        "pending": 0,
        "models": {
            "testapp.Article": [
                {"id": f"{path}#0", "function": path, "target": "entry", "dispatcher": "inline"}
            ],
            "testapp.Comment": [
                {"id": f"{path}#1", "function": path, "target": "entry", "dispatcher": "inline"}
            ],
        },
    }
    assert CacheRegister.get_rule(f"{path}#1").model is Comment

    a = Article.objects.create(title="a")
    title(a.pk)
    Comment.objects.create(article=a, body="x").save()
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_add_refuses_what_is_not_a_cached_function_or_a_rule():
    with pytest.raises(TypeError, match="cache_result"):
        CacheRegister.add(Article, lambda article_id: 1, InvalidationRule(Article))
    with pytest.raises(TypeError, match="InvalidationRule"):
        CacheRegister.add(Article, title, {"field_mapping": {}})


def test_a_model_named_before_the_apps_load_waits_until_discovery(monkeypatch):
    monkeypatch.setattr(apps, "models_ready", False)
    rule = InvalidationRule("testapp.Article", field_mapping={"article_id": "pk"})
    CacheRegister.add("testapp.Article", title, rule)
    assert CacheRegister.pending_count == 1
    assert CacheRegister.model_count == 0
    monkeypatch.setattr(apps, "models_ready", True)

    assert CacheRegister.auto_discover() is CacheRegister
    assert CacheRegister.is_discovered
    assert CacheRegister.pending_count == 0
    assert CacheRegister.model_count == 1


def test_the_app_config_discovers_the_projects_rules_on_ready(monkeypatch):
    config = apps.get_app_config("restflow_caching")
    assert isinstance(config, RestflowCachingConfig)
    assert config.name == "restflow.caching"
    imported = []
    real = registry.importlib.import_module
    monkeypatch.setattr(
        registry.importlib, "import_module", lambda name: imported.append(name) or real(name)
    )

    CacheRegister.clear()
    sys.modules.pop("tests.testapp.cached", None)
    assert not CacheRegister.is_discovered
    config.ready()
    config.ready()  # once is enough

    assert CacheRegister.is_discovered
    ids = [r["id"] for r in CacheRegister.get_status()["models"]["testapp.Article"]]
    assert ids == ["tests.testapp.cached.discovered_title#0"]
    # The project's apps only, never their migrations, nor restflow's own modules.
    assert imported == ["tests.testapp.apps", "tests.testapp.cached", "tests.testapp.models"]

    from tests.testapp.cached import discovered_title

    a = Article.objects.create(title="a")
    discovered_title(a.pk)
    a.save()
    assert discovered_title.get_cache_only(a.pk) is CACHE_MISSING


def test_clear_disconnects_the_signals():
    CacheRegister.add(Article, title, InvalidationRule(Article, field_mapping={"article_id": "pk"}))
    CacheRegister.clear()
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    assert title.get_cache_only(a.pk) == "a"
    assert CacheRegister.get_status()["models"] == {}


def test_a_worker_imports_the_module_of_a_rule_it_does_not_know():
    sys.modules.pop("tests.rule_identity.first", None)
    a = Article.objects.create(title="a")
    payload = {
        "rule": "tests.rule_identity.first.front_page#0",
        "module": "tests.rule_identity.first",
        "model": "testapp.Article",
        "signal": "POST_SAVE",
        "created": False,
        "update_fields": None,
        "kwargs": None,
        "pk": a.pk,
    }
    run_cache_rules([payload], dispatcher_name="celery")
    assert sys.modules["tests.rule_identity.first"].SEEN == [(a.pk, "POST_SAVE")]


def test_a_job_for_an_unknown_rule_or_another_model_is_refused(caplog):
    payload = {
        "rule": f"{__name__}.title#7",
        "module": __name__,
        "model": "testapp.Article",
        "signal": "POST_SAVE",
        "kwargs": {"article_id": 1},
    }
    run_cache_rules([payload])  # logged, not raised: the default policy
    assert "No invalidation rule 'tests.test_cache_register.title#7'" in caplog.text
    with pytest.raises(LookupError, match="No invalidation rule"):
        CacheRegister.find(Job.from_payload(payload))

    CacheRegister.add(
        Comment, title, InvalidationRule(Comment, field_mapping={"article_id": "article_id"})
    )
    with pytest.raises(LookupError, match=r"on testapp\.Comment here.*runs different code"):
        CacheRegister.find(Job.from_payload(dict(payload, rule=f"{__name__}.title#0")))


# -- bulk changes --------------------------------------------------------------------


def test_queryset_update_sends_no_signal_and_invalidate_instances_runs_the_rules():
    CacheRegister.add(Article, title, InvalidationRule(Article, field_mapping={"article_id": "pk"}))
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    title(a.pk)
    title(b.pk)

    Article.objects.filter(pk=a.pk).update(title="a2")
    assert title.get_cache_only(a.pk) == "a"  # stale: no signal

    assert CacheRegister.invalidate_instances(Article.objects.filter(pk=a.pk)) == 1
    assert title.get_cache_only(a.pk) is CACHE_MISSING
    assert title.get_cache_only(b.pk) == "b"


def test_bulk_changes_inside_atomic_run_at_commit_once_per_entry():
    CacheRegister.add(
        Comment,
        comment_count,
        InvalidationRule(Comment, field_mapping={"article_id": "article_id"}),
    )
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    comments = Comment.objects.bulk_create(
        [Comment(article=a, body=str(n)) for n in range(5)] + [Comment(article=b, body="b")]
    )
    comment_count(a.pk)
    comment_count(b.pk)

    with transaction.atomic():
        for comment in comments:
            comment.body = "edited"
        Comment.objects.bulk_update(comments, ["body"])
        # Six rows, two entries: two jobs.
        assert CacheRegister.invalidate_instances(comments, update_fields=["body"]) == 2
        assert comment_count.get_cache_only(a.pk) == 5
    assert comment_count.get_cache_only(a.pk) is CACHE_MISSING
    assert comment_count.get_cache_only(b.pk) is CACHE_MISSING


def test_invalidate_instances_applies_watch_fields_created_and_signal_type():
    CacheRegister.add(
        Article,
        title,
        InvalidationRule(Article, field_mapping={"article_id": "pk"}, watch_fields=["title"]),
    )
    a = Article.objects.create(title="a")
    title(a.pk)
    assert CacheRegister.invalidate_instances([a], update_fields=["views"]) == 0
    assert CacheRegister.invalidate_instances([a], created=True) == 0  # trigger_on_create=False
    assert title.get_cache_only(a.pk) == "a"
    assert CacheRegister.invalidate_instances(a, signal_type="POST_DELETE") == 1
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_moving_rows_invalidates_the_old_and_the_new_values():
    CacheRegister.add(
        Comment,
        comment_count,
        InvalidationRule(Comment, field_mapping={"article_id": "article_id"}),
    )
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    Comment.objects.create(article=a, body="x")
    comment_count(a.pk)
    comment_count(b.pk)

    moved = Comment.objects.filter(article=a)
    with transaction.atomic():
        CacheRegister.invalidate_instances(moved)  # read now: article a
        moved.update(article=b)
        CacheRegister.invalidate_instances(Comment.objects.filter(article=b))
    assert comment_count.get_cache_only(a.pk) is CACHE_MISSING
    assert comment_count.get_cache_only(b.pk) is CACHE_MISSING
    assert (comment_count(a.pk), comment_count(b.pk)) == (0, 1)


@pytest.mark.django_db
def test_in_a_test_transaction_the_work_waits_for_the_captured_commit(
    django_capture_on_commit_callbacks,
):
    CacheRegister.add(Article, title, InvalidationRule(Article, field_mapping={"article_id": "pk"}))
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    assert title.get_cache_only(a.pk) == "a"  # the test's transaction never commits

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        a.save()
    assert len(callbacks) == 1
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_invalidate_instances_of_a_model_without_rules_does_not_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert CacheRegister.invalidate_instances(Article.objects.all()) == 0
