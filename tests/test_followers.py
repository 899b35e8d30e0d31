"""Callers that wait on another's computation of their key get its value,
also when it is not stored (``cache_if`` said no, the serializer refused it),
on the memory store and on a Django cache (Redis: tests/redis/test_locks.py)."""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from tests.parking import blocked_on_a_futex, parked_threads, wait_until

BACKENDS = {
    "memory": {"BACKEND": "memory"},
    "django": {"BACKEND": "django:locmem"},
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "locmem": {
        "BACKEND": "tests.test_followers.LookupRecordingCache",
        "LOCATION": "restflow-followers",
    },
}


class LookupRecordingCache(LocMemCache):
    """A LocMemCache that records which threads finished a lookup."""

    looked_up: ClassVar[set[int]] = set()

    def get_many(self, keys, version=None):
        found = super().get_many(keys, version)
        LookupRecordingCache.looked_up.add(threading.get_ident())
        return found


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    settings = {"CACHE_SETTINGS": BACKENDS[request.param]}
    LookupRecordingCache.looked_up.clear()
    with override_settings(CACHES=CACHES, RESTFLOW_SETTINGS=settings):
        yield request.param


def django_lookups_done(threads):
    """A ``settled`` check for :func:`run_together` on the Django store:
    every thread is past its lookup, and asleep on a lock if parked."""
    looked_up = sum(thread.ident in LookupRecordingCache.looked_up for thread in threads)
    return looked_up == len(threads) and followers_asleep(threads)


def followers_asleep(threads):
    """Every thread is asleep on a futex: the leader on the test's event,
    the others on the leader."""
    return all(blocked_on_a_futex(thread) for thread in threads)


def run_together(count, target, release=None, settled=None):
    """Runs ``target`` on ``count`` threads released at once; their results.

    With ``release`` (an Event the computation waits on), it is set once
    ``count - 1`` threads wait on the leader's computation (see
    tests/parking.py). On a shared store a thread is also detached during
    its lookup, so ``settled(threads)`` must also hold: every thread past
    its lookup and asleep on the leader.
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

        def followers_parked():
            parked = parked_threads(threads, target)
            return parked >= count - 1 and (settled is None or settled(threads))

        wait_until(followers_parked, f"{count - 1} followers parked")
        release.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    return results


def followers_share_a_value_that_cache_if_keeps_out(settled=None):
    """8 callers of a key whose value is never stored: one computation."""
    computations = []
    release = threading.Event()

    @cache_result(ttl=30, cache_if=lambda value, *args: False)
    def slow(x):
        computations.append(x)
        assert release.wait(30)  # in flight until the 7 others wait on it
        return {"x": x, "n": len(computations)}

    results = run_together(8, lambda: slow.get_with_metadata(1), release, settled)
    assert computations == [1]
    assert [value for value, _ in results] == [{"x": 1, "n": 1}] * 8
    assert {meta["cache_status"] for _, meta in results} == {CacheStatus.MISS}


def test_followers_share_a_value_that_cache_if_keeps_out(backend):
    followers_share_a_value_that_cache_if_keeps_out(
        django_lookups_done if backend == "django" else None
    )
