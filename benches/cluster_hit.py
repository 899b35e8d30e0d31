"""Redis Cluster hit against single-node Redis hit, in one run.

Starts a redis-server and a 3-master Redis Cluster (tests/redis/cluster.py)
on free 127.0.0.1 ports, stores the same payload (a DRF-like dict of ~20
fields with a nested list of 10 items) under 64 keys through two
``cache_result`` wrappers, one per backend (``backend=``), and times hits
on them interleaved over several rounds. Bar: cluster hit <= 1.1x the
single-node hit. Run after ``./scripts/bootstrap.sh``:
``python benches/cluster_hit.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import django
import redis
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benches.redis_hit import PAYLOAD, system_redis_server
from tests.redis.cluster import Cluster
from tests.redis.conftest import free_port

KEYS = 64


def main() -> int:
    port = free_port()
    server = subprocess.Popen(
        [system_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(Path(directory)).start()
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            single_url = f"redis://127.0.0.1:{port}/0"
            settings.configure(
                SECRET_KEY="bench", RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": single_url}}
            )
            django.setup()
            from restflow.caching import cache_result

            @cache_result(ttl=3600, backend=single_url)
            def single(n):
                return PAYLOAD

            @cache_result(ttl=3600, backend=cluster.url)
            def clustered(n):
                return PAYLOAD

            for n in range(KEYS):
                single(n)
                clustered(n)
            assert clustered.get_with_metadata(1)[1]["cache_status"] == "HIT"
            timers = {
                "single-node Redis hit": timeit.Timer(
                    f"for n in range({KEYS}): single(n)", globals=locals()
                ),
                "Redis Cluster hit (3 masters)": timeit.Timer(
                    f"for n in range({KEYS}): clustered(n)", globals=locals()
                ),
            }
            samples: dict[str, list[float]] = {name: [] for name in timers}
            for _ in range(15):
                for name, timer in timers.items():
                    samples[name].append(timer.timeit(10) / (10 * KEYS) * 1e6)
            medians = {name: statistics.median(v) for name, v in samples.items()}
            base = medians["single-node Redis hit"]
            print("| call | us (median) | x single-node |\n|---|---:|---:|")
            for name, us in medians.items():
                print(f"| {name} | {us:.1f} | {us / base:.2f} |")
        finally:
            cluster.stop()
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
