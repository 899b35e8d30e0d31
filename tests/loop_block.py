"""A sync call made on the thread of the event loop whose task computes its
key, in a process of its own (for tests/test_async.py)::

    python -m tests.loop_block <BACKEND setting> [<CACHES as JSON>]

Prints what the sync call did: ``RuntimeError: <message>`` or
``returned <value>``; where the call still blocks the loop's thread after
``tests.parking.DEADLINE`` s (a hang guard: raising takes microseconds), it
prints ``blocked`` and the process ends with status 3. A process, not a
thread of the test's: a thread blocked there would stay blocked for the rest
of the run, holding the store's workers and failing later tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading

import django
from django.conf import settings


def main() -> int:
    backend = sys.argv[1]
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    if len(sys.argv) > 2:  # the test's own (a memcached alias on its server)
        caches = json.loads(sys.argv[2])
    settings.configure(
        SECRET_KEY="restflow-loop-block",
        CACHES=caches,
        RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": backend}},
    )
    django.setup()
    from restflow.caching import ArgsKeyField, KeyConstructor, cache_result
    from tests.parking import DEADLINE, Gate, until

    class MixedReport(KeyConstructor):
        """One key for a sync and an async function."""

        x = ArgsKeyField("x")

        class Meta:
            namespace = "mixed"
            key_identifier = "reports.mixed"

    gate = Gate()
    computations = []

    @cache_result(ttl=60, key_constructor=MixedReport)
    def report(x):
        computations.append(("sync", x))
        return ("sync", x)

    @cache_result(ttl=60, key_constructor=MixedReport)
    async def areport(x):
        computations.append(("async", x))
        await gate.passed()
        return ("async", x)

    async def scenario():
        gate.close()
        task = asyncio.create_task(areport(1))
        await until(lambda: computations, "computing")
        answered = threading.Event()
        threading.Thread(target=watch, args=(answered,), daemon=True).start()
        try:
            print(f"returned {report(1)!r}", flush=True)
        except RuntimeError as error:
            print(f"RuntimeError: {error}", flush=True)
        answered.set()
        gate.open()
        print(f"task {await task!r}", flush=True)
        print(f"computations {computations!r}", flush=True)

    def watch(answered):
        if not answered.wait(DEADLINE):
            print("blocked", flush=True)
            os._exit(3)

    asyncio.run(scenario())
    return 0


if __name__ == "__main__":
    sys.exit(main())
