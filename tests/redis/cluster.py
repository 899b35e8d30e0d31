"""A Redis Cluster on loopback for the cluster tests and benchmark: three
masters (``redis-server --cluster-enabled yes`` on free 127.0.0.1 ports)
joined by ``redis-cli --cluster create``, every slot assigned, no replicas."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis as redis_py

from tests.redis.conftest import free_port


def wait_for(check, what: str, timeout: float = 60) -> None:
    """Polls servers we do not control (cluster nodes and sentinels gossip
    every second or so) until ``check`` holds; the deadline is a hang guard
    only."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis_py.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


class Cluster:
    """Three masters on loopback, every slot assigned, no replicas. A lost
    master does not stop the others (``cluster-require-full-coverage no``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = [cluster_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis_py.Redis:
        return redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self) -> Cluster:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed: run ./scripts/bootstrap.sh")
        for port in self.ports:
            self.spawn(port)
        for port in self.ports:
            wait_for(lambda port=port: self.client(port).ping(), "a cluster node did not start")
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ready() -> bool:
            for port in self.ports:
                info = self.client(port).cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != 3:
                    return False
            return True

        wait_for(ready, "the cluster did not come up")
        return self

    def spawn(self, port: int) -> None:
        """Starts the node on ``port`` (again, after ``kill``: it keeps its
        slots from its cluster config file, not its data)."""
        binary = shutil.which("redis-server")
        self.processes[port] = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-require-full-coverage", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def restart(self, port: int) -> None:
        """Starts a killed node again and waits until it answers."""
        self.spawn(port)
        wait_for(lambda: self.client(port).ping(), "a cluster node did not start again")

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def flush(self) -> None:
        for port in self.processes:
            self.client(port).flushall()

    def keys(self, port: int) -> list[bytes]:
        return self.client(port).keys("*")

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
