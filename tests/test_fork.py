"""A process forked while the cache is busy works: gunicorn ``--preload`` and
Celery's prefork pool fork a parent that has used the cache.

After a fork only the forking thread exists; a lock another thread held, a
thread parked in a wait queue, a pool's helper threads: none of it may be
touched by the child. Each scenario runs in a subprocess
(``tests/fork_worker.py``) with a timeout, so a child that hangs or crashes
fails the test instead of stalling the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stores import on

ROOT = Path(__file__).resolve().parents[1]


def run_forks(backend: str, mode: str, forks: int, read_spin: float = 0.0) -> None:
    env = {**os.environ, "RESTFLOW_FORK_READ_SPIN": str(read_spin)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.fork_worker", backend, mode, str(forks)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the fork scenario hung: {expired.stdout!r} {expired.stderr!r}")
    assert done.stdout.splitlines()[-1:] == ["done 0"], (done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.mark.parametrize("store", on("memory", "redis"), indirect=True)
@pytest.mark.parametrize("mode", ["threads", "queued"])
def test_children_forked_from_a_busy_cache_work(store, mode):
    """The scenario runs in its own process, on the memory store or on the
    session's Redis server (the fixture's settings are this process's)."""
    run_forks(store.label, mode, 30)


def _locks_restflow_keeps():
    """Every lock restflow keeps for the life of the process, by name."""
    from restflow.caching import (
        dispatchers,
        function_identity,
        key_constructor,
        response_keys,
        tasks,
    )
    from restflow.caching.dispatchers.threadpool import ThreadPoolDispatcher
    from restflow.caching.registry import CacheRegister
    from restflow.caching.rules import InvalidationRule
    from tests.testapp.models import Article

    return {
        "dispatchers": dispatchers._lock,
        "threadpool": ThreadPoolDispatcher._lock,
        "key registry": key_constructor._registry_lock,
        "inline constructors": key_constructor._inline_lock,
        "function identity": function_identity._lock,
        "cache register": CacheRegister._lock,
        "a rule": InvalidationRule(Article)._lock,
        "response variants": response_keys._variants_lock,
        "broker actors": tasks._actors_lock,
    }


def test_a_child_forked_while_other_threads_hold_restflow_locks_can_take_them():
    """A thread inside restflow (registering a function, naming a closure,
    recording a response's variants) holds one of its locks at the fork:
    the child must not inherit it locked, or its first use waits forever."""
    import threading

    locks = _locks_restflow_keeps()
    held, release = threading.Event(), threading.Event()

    def hold_them_all():
        for lock in locks.values():
            lock.acquire()
        held.set()
        release.wait()
        for lock in locks.values():
            lock.release()

    holder = threading.Thread(target=hold_them_all)
    holder.start()
    assert held.wait(30)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        stuck = [name for name, lock in locks.items() if not lock.acquire(timeout=5)]
        os.write(write, ",".join(stuck).encode() or b"-")
        os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 4096).decode()
    finally:
        release.set()
        holder.join()
        os.waitpid(pid, 0)
        os.close(read)
    assert answer == "-", f"locked in the child: {answer}"
