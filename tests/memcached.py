"""A real memcached for the Django store's memcached runs, on a free
127.0.0.1 port (as ``tests/redis/conftest.py`` runs redis-server).

Django's ``PyMemcacheCache`` (pymemcache) talks to it. The binary is
Debian's ``memcached`` (``scripts/bootstrap.sh`` installs it); a missing one
skips the memcached runs, or fails them under ``RESTFLOW_REQUIRE_SERVERS``
(``scripts/test.sh`` sets it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from urllib.parse import unquote

import pytest

from tests.redis.conftest import free_port

#: The memcached item size limit (``-I``): memcached's default, 1 MB.
ITEM_LIMIT = 1024 * 1024


def memcached_binary() -> str:
    """The memcached binary; skips the test when it is missing, or fails it
    under ``RESTFLOW_REQUIRE_SERVERS``."""
    binary = shutil.which("memcached")
    if binary is None:
        why = "memcached not found; run ./scripts/bootstrap.sh"
        if os.environ.get("RESTFLOW_REQUIRE_SERVERS"):
            pytest.fail(why)
        pytest.skip(why)
    return binary


class MemcachedServer:
    """One memcached process on loopback: TCP only (``-U 0``), 64 MB."""

    def __init__(self, port: int | None = None, connections: int | None = None) -> None:
        self.port = port or free_port()
        #: The most connections it takes (``-c``); memcached's 1024 if None.
        self.connections = connections
        self.process: subprocess.Popen | None = None

    @property
    def location(self) -> str:
        """The ``LOCATION`` of a Django cache on this server."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> MemcachedServer:
        command = [memcached_binary(), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        # One plain LRU per slab class, no background thread moving items
        # between LRUs (hot, warm, cold): ``lru_crawler metadump`` (``keys``)
        # skips items moved while it walks, and that thread moved them all
        # the time (a counter set just before was missing from the dump).
        command += ["-m", "64", "-o", "no_lru_maintainer"]
        # memcached's 1024 connections unless told: each thread holds one
        # (Django keeps a cache object per thread), and those made under a
        # replaced CACHES are closed (tests/stores.py, close_replaced_caches).
        if self.connections is not None:
            command += ["-c", str(self.connections)]
        if os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses root without it
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                assert self.command(b"version").startswith(b"VERSION ")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Kills it (SIGKILL: it keeps nothing to save, and a terminated
        memcached takes a second to wind its threads down)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(10)
            self.process = None

    def command(self, line: bytes, end: bytes = b"\r\n") -> bytes:
        """Sends one text-protocol command; its answer, up to ``end``."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(line + b"\r\n")
            answer = b""
            while not answer.endswith(end):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer

    def keys(self) -> list[str]:
        """Every key the server holds (``lru_crawler metadump``), as Django
        wrote it (with its ``:<version>:`` prefix)."""
        dump = self.command(b"lru_crawler metadump all", end=b"END\r\n")
        keys = []
        for line in dump.decode().splitlines():
            if line.startswith("key="):
                keys.append(unquote(line.split(" ", 1)[0].removeprefix("key=")))
        return keys

    def connections_until_refused(self) -> list[socket.socket]:
        """Connections opened until memcached refuses the next one (past
        its ``-c``: it answers ``ERROR Too many open connections`` and
        closes it); those it took, to close once done."""
        held: list[socket.socket] = []
        while len(held) <= 4096:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(b"version\r\n")
            answer = sock.recv(1024)
            if answer.startswith(b"ERROR Too many open connections"):
                sock.close()
                return held
            assert answer.startswith(b"VERSION "), answer
            held.append(sock)
        raise AssertionError("memcached took over 4096 connections")

    def connections_from_this_process(self) -> int:
        """How many connections this process holds open to the server: its
        sockets (``/proc/self/fd``) among the established connections to
        the server's port (``/proc/net/tcp``; Linux)."""
        sockets = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # closed since it was listed
                continue
            if target.startswith("socket:["):
                sockets.add(target.removeprefix("socket:[").removesuffix("]"))
        count = 0
        with open("/proc/net/tcp") as table:
            next(table)  # the header
            for line in table:
                fields = line.split()
                remote_port = int(fields[2].split(":")[1], 16)
                established = fields[3] == "01"
                if established and remote_port == self.port and fields[9] in sockets:
                    count += 1
        return count

    def flush(self) -> None:
        assert self.command(b"flush_all") == b"OK\r\n"
