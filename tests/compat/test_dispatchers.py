"""Part 5 of issue 12 (without real brokers): drf-restflow 2.0.1's dispatcher contract.

- a custom ``Dispatcher`` that declares no ``config_keys`` takes free-form
  ``dispatcher_config``; the built-ins stay strict;
- a custom dispatcher written for drf-restflow,
  ``dispatch(self, *, rule_ids, rule_kwargs, **context)`` calling
  ``run_cache_rules(rule_ids, rule_kwargs)``, keeps working;
- Celery messages carry ``model_label``, ``pk`` and ``signal_type`` at top
  level, and the task runs messages in drf-restflow's format (queued before
  the deploy);
- ``Dispatcher.settings()`` returns drf-restflow's defaults.
"""

from __future__ import annotations

import pytest

from restflow.caching import (
    CACHE_MISSING,
    AsyncIODispatcher,
    CeleryDispatcher,
    Dispatcher,
    DjangoQDispatcher,
    DjangoRqDispatcher,
    DramatiqDispatcher,
    InvalidationRule,
    ThreadPoolDispatcher,
    cache_result,
    register_dispatcher,
)
from restflow.caching.dispatchers import get_dispatcher
from restflow.caching.registry import CacheRegister
from restflow.caching.tasks import run_cache_rules, task_run_cache_rules
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


@register_dispatcher
class Outbox(Dispatcher):
    """Declares no options: takes any dispatcher_config, as drf-restflow's did."""

    name = "compat-outbox"

    def dispatch(self, jobs):
        run_cache_rules(jobs, dispatcher_name=self.name)


@register_dispatcher
class LegacyDispatcher(Dispatcher):
    """A custom dispatcher as drf-restflow documents one."""

    name = "compat-legacy"
    sent: list = []  # noqa: RUF012

    def dispatch(self, *, rule_ids, rule_kwargs, **context):
        LegacyDispatcher.sent.append((list(rule_ids), dict(rule_kwargs), context))
        run_cache_rules(rule_ids, rule_kwargs)


def cached_title(**options):
    calls = []

    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Article, field_mapping={"article_id": "pk"}, **options)],
    )
    def title(article_id):
        calls.append(article_id)
        return Article.objects.get(pk=article_id).title

    return title, calls


def test_a_custom_dispatcher_without_config_keys_takes_free_form_config(store):
    rule = InvalidationRule(
        Article, dispatcher=Outbox, dispatcher_config={"topic": "cache", "retries": 3}
    )
    dispatcher = rule.get_dispatcher()
    assert dispatcher.config == {"topic": "cache", "retries": 3}
    assert dispatcher.option("topic") == "cache"
    assert dispatcher.batch_key() != Outbox(topic="other").batch_key()

    title, _calls = cached_title(dispatcher="compat-outbox", dispatcher_config={"topic": "t"})
    article = Article.objects.create(title="a")
    assert title(article.pk) == "a"
    article.title = "b"
    article.save()
    assert title(article.pk) == "b"


@pytest.mark.parametrize("name", ["inline", "asyncio", "threadpool"])
def test_the_built_ins_stay_strict(name):
    with pytest.raises(ValueError, match="unknown dispatcher_config key"):
        get_dispatcher(name, {"topic": "cache"})


def test_a_dispatcher_written_for_drf_restflow(store):
    LegacyDispatcher.sent.clear()
    title, _calls = cached_title(dispatcher="compat-legacy")
    article = Article.objects.create(title="a")
    title(article.pk)
    article.title = "b"
    article.save()
    assert title.get_cache_only(article.pk) is CACHE_MISSING
    assert title(article.pk) == "b"
    ((rule_ids, rule_kwargs, context),) = LegacyDispatcher.sent
    assert rule_ids == [f"{title.func.__module__}.{title.func.__qualname__}#0"]
    assert rule_kwargs == {rule_ids[0]: {"article_id": article.pk}}
    assert context["model_label"] == "testapp.Article"
    assert context["pk"] == article.pk
    assert context["signal_type"] == CacheRegister.SignalTypes.POST_SAVE
    assert context["signal_type"].value == "POST_SAVE"


def test_an_invalidator_rule_on_a_drf_restflow_dispatcher_runs_in_process():
    LegacyDispatcher.sent.clear()
    dropped = []

    def invalidator(wrapper, instance):
        dropped.append(instance.pk)
        wrapper.invalidate_all()

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, invalidator=invalidator, dispatcher="compat-legacy")
        ],
    )
    def titles():
        return list(Article.objects.values_list("title", flat=True))

    article = Article.objects.create(title="a")
    titles()
    article.save()
    assert dropped == [article.pk]
    assert LegacyDispatcher.sent == []  # nothing to send: it ran here, as in drf-restflow


# -- Celery messages ---------------------------------------------------------------------------


class FakeTask:
    """Celery's task object as the dispatcher uses it: ``apply_async(kwargs=...)``."""

    def __init__(self):
        self.messages = []

    def apply_async(self, kwargs, **options):
        self.messages.append(kwargs)


def test_celery_messages_carry_the_change_at_top_level(monkeypatch):
    celery = pytest.importorskip("celery")
    task = FakeTask()
    app = celery.current_app
    monkeypatch.setitem(app.tasks, CeleryDispatcher.default_settings["TASK_NAME"], task)
    title, _calls = cached_title(dispatcher="celery")
    article = Article.objects.create(title="a")
    title(article.pk)
    article.save()
    (message,) = task.messages
    assert message["model_label"] == "testapp.Article"
    assert message["pk"] == article.pk
    assert message["signal_type"] == "POST_SAVE"
    # The worker side (Celery's own task again): restflow's message runs as before.
    monkeypatch.undo()
    assert title.get_cache_only(article.pk) == "a"
    task_run_cache_rules(**message)
    assert title.get_cache_only(article.pk) is CACHE_MISSING


@pytest.mark.parametrize(
    ("signal_type", "mapped", "guessed"),
    [
        ("POST_SAVE", "article_id", True),  # found by model and mapped parameter
        ("POST_DELETE", "slug", False),  # matches nothing: the model's functions drop all
    ],
)
def test_a_message_drf_restflow_queued_before_the_deploy_still_runs(
    store, caplog, signal_type, mapped, guessed
):
    title, _calls = cached_title()
    article = Article.objects.create(title="a")
    title(article.pk)
    # drf-restflow numbered rules by import order: 17 names nothing here.
    task_run_cache_rules(
        model_label="testapp.Article",
        pk=article.pk,
        rule_ids=[17],
        signal_type=signal_type,
        rule_kwargs={"17": {mapped: article.pk}},
    )
    assert title.get_cache_only(article.pk) is CACHE_MISSING
    assert ("names no rule here" in caplog.text) is not guessed


def test_run_cache_rules_in_drf_restflows_form_with_restflows_ids(store):
    title, _calls = cached_title()
    article = Article.objects.create(title="a")
    title(article.pk)
    rule_id = f"{title.func.__module__}.{title.func.__qualname__}#0"
    run_cache_rules([rule_id], {rule_id: {"article_id": article.pk}})
    assert title.get_cache_only(article.pk) is CACHE_MISSING
    title(article.pk)
    run_cache_rules(rule_ids=[rule_id], rule_kwargs={})  # no arguments: skipped, as there
    assert title.get_cache_only(article.pk) == "a"


# -- settings() -------------------------------------------------------------------------------

ORIGIN_SETTINGS = {
    CeleryDispatcher: {
        "TASK_NAME": "restflow.caching.tasks.task_run_cache_rules",
        "QUEUE": None,
        "RAISE_EXCEPTION": None,
    },
    ThreadPoolDispatcher: {"MAX_WORKERS": 4, "RAISE_EXCEPTION": None},
    DjangoRqDispatcher: {
        "QUEUE": "default",
        "FUNCTION_PATH": "restflow.caching.tasks.run_cache_rules",
        "RAISE_EXCEPTION": None,
    },
    DramatiqDispatcher: {
        "QUEUE": "default",
        "ACTOR_NAME": "restflow.task_run_cache_rules",
        "RAISE_EXCEPTION": None,
    },
    DjangoQDispatcher: {
        "CLUSTER": None,
        "GROUP": None,
        "FUNCTION_PATH": "restflow.caching.tasks.run_cache_rules",
        "RAISE_EXCEPTION": None,
    },
    AsyncIODispatcher: {"RAISE_EXCEPTION": None},
}


@pytest.mark.parametrize(
    ("dispatcher", "expected"), list(ORIGIN_SETTINGS.items()), ids=lambda v: getattr(v, "name", "")
)
def test_settings_are_drf_restflows(dispatcher, expected):
    assert dispatcher.settings() == expected


def test_a_django_rq_or_django_q_message_drf_restflow_queued(store):
    """Their worker call: ``run_cache_rules(rule_ids, rule_kwargs, dispatcher_name=...)``,
    without the model: the rule is found by the parameters it maps."""
    title, _calls = cached_title()
    article = Article.objects.create(title="a")
    title(article.pk)
    run_cache_rules([5], {"5": {"article_id": article.pk}}, dispatcher_name="django_rq")
    assert title.get_cache_only(article.pk) is CACHE_MISSING


def test_the_registrys_and_the_tasks_origin_entry_points(store):
    from asgiref.sync import async_to_sync

    from restflow.caching.tasks import arun_cache_rules

    title, _calls = cached_title()
    article = Article.objects.create(title="a")
    rule_id = f"{title.func.__module__}.{title.func.__qualname__}#0"
    for run in (
        lambda: CacheRegister.run_cache_rules(
            rule_ids=[rule_id], rule_kwargs={rule_id: {"article_id": article.pk}}
        ),
        lambda: async_to_sync(arun_cache_rules)([rule_id], {rule_id: {"article_id": article.pk}}),
        lambda: CacheRegister.invalidate_for_instance(
            article, False, CacheRegister.SignalTypes.POST_SAVE
        ),
    ):
        title(article.pk)
        run()
        assert title.get_cache_only(article.pk) is CACHE_MISSING


def test_the_base_modules_helpers():
    from restflow.caching.dispatchers.base import (
        DEFAULT_FUNCTION_PATH,
        get_dispatcher_settings,
        import_dotted,
    )

    assert import_dotted(DEFAULT_FUNCTION_PATH) is run_cache_rules
    assert get_dispatcher_settings("celery") == ORIGIN_SETTINGS[CeleryDispatcher]
    assert get_dispatcher_settings("compat-outbox") == {"RAISE_EXCEPTION": None}
    with pytest.raises(ImportError, match="dotted path"):
        import_dotted("nodots")
