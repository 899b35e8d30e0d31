"""What differs on memcached (Django's ``PyMemcacheCache`` on a real
memcached, ``tests/memcached.py``): whole-second timeouts, the 1 MB item
limit, keys near 250 bytes, eviction, and the pymemcache options restflow
refuses (a client that answers without asking the server). A server
killed and restarted mid-run, two processes and a fork:
tests/test_django_store_outages.py, shared with django-redis.

The suites that take the ``store`` fixture run on memcached too (store id
``django-memcached``); these are the attacks on what only memcached does.
"""

from __future__ import annotations

import logging
import threading

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow.caching import ArgsKeyField, CacheStatus, KeyConstructor, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.memcached import ITEM_LIMIT, MemcachedServer
from tests.stores import memcached_caches, on
from tests.test_lifecycle_model import new_loop

calls: list = []


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=60)
def profile(user_id):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


def short_for_item_1(value, tenant, item):
    """Item 1's entry lives under a second in the store; the others a minute."""
    return 0.4 if item == 1 else 60


@cache_result(ttl=short_for_item_1, key_constructor=TenantKey)
def report(tenant, item):
    calls.append((tenant, item))
    return f"{tenant}/{item}/{len(calls)}"


#: A value over memcached's item limit (1 MB) once pickled and signed.
LARGE = b"x" * (2 * ITEM_LIMIT)


@cache_result(ttl=60)
def large(n):
    calls.append(n)
    return LARGE


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def served(wrapper, *args):
    """What a call serves, and its status."""
    value, meta = wrapper.get_with_metadata(*args)
    return value, meta["cache_status"]


@pytest.mark.parametrize("store", on("django", "django-memcached"), indirect=True)
def test_a_lock_timeout_under_a_second_still_stores(store):
    """memcached reads a timeout under a second as "expire now": a 0.5 s
    computation lock was gone before the holder's write checked it, so
    nothing was ever stored (every call a MISS). Timeouts are whole
    seconds, rounded up, plus one."""
    with store.configured(LOCK_TIMEOUT=0.5):
        assert status(profile, 1) is CacheStatus.MISS
        assert status(profile, 1) is CacheStatus.HIT
    assert calls == [1]


@pytest.mark.parametrize("store", on("django", "django-memcached"), indirect=True)
def test_an_entry_living_under_a_second_leaves_its_partition_counter(store):
    """An entry's write renews its partition counter's timeout to the
    entry's: under a second, memcached deleted the counter, and every other
    entry of the partition became a miss."""
    assert status(report, "a", 2) is CacheStatus.MISS
    assert status(report, "a", 1) is CacheStatus.MISS
    assert status(report, "a", 2) is CacheStatus.HIT
    assert calls == [("a", 2), ("a", 1)]


@pytest.mark.parametrize("store", on("django-memcached"), indirect=True)
def test_a_value_over_the_item_limit_is_served_and_reported_as_refused(store, caplog):
    """memcached refuses an item over 1 MB (``SERVER_ERROR object too large
    for cache``): an answer, not a store that is down. Each call computes
    live (BYPASS, as for any write the store refuses); the warning says the
    store refused the operation (once: warnings are rate-limited per
    store), never that the store failed; other functions go on hitting."""
    with caplog.at_level(logging.WARNING, logger="restflow"):
        for call in range(4):
            value, meta = large.get_with_metadata(1)
            assert (value == LARGE, meta["cache_status"]) == (True, CacheStatus.BYPASS)
            assert status(profile, 7) is (CacheStatus.HIT if call else CacheStatus.MISS)
    assert calls == [1, 7, 1, 1, 1]
    assert store.raw(large.get_cache_key(1)) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "refused an operation" in warnings[0]
    assert "object too large for cache" in warnings[0]
    stats = large.shared_backend().stats()
    assert (stats["store_errors"], stats["breaker_trips"]) == (4, 0)


@pytest.fixture
def own_memcached():
    """A memcached this test may stop and start again (on its port), as
    the store of every function (``django:memcached``)."""
    server = MemcachedServer().start()
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:memcached"}}
    with override_settings(CACHES=memcached_caches(server.location), RESTFLOW_SETTINGS=settings):
        yield server
    server.stop()


@pytest.mark.parametrize(
    "options",
    [{}, {"retry_attempts": 1}, {"retry_attempts": 0, "ignore_exc": True}],
    ids=["default", "retries", "ignore_exc"],
)
def test_a_memcached_client_that_answers_without_asking_is_refused(own_memcached, options):
    """pymemcache's defaults (``retry_attempts`` 2) answer calls with
    nothing, without sending them, for a second after a failed connection:
    an invalidation made then was lost while reporting success, and other
    workers went on serving the retired entry. Such an alias is refused,
    with what to set."""
    caches = memcached_caches(own_memcached.location)
    caches["memcached"]["OPTIONS"] = options
    with override_settings(CACHES=caches), pytest.raises(ImproperlyConfigured) as raised:
        profile(1)
    assert "CACHES['memcached']['OPTIONS']['retry_attempts'] = 0" in str(raised.value)
    assert "an invalidation made then would be lost silently" in str(raised.value)
    assert calls == []


@cache_result(ttl=60)
def echo(text):
    calls.append(text)
    return text


#: Arguments whose keys are near memcached's 250 bytes or hold what it
#: refuses in a key (spaces, control characters, DEL, non-ASCII).
ODD = ["a b", "tab\there", "\x00\x01\r\n", "\x7f", "ü€"]
ODD += ["x" * n for n in (150, 180, 190, 200, 240, 1000)]


@pytest.mark.parametrize("store", on("django-memcached"), indirect=True)
def test_keys_near_250_bytes_or_with_odd_characters_are_cached(store):
    for text in ODD:
        assert served(echo, text) == (text, CacheStatus.MISS), repr(text)
        assert served(echo, text) == (text, CacheStatus.HIT), repr(text)
    assert calls == ODD


@pytest.mark.parametrize("store", on("django-memcached"), indirect=True)
def test_keys_fit_after_a_long_django_key_prefix(store):
    """Django puts ``KEY_PREFIX:VERSION:`` before every key: with a 60-byte
    prefix, keys restflow kept as they were (up to 200 bytes) passed 250,
    Django refused them (InvalidCacheKey) and every call for them was
    computed live (BYPASS). Names are fitted to what the alias leaves."""
    caches = memcached_caches(store.memcached.location)
    caches["memcached"]["KEY_PREFIX"] = "p" * 60
    texts = ["x" * n for n in range(140, 160)]
    with override_settings(CACHES=caches):
        for text in texts:
            assert served(echo, text) == (text, CacheStatus.MISS), len(text)
            assert served(echo, text) == (text, CacheStatus.HIT), len(text)
        assert all(len(key) <= 250 for key in store.memcached.keys())
    assert calls == texts


@pytest.mark.parametrize("counter", ["restflow:gen:", "restflow:pgen:"])
@pytest.mark.parametrize("store", on("django-memcached"), indirect=True)
def test_an_evicted_counter_never_brings_back_an_entry(store, counter):
    """memcached evicts each key on its own (LRU): a generation counter may
    go while the entries written under it stay. Those entries are never
    served again, across an invalidation made while the counter was gone
    (it deletes nothing) or not: the counter starts again at a fresh
    epoch."""

    def evict() -> None:
        (name,) = store.keys_with(counter)
        assert caches["memcached"].delete(name)

    entry = report.get_cache_key("a", 2)
    assert served(report, "a", 2) == ("a/2/1", CacheStatus.MISS)
    assert served(report, "a", 2) == ("a/2/1", CacheStatus.HIT)
    evict()
    assert store.raw(entry) is not None  # the entry outlived its counter
    assert served(report, "a", 2) == ("a/2/2", CacheStatus.MISS)
    assert served(report, "a", 2) == ("a/2/2", CacheStatus.HIT)
    evict()
    report.invalidate_all()  # the data changed: nothing left to delete
    assert served(report, "a", 2) == ("a/2/3", CacheStatus.MISS)
    assert served(report, "a", 2) == ("a/2/3", CacheStatus.HIT)
    assert calls == [("a", 2)] * 3


@pytest.mark.parametrize("form", ["list", "string"])
def test_a_memcached_alias_on_several_servers_is_refused(own_memcached, form):
    """pymemcache drops a server it cannot reach from its ring: its keys go
    to the other servers meanwhile, so an invalidation then deleted nothing
    (and reported success), and when the server answered again it served
    the entries retired meanwhile (checked by hand: one of two servers
    paused for a call, ``invalidate_all()``, resumed: the old value was a
    HIT). One server per alias, said clearly."""
    other = MemcachedServer().start()
    try:
        setting = memcached_caches(own_memcached.location)
        servers = [own_memcached.location, other.location]
        location = servers if form == "list" else ";".join(servers)
        setting["memcached"]["LOCATION"] = location
        with override_settings(CACHES=setting), pytest.raises(ImproperlyConfigured) as raised:
            profile(1)
    finally:
        other.stop()
    assert "a PyMemcacheCache on several memcached servers" in str(raised.value)
    assert "with one server in LOCATION" in str(raised.value)
    assert calls == []


def test_a_memcached_client_that_does_not_wait_for_answers_is_refused(own_memcached):
    """``default_noreply=True``: pymemcache's ``add`` says True without
    waiting for memcached's answer (checked: a second ``add`` of a key
    "succeeds", the value stays the first), and ``add`` is restflow's
    only atomic claim (locks, fences, starting a counter)."""
    setting = memcached_caches(own_memcached.location, default_noreply=True)
    with override_settings(CACHES=setting), pytest.raises(ImproperlyConfigured) as raised:
        profile(1)
    assert "does not wait for memcached's answers (default_noreply=True)" in str(raised.value)
    assert "['OPTIONS']['default_noreply'] False" in str(raised.value)
    assert calls == []


@cache_result(ttl=40 * 86400)
def monthly(n):
    calls.append(n)
    return n


@pytest.mark.parametrize("store", on("django-memcached"), indirect=True)
def test_a_ttl_over_30_days_is_kept(store):
    """memcached reads a timeout over 30 days as a Unix time; Django
    converts one (an entry of 40 days given as 3 456 001 s would have
    expired in 1970). The entry, its lock and counters live."""
    assert served(monthly, 1) == (1, CacheStatus.MISS)
    assert served(monthly, 1) == (1, CacheStatus.HIT)
    assert calls == [1]


#: Whether ``grows`` returns ``LARGE`` (else a small value).
growing = False


@cache_result(ttl=30, stale_while_revalidate=30)
def grows(n):
    calls.append(n)
    return LARGE if growing else b"small"


@pytest.mark.parametrize("store", on("django-memcached"), indirect=True)
def test_a_value_that_outgrows_the_item_limit_in_a_refresh(store):
    """A stale entry's background refresh computes a value over 1 MB: the
    stale value was served, the write is refused, and memcached drops the
    old entry with it (a refused ``set`` deletes the key): the next call
    computes live (BYPASS), never serving the old value again as fresh."""
    global growing
    growing = False
    with frozen_clock() as clock:
        assert served(grows, 1) == (b"small", CacheStatus.MISS)
        clock.advance(40)
        growing = True
        try:
            assert served(grows, 1) == (b"small", CacheStatus.STALE)
            wait_for_refreshes()
            assert store.raw(grows.get_cache_key(1)) is None
            assert served(grows, 1) == (LARGE, CacheStatus.BYPASS)
        finally:
            growing = False
    assert calls == [1, 1, 1]


@cache_result(ttl=60)
async def aprofile(user_id):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


@pytest.fixture
def memcached_settings():
    """A memcached of this test's own, and the settings that make it the
    store of every function (``django:memcached``), to enter and leave."""
    server = MemcachedServer().start()
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:memcached"}}
    yield (
        server,
        override_settings(CACHES=memcached_caches(server.location), RESTFLOW_SETTINGS=settings),
    )
    server.stop()


def test_threads_that_live_on_keep_no_connection_once_caches_change(memcached_settings):
    """Threads that outlive a ``CACHES`` (as restflow's workers outlive
    each test's ``override_settings``) each hold their Django cache object,
    one connection, in their context; Django closes only the calling
    thread's when ``CACHES`` changes, so each change left one connection
    open per such thread, and the suite ran memcached out of connections
    (``tests/stores.py``, ``close_replaced_caches``): none is left open."""
    server, memcached = memcached_settings
    threads = 3
    called = threading.Barrier(threads + 1)
    done = threading.Event()
    served_in = []

    def worker(user_id):
        served_in.append((user_id, served(profile, user_id)[1]))
        called.wait(30)
        done.wait(30)  # lives on past the change, its context with it

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    try:
        with memcached:
            for thread in workers:
                thread.start()
            called.wait(30)
            assert sorted(served_in) == [(n, CacheStatus.MISS) for n in range(threads)]
            assert server.connections_from_this_process() == threads
        assert server.connections_from_this_process() == 0
    finally:
        done.set()
        for thread in workers:
            thread.join(30)


def test_restflows_async_workers_keep_no_connection_once_caches_change(memcached_settings):
    """The async calls' round trips run on restflow's ``restflow-async``
    workers, each with its own Django cache object: once ``CACHES``
    changes, none of them still holds a connection (each async model run
    left ~33 open before, one per worker)."""
    server, memcached = memcached_settings
    with memcached, new_loop() as loop:
        for user_id in range(20):
            assert loop.run_until_complete(aprofile(user_id)) == {"id": user_id, "n": user_id + 1}
        value, meta = loop.run_until_complete(aprofile.aget_with_metadata(3))
        assert (value, meta["cache_status"]) == ({"id": 3, "n": 4}, CacheStatus.HIT)
    assert server.connections_from_this_process() == 0


def test_a_memcached_out_of_connections_is_a_store_that_is_down(caplog):
    """Past its connection limit (``-c``) memcached answers a new
    connection ``ERROR Too many open connections`` and closes it, which
    pymemcache raises as ``MemcacheUnknownCommandError: b'get'`` (the
    error seen once in a full run, when the suite ran the test memcached
    out of connections). It is not an answer to that one operation, as a
    value over the item limit is: calls are BYPASS, and three in a row
    open the circuit breaker, as a server that is down does."""
    server = MemcachedServer(connections=64).start()
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:memcached"}}
    try:
        with override_settings(
            CACHES=memcached_caches(server.location), RESTFLOW_SETTINGS=settings
        ):
            held = server.connections_until_refused()
            try:
                with caplog.at_level(logging.WARNING, logger="restflow.caching"):
                    for n in range(1, 4):
                        assert served(profile, 1) == ({"id": 1, "n": n}, CacheStatus.BYPASS)
                stats = profile.shared_backend().stats()
                assert (stats["store_errors"], stats["breaker_trips"]) == (3, 1)
                warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
                assert warnings == [
                    "restflow: cache store django:memcached failed (store unavailable: "
                    "MemcacheUnknownCommandError: b'get'); calls are computed live (BYPASS) "
                    "until it answers again"
                ]
            finally:
                for sock in held:
                    sock.close()
    finally:
        server.stop()
