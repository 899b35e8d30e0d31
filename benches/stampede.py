"""Stampede: how many times a slow function runs when many threads ask for
the same missing key at once.

THREADS threads wait on a barrier, then call the cached function with one
key it has not seen; the function takes COMPUTE_S seconds. A cache without
single-flight runs it once per caller that arrives before the first stores
(all of them, here); restflow runs it once and the others wait for that
value. Counted per contender over ROUNDS rounds (a new key each round);
prints a table, and one JSON line with ``--json`` (benches/report.py).

Run: ``python benches/stampede.py [--json]`` (after ``scripts/bootstrap.sh``).
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time

import cachetools
import django
from django.conf import settings

settings.configure(SECRET_KEY="bench")
django.setup()

from restflow.caching import cache_result  # noqa: E402

THREADS = 16
ROUNDS = 5
COMPUTE_S = 0.05


def contenders(runs: list) -> dict:
    def slow(key):
        runs.append(key)
        time.sleep(COMPUTE_S)  # the computation being cached, not a synchronisation
        return key

    return {
        "functools.lru_cache": functools.lru_cache(maxsize=None)(slow),
        "cachetools TTLCache": cachetools.cached(cachetools.TTLCache(maxsize=1000, ttl=300))(slow),
        "restflow cache_result": cache_result(ttl=300)(slow),
    }


def stampede(function, key) -> None:
    barrier = threading.Barrier(THREADS)

    def call():
        barrier.wait()
        function(key)

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    counts = {}
    for name in contenders([]):
        runs: list = []
        function = contenders(runs)[name]
        for round_ in range(ROUNDS):
            stampede(function, round_)
        counts[name] = len(runs) / ROUNDS
    print(f"{THREADS} threads, one missing key, {COMPUTE_S * 1000:.0f} ms computation")
    print("| cache | computations per key (mean of rounds) |\n|---|---:|")
    for name, count in counts.items():
        print(f"| {name} | {count:g} |")
    if "--json" in sys.argv[1:]:
        print(json.dumps({"bench": "stampede", "threads": THREADS, "computations": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
