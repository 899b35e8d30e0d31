"""The interpreter exits while an async computation is in flight on an event
loop that was closed or stopped (issue 10, item 5). Each scenario runs in a
subprocess with a timeout: a hang fails the test instead of the suite.
Each runs on every store (tests/stores.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Seconds an exit may take; a hang is far longer.
EXIT_TIMEOUT = 30

SCRIPT = """
import asyncio, sys
import django
from django.conf import settings

backend = sys.argv[1]
settings.configure(
    SECRET_KEY="restflow-tests-only",
    RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": backend}},
)
django.setup()
from restflow.caching import cache_result

started = asyncio.Event()

@cache_result(ttl=60)
async def slow(x):
    started.set()
    await asyncio.sleep(3600)  # never finishes: the loop goes away first
    return x

async def main():
    asyncio.ensure_future(slow(1))
    await started.wait()

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
if sys.argv[2] == "close":
    loop.close()
# "stop": the loop is left stopped, never closed.
print("exiting", flush=True)
"""


def run_scenario(backend: str, ending: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, backend, ending],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )


@pytest.mark.parametrize("ending", ["close", "stop"])
def test_exit_with_a_computation_in_flight(store, ending):
    """The memory store computes on the loop itself; the Django-cache store
    (the subprocess's LocMem default alias) and Redis wait for the loop on a
    worker thread."""
    backend = "django:default" if store.kind == "django" else store.label
    out = run_scenario(backend, ending)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["exiting"]
