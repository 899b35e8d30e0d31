"""Runs one scenario of the Prometheus multiprocess fold in a process of its
own, and prints what the test needs to know as one line of JSON; the test
reads the counts from the metrics directory, as a scrape would.

    PROMETHEUS_MULTIPROC_DIR=DIR python -m tests.prometheus_multiproc SCENARIO

A process of its own because prometheus_client chooses multiprocess mode
when it is imported, from the environment. Scenarios:

* ``reused_address``: 20 wrappers of one function id count and are
  folded, then are collected; new ones are made until one lands at a
  collected one's address (``id()``), which makes as many calls, is
  folded, makes one more and is folded again;
* ``fork_unfolded`` / ``fork_imported``: the parent counts calls but never
  folds (no ``PrometheusMiddleware`` made before the fork: a ``--preload``
  master whose only restflow metrics code is the lazily imported
  ``metrics_view``), then forks two children that each make one call and
  fold; ``fork_imported`` has imported ``restflow.caching.prometheus``
  before the fork, ``fork_unfolded`` has not;
* ``fork_folded``: as ``fork_imported``, but the parent folds before the
  fork and again, after one more call, once its children are done;
* ``collected_between_folds``: a wrapper is folded, makes more calls and
  is collected before the next fold;
* ``fork_then_collected``: a parent folds a wrapper, makes one more call
  and forks; the child makes a call, folds, and the wrapper is collected
  there; then the parent folds;
* ``reset_between_folds``: ``reset_stats()`` after a fold, and between a
  call and its fold;
* ``directory_removed``: the metrics directory is removed under a running
  process, which then answers three requests through the middleware;
* ``timed_after_its_event``: a hit is counted and folded, then its lookup
  time is recorded and folded;
* ``odd_ids``: functions whose ids hold unicode, quotes, a backslash and
  a newline make a call each and are folded;
* ``dropped``: 100 wrappers each make a call, are folded and dropped, and
  are folded again; prints how many wrappers the fold still tracks.
"""

from __future__ import annotations

import gc
import json
import os
import sys

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="restflow-tests-only",
    INSTALLED_APPS=["restflow.caching"],
    DATABASES={},
    RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": "memory"}},
)
django.setup()

from restflow.caching import cache_result  # noqa: E402


def make():
    @cache_result(ttl=60)
    def priced(x):
        return x * 2

    return priced


@cache_result(ttl=60)
def payload(n):
    return {"n": n}


def reused_address() -> dict:
    from restflow.caching import prometheus

    first = [make() for _ in range(20)]
    for wrapper in first:
        for _ in range(3):
            wrapper(1)  # MISS, HIT, HIT (each function object has its own entries)
    prometheus.flush()
    addresses, function_id = {id(wrapper) for wrapper in first}, first[0].function_id
    del first, wrapper
    gc.collect()
    second = []  # kept alive, so each new one lands at another address
    for _ in range(1000):
        second.append(make())
        if id(second[-1]) in addresses:
            break
    else:
        return {"reused": False}
    for _ in range(3):
        second[-1](1)  # MISS, HIT, HIT: as many events as the collected one had
    prometheus.flush()
    second[-1](1)  # HIT
    prometheus.flush()
    return {"reused": True, "tries": len(second), "function": function_id}


def forked(*, imported: bool, folded: bool) -> dict:
    if imported or folded:
        from restflow.caching import prometheus
    for _ in range(3):
        payload(1)  # MISS, HIT, HIT: the parent's
    if folded:
        prometheus.flush()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                from restflow.caching import prometheus

                payload(1)  # HIT (the parent's entry), the child's own
                prometheus.flush()
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
    if folded:
        payload(1)  # the parent's fourth call, after the fork
        prometheus.flush()
    return {"function": payload.function_id}


def dropped() -> dict:
    from restflow.caching import prometheus

    made = [make() for _ in range(100)]
    for wrapper in made:
        wrapper(1)
    prometheus.flush()
    function_id = made[0].function_id
    del made, wrapper
    gc.collect()
    prometheus.flush()
    return {"function": function_id, "tracked": prometheus._folded().tracked_count()}


def collected_between_folds() -> dict:
    from restflow.caching import prometheus

    made = make()
    made(1)  # MISS
    prometheus.flush()
    made(1)  # HIT, HIT, HIT: counted after the fold, collected before the next
    made(1)
    made(1)
    function_id = made.function_id
    del made
    gc.collect()
    prometheus.flush()
    return {"function": function_id}


def fork_then_collected() -> dict:
    from restflow.caching import prometheus

    made = make()
    for _ in range(3):
        made(1)  # MISS, HIT, HIT: folded by the parent
    prometheus.flush()
    made(1)  # HIT: the parent's, folded after the fork
    pid = os.fork()
    if pid == 0:
        try:
            made(1)  # HIT: the child's
            prometheus.flush()
            del made
            gc.collect()
            prometheus.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    prometheus.flush()
    return {"function": made.function_id}


def reset_between_folds() -> dict:
    from restflow.caching import prometheus, reset_stats

    payload(1)  # MISS
    payload(1)  # HIT
    prometheus.flush()
    reset_stats()
    payload(1)  # HIT
    prometheus.flush()
    reset_stats()  # before this call's fold
    payload(2)  # MISS
    prometheus.flush()
    return {"function": payload.function_id, "since_reset": payload.stats()["calls"]}


def directory_removed() -> dict:
    import shutil

    from restflow.caching.prometheus import PrometheusMiddleware

    middleware = PrometheusMiddleware(lambda request: "answered" if payload(1) else "")
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"])  # while the server runs
    return {"answers": [middleware(None) for _ in range(3)]}


def timed_after_its_event() -> dict:
    from restflow.caching import prometheus

    # As the async layer counts a hit it fetched itself: the status, then
    # the lookup's time; here a fold (another request's) comes in between.
    payload.steps.record("hit")
    prometheus.flush()
    payload.steps.record("lookup", 0.003)
    prometheus.flush()
    return {"function": payload.function_id}


#: Function ids a ``key_identifier`` may give, which Prometheus labels escape.
ODD_IDS = ["prix.€uro", 'say "hi"', "back\\slash", "two\nlines"]


def odd_ids() -> dict:
    from restflow.caching import prometheus

    made = []
    for identifier in ODD_IDS:

        @cache_result(key_constructor={"fields": {}, "key_identifier": identifier}, ttl=60)
        def odd(x):
            return x

        odd(1)
        made.append(odd)
    prometheus.flush()
    return {"ids": [f.function_id for f in made]}


SCENARIOS = {
    "reused_address": reused_address,
    "fork_unfolded": lambda: forked(imported=False, folded=False),
    "fork_imported": lambda: forked(imported=True, folded=False),
    "fork_folded": lambda: forked(imported=True, folded=True),
    "dropped": dropped,
    "collected_between_folds": collected_between_folds,
    "fork_then_collected": fork_then_collected,
    "reset_between_folds": reset_between_folds,
    "directory_removed": directory_removed,
    "timed_after_its_event": timed_after_its_event,
    "odd_ids": odd_ids,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
