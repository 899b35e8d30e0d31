"""Two functions with one function id (a function defined again, two
lambdas of one module) on different stores: each store's counts stay
under its own backend label."""

from __future__ import annotations

import gc

import pytest
from django.test import RequestFactory

from restflow.caching import cache_result, reset_stats, stats

pytest.importorskip("prometheus_client")


def twin(backend):
    @cache_result(ttl=60, backend=backend)
    def priced(x):
        return x * 2

    return priced


def test_twins_on_two_stores_keep_their_backends(monkeypatch, redis, redis_server):
    from restflow.caching import prometheus
    from tests.prometheus_gunicorn import samples

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    in_memory, on_redis = twin("memory"), twin(redis_server.url)
    function_id = in_memory.function_id
    assert on_redis.function_id == function_id
    reset_stats()
    before = samples(prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode())
    in_memory(1)
    on_redis(1)
    on_redis(1)
    after = samples(prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode())

    def grew(backend, status):
        labels = {"function": function_id, "backend": backend, "status": status}
        key = ("restflow_cache_requests_total", tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert [grew("memory", "MISS"), grew("memory", "HIT")] == [1, 0]
    assert [grew(redis_server.url, "MISS"), grew(redis_server.url, "HIT")] == [1, 1]
    backends = stats()["backends"]
    assert (backends["memory"]["miss"], backends[redis_server.url]["hit"]) == (1, 1)
    # Gone before the next test: `manage.py restflow_cache check` reports
    # the store of every live function.
    del in_memory, on_redis
    gc.collect()
