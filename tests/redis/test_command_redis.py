"""``manage.py restflow_cache check`` against Redis (issue 15, item 3), with
its eviction-policy warning (on a server of the test's own, which it
reconfigures and stops). Stats, inspect and wipe on every store:
tests/test_command.py."""

from __future__ import annotations

import gc
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from restflow.caching import cache_result, reset_stats
from tests.redis.conftest import redis_settings


@cache_result(ttl=60)
def badge(user_id):
    return {"badge": user_id}


def run(*args) -> str:
    out = StringIO()
    call_command("restflow_cache", *args, stdout=out)
    return out.getvalue()


def test_check_reports_version_policy_and_warns(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        badge(1)
        client = own_redis.client()
        client.config_set("maxmemory-policy", "noeviction")
        out = run("check")
        line = next(line for line in out.splitlines() if line.startswith(own_redis.url))
        assert re.fullmatch(
            rf"{re.escape(own_redis.url)}: ok \(latency \S+, (redis|valkey) \d+\.\d+\.\d+, "
            r"maxmemory-policy noeviction\)",
            line,
        ), line
        assert "warning: maxmemory-policy noeviction: a full Redis refuses new entries" in out
        client.config_set("maxmemory-policy", "volatile-lru")
        out = run("check")
        assert "maxmemory-policy volatile-lru)" in out
        assert "warning" not in out
        own_redis.stop()
        with pytest.raises(CommandError, match=f"unreachable: {re.escape(own_redis.url)}"):
            run("check")


def test_check_warns_about_persistence(own_redis):
    """A crashed server restarts from its last snapshot: what was
    invalidated after it is served again (see the README). The test
    servers run without persistence; turned on, check warns."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        badge(1)
        client = own_redis.client()
        assert "a server that crashes" not in run("check")
        client.config_set("save", "3600 1")
        out = run("check")
        assert '  warning: save "3600 1": a server that crashes comes back' in out
        client.config_set("save", "")
        client.config_set("appendonly", "yes")
        try:
            assert "  warning: appendonly yes: a server that crashes comes back" in run("check")
        finally:
            client.config_set("appendonly", "no")  # else stopping it writes the log


def test_with_the_store_down_each_subcommand_says_so(own_redis):
    """Redis down: ``stats`` still shows this process's numbers (it ran the
    store check first, and failed, from the command line); ``inspect`` says
    the store is unreachable (it said MISSING); ``wipe`` wipes what it can,
    names what it could not and fails (it raised CacheBackendError at the
    first function, a traceback that left the rest unwiped)."""

    @cache_result(ttl=60, backend="memory")
    def local_badge(user_id):
        return {"badge": user_id}

    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        reset_stats()
        badge(1)
        local_badge(1)
        own_redis.stop()
        out = StringIO()
        call_command("restflow_cache", "stats", stdout=out, skip_checks=False)
        lines = out.getvalue().splitlines()
        assert lines[0].startswith("Statistics of this process")
        row = next(
            line for line in lines if line.startswith("tests.redis.test_command_redis.badge ")
        )
        assert row.split()[1:3] == [own_redis.url, "1"]
        with pytest.raises(
            CommandError,
            match=rf"^{re.escape(own_redis.url)}: UNREACHABLE \(.+\); cannot tell whether the "
            "entry is there$",
        ):
            run("inspect", "tests.redis.test_command_redis.badge", "1")
        out = StringIO()
        with pytest.raises(
            CommandError,
            match=r"^not wiped: tests\.redis\.test_command_redis\.badge \(see above\); run wipe "
            r"again once their store answers \('restflow_cache check' tells\)$",
        ):
            call_command(
                "restflow_cache", "wipe", "tests.redis.test_command_redis.badge", stdout=out
            )
        # The second failure in a row (after inspect's): the breaker is still closed.
        assert out.getvalue().splitlines() == [
            "NOT wiped tests.redis.test_command_redis.badge "
            "(store unavailable: Connection refused (os error 111))",
            "0 function(s) wiped",
        ]
        out = StringIO()
        with pytest.raises(CommandError, match=r"tests\.redis\.test_command_redis\.badge[,;]"):
            call_command("restflow_cache", "wipe", "--all", stdout=out)
        lines = out.getvalue().splitlines()
        assert f"wiped {local_badge.function_id}" in lines
        # Its message depends on how many failed before it (the breaker).
        assert any(
            line.startswith("NOT wiped tests.redis.test_command_redis.badge (store ")
            for line in lines
        )
        assert local_badge.get_cached_metadata(1) is None
    # Gone before the next test: `wipe --all` of a test on a shared store
    # would find a memory function.
    del local_badge
    gc.collect()
