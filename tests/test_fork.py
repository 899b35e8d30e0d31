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

ROOT = Path(__file__).resolve().parents[1]


def run_forks(backend: str, mode: str, forks: int) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.fork_worker", backend, mode, str(forks)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the fork scenario hung: {expired.stdout!r} {expired.stderr!r}")
    assert done.stdout.splitlines()[-1:] == ["done 0"], (done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.mark.parametrize("mode", ["threads", "queued"])
def test_children_forked_from_a_busy_memory_cache_work(mode):
    run_forks("memory", mode, 30)
