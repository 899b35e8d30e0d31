"""Part 5 of issue 12: the broker dispatchers end to end, with their real packages.

django-rq and Dramatiq use a real redis-server as their broker (started
here, on a free loopback port); a save enqueues the rule's job, the
package's own worker runs it in this process (rq's ``SimpleWorker`` in burst
mode, a Dramatiq ``Worker``), and the entry is gone. Each also runs a
message in drf-restflow's format, as queued before a deploy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from restflow.caching import CACHE_MISSING, InvalidationRule, cache_result
from restflow.caching import tasks as tasks_module
from tests.redis.conftest import SERVERS, RedisServer
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def broker_server():
    binary = SERVERS["redis"][0]
    if binary is None or not Path(binary).exists():
        pytest.skip("redis-server not found; run ./scripts/bootstrap.sh")
    server = RedisServer(binary=str(binary)).start()
    yield server
    server.stop()


def broker_url(server: RedisServer, db: int) -> str:
    return server.url.rsplit("/", 1)[0] + f"/{db}"


def cached_title(dispatcher):
    calls = []

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"article_id": "pk"}, dispatcher=dispatcher)
        ],
    )
    def title(article_id):
        calls.append(article_id)
        return Article.objects.get(pk=article_id).title

    return title, calls


def changed_article(title):
    """An article whose title is cached, then changed: its entry is stale."""
    article = Article.objects.create(title="a")
    assert title(article.pk) == "a"
    article.title = "b"
    article.save()
    return article


# -- django-rq --------------------------------------------------------------------------------


@pytest.fixture
def rq_queue(broker_server):
    django_rq = pytest.importorskip("django_rq")
    with override_settings(RQ_QUEUES={"default": {"URL": broker_url(broker_server, 1)}}):
        queue = django_rq.get_queue("default")
        queue.empty()
        yield queue
        queue.empty()


def run_rq_worker(queue):
    from rq import SimpleWorker

    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_django_rq_end_to_end(rq_queue, store):
    title, calls = cached_title("django_rq")
    article = changed_article(title)
    assert rq_queue.count == 1
    assert title.get_cache_only(article.pk) == "a"  # queued, not run yet
    run_rq_worker(rq_queue)
    assert rq_queue.count == 0
    assert title.get_cache_only(article.pk) is CACHE_MISSING
    assert title(article.pk) == "b"
    assert calls == [article.pk, article.pk]


def test_a_django_rq_job_drf_restflow_queued_runs(rq_queue, store):
    title, _calls = cached_title("django_rq")
    article = Article.objects.create(title="a")
    title(article.pk)
    # drf-restflow's worker call: run_cache_rules(rule_ids, rule_kwargs, dispatcher_name=...).
    rq_queue.enqueue(
        "restflow.caching.tasks.run_cache_rules",
        [4],
        {"4": {"article_id": article.pk}},
        dispatcher_name="django_rq",
    )
    run_rq_worker(rq_queue)
    assert title.get_cache_only(article.pk) is CACHE_MISSING


# -- Dramatiq ---------------------------------------------------------------------------------


@pytest.fixture
def dramatiq_broker(broker_server, monkeypatch):
    dramatiq = pytest.importorskip("dramatiq")
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.brokers.stub import StubBroker

    broker = RedisBroker(url=broker_url(broker_server, 2))
    broker.flush_all()
    dramatiq.set_broker(broker)
    monkeypatch.setattr(tasks_module, "_actors", {})  # declared on this broker
    yield broker
    broker.flush_all()
    broker.close()
    dramatiq.set_broker(StubBroker())  # none left pointing at a stopped server


def run_dramatiq_worker(broker):
    import dramatiq

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("default", timeout=10_000)
        worker.join()
    finally:
        worker.stop()


def test_dramatiq_end_to_end(dramatiq_broker, store):
    title, _calls = cached_title("dramatiq")
    article = changed_article(title)
    assert title.get_cache_only(article.pk) == "a"  # sent, not run yet
    run_dramatiq_worker(dramatiq_broker)
    assert title.get_cache_only(article.pk) is CACHE_MISSING
    assert title(article.pk) == "b"


def test_a_dramatiq_message_drf_restflow_queued_runs(dramatiq_broker, store):
    title, _calls = cached_title("dramatiq")
    article = Article.objects.create(title="a")
    title(article.pk)
    # drf-restflow's actor (same name) took (rule_ids, rule_kwargs).
    actor = tasks_module.dramatiq_actor()
    assert actor.actor_name == "restflow.task_run_cache_rules"
    actor.send([9], {"9": {"article_id": article.pk}})
    run_dramatiq_worker(dramatiq_broker)
    assert title.get_cache_only(article.pk) is CACHE_MISSING
