"""The near cache (NEAR_CACHE): hot hits, a DRF view, and how long a change
takes to reach another process.

Starts its own redis-server on a free 127.0.0.1 port and measures, in one
run (so the ratios share the machine's load):

1. hot hits, ``f(5)`` and the DRF-like payload of benches/redis_hit.py, on
   the memory store, on Redis with the near cache, and on Redis without it
   (interleaved rounds, best of each). Bar: near <= 3x memory.
2. a DRF ``@api_view`` through Django's test client: the view building its
   payload itself (uncached) against the payload cached on Redis with and
   without the near cache (requests per second). Bar: near >= 0.95x
   uncached. (gunicorn + wrk: ``ROWS=near bash benches/saturation.sh``.)
3. the invalidation window between two processes: a second process
   refreshes a key this one holds near; this one reads the key in a loop
   until it serves the new value. The window is from the moment the other
   process's ``refresh()`` returned to the first read here that served the
   new value (0 when it was seen first). p50/p99 over SAMPLES changes.
   Bar: p99 < 50 ms on loopback.

Run after ``./scripts/bootstrap.sh``: ``python benches/near_cache.py``
(``--samples N``: changes timed in 3, default 300).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import timeit

import django

# The payload and the port picker of benches/redis_hit.py (this directory is
# on sys.path when a script here runs).
from bench_django import bench_settings
from django.conf import settings
from redis_hit import PAYLOAD, free_port, system_redis_server


def configure(url: str) -> None:
    settings.configure(**bench_settings({"BACKEND": url}, __name__, "testserver"))
    django.setup()


def functions():
    """The cached functions every part uses, per store."""
    import redis

    from restflow.caching import cache_result

    def cached(function, name, backend, near):
        # Named apart before decorating: one set of entries per store.
        function.__name__ = function.__qualname__ = f"{function.__name__}_{name}"
        return cache_result(ttl=3600, backend=backend, near_cache=near)(function)

    made = {}
    for name, backend, near in (
        ("memory", "memory", None),
        ("near", None, True),
        ("redis", None, False),
    ):

        def small(x):
            return x

        def payload(n):
            return {**PAYLOAD, "id": n}

        made[name] = (cached(small, name, backend, near), cached(payload, name, backend, near))

    counter = redis.Redis.from_url(settings.RESTFLOW_SETTINGS["CACHE_SETTINGS"]["BACKEND"])

    @cache_result(ttl=3600, near_cache=True)
    def changing(key):
        return counter.incr("bench:near:computations")

    return made, changing


def best_ns(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def hot_hits(made) -> None:
    print("1. hot hits (ns per call, best of 5 x 5 rounds, interleaved)")
    for index, label in ((0, "f(5)"), (1, "payload")):
        for small_or_payload in (f[index] for f in made.values()):
            small_or_payload(5)
        made["near"][index].shared_backend().near_sync()
        for f in made.values():
            f[index](5)
        rows = {name: [] for name in made}
        for _ in range(5):
            for name, f in made.items():
                fn = f[index]
                rows[name].append(best_ns(lambda fn=fn: fn(5), 20_000))
        best = {name: min(times) for name, times in rows.items()}
        print(
            f"   {label:8} memory {best['memory']:8.0f}   redis+near {best['near']:8.0f}"
            f"   redis {best['redis']:8.0f}   near/memory {best['near'] / best['memory']:5.1f}x"
            f" (bar <= 3x)   redis/near {best['redis'] / best['near']:5.1f}x"
        )


def drf_views(made) -> None:
    from django.test import Client

    print("2. DRF view through the test client (requests/s, best of 5 rounds)")
    client = Client()
    for path in ("/uncached/", "/near/", "/redis/"):
        client.get(path)
    made["near"][1].shared_backend().near_sync()
    rates = {path: [] for path in ("/uncached/", "/near/", "/redis/")}
    for _ in range(5):
        for path in rates:
            start = time.perf_counter()
            for _ in range(1000):
                client.get(path)
            rates[path].append(1000 / (time.perf_counter() - start))
    best = {path: max(r) for path, r in rates.items()}
    print(
        f"   uncached {best['/uncached/']:7.0f}   redis+near {best['/near/']:7.0f}"
        f"   redis {best['/redis/']:7.0f}   near/uncached"
        f" {best['/near/'] / best['/uncached/']:4.2f}x (bar >= 0.95x)"
    )


def window(changing, url: str, samples: int) -> None:
    print(f"3. invalidation window between two processes ({samples} changes)")
    peer = subprocess.Popen(
        [sys.executable, __file__, "--peer", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert peer.stdout.readline().strip() == "ready"
    backend = changing.shared_backend()
    windows = []
    try:
        for i in range(samples):
            key = f"w{i}"
            old = changing(key)
            backend.near_sync()
            changing(key)  # read near
            peer.stdin.write(f"{key}\n")
            peer.stdin.flush()
            while changing(key) == old:
                pass
            seen = time.monotonic_ns()
            returned = int(peer.stdout.readline())
            windows.append(max(0, seen - returned) / 1e6)
    finally:
        peer.stdin.close()
        peer.wait(10)
    windows.sort()
    p50 = statistics.median(windows)
    p99 = windows[min(len(windows) - 1, int(len(windows) * 0.99))]
    verdict = "PASS" if p99 < 50 else "FAIL"
    print(
        f"   p50 {p50:.3f} ms   p99 {p99:.3f} ms   max {windows[-1]:.3f} ms   {verdict} (< 50 ms)"
    )


def peer(url: str) -> int:
    """The other process: refreshes each key it is sent, then prints when
    its call returned (CLOCK_MONOTONIC, shared by processes on one host)."""
    configure(url)
    _, changing = functions()
    print("ready", flush=True)
    for line in sys.stdin:
        changing.refresh(line.strip())
        print(time.monotonic_ns(), flush=True)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--peer"]:
        return peer(sys.argv[2])
    samples = int(sys.argv[2]) if sys.argv[1:2] == ["--samples"] else 300
    port = free_port()
    server = subprocess.Popen(
        [system_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        configure(url)
        made, changing = functions()
        routes(made)
        print(f"load: {os.getloadavg()}")
        hot_hits(made)
        drf_views(made)
        window(changing, url, samples)
        print(f"load: {os.getloadavg()}")
    finally:
        server.terminate()
        server.wait(10)
    return 0


urlpatterns: list = []


def routes(made) -> None:
    """The three views of part 2."""
    from django.urls import path
    from rest_framework.decorators import api_view
    from rest_framework.response import Response

    def view(source):
        @api_view(["GET"])
        def payload_view(request):
            return Response(source(42))

        return payload_view

    urlpatterns[:] = [
        path("uncached/", view(lambda n: {**PAYLOAD, "id": n})),
        path("near/", view(made["near"][1])),
        path("redis/", view(made["redis"][1])),
    ]


if __name__ == "__main__":
    sys.exit(main())
