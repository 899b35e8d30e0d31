"""Statistics as an operator who monitors production meets them: exact
totals under concurrent calls, functions dropped and collected, odd
function ids in Prometheus labels and in the command's table, histograms
with no call, one call and durations past the last bucket. Forks, ids
reused and dropped functions in multiprocess mode:
tests/test_prometheus_multiproc.py."""

from __future__ import annotations

import gc
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import RequestFactory

from restflow.caching import cache_result, reset_stats, statistics, stats
from restflow.caching.testing import frozen_clock

pytest.importorskip("prometheus_client")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def scrape() -> dict:
    from restflow.caching import prometheus
    from tests.prometheus_gunicorn import samples

    return samples(prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode())


def sample(scraped: dict, name: str, **labels) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def table(*args) -> list[str]:
    out = StringIO()
    call_command("restflow_cache", "stats", *args, stdout=out)
    return out.getvalue().splitlines()


def test_concurrent_calls_add_up_exactly(store):
    """8 threads released at once, 250 calls each over 5 keys: every call
    counted once (as HIT or MISS: a caller that waited on another's
    computation, or found its value on a second look, is a MISS), every key
    computed once, and Prometheus exports the same counts."""

    @cache_result(ttl=60)
    def value(x):
        return x

    gc.collect()  # earlier runs' functions of this id, which follow the settings' store
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)

    def caller():
        start.wait(30)
        for i in range(per_thread):
            value(i % 5)

    reset_stats()
    before = scrape()
    with frozen_clock():
        workers = [threading.Thread(target=caller) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    got = value.stats()
    assert (got["calls"], got["computations"], got["errors"]) == (2000, 5, 0)
    assert (got["hit"] + got["miss"], got["compute"]["count"]) == (2000, 5)
    after = scrape()
    labels = {"function": value.function_id, "backend": store.label}
    for status, count in (("MISS", got["miss"]), ("HIT", got["hit"])):
        name = "restflow_cache_requests_total"
        grew = sample(after, name, status=status, **labels) - (
            sample(before, name, status=status, **labels) or 0
        )
        assert grew == count


def test_concurrent_async_calls_add_up_exactly(store):
    """400 tasks released at once by an event, over 5 keys: every call
    counted once, every key computed once."""
    import asyncio

    @cache_result(ttl=60)
    async def value(x):
        await asyncio.sleep(0)  # a yield, so the others pile up on the key
        return x

    async def scenario():
        go = asyncio.Event()

        async def caller(i):
            await go.wait()
            return await value(i % 5)

        tasks = [asyncio.ensure_future(caller(i)) for i in range(400)]
        await asyncio.sleep(0)  # every task waits on the event
        go.set()
        return await asyncio.gather(*tasks)

    reset_stats()
    with frozen_clock():
        assert asyncio.run(scenario()) == [i % 5 for i in range(400)]
    got = value.stats()
    assert (got["calls"], got["computations"], got["errors"]) == (400, 5, 0)
    assert (got["hit"] + got["miss"], got["compute"]["count"]) == (400, 5)


def test_dropped_functions_leave_the_statistics_and_their_counts_the_series():
    """``stats()`` describes the live functions; the exported series keep
    what the collected ones counted (in one entry per function id and
    store, not one per wrapper)."""
    from restflow.caching import prometheus

    def make():
        @cache_result(ttl=60)
        def made(x):
            return x

        return made

    gc.collect()  # what earlier tests dropped
    tracked = len(statistics.live())
    functions = [make() for _ in range(50)]
    for function in functions:
        function(1)
    function_id = functions[0].function_id
    assert stats()["functions"][function_id]["calls"] == 50
    labels = {"function": function_id, "status": "MISS", "backend": "memory"}
    assert sample(scrape(), "restflow_cache_requests_total", **labels) == 50
    del functions, function
    gc.collect()
    assert len(statistics.live()) == tracked
    assert function_id not in stats()["functions"]
    assert sample(scrape(), "restflow_cache_requests_total", **labels) == 50
    collector = prometheus._installed
    assert [key for key in collector._retired if key[0] == function_id] == [(function_id, "memory")]
    assert not [r for r in collector._exported.values() if r.function_id == function_id]


ODD_IDS = ["prix.€uro", 'say "hi"', "back\\slash", "two\nlines", "tab\there"]


def test_odd_function_ids_round_trip_through_prometheus_and_stay_on_one_row():
    made = []
    for identifier in ODD_IDS:

        @cache_result(key_constructor={"fields": {}, "key_identifier": identifier}, ttl=60)
        def odd(x):
            return x

        odd(1)
        made.append(odd)
    assert [f.function_id for f in made] == ODD_IDS
    scraped = scrape()
    for identifier in ODD_IDS:
        labels = {"function": identifier, "backend": "memory", "status": "MISS"}
        assert sample(scraped, "restflow_cache_requests_total", **labels) == 1
    lines = table()
    shown = ["prix.€uro", 'say "hi"', "back\\slash", "two\\nlines", "tab\\there"]
    for text in shown:
        rows = [line for line in lines if line.startswith(text + " ")]
        assert len(rows) == 1, lines
        assert rows[0][len(text) :].split()[:2] == ["memory", "1"]
    assert not [line for line in lines if line.startswith(("lines", "here"))]
    del made, odd
    gc.collect()


def test_histograms_with_no_call_one_call_and_past_the_last_bucket():
    @cache_result(ttl=60)
    def idle(x):
        return x

    @cache_result(ttl=60)
    def once(x):
        return x

    @cache_result(ttl=60)
    def endless(x):
        return x

    once.steps.record("compute", 0.003)  # <= 4.096 ms
    endless.steps.record("compute", 40.0)  # past 2^25 us (~33.5 s)
    endless.steps.record("compute", 1e300)  # past what a Duration holds
    functions = stats()["functions"]
    nothing = functions[idle.function_id]
    assert (nothing["calls"], nothing["hit_ratio"]) == (0, None)
    assert (nothing["compute"]["count"], nothing["compute"]["p50"]) == (0, None)
    assert nothing["compute"]["p99"] is None
    assert {count for _, count in nothing["compute"]["buckets"]} == {0}
    one = functions[once.function_id]["compute"]
    assert (one["count"], one["p50"], one["p99"], one["sum"]) == (1, 0.004096, 0.004096, 0.003)
    assert dict(one["buckets"])[0.002048] == 0
    assert dict(one["buckets"])[0.004096] == 1
    huge = functions[endless.function_id]["compute"]
    assert (huge["count"], huge["p50"], huge["p99"]) == (2, float("inf"), float("inf"))
    assert dict(huge["buckets"])[statistics.BUCKET_BOUNDS[-1]] == 0
    assert huge["sum"] == (2**64 - 1) / 1e9  # saturated, never wrapped
    scraped = scrape()

    def bucket(function, le):
        return sample(
            scraped,
            "restflow_cache_compute_seconds_bucket",
            function=function.function_id,
            backend="memory",
            le=le,
        )

    assert [bucket(idle, "+Inf"), bucket(once, "0.002048"), bucket(once, "0.004096")] == [0, 0, 1]
    assert [bucket(endless, "33.554432"), bucket(endless, "+Inf")] == [0, 2]
    lines = table()

    def cells(function):
        return next(line for line in lines if line.startswith(function.function_id + " ")).split()

    assert cells(idle)[1:] == ["memory", "0", "-", "-", "-", "-", "-"]
    assert cells(once)[4:6] == ["4.1ms", "4.1ms"]
    assert cells(endless)[4:6] == [">33s", ">33s"]


def test_a_collected_functions_counts_stay_in_the_exported_totals():
    """Prometheus counters only grow: the collector added up the live
    wrappers, so a function collected took its counts with it, and the
    series went down (Prometheus reads that as a restart, and ``rate()``
    counts the whole remaining value again)."""

    def make():
        @cache_result(ttl=60)
        def made(x):
            return x

        return made

    gc.collect()
    first, second = make(), make()
    labels = {"function": first.function_id, "backend": "memory"}
    first(1)
    first(1)
    second(1)

    def exported():
        scraped = scrape()
        return [
            sample(scraped, "restflow_cache_requests_total", status=status, **labels)
            for status in ("MISS", "HIT")
        ] + [sample(scraped, "restflow_cache_compute_seconds_count", **labels)]

    assert exported() == [2, 1, 2]
    del first
    gc.collect()
    assert exported() == [2, 1, 2]
    second(2)  # counted after the first was collected
    second(2)
    assert exported() == [3, 2, 3]
    del second
    gc.collect()
    assert exported() == [3, 2, 3]


def test_functions_made_while_the_statistics_are_read():
    """Another thread may make (or drop) a cached function between any two
    Python steps of this one. The statistics listed the functions by
    iterating a WeakSet step by step: one made meanwhile broke ``stats()``
    and the scrape with "Set changed size during iteration". Here that other
    thread's work runs at every line this thread executes while it reads
    the statistics (a trace function: the points where CPython may switch
    threads), so the interleaving is certain, not hoped for."""
    import sys

    def make():
        @cache_result(ttl=60)
        def made(x):
            return x

        return made

    keep = [make() for _ in range(5)]
    for function in keep:
        function(1)
    made_meanwhile = []
    budget = [0]  # functions the other thread makes per read

    def another_thread(frame, event, arg):
        if event == "line" and budget[0]:
            budget[0] -= 1
            made_meanwhile.append(make())
        return another_thread

    for read in (stats, scrape):
        before, budget[0] = len(made_meanwhile), 50
        sys.settrace(another_thread)
        try:
            got = read()
        finally:
            sys.settrace(None)
        assert len(made_meanwhile) > before, "nothing ran in the middle of the read"
        if read is stats:
            assert got["functions"][keep[0].function_id]["calls"] == 5
        else:
            labels = {"function": keep[0].function_id, "status": "MISS", "backend": "memory"}
            assert sample(got, "restflow_cache_requests_total", **labels) == 5
    keep.clear()
    made_meanwhile.clear()
    del function
    gc.collect()


def test_a_function_whose_store_cannot_be_built_is_not_labelled_memory():
    """A ``backend=`` naming no cache alias: its calls fail (and count
    nothing), and ``check`` says why. Its statistics, its series and its
    ``stats`` row said ``memory``, as if it ran on the memory store."""
    from django.core.management import CommandError

    @cache_result(ttl=60, backend="django:nowhere")
    def misconfigured(x):
        return x

    with pytest.raises(Exception, match="names no alias in CACHES"):
        misconfigured(1)
    assert misconfigured.stats()["backend"] == "unavailable"
    assert stats()["functions"][misconfigured.function_id]["backend"] == "unavailable"
    labels = {"function": misconfigured.function_id, "status": "MISS", "backend": "unavailable"}
    assert sample(scrape(), "restflow_cache_requests_total", **labels) == 0
    row = next(line for line in table() if line.startswith(misconfigured.function_id + " "))
    assert row.split()[1:3] == ["unavailable", "0"]
    out = StringIO()
    with pytest.raises(CommandError, match=r"^not wiped: tests\.test_stats_edges\."):
        call_command("restflow_cache", "wipe", "--all", stdout=out)
    assert (
        f"NOT wiped {misconfigured.function_id} (The cache backend 'django:nowhere' names no "
        "alias in CACHES"
    ) in out.getvalue()
    del misconfigured
    gc.collect()
