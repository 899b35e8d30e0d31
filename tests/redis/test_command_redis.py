"""``manage.py restflow_cache check`` against Redis (issue 15, item 3), with
its eviction-policy warning (on a server of the test's own, which it
reconfigures and stops). Stats, inspect and wipe on every store:
tests/test_command.py."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from restflow.caching import cache_result
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
