"""``manage.py restflow_cache`` (issue 15, item 3) on every store
(tests/stores.py); `check` on Redis, with its eviction-policy warning:
tests/redis/test_command_redis.py."""

from __future__ import annotations

import gc
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result, reset_stats
from restflow.caching.testing import frozen_clock
from tests.stores import DJANGO_CACHES, on


@cache_result(ttl=60)
def greeting(name, punctuation="!"):
    return f"hello {name}{punctuation}"


def run(*args, **kwargs) -> str:
    out = StringIO()
    call_command("restflow_cache", *args, stdout=out, **kwargs)
    return out.getvalue()


def test_stats_table(store, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reset_stats()
    greeting("ann")
    greeting("ann")
    greeting("ann")
    greeting("bob")
    lines = run("stats").splitlines()
    assert lines[0].startswith("Statistics of this process")
    assert lines[1].split() == [
        "function",
        "backend",
        "calls",
        "hit",
        "ratio",
        "compute",
        "p50",
        "compute",
        "p99",
        "lookup",
        "p50",
        "lookup",
        "p99",
    ]
    row = next(line for line in lines if line.startswith("tests.test_command.greeting "))
    cells = row.split()
    assert cells[1:4] == [store.label, "4", "50.0%"]
    # Two computations: their percentiles are bucket bounds; lookups are
    # timed on shared stores only.
    assert cells[4].endswith(("us", "ms")) and cells[5].endswith(("us", "ms"))
    if store.kind == "memory":
        assert cells[6:8] == ["-", "-"]
    else:
        assert cells[6].endswith(("us", "ms"))


def test_inspect(store):
    with frozen_clock() as clock:
        missing = run("inspect", "tests.test_command.greeting", "'cy'", "punctuation='?'")
        assert dict(line.split(None, 1) for line in missing.splitlines())["status"] == (
            "MISSING (no usable entry)"
        )
        greeting("cy", punctuation="?")
        cached_at = clock.now().isoformat()
        reset_at = (clock.now() + timedelta(seconds=60)).isoformat()  # greeting's ttl
        out = run("inspect", "tests.test_command.greeting", "cy", "punctuation='?'")
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["function"] == "tests.test_command.greeting"
    assert fields["key"] == greeting.get_cache_key("cy", punctuation="?")
    assert fields["status"] == "HIT"
    assert fields["cached_at"] == cached_at
    assert fields["reset_at"] == reset_at
    assert fields["size"].endswith("bytes (pickled)")
    assert fields["backend"] == store.label
    # The README promises both inspect and wipe say that a shell sees only
    # its own process's memory entries: a MISSING there says nothing about
    # a server's workers.
    note = (
        "note: the memory store lives in each process; this shows only this "
        "process's entry (a server's workers each have their own)"
    )
    assert (note in missing.splitlines()) == (store.kind == "memory")
    assert (note in out.splitlines()) == (store.kind == "memory")


def test_inspect_and_wipe_say_what_is_wrong():
    with pytest.raises(CommandError, match=r"cannot find tests\.nowhere\.f: give its dotted path"):
        run("inspect", "tests.nowhere.f")
    with pytest.raises(CommandError, match="is not a cached function"):
        run("inspect", "tests.test_command.run")
    # A response's key needs a request: said, not "missing its first argument".
    with pytest.raises(
        CommandError,
        match=r"tests\.response_views\.ArticleView\.get is a @cache_response view handler, "
        r"whose keys come from each request",
    ):
        run("inspect", "tests.response_views.ArticleView.get", "pk=1")
    with pytest.raises(CommandError, match="one of the two"):
        run("wipe")
    with pytest.raises(CommandError, match="one of the two"):
        run("wipe", "tests.test_command.greeting", "--all")


def test_wipe_one_function_and_all(store):
    @cache_result(ttl=60)
    def other(x):
        return x

    greeting("ann")
    other(1)
    out = run("wipe", "tests.test_command.greeting")
    assert "wiped tests.test_command.greeting" in out
    assert greeting.get_cached_metadata("ann") is None
    # Wiped in the store (on a shared one, so in every process): the next
    # call computes.
    assert greeting.get_with_metadata("ann")[1]["cache_status"] is CacheStatus.MISS
    assert other.get_cached_metadata(1) is not None
    # `--all` wipes every live function, and says which it could not:
    # functions earlier tests made on stores since stopped, in reference
    # cycles, are live until the collector runs (see test_check_memory_and_django).
    gc.collect()
    out = run("wipe", "--all")
    assert other.get_cached_metadata(1) is None
    assert ("note: the memory store lives in each process" in out) == (store.kind == "memory")


@pytest.mark.parametrize("store", on("memory", "django"), indirect=True)
def test_check_memory_and_django(store):
    # `check` reports the stores of every live function: functions earlier
    # tests made and dropped, in reference cycles (a function and its
    # wrapper), are live until the collector runs, when the machine's load
    # decides; collected now, only this test's store is reported.
    gc.collect()
    out = run("check")
    if store.kind == "memory":
        assert out.startswith("memory: ok (in this process:")
    else:
        assert "django:locmem: ok (latency " in out


def test_check_fails_on_a_backend_that_cannot_be_built():
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:nowhere"}}
    out = StringIO()
    with override_settings(RESTFLOW_SETTINGS=settings), pytest.raises(CommandError) as failure:
        call_command("restflow_cache", "check", stdout=out)
    assert str(failure.value).startswith("unreachable: BACKEND setting, ")
    assert out.getvalue().startswith(
        "BACKEND setting: NO BACKEND (The cache backend 'django:nowhere' names no alias in CACHES"
    )


def test_system_checks_before_a_subcommand_are_djangos(store):
    """Django runs ``BaseCommand.check`` (its system checks) before a command
    run from the command line; the store check was named ``check`` and ran
    instead: every ``stats``, ``inspect`` and ``wipe`` began with a round
    trip to every store (printed above the output), failed whenever one
    store was down, and Django's own checks never ran."""
    from django.core.checks import Error, registry
    from django.core.management.base import SystemCheckError

    out = run("stats", skip_checks=False)
    assert out.splitlines()[0].startswith("Statistics of this process")

    def failing(app_configs, **kwargs):
        return [Error("a project misconfiguration", id="tests.E001")]

    registry.registry.register(failing)
    try:
        with pytest.raises(SystemCheckError, match=r"tests\.E001"):
            run("stats", skip_checks=False)
    finally:
        registry.registry.registered_checks.discard(failing)


def test_bad_arguments_say_what_to_change(tmp_path, monkeypatch):
    with pytest.raises(
        CommandError,
        match=r"cannot call tests\.test_command\.greeting with these arguments: "
        r"tests\.test_command\.greeting\(\) takes 2 positional arguments but 3 were given "
        r"\(arguments are Python literals, name=value for keywords\)$",
    ):
        run("inspect", "tests.test_command.greeting", "1", "2", "3")
    with pytest.raises(
        CommandError, match=r"greeting with these arguments: .*unexpected keyword argument 'nobody'"
    ):
        run("inspect", "tests.test_command.greeting", "'ann'", "nobody=1")
    missing = str(tmp_path / "nowhere")
    message = rf"the metrics directory '{missing}' \(--metrics-dir, by default .*not a directory"
    with pytest.raises(CommandError, match=message):
        run("stats", "--metrics-dir", missing)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", missing)
    with pytest.raises(CommandError, match=message):
        run("stats")


@pytest.mark.parametrize("store", on("django"), indirect=True)
def test_inspect_does_not_call_an_entry_missing_when_the_store_failed(store):
    """A failing store answers "no entry" to a call (which then computes);
    inspect said MISSING, as if the entry were gone."""
    from django.core.cache import caches

    from tests.flaky_cache import FlakyCache

    flaky = {**DJANGO_CACHES, "flaky": {"BACKEND": "tests.flaky_cache.FlakyCache"}}
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:flaky"}}
    with override_settings(CACHES=flaky, RESTFLOW_SETTINGS=settings):
        greeting("ann")
        FlakyCache.broken["get_many"] = ConnectionError("cache server unreachable")
        try:
            with pytest.raises(
                CommandError,
                match=r"django:flaky failed during the lookup; cannot tell whether the entry",
            ):
                run("inspect", "tests.test_command.greeting", "'ann'")
        finally:
            FlakyCache.broken.clear()
        fields = dict(
            line.split(None, 1)
            for line in run("inspect", "tests.test_command.greeting", "'ann'").splitlines()
        )
        assert (fields["status"], fields["backend"]) == ("HIT", "django:flaky")
        caches["flaky"].clear()


def test_from_the_command_line_errors_exit_with_a_status_and_no_traceback(tmp_path):
    """``django-admin restflow_cache ...`` as an operator runs it (system
    checks and all): a usage error exits 2, a bad value 1 with the message
    alone, a good run 0 with the table first."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        "PYTHONPATH": str(root),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def cli(*args):
        done = subprocess.run(
            [sys.executable, "-m", "django", "restflow_cache", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    code, _, err = cli()
    assert code == 2
    # (Django names the program after how it was run.)
    assert err.splitlines()[-1].endswith(
        " restflow_cache: error: the following arguments are required: ACTION"
    )
    missing = str(tmp_path / "nowhere")
    code, out, err = cli("stats", "--metrics-dir", missing)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"CommandError: the metrics directory '{missing}' (--metrics-dir, by default "
        "$PROMETHEUS_MULTIPROC_DIR) is not a directory: give the one the server's workers "
        "write to"
    ]
    code, out, err = cli("stats")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("Statistics of this process")


def test_a_django_cache_that_is_down():
    """inspect, wipe and check on a Django cache whose every call fails
    (tests/broken_cache.py): each says so and fails; stats still shows.
    (Redis down: tests/redis/test_command_redis.py.)"""
    broken = {**DJANGO_CACHES, "broken": {"BACKEND": "tests.broken_cache.BrokenCache"}}
    with override_settings(
        CACHES=broken, RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": "django:broken"}}
    ):
        reset_stats()
        assert greeting("dee") == "hello dee!"  # computed live (BYPASS)
        row = next(
            line
            for line in run("stats").splitlines()
            if line.startswith("tests.test_command.greeting ")
        )
        assert row.split()[1:4] == ["django:broken", "1", "0.0%"]
        with pytest.raises(
            CommandError,
            match=r"^django:broken: UNREACHABLE \(cache server unreachable\); cannot tell "
            r"whether the entry is there$",
        ):
            run("inspect", "tests.test_command.greeting", "'dee'")
        out = StringIO()
        with pytest.raises(
            CommandError, match=r"^not wiped: tests\.test_command\.greeting \(see above\);"
        ):
            call_command("restflow_cache", "wipe", "tests.test_command.greeting", stdout=out)
        assert out.getvalue().splitlines() == [
            "NOT wiped tests.test_command.greeting "
            "(store unavailable: ConnectionError: cache server unreachable)",
            "0 function(s) wiped",
        ]
        gc.collect()  # functions of earlier tests, on other stores
        with pytest.raises(CommandError, match=r"^unreachable: django:broken$"):
            run("check")


def test_stats_reads_the_directory_prometheus_client_reads(tmp_path, monkeypatch):
    """prometheus_client (and restflow's middleware) also take the older
    lower-case ``prometheus_multiproc_dir``; the command read only the
    upper-case name, and showed the shell's own empty numbers instead."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
    assert run("stats").splitlines() == [
        f"Statistics of every worker, from {tmp_path}",
        "function  backend  calls  hit ratio  compute p50  compute p99  lookup p50  lookup p99",
        "(no cached function has been called)",
    ]
