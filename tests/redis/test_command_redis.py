"""``manage.py restflow_cache`` against Redis (issue 15, item 3): stats,
inspect and wipe on the shared store, and `check` with its eviction-policy
warning (on a server of the test's own, which it reconfigures and stops)."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result, reset_stats
from tests.redis.conftest import redis_settings


@cache_result(ttl=60)
def badge(user_id):
    return {"badge": user_id}


def run(*args) -> str:
    out = StringIO()
    call_command("restflow_cache", *args, stdout=out)
    return out.getvalue()


def test_stats_inspect_wipe(redis, redis_server, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reset_stats()
    badge(1)
    badge(1)
    row = next(
        line for line in run("stats").splitlines() if "tests.redis.test_command_redis" in line
    )
    cells = row.split()
    assert cells[1:4] == [redis_server.url, "2", "50.0%"]
    assert cells[6].endswith(("us", "ms")), "the hit's lookup was timed"
    fields = dict(
        line.split(None, 1)
        for line in run("inspect", "tests.redis.test_command_redis.badge", "1").splitlines()
    )
    assert fields["status"] == "HIT"
    assert fields["key"] == badge.get_cache_key(1)
    assert fields["backend"] == redis_server.url
    assert "wiped tests.redis.test_command_redis.badge" in run(
        "wipe", "tests.redis.test_command_redis.badge"
    )
    # Wiped in the store, so in every process: the next call computes.
    assert badge.get_with_metadata(1)[1]["cache_status"] is CacheStatus.MISS


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
