"""A process that uses a shared Redis cache, for the cross-process tests.

    python -m tests.redis.worker <scenario> <redis url> [arguments]

Each computation increments ``computations`` in Redis, so the test can
count them across every process. Processes that must act together print
``ready`` and start on a ``go`` line on stdin, so no scenario depends on
when a process happened to start.
"""

from __future__ import annotations

import faulthandler
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
    # them into BYPASS (a lock poll that times out computes live: a second
    # computation of the cold key).
    from tests.timeouts import GENEROUS

    setup(url, LOCK_TIMEOUT=lock_timeout, STALE_WHILE_REVALIDATE=60, **GENEROUS)
    from restflow.caching import cache_result
    from restflow.caching.testing import frozen_clock, wait_for_refreshes
    from tests.parking import asleep, following_calls, wait_until

    counter = counter_client(url)
    pause = float(rest[0]) if rest else 0.3
    computing = []

    @cache_result(ttl=10)
    def payload(key):
        counter.incr("computations")
        computing.append(threading.get_ident())
        if scenario == "hold":
            print("computing", flush=True)  # under the lock
        if scenario == "cold":
            # Until every caller of every process waits on this computation.
            processes = int(rest[2])
            # Deadlines far inside LOCK_TIMEOUT (60 s here): a loaded machine
            # slows this down, and must not make a waiter take the lock over.
            wait_until(
                lambda: int(counter.get("waiting") or 0) == processes,
                "all waiting",
                timeout=45,
                every=0.02,
            )
        elif scenario == "stale":
            # Until the test has every process's stale reads.
            wait_until(
                lambda: counter.get("release") is not None, "released", timeout=45, every=0.02
            )
        else:
            time.sleep(pause)
        return {"key": key, "pid": __import__("os").getpid()}

    def go():
        print("ready", flush=True)
        line = sys.stdin.readline().strip()
        assert line == "go", line

    if scenario == "cold":
        # Every thread's stack on stderr if this process is still here when
        # the test's 60 s deadline nears: the clue a hang leaves.
        faulthandler.dump_traceback_later(55, exit=False)
        started, barrier = threading.Event(), threading.Barrier(8)
        statuses = []

        def call():
            return payload.get_with_metadata("cold")

        def caller():
            barrier.wait()
            started.wait()
            statuses.append(str(call()[1]["cache_status"]))

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        go()
        started.set()

        # This process's callers all wait once 7 follow one of them (the
        # engine's count), which computes or waits on the lock another
        # process holds (sleeping between looks: Rust's thread::sleep; the
        # followers sleep on a futex, so only it can be asleep).
        def all_waiting():
            leads = bool(computing) or any(asleep(t) for t in threads)
            return following_calls(payload, "cold") == 7 and leads

        try:
            wait_until(all_waiting, "this process's callers waiting", timeout=45, every=0.01)
        except AssertionError:
            # What the process was doing, for the report of a rare failure.
            followers = following_calls(payload, "cold")
            sleeping = sum(asleep(t) for t in threads)
            print(
                f"following={followers} computing={len(computing)} asleep={sleeping}",
                file=sys.stderr,
                flush=True,
            )
            raise
        counter.incr("waiting")
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
            go()
            statuses = [
                str(payload.get_with_metadata("stale")[1]["cache_status"]) for _ in range(5)
            ]
            print(",".join(statuses), flush=True)
            wait_for_refreshes()
    elif scenario == "hold":
        # Takes the lock and computes slowly: the test kills this process
        # once it printed "computing".
        payload("held")
    elif scenario == "get":
        value, metadata = payload.get_with_metadata(rest[2] if len(rest) > 2 else "held")
        print(f"{metadata['cache_status']} {value['pid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
