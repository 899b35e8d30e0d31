"""Forks a process that uses the cache, many times, and checks every child.

    python -m tests.fork_worker <backend> <mode> <forks>

``backend`` is ``memory`` or a ``redis://`` URL. ``mode``:

* ``threads``: four threads hammer the cache (misses, hits, values that are
  never stored, invalidations) and a fifth runs async calls while the main
  thread forks;
* ``queued``: no other user thread; stale refreshes are queued (and running)
  in the background when the main thread forks.

Each child makes sync and async cached calls from several threads, waits for
its own refreshes, checks every value and exits 0; the parent waits for each
child with a deadline, writes the stacks of one that hangs to stderr
(``report_stacks``) and kills it, and prints one line per child
that failed (``hang``, ``signal N`` or ``exit N``) and then ``done F`` with
the number of failures. Its exit status is 0 only when every child passed.
The test runs this in a subprocess with a timeout: a hang fails, never
stalls the run.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import django
from django.conf import settings

#: How long one child may take before it counts as hung.
CHILD_DEADLINE = 30.0

#: What makes a child write its threads' Python stacks (faulthandler).
STACKS_SIGNAL = signal.SIGUSR2


def setup(backend: str) -> None:
    from tests.timeouts import GENEROUS

    settings.configure(
        SECRET_KEY="restflow-fork-tests",
        RESTFLOW_SETTINGS={
            "CACHE_SETTINGS": {
                "BACKEND": backend,
                "STALE_WHILE_REVALIDATE": 600,
                # Hammering threads on a loaded machine can stall a round
                # trip past the 0.1 s default; a BYPASS there is not what
                # these scenarios test (their invalidations would raise).
                **GENEROUS,
                # tests/redis/test_fork_redis.py runs the busy-wait path too.
                "READ_SPIN": float(os.environ.get("RESTFLOW_FORK_READ_SPIN", "0")),
                # The near cache's thread and connection, busy at the forks.
                "NEAR_CACHE": os.environ.get("RESTFLOW_FORK_NEAR_CACHE") == "1",
            }
        },
    )
    django.setup()


def main() -> int:
    backend, mode, forks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    setup(backend)
    from restflow.caching import cache_result
    from restflow.caching.testing import frozen_clock, wait_for_refreshes

    @cache_result(ttl=10)
    def double(x):
        return 2 * x

    @cache_result(ttl=10)
    def slow_double(x):
        # Long enough that refreshes are still running at the fork.
        time.sleep(0.002)
        return 2 * x

    @cache_result(ttl=10, cache_if=lambda value, *args: False)
    def never_stored(x):
        return 3 * x

    @cache_result(ttl=10)
    async def adouble(x):
        return 2 * x

    def check_child() -> None:
        failures = []

        def calls(seed: int) -> None:
            try:
                for n in range(20):
                    key = 10_000_000 + os.getpid() * 1000 + seed * 100 + n
                    assert double(key) == 2 * key
                    assert double(key) == 2 * key
                    assert never_stored(key) == 3 * key
                    assert slow_double(n) == 2 * n
                    assert double(n % 5) == 2 * (n % 5)
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=calls, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        calls(4)
        for thread in threads:
            thread.join()
        assert not failures, failures
        assert asyncio.run(adouble(os.getpid())) == 2 * os.getpid()
        wait_for_refreshes(10)

    stop = threading.Event()
    hammer_errors = []

    def reported(target):
        def run(*args):
            try:
                target(*args)
            except BaseException as error:
                hammer_errors.append(error)

        return run

    @reported
    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            key = rng.randrange(1_000_000)
            assert double(key) == 2 * key
            assert never_stored(key % 50) == 3 * (key % 50)
            assert double(key % 10) == 2 * (key % 10)
            if rng.random() < 0.01:
                double.invalidate_all()

    @reported
    def async_hammer() -> None:
        # Keeps the async worker pool (and, on Redis, the loop's own
        # connections) busy at the forks.
        async def calls() -> None:
            rng = random.Random(99)
            while not stop.is_set():
                keys = [rng.randrange(1_000_000) for _ in range(8)]
                values = await asyncio.gather(*(adouble(key) for key in keys))
                assert values == [2 * key for key in keys]

        asyncio.run(calls())

    # Inherited by every child from the fork on (even one that hangs in an
    # at-fork handler, before any code of its own runs): the parent signals
    # a hung child, which writes its threads' Python stacks to stderr.
    faulthandler.register(STACKS_SIGNAL, all_threads=True)
    with frozen_clock() as clock:
        for n in range(20):
            slow_double(n)
        hammers = []
        if mode == "threads":
            hammers = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
            hammers.append(threading.Thread(target=async_hammer))
            for thread in hammers:
                thread.start()
        failed = 0
        for fork in range(forks):
            if mode == "queued":
                # Every entry stale: the calls below queue refreshes that
                # are still queued or running at the fork.
                clock.advance(11)
                for n in range(20):
                    slow_double(n)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    check_child()
                    code = 0
                except BaseException as error:
                    print(f"child {os.getpid()}: {error!r}", file=sys.stderr, flush=True)
                finally:
                    os._exit(code)
            outcome = wait_child(pid)
            if outcome:
                failed += 1
                print(f"fork {fork}: {outcome}", flush=True)
        stop.set()
        for thread in hammers:
            thread.join()
        wait_for_refreshes(10)
    if hammer_errors:
        print(f"the parent's threads failed: {hammer_errors!r}", flush=True)
        failed += 1
    print(f"done {failed}", flush=True)
    return 1 if failed else 0


def wait_child(pid: int) -> str | None:
    """``None`` when the child exited 0, else what went wrong."""
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            report_stacks(pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"hang (child {pid}; its stacks are on stderr)"
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else f"exit {code}"


def report_stacks(pid: int) -> None:
    """Writes a hung child's stacks to stderr: the native ones where gdb
    or py-spy is installed (they name the lock each thread waits on), then
    Python's (faulthandler, on a signal: last, as it reads the frames from
    inside the child, which crashed it once). A hang seen under load in
    CI had nothing else to go on: it hung inside ``os.fork``, before any
    code of the child's own could arm a dump."""
    gdb, py_spy = shutil.which("gdb"), shutil.which("py-spy")
    if gdb is None:
        print(f"child {pid} hung; no gdb here for its native stacks", file=sys.stderr)
    else:
        run_tool(pid, [gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt"])
    if py_spy is None:
        print(f"child {pid} hung; no py-spy here", file=sys.stderr)
    elif not run_tool(pid, [py_spy, "dump", "--native", "--pid", str(pid)]):
        # It cannot always unwind the native frames: the Python ones, then.
        run_tool(pid, [py_spy, "dump", "--pid", str(pid)])
    print(f"child {pid} hung; its Python stacks (faulthandler):", file=sys.stderr, flush=True)
    os.kill(pid, STACKS_SIGNAL)
    # The child writes them itself: give it a moment before the kill.
    time.sleep(2)


def run_tool(pid: int, command: list[str]) -> bool:
    """Runs a stack dumper on the hung child ``pid``, writes what it said to
    stderr, and returns whether it succeeded."""
    try:
        found = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        output, ok = found.stdout + found.stderr, found.returncode == 0
    except (OSError, subprocess.SubprocessError) as error:
        output, ok = repr(error), False
    print(f"child {pid} hung; {' '.join(command)}:\n{output}", file=sys.stderr, flush=True)
    return ok


if __name__ == "__main__":
    sys.exit(main())
