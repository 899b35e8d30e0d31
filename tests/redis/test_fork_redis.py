"""Fork safety on Redis, what is Redis's own: busy-wait lookups and the near
cache. The scenarios, and the busy cache on every store: tests/test_fork.py."""

from __future__ import annotations

from tests.test_fork import pytestmark, run_forks  # noqa: F401 - applies the skip


def test_children_forked_while_lookups_busy_wait_work(redis_server):
    """The same with ``READ_SPIN`` on: lookups then go through the
    busy-wait connections (``shared/spin.rs``), which a child rebuilds too."""
    run_forks(redis_server.url, "threads", 30, read_spin=0.0001)


def test_children_forked_from_a_busy_redis_cache_with_a_near_cache_work(redis_server, monkeypatch):
    # Its invalidation thread and the hammering threads' near lookups are
    # mid-call at the forks; each child must build its own.
    monkeypatch.setenv("RESTFLOW_FORK_NEAR_CACHE", "1")
    run_forks(redis_server.url, "threads", 20)
