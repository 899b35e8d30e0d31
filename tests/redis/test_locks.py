"""Computation and refresh locks on Redis: callers of one key in a process
share the leader's value even when it is not stored; a lock never costs
more than one wait; a lock is only ever released by its holder."""

from __future__ import annotations

import threading
import time

from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.parking import following_calls
from tests.redis.conftest import redis_settings
from tests.redis.gate_proxy import GateProxy
from tests.refresh_claim_race import ClaimGate, check_an_overtaken_stale_read_does_not_refresh_again
from tests.test_followers import followers_share_a_value_that_cache_if_keeps_out, run_together


class Unpicklable:
    def __init__(self, n):
        self.n = n
        self.lock = threading.Lock()  # pickle refuses it


def test_followers_share_a_value_that_cache_if_keeps_out(redis):
    followers_share_a_value_that_cache_if_keeps_out()
    assert not any(key.startswith(b"ns") for key in redis.keys("*"))  # nothing stored


def test_followers_share_a_value_the_serializer_refuses(redis):
    computations = []
    release = threading.Event()

    @cache_result(ttl=30)
    def slow(x):
        computations.append(x)
        assert release.wait(30)  # in flight until the 7 others wait on it
        return Unpicklable(len(computations))

    results = run_together(8, lambda: slow(1), release, lambda: following_calls(slow, 1))
    assert computations == [1]
    assert len({id(value) for value in results}) == 1
    assert results[0].n == 1


def test_a_lock_without_expiry_costs_no_wait_and_is_taken_over(redis_server, redis):
    computations = []
    holding, release = threading.Event(), threading.Event()

    @cache_result(ttl=30)
    def value(x, hold=False):
        computations.append(x)
        if hold:
            holding.set()
            release.wait(30)
        return x * 10

    # LOCK_TIMEOUT 60 s: waiting on the stuck lock would take longer than
    # that (the wait ends at LOCK_TIMEOUT + 1 s); taking it over takes round
    # trips only, far less however loaded the machine.
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, LOCK_TIMEOUT=60)):
        # The lock's name, read while a computation holds it.
        thread = threading.Thread(target=value, args=(1, True))
        thread.start()
        assert holding.wait(30)
        [lock] = redis.keys("*restflow:lock:*")
        release.set()
        thread.join(30)
        redis.delete(*redis.keys("*"))
        # A lock no restflow holder made: every restflow lock has an expiry.
        redis.set(lock, b"stuck-forever")
        computations.clear()
        started = time.monotonic()
        statuses = [value.get_with_metadata(1, True)[1]["cache_status"] for _ in range(3)]
        assert statuses == [CacheStatus.MISS, CacheStatus.HIT, CacheStatus.HIT]
        assert time.monotonic() - started < 30  # far less than one LOCK_TIMEOUT in all
        assert computations == [1]
        assert redis.get(lock) is None  # released by its new holder


def test_a_slow_refresh_does_not_release_the_next_holders_refresh_lock(redis):
    refreshing, release = threading.Event(), threading.Event()
    computations = []

    @cache_result(ttl=10, stale_while_revalidate=60)
    def slow(x):
        computations.append(x)
        if len(computations) > 1:
            refreshing.set()
            release.wait(30)
        return len(computations)

    with frozen_clock() as clock:
        assert slow(1) == 1
        clock.advance(11)
        assert slow.get_with_metadata(1)[1]["cache_status"] is CacheStatus.STALE
        assert refreshing.wait(30)
        [key] = redis.keys("*restflow:refresh:*")
        # The refresh outlived its lock, and another process claimed the next one.
        redis.set(key, b"the-next-holder", px=60_000)
        release.set()
        wait_for_refreshes()
        assert redis.get(key) == b"the-next-holder"
        value, meta = slow.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)


def test_a_stale_read_overtaken_by_a_whole_refresh_does_not_refresh_again(redis_server, redis):
    gate = ClaimGate()
    proxy = GateProxy(redis_server.port, gate)
    try:
        check_an_overtaken_stale_read_does_not_refresh_again(gate, backend=proxy.url)
    finally:
        gate.release.set()
        proxy.close()


def _unreadable():
    raise ValueError("the class moved")


class UnreadableWhenLoaded:
    """A value stored fine that no longer loads (its class moved)."""

    def __reduce__(self):
        return (_unreadable, ())


def test_a_stale_entry_that_no_longer_loads_gives_its_refresh_claim_back(redis):
    computations = []

    @cache_result(ttl=10, stale_while_revalidate=60)
    def make(x):
        computations.append(x)
        return UnreadableWhenLoaded()

    with frozen_clock() as clock:
        make(1)
        clock.advance(11)
        # The stale read claims the refresh, then cannot load the entry: it
        # drops it and recomputes, and nobody refreshes from that claim.
        assert make.get_with_metadata(1)[1]["cache_status"] is CacheStatus.MISS
        assert computations == [1, 1]
        assert redis.keys("*restflow:refresh:*") == []
