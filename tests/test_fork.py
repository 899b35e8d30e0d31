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
import threading
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
        # Bytes here, even with text=True.
        stdout, stderr = (
            part.decode(errors="replace") if isinstance(part, bytes) else part or ""
            for part in (expired.stdout, expired.stderr)
        )
        pytest.fail(
            f"the fork scenario hung; its output:\n{stdout}\nits stderr:\n{failure_output(stderr)}"
        )
    if done.stdout.splitlines()[-1:] != ["done 0"] or done.returncode != 0:
        pytest.fail(
            f"the fork scenario failed (exit {done.returncode}); its output:\n{done.stdout}\n"
            f"its stderr:\n{failure_output(done.stderr)}"
        )


def failure_output(stderr: str) -> str:
    """The worker's stderr for a failure message: from the first hung
    child's report on (its Python and native stacks, which can be long),
    else the end."""
    start = stderr.find(" hung; ")
    if start < 0:
        return stderr[-3000:]
    return stderr[stderr.rfind("\n", 0, start) + 1 :][:60_000]


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


def _thread_state_id() -> int:
    """The unique id CPython gave the calling thread's Python thread state."""
    import ctypes

    current = ctypes.pythonapi.PyThreadState_Get
    current.restype = ctypes.c_void_p
    state_id = ctypes.pythonapi.PyThreadState_GetID
    state_id.argtypes = [ctypes.c_void_p]
    state_id.restype = ctypes.c_int64
    return state_id(current())


@pytest.mark.parametrize("store", on("memory", "django", "redis"), indirect=True)
def test_refresh_workers_keep_one_python_thread_state(store):
    """A refresh worker makes its Python thread state once and keeps it.

    CPython before 3.11.10 (gh-112275) lets a thread that makes a thread
    state without the GIL (a worker's first attach) hold the interpreter's
    thread list lock while another thread forks; the child then hangs in
    ``os.fork`` itself (seen in ``tests/fork_worker.py`` with gdb). A worker
    that made a new thread state for every refresh opened that window at
    every refresh; now it makes one, once, behind a gate the fork waits on."""
    from restflow.caching import cache_result
    from restflow.caching.testing import frozen_clock, wait_for_refreshes

    seen: dict[int, set[int]] = {}

    @cache_result(ttl=10, stale_while_revalidate=600)
    def value(x):
        seen.setdefault(threading.get_ident(), set()).add(_thread_state_id())
        return x

    main = threading.get_ident()
    with frozen_clock() as clock:
        assert value(1) == 1
        for _ in range(6):
            clock.advance(11)
            assert value(1) == 1  # stale: refreshed on a worker
            wait_for_refreshes(30)
    workers = {ident: states for ident, states in seen.items() if ident != main}
    # Six refreshes on at most two workers: one ran at least three.
    assert workers
    assert sum(len(states) for states in workers.values()) == len(workers), workers
