"""The multiprocess fold (restflow.caching.prometheus) in processes of their
own (tests/prometheus_multiproc.py): wrappers collected and replaced, forks,
dropped functions. Read from the metrics directory, as a scrape reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

ROOT = Path(__file__).resolve().parents[1]


def run(scenario: str, tmp_path: Path) -> tuple[dict, dict]:
    """Runs ``scenario``; returns what it printed and ``{(status or event,
    ...): value}`` of the function it names, summed over every process."""
    from prometheus_client import CollectorRegistry, multiprocess

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.prometheus_multiproc", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics))
    counts: dict = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("function") != said.get("function"):
                continue
            if sample.name == "restflow_cache_requests_total":
                counts[sample.labels["status"]] = sample.value
            elif sample.name == "restflow_cache_events_total" and sample.value:
                counts[sample.labels["event"]] = sample.value
            elif sample.name.endswith("_seconds_count") and sample.value:
                counts[sample.name.removeprefix("restflow_cache_")] = sample.value
    return said, counts


def test_a_wrapper_at_a_collected_ones_address_is_counted_in_full(tmp_path):
    """The fold knew wrappers by ``id()``: one made where a collected one had
    been took over its "already folded" totals, and its first calls (as many
    events as the other's) were never folded."""
    said, counts = run("reused_address", tmp_path)
    assert said["reused"], "no new wrapper landed at a collected one's address"
    # 20 collected: MISS + 2 HITs each; the new one: MISS + 3 HITs.
    assert counts == {"MISS": 21, "HIT": 43, "computations": 21, "compute_seconds_count": 21}


def test_dropped_functions_leave_the_fold(tmp_path):
    """What the fold keeps per wrapper leaves with the wrapper (it grew by
    one entry per function ever made: a leak with functions made per request)."""
    said, counts = run("dropped", tmp_path)
    assert counts == {"MISS": 100, "computations": 100, "compute_seconds_count": 100}
    assert said["tracked"] == 0


@pytest.mark.parametrize("scenario", ["fork_unfolded", "fork_imported"])
def test_children_of_a_parent_that_never_folded_report_only_their_own(scenario, tmp_path):
    """A parent that counted calls but had not folded yet (a ``--preload``
    master without the middleware, whose metrics view is imported on the
    first request): each child reported the parent's calls as its own."""
    _, counts = run(scenario, tmp_path)
    assert counts == {"HIT": 2}


def test_a_parent_that_folded_and_its_children_each_report_their_own(tmp_path):
    _, counts = run("fork_folded", tmp_path)
    # The parent: MISS, HIT, HIT before the fork, one HIT after; a HIT per child.
    assert counts == {"MISS": 1, "HIT": 5, "computations": 1, "compute_seconds_count": 1}


def test_a_wrapper_collected_between_folds_keeps_its_last_counts(tmp_path):
    """Calls a wrapper made after its last fold, before it was collected,
    were never folded."""
    _, counts = run("collected_between_folds", tmp_path)
    assert counts == {"MISS": 1, "HIT": 3, "computations": 1, "compute_seconds_count": 1}


def test_a_wrapper_collected_in_a_child_is_not_folded_against_the_parents_baseline(tmp_path):
    """The parent's record of what it folded of a wrapper goes with the fork
    into the child, where the wrapper is collected: the child folds from its
    own record (else the parent's call after its last fold would count in
    both processes)."""
    _, counts = run("fork_then_collected", tmp_path)
    assert counts == {"MISS": 1, "HIT": 4, "computations": 1, "compute_seconds_count": 1}


def test_reset_stats_leaves_the_folded_counters_running(tmp_path):
    said, counts = run("reset_between_folds", tmp_path)
    assert said["since_reset"] == 1
    assert counts == {"MISS": 2, "HIT": 2, "computations": 2, "compute_seconds_count": 2}


def test_a_fold_that_fails_never_fails_the_request(tmp_path):
    """The metrics directory removed under a running server (a deploy
    script's ``rm -rf``): prometheus_client cannot create its files, and the
    middleware's fold raised out of every request. Now each request is
    answered, and the failure is logged once."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.prometheus_multiproc", "directory_removed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"answers": ["answered"] * 3}
    logged = [line for line in done.stderr.splitlines() if line.startswith("restflow:")]
    assert logged == [
        f"restflow: could not fold the cache's counts into the Prometheus metrics in "
        f"{metrics}; requests are still answered, and counts are lost until folding works again"
    ]
    assert "FileNotFoundError" in done.stderr


def test_a_time_recorded_after_its_event_is_folded(tmp_path):
    """The fold skips a function whose events did not move; a lookup's time
    recorded after its hit moved nothing, so a fold between the two never
    folded the time."""
    _, counts = run("timed_after_its_event", tmp_path)
    assert counts == {"HIT": 1, "lookup_seconds_count": 1}


def test_odd_function_ids_round_trip_through_the_metrics_directory(tmp_path):
    """Unicode, quotes, a backslash and a newline in a function id: kept in
    the directory's files, escaped in the scrape, read back as they were."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    from tests.prometheus_gunicorn import samples

    said, _ = run("odd_ids", tmp_path)
    assert said["ids"] == ["prix.€uro", 'say "hi"', "back\\slash", "two\nlines"]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path / "metrics"))
    scraped = samples(generate_latest(registry).decode())
    for identifier in said["ids"]:
        labels = {"function": identifier, "backend": "memory", "status": "MISS"}
        key = ("restflow_cache_requests_total", tuple(sorted(labels.items())))
        assert scraped[key] == 1
