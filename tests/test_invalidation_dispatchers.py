"""Dispatchers: where invalidation work runs (issue 6).

Inline, threadpool, asyncio and Celery (eager) run for real against model
saves; django-rq, django-q2 and Dramatiq are stood in for by fakes that
record what would be sent, which a "worker" then runs.
"""

import asyncio
import json
import sys
import threading
import types
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings

from restflow.caching import CACHE_MISSING, cache_result
from restflow.caching import tasks as tasks_module
from restflow.caching.dispatchers import (
    AsyncIODispatcher,
    Dispatcher,
    ThreadPoolDispatcher,
    get_dispatcher,
    register_dispatcher,
    registered_dispatcher_names,
)
from restflow.caching.dispatchers.jobs import Change, Job, SignalTypes, decode, encode
from restflow.caching.registry import CacheRegister
from restflow.caching.rules import InvalidationRule
from restflow.caching.tasks import run_cache_rules
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _forget_rules():
    yield
    ThreadPoolDispatcher.join(5)
    CacheRegister.clear()


def cached_title(**options):
    """A cached title lookup whose rule runs on the given dispatcher, and the
    names of the threads it ran on."""
    threads = []

    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Article, field_mapping={"article_id": "pk"}, **options)],
    )
    def title(article_id):
        threads.append(threading.current_thread().name)
        return Article.objects.filter(pk=article_id).values_list("title", flat=True).first()

    return title, threads


# -- the registry of dispatchers ------------------------------------------------------


def test_the_built_in_dispatchers_are_registered():
    assert {
        "inline",
        "threadpool",
        "asyncio",
        "celery",
        "django_rq",
        "django_q",
        "dramatiq",
    } <= set(registered_dispatcher_names())


def test_register_dispatcher_checks_what_it_is_given():
    with pytest.raises(TypeError, match="Dispatcher subclass"):
        register_dispatcher(object)

    class Nameless(Dispatcher):
        def dispatch(self, jobs):
            pass

    with pytest.raises(ValueError, match="must set `name`"):
        register_dispatcher(Nameless)


def test_get_dispatcher_by_name_class_or_instance_and_its_config():
    assert get_dispatcher("inline").name == "inline"
    pool = get_dispatcher(ThreadPoolDispatcher, {"max_workers": 2})
    assert pool.option("max_workers") == 2
    assert get_dispatcher(pool) is pool
    with pytest.raises(ValueError, match="Unknown dispatcher 'nope'; registered: "):
        get_dispatcher("nope")
    with pytest.raises(ValueError, match=r"unknown dispatcher_config key.*queue"):
        get_dispatcher("threadpool", {"queue": "x"})
    with pytest.raises(ValueError, match="max_workers must be an int >= 1"):
        get_dispatcher("threadpool", {"max_workers": 0})
    with pytest.raises(TypeError):
        get_dispatcher(42)
    with pytest.raises(ValueError, match="not an instance"):
        get_dispatcher(pool, {"max_workers": 3})


def test_settings_merge_defaults_with_the_dispatcher_block():
    assert ThreadPoolDispatcher.settings() == {"RAISE_EXCEPTION": None, "MAX_WORKERS": 4}
    with override_settings(
        RESTFLOW_SETTINGS={
            "CACHE_SETTINGS": {"DISPATCHER_SETTINGS": {"threadpool": {"MAX_WORKERS": 8}}}
        }
    ):
        assert get_dispatcher("threadpool").option("max_workers") == 8
        assert get_dispatcher("threadpool", {"max_workers": 2}).option("max_workers") == 2


def test_a_bad_max_workers_setting_is_refused_when_the_dispatcher_is_made():
    with override_settings(
        RESTFLOW_SETTINGS={
            "CACHE_SETTINGS": {"DISPATCHER_SETTINGS": {"threadpool": {"MAX_WORKERS": 0}}}
        }
    ):
        with pytest.raises(
            ValueError, match=r"max_workers must be an int >= 1; got 0 .*MAX_WORKERS"
        ):
            get_dispatcher("threadpool")


def test_batch_keys_group_equal_configurations():
    assert get_dispatcher("threadpool").batch_key() == get_dispatcher("threadpool").batch_key()
    assert (
        get_dispatcher("threadpool", {"max_workers": 2}).batch_key()
        != get_dispatcher("threadpool").batch_key()
    )


# -- in-process dispatchers ---------------------------------------------------------------


def test_inline_runs_on_the_saving_thread_before_save_returns():
    title, _ = cached_title(dispatcher="inline")
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_threadpool_runs_off_the_saving_thread():
    title, threads = cached_title(dispatcher="threadpool", rewarm=True)
    a = Article.objects.create(title="a")
    title(a.pk)
    a.title = "a2"
    a.save()
    assert ThreadPoolDispatcher.join(5)
    assert title.get_cache_only(a.pk) == "a2"
    assert threads[0] == "MainThread"
    assert threads[1].startswith("restflow-invalidation")


def test_asyncio_runs_as_a_task_of_the_loop_that_awaits_the_save():
    title, threads = cached_title(dispatcher="asyncio", rewarm=True)
    a = Article.objects.create(title="a")
    title(a.pk)

    async def main():
        a.title = "a2"
        await a.asave()  # the signal fires on asgiref's worker thread
        await AsyncIODispatcher.join()

    asyncio.run(main())
    assert title.get_cache_only(a.pk) == "a2"
    assert len(threads) == 2
    assert threads[1].startswith("asyncio_"), threads  # the loop's executor, not asgiref's


@pytest.mark.parametrize("dispatcher", ["inline", "asyncio", "threadpool"])
def test_an_async_def_is_rewarmed_with_its_awaited_value_from_an_async_save(dispatcher):
    """Issue 10, item 14: the rewarm awaits the function wherever it runs."""

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(
                Article, field_mapping={"article_id": "pk"}, rewarm=True, dispatcher=dispatcher
            )
        ],
    )
    async def title(article_id):
        query = Article.objects.filter(pk=article_id).values_list("title", flat=True)
        return await query.afirst()

    a = Article.objects.create(title="a")

    async def main():
        assert await title(a.pk) == "a"
        a.title = "a2"
        await a.asave()
        await AsyncIODispatcher.join()
        await asyncio.to_thread(ThreadPoolDispatcher.join, 5)
        return await title.aget_with_metadata(a.pk)

    value, metadata = asyncio.run(main())
    assert (value, metadata["cache_status"]) == ("a2", "HIT")


def test_asyncio_runs_inline_where_no_loop_waits():
    title, _ = cached_title(dispatcher="asyncio")
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    assert title.get_cache_only(a.pk) is CACHE_MISSING


# -- Celery, eager -------------------------------------------------------------------------


@pytest.fixture
def celery_app():
    celery = pytest.importorskip("celery")
    app = celery.Celery("restflow-tests", set_as_current=True)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.close()


def test_celery_runs_the_task_eagerly(celery_app):
    title, _ = cached_title(dispatcher="celery")
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    assert "restflow.caching.tasks.task_run_cache_rules" in celery_app.tasks
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_celery_task_failures_follow_the_rule(celery_app, caplog):
    def explode(wrapper, instance):
        raise RuntimeError("worker failed")

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, invalidator=explode, dispatcher="celery"),
        ],
    )
    def feed():
        return "feed"

    a = Article.objects.create(title="a")
    a.save()  # logged in the worker
    assert "worker failed" in caplog.text

    CacheRegister.clear()
    CacheRegister.add(
        Article,
        feed,
        InvalidationRule(Article, invalidator=explode, dispatcher="celery", raise_exception=True),
    )
    with pytest.raises(RuntimeError, match="worker failed"):
        a.save()


def test_celery_sends_by_name_a_task_this_process_does_not_know(celery_app, monkeypatch):
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, **kw: sent.append((name, kw)))
    title, _ = cached_title(
        dispatcher="celery", dispatcher_config={"task_name": "remote.run", "queue": "cache"}
    )
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    [(name, options)] = sent
    assert name == "remote.run"
    assert options["queue"] == "cache"
    assert options["kwargs"]["dispatcher_name"] == "celery"
    [payload] = options["kwargs"]["jobs"]
    assert payload["kwargs"] == {"article_id": a.pk}
    assert title.get_cache_only(a.pk) == "a"  # the remote worker has not run

    run_cache_rules(json.loads(json.dumps(options["kwargs"]["jobs"])), dispatcher_name="celery")
    assert title.get_cache_only(a.pk) is CACHE_MISSING


# -- the other brokers, faked ------------------------------------------------------------------


def test_django_rq_enqueues_the_worker_function_by_path(monkeypatch):
    enqueued = []
    queue = types.SimpleNamespace(enqueue=lambda *args, **kw: enqueued.append((args, kw)))
    fake = types.SimpleNamespace(get_queue=lambda name: queue if name == "cache" else None)
    monkeypatch.setitem(sys.modules, "django_rq", fake)

    title, _ = cached_title(dispatcher="django_rq", dispatcher_config={"queue": "cache"})
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    [((path, jobs), options)] = enqueued
    assert path == "restflow.caching.tasks.run_cache_rules"
    assert options == {"dispatcher_name": "django_rq"}
    run_cache_rules(json.loads(json.dumps(jobs)), **options)
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_django_q_queues_the_worker_function_by_path(monkeypatch):
    queued = []
    fake_tasks = types.SimpleNamespace(async_task=lambda *args, **kw: queued.append((args, kw)))
    monkeypatch.setitem(sys.modules, "django_q", types.SimpleNamespace(tasks=fake_tasks))
    monkeypatch.setitem(sys.modules, "django_q.tasks", fake_tasks)

    title, _ = cached_title(dispatcher="django_q", dispatcher_config={"group": "cache"})
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    [((path, jobs), options)] = queued
    assert path == "restflow.caching.tasks.run_cache_rules"
    assert options == {"dispatcher_name": "django_q", "group": "cache"}
    options.pop("group")
    run_cache_rules(json.loads(json.dumps(jobs)), **options)
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_dramatiq_sends_to_the_restflow_actor(monkeypatch):
    sent = []

    def actor(fn, actor_name, queue_name):
        return types.SimpleNamespace(
            fn=fn, queue_name=queue_name, send=lambda *args: sent.append((actor_name, args))
        )

    monkeypatch.setitem(sys.modules, "dramatiq", types.SimpleNamespace(actor=actor))
    monkeypatch.setattr(tasks_module, "_actors", {})

    title, _ = cached_title(dispatcher="dramatiq")
    a = Article.objects.create(title="a")
    title(a.pk)
    a.save()
    [(name, (jobs, dispatcher_name))] = sent
    assert (name, dispatcher_name) == ("restflow.task_run_cache_rules", "dramatiq")
    # The worker's actor is the same function.
    tasks_module.dramatiq_actor().fn(json.loads(json.dumps(jobs)), dispatcher_name)
    assert title.get_cache_only(a.pk) is CACHE_MISSING
    with pytest.raises(ValueError, match="another actor_name"):
        tasks_module.dramatiq_actor(queue_name="other")


@pytest.mark.parametrize(
    ("dispatcher", "modules", "extra"),
    [
        ("celery", ["celery"], "celery"),
        ("django_rq", ["django_rq"], "django-rq"),
        ("django_q", ["django_q", "django_q.tasks"], "django-q"),
        ("dramatiq", ["dramatiq"], "dramatiq"),
    ],
)
def test_a_missing_broker_package_names_its_extra_at_decoration(
    monkeypatch, dispatcher, modules, extra
):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError, match=rf"pip install 'restflow-cache\[{extra}\]'"):
        InvalidationRule(Article, field_mapping={"article_id": "pk"}, dispatcher=dispatcher)


def test_a_missing_broker_package_behind_the_default_dispatcher_is_logged(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "django_rq", None)
    cached_title()
    a = Article.objects.create(title="a")
    with override_settings(
        RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"DEFAULT_DISPATCHER": "django_rq"}}
    ):
        a.save()
    assert "restflow-cache[django-rq]" in caplog.text


# -- jobs as a broker carries them --------------------------------------------------------------


class Color(__import__("enum").Enum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        1,
        1.5,
        "1",
        (1, "a"),
        [1, (2,)],
        {"a": 1, 2: "b"},
        {1, 2},
        frozenset({"x"}),
        b"\x00bytes",
        datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        date(2030, 1, 2),
        datetime(2030, 1, 2, 3, 4).time(),
        timedelta(days=1, microseconds=5),
        Decimal("1.10"),
        uuid.UUID(int=7),
        Color.RED,
    ],
)
def test_values_cross_json_with_their_types(value):
    back = decode(json.loads(json.dumps(encode(value))))
    assert back == value
    assert type(back) is type(value)


def test_a_value_that_cannot_cross_says_how_to_map_it():
    with pytest.raises(TypeError, match=r"e\.g\. 'author_id' rather than 'author'"):
        encode(Article(pk=1))


def test_a_job_round_trips_through_its_payload():
    job = Job(
        "m.f#1",
        "m",
        "testapp.Article",
        Change(SignalTypes.POST_SAVE, True, frozenset({"b", "a"})),
        kwargs={"x": (1, 2)},
        pk=uuid.UUID(int=1),
        instance=object(),
    )
    payload = json.loads(json.dumps(job.to_payload()))
    assert payload["update_fields"] == ["a", "b"]
    back = Job.from_payload(payload)
    assert (back.rule_id, back.module, back.model, back.change) == (
        "m.f#1",
        "m",
        "testapp.Article",
        job.change,
    )
    assert back.kwargs == {"x": (1, 2)}
    assert back.pk == uuid.UUID(int=1)
    assert back.instance is None
    assert back.identity() == job.identity()
    assert (
        Job("m.f#1", "m", "x", job.change, kwargs={"x": True}).identity()
        != Job("m.f#1", "m", "x", job.change, kwargs={"x": 1}).identity()
    )
