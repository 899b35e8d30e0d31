"""A process that uses a shared Redis cache, for the cross-process tests.

    python -m tests.redis.worker <scenario> <redis url> [arguments]

Each computation increments ``computations`` in Redis, so the test can
count them across every process.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime

import django
from django.conf import settings


def setup(url: str, **extra) -> None:
    settings.configure(
        SECRET_KEY="restflow-redis-tests",
        RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": url, **extra}},
    )
    django.setup()


def counter_client(url: str):
    """A redis-py client for the ``computations`` counter: a cluster client
    for a ``redis+cluster://`` URL (its first seed node)."""
    import redis

    if "+cluster://" not in url:
        return redis.Redis.from_url(url)
    from redis.cluster import RedisCluster

    host, port = url.split("://", 1)[1].split(",")[0].rsplit(":", 1)
    return RedisCluster(host=host, port=int(port))


def main() -> int:
    scenario, url, *rest = sys.argv[1:]
    lock_timeout = float(rest[1]) if len(rest) > 1 else 10
    # Generous round-trip timeouts: these scenarios are about locks and
    # refresh claims across processes, and a loaded machine must not turn
    # them into BYPASS.
    setup(
        url,
        LOCK_TIMEOUT=lock_timeout,
        STALE_WHILE_REVALIDATE=60,
        READ_TIMEOUT=5.0,
        CONNECT_TIMEOUT=5.0,
    )
    from restflow.caching import cache_result
    from restflow.caching.testing import frozen_clock, wait_for_refreshes

    counter = counter_client(url)
    pause = float(rest[0]) if rest else 0.3

    @cache_result(ttl=10)
    def payload(key):
        counter.incr("computations")
        time.sleep(pause)
        return {"key": key, "pid": __import__("os").getpid()}

    if scenario == "cold":
        # Every thread of every process starts at the same wall-clock time.
        start_at = float(rest[2])
        barrier = threading.Barrier(8)
        statuses = []

        def call():
            barrier.wait()
            time.sleep(max(0.0, start_at - time.time()))
            statuses.append(str(payload.get_with_metadata("cold")[1]["cache_status"]))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(",".join(statuses))
    elif scenario in ("prime", "stale"):
        # The clock is frozen at the given time: "prime" stores the entry,
        # "stale" reads it past its ttl, all processes at once.
        frozen_at = datetime.fromtimestamp(float(rest[2]), tz=UTC)
        with frozen_clock(frozen_at):
            if scenario == "prime":
                print(payload.get_with_metadata("stale")[1]["cache_status"])
                return 0
            time.sleep(max(0.0, float(rest[3]) - time.time()))
            statuses = [
                str(payload.get_with_metadata("stale")[1]["cache_status"]) for _ in range(5)
            ]
            wait_for_refreshes()
        print(",".join(statuses))
    elif scenario == "hold":
        # Takes the lock and computes slowly: the test kills this process.
        print("computing", flush=True)
        payload("held")
    elif scenario == "get":
        value, metadata = payload.get_with_metadata(rest[2] if len(rest) > 2 else "held")
        print(f"{metadata['cache_status']} {value['pid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
