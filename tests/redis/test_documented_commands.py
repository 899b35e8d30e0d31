"""The README's list of what restflow sends to Redis is complete.

An operator who locks restflow's Redis user down with an ACL writes it from
that list ("restflow sends only AUTH, SELECT, MGET ... and seven Lua
scripts ..."). This test does exactly that: a user allowed those commands
(and, inside scripts, the commands the README says each script calls) and
nothing else runs every kind of call, on every server, and Redis's
``ACL LOG`` must stay empty and every call keep its status. A command the
list leaves out is refused by the server and shows up here.
"""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from restflow.caching import ArgsKeyField, KeyConstructor, cache_result
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.redis.conftest import redis_settings

USER = "restflow-docs"
PASSWORD = "documented-only"

#: The README's list ("Sharing the cache", the paragraph after "Tested
#: against"): the commands restflow sends, with the near cache; the
#: commands its scripts call; nothing for ``manage.py restflow_cache check``
#: (INFO, CONFIG GET), which this workload does not run.
DOCUMENTED = [
    "auth",
    "select",
    "mget",
    "evalsha",
    "script|load",
    "client|id",
    "client|tracking",
    "subscribe",
    # near_sync()'s SET, and inside scripts:
    "set",
    "get",
    "del",
    "pttl",
    "pexpire",
    "persist",
    "type",
]


class DocsKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    n = ArgsKeyField("n")

    class Meta:
        namespace = "acl"
        version = 2


@cache_result(ttl=10, key_constructor=DocsKey)
def report(tenant, n):
    return {"tenant": tenant, "n": n}


@cache_result(ttl=10)
async def areport(n):
    return {"n": n}


@pytest.fixture
def documented_user(redis, redis_server):
    """A Redis user allowed the documented commands only, and the settings
    that make restflow log in as it (near cache on)."""
    redis.execute_command("ACL", "SETUSER", USER, "reset")
    redis.execute_command(
        "ACL",
        "SETUSER",
        USER,
        "on",
        f">{PASSWORD}",
        "~*",
        "&*",
        *(f"+{command}" for command in DOCUMENTED),
    )
    redis.execute_command("ACL", "LOG", "RESET")
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    settings = redis_settings(url, KEY_PREFIX="docs:", NEAR_CACHE=True)
    # Scripts the server already holds (another test loaded them) would
    # hide a SCRIPT LOAD: start without them.
    redis.script_flush()
    try:
        with override_settings(RESTFLOW_SETTINGS=settings):
            yield
    finally:
        redis.execute_command("ACL", "DELUSER", USER)


def status(answer):
    return answer[1]["cache_status"].value


def test_every_call_uses_only_the_documented_commands(redis, documented_user):
    with frozen_clock() as clock:
        assert status(report.get_with_metadata("a", 1)) == "MISS"
        assert status(report.get_with_metadata("a", 1)) == "HIT"
        clock.advance(11)
        assert status(report.get_with_metadata("a", 1)) == "STALE"
        wait_for_refreshes()
        assert status(report.get_with_metadata("a", 1)) == "HIT"
        assert status(report.refresh_with_metadata("a", 1)) == "REFRESH"
        assert report.delete_cache("a", 1) is True
        assert status(report.get_with_metadata("a", 1)) == "MISS"
        report.delete_by_prefix(tenant="a")
        assert status(report.get_with_metadata("a", 1)) == "MISS"
        report.invalidate_all()
        assert status(report.get_with_metadata("a", 1)) == "MISS"
        DocsKey.wipe()
        assert status(report.get_with_metadata("a", 1)) == "MISS"
        DocsKey.delete_previous_versions()
        assert status(report.get_with_metadata("a", 1)) == "HIT"
        assert report.shared_backend().near_sync() is True

        async def calls():
            first = await areport.aget_with_metadata(1)
            second = await areport.aget_with_metadata(1)
            clock.advance(11)
            third = await areport.aget_with_metadata(1)
            await wait_for_async_refreshes()
            return [status(first), status(second), status(third)]

        assert asyncio.run(calls()) == ["MISS", "HIT", "STALE"]
    assert redis.execute_command("ACL", "LOG") == []
    assert report.shared_backend().failures == 0
