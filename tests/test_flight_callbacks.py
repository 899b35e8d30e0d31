"""A follower's ``Flight.on_done`` callback may read its own flight.

The async layer's callback only schedules a wake-up, but ``Flight`` is a
public type of ``restflow._engine``: a callback that reads the outcome at
once (``flight.result()``) is the natural use. When the leader had already
ended, ``on_done`` ran the callback while it still held the flight, so
``result()`` raised "Already borrowed"."""

from __future__ import annotations

import pytest

from restflow.caching import CacheStatus, cache_result


@pytest.fixture
def square(store):
    @cache_result(ttl=30)
    def square(x):
        return x * x

    return square


def test_a_callback_run_at_once_reads_its_own_flight(square, store):
    steps = square.steps
    leader = steps.flight((3,), None, 1)
    follower = steps.flight((3,), None, 2)
    assert (leader.leader, follower.leader) == (True, False)
    if store.shared:
        leader.share(9, {"cache_status": CacheStatus.MISS})
    else:
        leader.complete(9)
    seen = []
    follower.on_done(lambda: seen.append(follower.result()))
    assert [(value, meta["cache_status"]) for value, meta in seen] == [(9, CacheStatus.MISS)]


def test_a_callback_run_later_reads_its_own_flight(square, store):
    steps = square.steps
    leader = steps.flight((4,), None, 1)
    follower = steps.flight((4,), None, 2)
    seen = []
    follower.on_done(lambda: seen.append(follower.result()))
    assert seen == []
    if store.shared:
        leader.share(16, {"cache_status": CacheStatus.MISS})
    else:
        leader.complete(16)
    assert [(value, meta["cache_status"]) for value, meta in seen] == [(16, CacheStatus.MISS)]
