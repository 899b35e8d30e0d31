"""Prometheus metrics (issue 15, item 2): the plain collector in one
process, and gunicorn with two workers in multiprocess mode scraped over
HTTP (Redis: tests/redis/test_prometheus_redis.py)."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from restflow.caching import cache_result
from tests.prometheus_gunicorn import run_two_workers, samples

pytest.importorskip("prometheus_client")
pytest.importorskip("gunicorn")

FUNCTION = "tests.prometheus_app.payload"


@cache_result(ttl=60)
def priced(x):
    return x * 2


def test_one_process_collector_reads_running_totals(monkeypatch):
    from restflow.caching import prometheus, reset_stats

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    before = samples(prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode())
    priced(1)
    priced(1)
    priced(1)
    reset_stats()  # the exported counters keep running
    text = prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode()
    after = samples(text)
    labels = {"function": priced.function_id, "backend": "memory"}

    def grew(name, **extra):
        key = (name, tuple(sorted({**labels, **extra}.items())))
        return after[key] - before.get(key, 0)

    assert grew("restflow_cache_requests_total", status="HIT") == 2
    assert grew("restflow_cache_requests_total", status="MISS") == 1
    assert grew("restflow_cache_events_total", event="computations") == 1
    assert grew("restflow_cache_compute_seconds_count") == 1
    assert grew("restflow_cache_compute_seconds_bucket", le="+Inf") == 1


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One gunicorn run (two workers, memory store, ``--preload`` with a
    cached call in the master): its directory and answers."""
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    return tmp_path, run_two_workers(tmp_path, "memory", preload=True)


def test_two_gunicorn_workers_add_up(served):
    _, (held, others, scraped) = served
    assert {answer["pid"] for answer in others} != {held["pid"]}
    assert len({answer["pid"] for answer in others}) == 1, "worker A was held"
    # Each worker has its own memory store: one MISS in each.
    assert held["status"] == "MISS"
    assert [a["status"] for a in others] == ["MISS"] + ["HIT"] * 4

    def value(name, **labels):
        return scraped[
            (name, tuple(sorted({"function": FUNCTION, "backend": "memory", **labels}.items())))
        ]

    # Not 4: the master's call before the fork is not the workers' to report.
    assert value("restflow_cache_requests_total", status="MISS") == 2
    assert value("restflow_cache_requests_total", status="HIT") == 4
    assert value("restflow_cache_events_total", event="computations") == 2
    assert value("restflow_cache_compute_seconds_count") == 2
    assert value("restflow_cache_compute_seconds_bucket", le="+Inf") == 2


def test_the_command_reads_every_workers_numbers(served):
    """`manage.py restflow_cache stats` in a shell beside the server: what
    the workers folded into the multiprocess directory."""
    from io import StringIO

    from django.core.management import call_command

    tmp_path, _ = served
    out = StringIO()
    call_command("restflow_cache", "stats", "--metrics-dir", str(tmp_path / "metrics"), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"Statistics of every worker, from {tmp_path / 'metrics'}"
    row = next(line for line in lines if line.startswith(FUNCTION + " "))
    cells = row.split()
    assert cells[1:4] == ["memory", "6", "66.7%"]
    assert cells[4].endswith(("us", "ms")) and cells[6:8] == ["-", "-"]
