"""An unlucky operator's Redis: timeouts that leave answers unread, locks
left over a refused write, garbage of every type under restflow's keys.
Each must cost at most a miss (or a bypass), never a wrong value, an
exception to the caller, or a lock left held by a refused write."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result, reset_stats, stats
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.parking import wait_until
from tests.redis.conftest import redis_settings
from tests.redis.near_functions import value
from tests.redis.test_near_cache import other_process, warm
from tests.test_lifecycle_model import AsyncApi, SyncApi, new_loop, run_model
from tests.test_lifecycle_model import areport as model_areport
from tests.test_lifecycle_model import report as model_report
from tests.timeouts import PAUSED

calls: list = []
#: Run by item's computation (under its lock).
during: list = []


@cache_result(ttl=60)
def item(x):
    calls.append(x)
    for action in during:
        action()
    return {"x": x, "n": len(calls)}


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()
    during.clear()


def served(wrapper, *args):
    value, meta = wrapper.get_with_metadata(*args)
    return value, meta["cache_status"]


def rejected(wrapper):
    return wrapper.shared_backend().rejected


def lock_of(redis, x):
    """The name of the lock a computation of ``item(x)`` holds (read while
    it holds it); the entry and the call are forgotten again."""
    during.append(lambda: held.extend(redis.keys("*restflow:lock:*")))
    held: list = []
    item(x)
    during.clear()
    redis.delete(item.get_cache_key(x))
    calls.clear()
    (lock,) = held
    return lock


WRONG_TYPES = {
    "list": lambda r, k: r.rpush(k, "a", "b"),
    "hash": lambda r, k: r.hset(k, "f", "v"),
    "set": lambda r, k: r.sadd(k, "a"),
    "zset": lambda r, k: r.zadd(k, {"a": 1}),
    "stream": lambda r, k: r.xadd(k, {"f": "v"}),
}


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_a_key_of_another_type_under_the_entry_is_a_miss(redis, kind):
    """Recomputed (MISS), stored over it, and counted as a refused payload
    (``MGET`` reads it as missing: the write counts it)."""
    assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.MISS)
    key = item.get_cache_key(1)
    redis.delete(key)
    WRONG_TYPES[kind](redis, key)
    before = rejected(item)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert rejected(item) == before + 1
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)
    assert redis.type(key) == b"string"
    assert rejected(item) == before + 1


def test_a_key_of_another_type_under_the_entry_is_a_miss_for_an_async_caller(redis):
    async def scenario():
        await async_item(1)
        key = async_item.get_cache_key(1)
        redis.delete(key)
        redis.hset(key, "f", "v")
        before = rejected(item)  # the same backend
        first = await async_item.aget_with_metadata(1)
        return before, first, await async_item.aget_with_metadata(1)

    before, first, again = asyncio.run(scenario())
    assert (first[0], first[1]["cache_status"]) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert (again[0], again[1]["cache_status"]) == ({"x": 1, "n": 2}, CacheStatus.HIT)
    assert rejected(item) == before + 1


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_a_key_of_another_type_under_the_lock_with_an_expiry_is_taken_over(
    redis, redis_server, kind
):
    """Not a restflow lock (those are tokens): taken over at once, expiry
    or not, so the value is computed once and stored."""
    lock = lock_of(redis, 1)
    WRONG_TYPES[kind](redis, lock)
    redis.pexpire(lock, 600_000)
    # Before the fix a caller waited LOCK_TIMEOUT + 1 s for it: short here.
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, LOCK_TIMEOUT=0.5)):
        assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.MISS)
        assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.HIT)
    assert not redis.exists(lock)


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_a_key_of_another_type_under_the_refresh_lock_is_taken_over(redis, kind):
    with frozen_clock() as clock:
        lock = lock_of(redis, 1)
        refresh = lock.replace(b"restflow:lock:", b"restflow:refresh:")
        assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.MISS)
        WRONG_TYPES[kind](redis, refresh)
        redis.pexpire(refresh, 600_000)
        clock.advance(61)  # stale (STALE_WHILE_REVALIDATE is 60)
        assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.STALE)
        wait_for_refreshes()
        assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)
    assert not redis.exists(refresh)


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
@pytest.mark.parametrize("claim", ["lock", "refresh"])
def test_a_delete_over_claims_of_another_type_deletes_the_entry(redis, kind, claim):
    lock = lock_of(redis, 1)
    assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.MISS)
    WRONG_TYPES[kind](redis, lock.replace(b"restflow:lock:", f"restflow:{claim}:".encode()))
    assert item.delete_cache(1) is True
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_an_invalidation_deletes_a_counter_of_another_type(redis, kind):
    """A counter of another type already makes its entries misses; the
    invalidation still happens (a DEL, whatever the type), and the next
    computation starts the counter afresh."""
    assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.MISS)
    (counter,) = redis.keys("*restflow:gen:*")
    redis.delete(counter)
    WRONG_TYPES[kind](redis, counter)
    item.invalidate_all()
    assert not redis.exists(counter)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_a_key_of_another_type_under_a_counter_heals(redis, kind):
    item(1)
    (counter,) = redis.keys("*restflow:gen:*")
    redis.delete(counter)
    WRONG_TYPES[kind](redis, counter)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)
    item.invalidate_all()
    assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.MISS)


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_a_key_of_another_type_under_the_lock_without_expiry_is_taken_over(redis, kind):
    lock = lock_of(redis, 1)
    WRONG_TYPES[kind](redis, lock)
    assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.MISS)
    assert served(item, 1) == ({"x": 1, "n": 1}, CacheStatus.HIT)
    assert not redis.exists(lock)


@pytest.mark.parametrize(
    "payload",
    [b"", b"RFC", b"RFC3", b"RFC3" + b"\x00" * 80, b"RFC9" + b"\x00" * 200, b"\xff" * 10_000],
)
def test_garbage_payloads_are_misses_counted_as_rejected(redis, payload):
    item(1)
    key = item.get_cache_key(1)
    before = rejected(item)
    redis.set(key, payload)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert rejected(item) == before + 1
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)


def test_a_huge_garbage_entry_is_a_miss(redis):
    item(1)
    key = item.get_cache_key(1)
    redis.set(key, b"RFC3" + b"\x00" * (80 << 20))
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)


def test_a_payload_signed_with_another_key_is_a_miss(redis, redis_server):
    item(1)
    key = item.get_cache_key(1)
    with override_settings(
        SECRET_KEY="another-secret", RESTFLOW_SETTINGS=redis_settings(redis_server.url)
    ):
        redis.delete(key)
        item(1)
        foreign = redis.get(key)
    redis.delete(key)
    item(1)
    before = rejected(item)
    redis.set(key, foreign)
    assert served(item, 1) == ({"x": 1, "n": 4}, CacheStatus.MISS)
    assert rejected(item) == before + 1


def test_a_store_that_times_out_never_hands_its_late_answer_to_the_next_call(own_redis):
    """The server stops (SIGSTOP) while the leader computes: its write and
    its unlock fail, and their answers come once it resumes, on
    connections that must never be used again (else a later call would
    read an earlier call's answer). (The lock the unlock could not free
    expires after LOCK_TIMEOUT: no key of 2 or 3 waits on it.)"""
    # A connection made to a stopped server waits CONNECT_TIMEOUT for its
    # handshake: shorter than the generous default, so the test is quick.
    settings = redis_settings(own_redis.url, **PAUSED, CONNECT_TIMEOUT=2.0)
    with override_settings(RESTFLOW_SETTINGS=settings):
        item(0)  # connections made, counters started
        during.append(own_redis.pause)
        try:
            first = served(item, 1)
        finally:
            own_redis.resume()
        during.clear()
        assert first == ({"x": 1, "n": 2}, CacheStatus.BYPASS)
        wait_until(lambda: served(item, 9)[1] is not CacheStatus.BYPASS, "caching resumed")
        calls.clear()
        for x in (2, 3):
            assert served(item, x) == ({"x": x, "n": x - 1}, CacheStatus.MISS)
            assert served(item, x) == ({"x": x, "n": x - 1}, CacheStatus.HIT)


def test_an_unlock_a_stalled_server_left_unanswered_is_given_back(own_redis):
    """The server stalls (CLIENT PAUSE, past READ_TIMEOUT) while the leader
    computes: its write and its unlock go unanswered (BYPASS), and the
    paused unlock dies with its connection. The give-back is queued on the
    refresh workers and made again once the server answers: the lock is
    gone long before LOCK_TIMEOUT, so the next call computes and stores at
    once instead of waiting for a holder that is done."""
    settings = redis_settings(own_redis.url, **PAUSED, CONNECT_TIMEOUT=2.0, LOCK_TIMEOUT=600)
    admin = own_redis.client()
    with override_settings(RESTFLOW_SETTINGS=settings):
        lock = lock_of(admin, 1)
        # Long enough for the write and the unlock to time out (1 s each).
        during.append(lambda: admin.client_pause(4000))
        first = served(item, 1)
        during.clear()
        assert first == ({"x": 1, "n": 1}, CacheStatus.BYPASS)
        wait_for_refreshes()  # the give-back, retried until it was answered
        assert admin.exists(lock) == 0
        assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)
        assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.HIT)


def test_a_write_refused_after_the_lock_was_taken_leaves_no_lock(own_redis):
    """Redis fills up while the leader computes (noeviction): its write is
    refused, the caller still gets the value, and the lock is released
    (a DEL, which a full Redis takes), so the next caller does not wait."""
    client = own_redis.client()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        item(0)
        client.config_set("maxmemory-policy", "noeviction")
        during.append(lambda: client.config_set("maxmemory", "1"))
        try:
            first = served(item, 1)
            locks = client.keys("*restflow:lock:*")
        finally:
            client.config_set("maxmemory", "0")
        during.clear()
        # Refused writes are reported as BYPASS (see test_breaker.py).
        assert (first, locks) == ((({"x": 1, "n": 2}), CacheStatus.BYPASS), [])
        assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.MISS)
        assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.HIT)


def test_a_server_restarted_empty_while_the_leader_computes(own_redis):
    """The server dies under the lock and comes back empty on its port. The
    leader's write, made again on a new connection (its pooled one was
    closed), finds none of the counters it read: nothing is stored, the
    caller gets its value as MISS, and the next call computes afresh."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        item(0)

        def restart():
            own_redis.stop()
            own_redis.start()

        during.append(restart)
        first = served(item, 1)
        during.clear()
        keys = own_redis.client().keys("*")
        assert (first, keys) == ((({"x": 1, "n": 2}), CacheStatus.MISS), [])
        assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.MISS)
        assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.HIT)


@pytest.fixture
def near(redis, redis_server):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, NEAR_CACHE=True)):
        yield redis


@pytest.mark.parametrize("operation", ["invalidate_all", "delete"])
def test_swapdb_under_the_near_cache_never_hides_a_later_invalidation(
    near, redis_server, operation
):
    """SWAPDB replaces the whole database without a message per key; an
    invalidation made afterwards (of a counter the new database may not
    even hold) must still stop the near copy."""
    old = warm(value, "k")
    near.swapdb(0, 1)
    near.set("near:computations", 1000)  # new values differ from the old
    other_process(redis_server.url, operation)
    assert value.shared_backend().near_sync()
    served_value, meta = value.get_with_metadata("k")
    near.flushdb()
    near.swapdb(0, 1)
    assert (served_value != old, meta["cache_status"]) == (True, CacheStatus.MISS)


@cache_result(ttl=60)
async def async_item(x):
    calls.append(x)
    return {"x": x, "n": len(calls)}


def test_a_loop_socket_that_times_out_is_never_read_again(own_redis):
    """An async hit read on the event loop's own socket times out (server
    stopped); its answer comes after the resume. The next hits, of other
    keys, must each get their own entry."""

    async def scenario():
        for x in (1, 2, 3):
            await async_item(x)
        await async_item(1)  # the loop's connection exists, idle
        own_redis.pause()
        try:
            _, meta = await async_item.aget_with_metadata(1)
        finally:
            own_redis.resume()
        assert meta["cache_status"] is CacheStatus.BYPASS
        await asyncio.to_thread(
            wait_until,
            lambda: served(item, 9)[1] is not CacheStatus.BYPASS,
            "caching resumed",
        )
        return [await async_item.aget_with_metadata(x) for x in (2, 3, 1)]

    settings = redis_settings(own_redis.url, **PAUSED, CONNECT_TIMEOUT=2.0)
    with override_settings(RESTFLOW_SETTINGS=settings):
        hits = asyncio.run(scenario())
    assert [(value, meta["cache_status"]) for value, meta in hits] == [
        ({"x": 2, "n": 2}, CacheStatus.HIT),
        ({"x": 3, "n": 3}, CacheStatus.HIT),
        ({"x": 1, "n": 1}, CacheStatus.HIT),
    ]


def test_killed_idle_connections_cost_no_bypass(own_redis):
    """CLIENT KILL (or the server's idle `timeout`) closes every pooled
    connection while idle. Each closed connection is found out on its next
    use; that must not turn hits into BYPASS, nor trip the breaker."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        reset_stats()
        for x in range(4):
            item(x)
        # Four callers at once: four pooled lookup connections.
        barrier = threading.Barrier(4)

        def hit(x):
            barrier.wait()
            item(x)

        threads = [threading.Thread(target=hit, args=(x,)) for x in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client = own_redis.client()
        killed = client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        statuses = [served(item, x)[1] for x in range(4)]
        statuses += [served(item, x)[1] for x in range(4)]
        trips = stats()["backends"][own_redis.url]["breaker_trips"]
    assert (statuses, trips) == ([CacheStatus.HIT] * 8, 0)


def test_killed_idle_loop_connections_cost_no_bypass(own_redis):
    """The event loop's own idle socket, closed by CLIENT KILL: the hit
    falls back to the engine, which replaces its closed connections too."""

    async def scenario():
        for x in (1, 2):
            await async_item(x)
            await async_item(x)  # the loop's connection exists, idle
        killed = own_redis.client().client_kill_filter(_type="normal", skipme=True)
        hits = [await async_item.aget_with_metadata(x) for x in (1, 2, 1, 2)]
        return killed, hits

    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        reset_stats()
        killed, hits = asyncio.run(scenario())
        trips = stats()["backends"][own_redis.url]["breaker_trips"]
    assert killed >= 2
    assert ([(value, meta["cache_status"]) for value, meta in hits], trips) == (
        [
            ({"x": 1, "n": 1}, CacheStatus.HIT),
            ({"x": 2, "n": 2}, CacheStatus.HIT),
        ]
        * 2,
        0,
    )


def test_a_connection_made_to_a_stalled_server_waits_one_timeout(own_redis):
    """The server stops while the leader computes: its write times out,
    and the unlock needs a new connection. Making it must not wait the
    connect timeout once per set-up command (the client crate's
    `CLIENT SETINFO` pair took two): with no password and database 0 there
    is nothing to set up, and the call costs the read timeouts. A hang
    guard, far above that and below one CONNECT_TIMEOUT."""
    settings = redis_settings(own_redis.url, READ_TIMEOUT=1.0, CONNECT_TIMEOUT=20.0)
    with override_settings(RESTFLOW_SETTINGS=settings):
        item(0)
        during.append(own_redis.pause)
        started = time.monotonic()
        try:
            first = served(item, 1)
        finally:
            elapsed = time.monotonic() - started
            own_redis.resume()
    assert first == ({"x": 1, "n": 2}, CacheStatus.BYPASS)
    assert elapsed < 15, elapsed


def test_a_huge_garbage_entry_read_by_the_loop_is_a_miss(redis):
    """Above the loop socket's answer limit (64 MiB): the loop gives up on
    it, the engine reads it, refuses it, and recomputes."""

    async def scenario():
        await async_item(1)
        await async_item(1)  # the loop's connection exists, idle
        redis.set(async_item.get_cache_key(1), b"RFC3" + b"\x00" * (80 << 20))
        first = await async_item.aget_with_metadata(1)
        again = await async_item.aget_with_metadata(1)
        return first, again

    (value, meta), (value_again, meta_again) = asyncio.run(scenario())
    assert (value, meta["cache_status"]) == ({"x": 1, "n": 2}, CacheStatus.MISS)
    assert (value_again, meta_again["cache_status"]) == ({"x": 1, "n": 2}, CacheStatus.HIT)


def test_a_flushed_script_cache_is_loaded_again(redis):
    """SCRIPT FLUSH (or a restart that kept the data): every script restflow
    sends is loaded again on its NOSCRIPT answer, none fails."""
    item(1)
    item.invalidate_all()
    redis.script_flush()
    assert served(item, 1) == ({"x": 1, "n": 2}, CacheStatus.MISS)  # lock, counters, write
    redis.script_flush()
    item.invalidate_all()  # the delete script
    assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.MISS)
    assert served(item, 1) == ({"x": 1, "n": 3}, CacheStatus.HIT)


@pytest.mark.parametrize("seed", [51, 52, 53])
def test_calls_across_store_outages_follow_the_lifecycle_model(own_redis, seed):
    """tests/test_lifecycle_model.py's model while the server stops now and
    then (every call BYPASS, live; an invalidation raises CacheBackendError;
    nothing wrong is ever served) and starts again empty."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        run_model(seed, SyncApi(model_report), outages=own_redis, steps=400)


@pytest.mark.parametrize("seed", [54, 55])
def test_async_calls_across_store_outages_follow_the_lifecycle_model(own_redis, seed):
    settings = redis_settings(own_redis.url)
    with override_settings(RESTFLOW_SETTINGS=settings), new_loop() as loop:
        run_model(seed, AsyncApi(model_areport, loop=loop), outages=own_redis, steps=400)
