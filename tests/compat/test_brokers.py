"""Part 5 of issue 12: the broker dispatchers end to end, with their real packages.

django-rq, Dramatiq and django-q2 use a real redis-server as their broker
(started here, on a free loopback port); a save enqueues the rule's job, the
package's own worker runs it in this process (rq's ``SimpleWorker`` in burst
mode, a Dramatiq ``Worker``, django-q2's ``worker`` function over what its
Redis broker holds), and the entry is gone. Each also runs a message in
drf-restflow's format, as queued before a deploy. (Celery runs eagerly in
tests/test_invalidation_dispatchers.py.)
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

    class BurstWorker(SimpleWorker):
        """rq's ``SimpleWorker`` without its command channel, which a burst
        run in a test never uses: stopping that channel's thread waits for
        its 60 s poll to end (rq subscribes with ``sleep_time=60``, and
        redis-py's ``PubSubWorkerThread.stop`` joins the thread), so about
        one run in two took a minute."""

        def subscribe(self) -> None:
            pass

    BurstWorker([queue], connection=queue.connection).work(burst=True)
    assert queue.count == 0 and queue.failed_job_registry.count == 0


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


# -- django-q2 --------------------------------------------------------------------------------


@pytest.fixture
def django_q_broker(broker_server, monkeypatch, settings):
    # Read when django_q.conf is imported: a retry longer than the timeout, as it asks.
    settings.Q_CLUSTER = {"name": "restflow-tests", "timeout": 60, "retry": 120}
    pytest.importorskip("django_q")
    # django-q2's models must belong to an installed app before django_q.tasks imports them.
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "django_q"]
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "REDIS", broker_url(broker_server, 3))
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def run_django_q_worker(broker):
    """django-q2's own worker function, in this process, over what the broker holds."""
    import multiprocessing
    import queue

    from django_q.signing import SignedPackage
    from django_q.worker import worker

    tasks: queue.Queue = queue.Queue()
    while broker.queue_size():
        for _ack, package in broker.dequeue() or ():
            tasks.put(SignedPackage.loads(package))
    tasks.put("STOP")
    results: queue.Queue = queue.Queue()
    worker(tasks, results, multiprocessing.Value("f", -1), timeout=None)
    while not results.empty():
        task = results.get()
        assert task["success"], task["result"]


# -- end to end, each broker --------------------------------------------------------------------


def send_rq_origin(queue, rule_kwargs):
    # drf-restflow's worker call: run_cache_rules(rule_ids, rule_kwargs, dispatcher_name=...).
    queue.enqueue(
        "restflow.caching.tasks.run_cache_rules",
        list(rule_kwargs),
        rule_kwargs,
        dispatcher_name="django_rq",
    )


def send_dramatiq_origin(broker, rule_kwargs):
    # drf-restflow's actor, of the same name, took (rule_ids, rule_kwargs).
    actor = tasks_module.dramatiq_actor()
    assert actor.actor_name == "restflow.task_run_cache_rules"
    actor.send(list(rule_kwargs), rule_kwargs)


def send_django_q_origin(broker, rule_kwargs):
    from django_q.tasks import async_task

    async_task(
        "restflow.caching.tasks.run_cache_rules",
        list(rule_kwargs),
        rule_kwargs,
        dispatcher_name="django_q",
    )


#: dispatcher -> (its broker fixture, its worker, a sender of drf-restflow's message)
BROKERS = {
    "django_rq": ("rq_queue", run_rq_worker, send_rq_origin),
    "dramatiq": ("dramatiq_broker", run_dramatiq_worker, send_dramatiq_origin),
    "django_q": ("django_q_broker", run_django_q_worker, send_django_q_origin),
}


@pytest.mark.parametrize("dispatcher", list(BROKERS))
def test_a_save_runs_through_the_broker(request, store, dispatcher):
    fixture, run_worker, _send = BROKERS[dispatcher]
    broker = request.getfixturevalue(fixture)
    title, calls = cached_title(dispatcher)
    article = changed_article(title)
    assert title.get_cache_only(article.pk) == "a"  # sent, not run yet
    run_worker(broker)
    assert title.get_cache_only(article.pk) is CACHE_MISSING
    assert title(article.pk) == "b"
    assert calls == [article.pk, article.pk]


@pytest.mark.parametrize("dispatcher", list(BROKERS))
def test_a_message_drf_restflow_queued_runs(request, store, dispatcher):
    fixture, run_worker, send = BROKERS[dispatcher]
    broker = request.getfixturevalue(fixture)
    title, _calls = cached_title(dispatcher)
    article = Article.objects.create(title="a")
    title(article.pk)
    # Its rule numbers came from an import-order counter: 4 names nothing here.
    send(broker, {"4": {"article_id": article.pk}})
    run_worker(broker)
    assert title.get_cache_only(article.pk) is CACHE_MISSING
