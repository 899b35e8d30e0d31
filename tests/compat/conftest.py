"""Fixtures of the drf-restflow 2.0.1 compatibility tests.

``store`` runs a test on the memory store and on each Redis server of
``tests/redis/conftest.py`` (the behaviour a migrated project relies on must
hold wherever its entries live).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import override_settings

from tests.redis.conftest import SERVERS, RedisServer, redis_settings

_servers: dict[str, RedisServer] = {}


@pytest.fixture(scope="session")
def _compat_servers():
    """Servers started on first use, one per kind, stopped at the end."""
    yield _servers
    for server in _servers.values():
        server.stop()
    _servers.clear()


@pytest.fixture(params=["memory", *SERVERS])
def store(request, _compat_servers):
    """``"memory"``, or the id of a Redis server whose empty database the
    ``BACKEND`` setting points at for the test."""
    kind = request.param
    if kind == "memory":
        yield kind
        return
    binary, _version = SERVERS[kind]
    if binary is None or not Path(binary).exists():
        why = f"{kind} server not found ({binary}); run ./scripts/bootstrap.sh"
        if os.environ.get("RESTFLOW_REQUIRE_SERVERS"):
            pytest.fail(why)
        pytest.skip(why)
    server = _compat_servers.get(kind)
    if server is None:
        server = _compat_servers[kind] = RedisServer(binary=str(binary)).start()
    client = server.client()
    client.flushdb()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(server.url)):
        yield kind
    client.flushdb()


@pytest.fixture(autouse=True)
def _forget_rules():
    """Rules a test declares do not outlive it (the registry is per process)."""
    yield
    from restflow.caching.registry import CacheRegister

    CacheRegister.clear()
