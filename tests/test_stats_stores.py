"""One function id on two stores: ``stats()``, Prometheus and ``manage.py
restflow_cache stats`` give each store its own counts (``stats()`` named one
store for the counts of both). Twins on memory and Redis:
tests/redis/test_stats_twins.py."""

from __future__ import annotations

import gc
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import RequestFactory

from restflow.caching import cache_result, reset_stats, stats
from tests.stores import on

pytest.importorskip("prometheus_client")


def twin(backend):
    @cache_result(ttl=60, backend=backend)
    def priced(x):
        return x * 2

    return priced


def named(backend, result):
    """Two different functions given one ``key_identifier``."""

    @cache_result(
        key_constructor={"fields": {}, "key_identifier": "tests.stores.price"},
        ttl=60,
        backend=backend,
    )
    def price(x):
        return result

    return price


def scrape():
    from restflow.caching import prometheus
    from tests.prometheus_gunicorn import samples

    return samples(prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode())


@pytest.fixture
def one_process_metrics(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.mark.parametrize("make", [twin, lambda backend: named(backend, backend)])
@pytest.mark.parametrize("store", on("django"), indirect=True)
def test_one_function_id_on_two_stores_keeps_each_stores_counts(store, make, one_process_metrics):
    in_memory, shared = make("memory"), make(store.label)
    function_id = in_memory.function_id
    assert shared.function_id == function_id
    reset_stats()
    before = scrape()
    in_memory(1)
    shared(1)
    shared(1)
    entry = stats()["functions"][function_id]
    # The function id's totals, and which stores they came from.
    assert (entry["calls"], entry["miss"], entry["hit"]) == (3, 2, 1)
    assert entry["backend"] == sorted([store.label, "memory"])
    got = {
        label: (row["backend"], row["calls"], row["miss"], row["hit"])
        for label, row in entry["stores"].items()
    }
    assert got == {"memory": ("memory", 1, 1, 0), store.label: (store.label, 2, 1, 1)}
    assert entry["stores"][store.label]["hit_ratio"] == 0.5
    # Prometheus labels the same counts with the same stores.
    after = scrape()

    def grew(backend, status):
        labels = {"function": function_id, "backend": backend, "status": status}
        key = ("restflow_cache_requests_total", tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    for label, row in entry["stores"].items():
        assert [grew(label, "MISS"), grew(label, "HIT")] == [row["miss"], row["hit"]]
    # And the command has a row per store.
    out = StringIO()
    call_command("restflow_cache", "stats", stdout=out)
    rows = [line.split() for line in out.getvalue().splitlines() if line.startswith(function_id)]
    assert sorted(row[1:3] for row in rows) == sorted([[store.label, "2"], ["memory", "1"]])
    del in_memory, shared
    gc.collect()


def test_one_store_keeps_the_plain_shape(one_process_metrics):
    """The common case: ``"backend"`` is the store's label, no ``"stores"``."""
    first, second = twin("memory"), twin("memory")
    reset_stats()
    first(1)
    second(1)
    entry = stats()["functions"][first.function_id]
    assert (entry["backend"], entry["calls"], entry["miss"]) == ("memory", 2, 2)
    assert "stores" not in entry
    del first, second
    gc.collect()
