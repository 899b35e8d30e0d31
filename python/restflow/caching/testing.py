"""Helpers for testing code that uses restflow's cache.

The engine reads time from one clock. Freeze it and move it by hand to test
expiry and stale windows without sleeping::

    from restflow.caching.testing import frozen_clock, clear_caches, wait_for_refreshes

    def test_expires(client):
        with frozen_clock() as clock:
            first = client.get("/users/1")        # MISS
            clock.advance(301)                    # past ttl=300
            stale = client.get("/users/1")        # STALE, refresh queued
            wait_for_refreshes()
            assert client.get("/users/1")["X-Cache-status"] == "HIT"

Call :func:`clear_caches` between tests (for example in an autouse fixture)
so that no test sees another's entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from restflow import _engine

__all__ = [
    "FrozenClock",
    "clear_caches",
    "frozen_clock",
    "seeded_early_refresh",
    "wait_for_refreshes",
]


class FrozenClock:
    """A handle on the frozen engine clock."""

    def now(self) -> datetime:
        """The engine's current time, as an aware UTC datetime."""
        return datetime.fromtimestamp(_engine.now(), UTC)

    def advance(self, seconds: float | timedelta) -> datetime:
        """Moves the clock forward and returns the new time."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        return datetime.fromtimestamp(_engine.advance_clock(float(seconds)), UTC)

    def set(self, when: datetime) -> None:
        """Moves the clock to ``when`` (an aware datetime)."""
        if when.tzinfo is None:
            raise ValueError("give an aware datetime, e.g. datetime(..., tzinfo=timezone.utc)")
        _engine.freeze_clock(when.timestamp())


@contextmanager
def frozen_clock(at: datetime | None = None) -> Iterator[FrozenClock]:
    """Freezes the engine clock (at ``at``, or now) for the ``with`` block."""
    if at is not None and at.tzinfo is None:
        raise ValueError("give an aware datetime, e.g. datetime(..., tzinfo=timezone.utc)")
    _engine.freeze_clock(None if at is None else at.timestamp())
    try:
        yield FrozenClock()
    finally:
        _engine.unfreeze_clock()


@contextmanager
def seeded_early_refresh(seed: int = 0) -> Iterator[None]:
    """Seeds the draws of ``early_refresh`` for the ``with`` block, so which
    hit refreshes early is the same on every run (with :func:`frozen_clock`,
    and a function that advances the clock to take a known time)."""
    _engine.seed_early_refresh(seed)
    try:
        yield
    finally:
        _engine.seed_early_refresh(None)


def clear_caches() -> int:
    """Drops every entry of every cached function; returns how many there were."""
    return _engine.clear()


def wait_for_refreshes(timeout: float = 10.0) -> None:
    """Blocks until every queued background refresh has run.

    Raises ``TimeoutError`` if they have not within ``timeout`` seconds.
    """
    if not _engine.wait_for_refreshes(timeout):
        raise TimeoutError(f"background refreshes still running after {timeout} s")
