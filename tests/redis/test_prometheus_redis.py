"""Prometheus with two gunicorn workers sharing a Redis store (issue 15,
item 2): one computation across the workers, every other call a hit."""

from __future__ import annotations

import pytest

from tests.prometheus_gunicorn import run_two_workers

pytest.importorskip("prometheus_client")
pytest.importorskip("gunicorn")


def test_two_gunicorn_workers_share_redis(tmp_path, redis, redis_server):
    held, others, scraped = run_two_workers(tmp_path, redis_server.url)
    assert {answer["pid"] for answer in others} != {held["pid"]}
    assert held["status"] == "MISS"
    assert [a["status"] for a in others] == ["HIT"] * 5
    labels = {"function": "tests.prometheus_app.payload", "backend": redis_server.url}

    def value(name, **extra):
        return scraped[(name, tuple(sorted({**labels, **extra}.items())))]

    assert value("restflow_cache_requests_total", status="MISS") == 1
    assert value("restflow_cache_requests_total", status="HIT") == 5
    assert value("restflow_cache_events_total", event="computations") == 1
    # Every hit came from the store, and was timed.
    assert value("restflow_cache_lookup_seconds_count") == 5
    assert scraped[("restflow_cache_store_errors_total", (("backend", redis_server.url),))] == 0
