"""Callers that wait on another's computation of their key get its value,
also when it is not stored (``cache_if`` said no, the serializer refused it),
on the memory store and on a Django cache (Redis: tests/redis/test_locks.py)."""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from tests.parking import following_calls, wait_until

BACKENDS = {
    "memory": {"BACKEND": "memory"},
    "django": {"BACKEND": "django:locmem"},
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "locmem": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "restflow-followers",
    },
}


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    settings = {"CACHE_SETTINGS": BACKENDS[request.param]}
    with override_settings(CACHES=CACHES, RESTFLOW_SETTINGS=settings):
        yield request.param


def run_together(count, target, release=None, waiting=None):
    """Runs ``target`` on ``count`` threads released at once; their results.

    With ``release`` (an Event the computation waits on), it is set once
    ``waiting()`` says ``count - 1`` threads follow the leader's
    computation (see tests/parking.py).
    """
    barrier = threading.Barrier(count, timeout=30)
    results = [None] * count

    def worker(n):
        barrier.wait()
        results[n] = target()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    if release is not None:
        wait_until(lambda: waiting() >= count - 1, f"{count - 1} followers parked")
        release.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    return results


def followers_share_a_value_that_cache_if_keeps_out():
    """8 callers of a key whose value is never stored: one computation."""
    computations = []
    release = threading.Event()

    @cache_result(ttl=30, cache_if=lambda value, *args: False)
    def slow(x):
        computations.append(x)
        assert release.wait(30)  # in flight until the 7 others wait on it
        return {"x": x, "n": len(computations)}

    results = run_together(
        8, lambda: slow.get_with_metadata(1), release, lambda: following_calls(slow, 1)
    )
    assert computations == [1]
    assert [value for value, _ in results] == [{"x": 1, "n": 1}] * 8
    assert {meta["cache_status"] for _, meta in results} == {CacheStatus.MISS}


def test_followers_share_a_value_that_cache_if_keeps_out(backend):
    followers_share_a_value_that_cache_if_keeps_out()
