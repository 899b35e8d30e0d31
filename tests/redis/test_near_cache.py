"""The near cache (NEAR_CACHE): hits served in process, kept coherent by
Redis's invalidation messages, against a real redis-server and a second
process.

A process never serves a value another process changed once that
process's call has returned *and* the change's invalidation has reached
this one: ``near_sync()`` waits for exactly that (it writes a sync key
and waits for its invalidation, which Redis sends after those of every
earlier change). How long the second part takes is measured in
benches/near_cache.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import weakref
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.redis.conftest import redis_settings
from tests.redis.near_functions import article, boxed, report, value, versioned

ROOT = Path(__file__).resolve().parents[2]


def other_process(url: str, operation: str, *args: str) -> str:
    """Runs ``operation`` in a second process (tests/redis/near_worker.py);
    returns what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.redis.near_worker", url, operation, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.fixture
def near(redis, redis_server):
    """The NEAR_CACHE setting on, over the test database."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, NEAR_CACHE=True)):
        yield redis


def near_hits(function) -> int:
    return function.shared_backend().near_stats()["hits"]


def warm(function, *args, **kwargs):
    """Stores the entry and reads it into the near cache (and its hot
    layer); returns it. Later hits are served from the hot layer: the one
    deserialized object, as a memory hit serves it."""
    first = function(*args, **kwargs)
    assert function.shared_backend().near_sync(), "the invalidation channel came up"
    kept = function(*args, **kwargs)  # read from Redis, kept near (and hot)
    assert kept == first
    before = near_hits(function)
    assert function.get_with_metadata(*args, **kwargs)[0] is kept
    assert function(*args, **kwargs) is kept
    assert near_hits(function) == before + 2, "served from the hot layer"
    return first


def test_a_near_hit_is_a_hit_with_the_stored_metadata(near):
    first, stored = value.get_with_metadata("k")
    assert stored["cache_status"] is CacheStatus.MISS
    assert value.shared_backend().near_sync()
    from_redis = value.get_with_metadata("k")
    hits = near_hits(value)
    counted = value.stats()
    from_near = value.get_with_metadata("k")
    assert near_hits(value) == hits + 1
    assert from_near == from_redis == (first, {**stored, "cache_status": CacheStatus.HIT})
    # The function's statistics count it too: a HIT, served near.
    after = value.stats()
    assert (after["hit"] - counted["hit"], after["near_hits"] - counted["near_hits"]) == (1, 1)


def test_off_by_default_and_per_function(redis, redis_server):
    assert value("k") == value("k")
    assert value.shared_backend().near_stats() is None, "NEAR_CACHE defaults to False"

    @cache_result(ttl=60, near_cache=True)
    def opted_in(x):
        return [x]

    warm(opted_in, 1)

    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, NEAR_CACHE=True)):

        @cache_result(ttl=60, near_cache=False)
        def opted_out(x):
            return [x]

        opted_out(1)
        backend = opted_out.shared_backend()
        assert backend.near_sync()
        before = backend.near_stats()
        assert opted_out.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT
        after = backend.near_stats()
        assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])


@pytest.mark.parametrize(
    ("setting", "match"),
    [("yes", "NEAR_CACHE"), (0, "NEAR_CACHE"), (-5, "NEAR_CACHE"), (1.5, "NEAR_CACHE")],
)
def test_settings_validation(redis_server, setting, match):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, NEAR_CACHE=setting)):
        with pytest.raises(ImproperlyConfigured, match=match):
            value("k")


def test_a_bad_near_cache_parameter_fails_at_decoration():
    with pytest.raises(TypeError, match="near_cache must be True, False or None"):
        cache_result(near_cache="on")


def test_bounded_by_the_setting(redis, redis_server):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, NEAR_CACHE=40)):
        value("k0")
        assert value.shared_backend().near_sync()
        for i in range(200):
            value(f"k{i}")
            value(f"k{i}")
        assert value.shared_backend().near_stats()["entries"] <= 40


@pytest.mark.parametrize("operation", ["refresh", "delete", "invalidate_all"])
def test_a_change_by_another_process_is_never_served_once_received(near, redis_server, operation):
    old = warm(value, "k")
    printed = other_process(redis_server.url, operation)
    assert value.shared_backend().near_sync()
    served, meta = value.get_with_metadata("k")
    assert served != old
    if operation == "refresh":
        # The other process's new value, read from Redis.
        assert (served, meta["cache_status"]) == (printed, CacheStatus.HIT)
    else:
        assert meta["cache_status"] is CacheStatus.MISS


def near_invalidations(function) -> int:
    return function.stats()["near_invalidations"]


@pytest.mark.parametrize(
    ("operation", "dropped"), [("refresh", 1), ("delete", 1), ("invalidate_all", 2)]
)
def test_a_near_copy_another_process_changed_counts_for_its_function(
    near, redis_server, operation, dropped
):
    """``near_invalidations`` counts the function's near copies dropped
    because Redis reported a change: each once, and only the function's
    own (it was never incremented and read 0)."""
    warm(value, "k")
    warm(value, "j")
    warm(report, "a", 1)
    before = (near_invalidations(value), near_invalidations(report))
    other_process(redis_server.url, operation)  # changes "k" (or all of value)
    assert value.shared_backend().near_sync()
    after = (near_invalidations(value), near_invalidations(report))
    assert (after[0] - before[0], after[1] - before[1]) == (dropped, 0)
    if dropped == 1:
        hits = near_hits(value)
        value.get_with_metadata("j")
        assert near_hits(value) == hits + 1, "the other copy stays near"


def test_a_partition_dropped_by_another_process_counts_its_copies_only(near, redis_server):
    # All stored before any is read near: a write in a partition can
    # lengthen its counter's life, which Redis reports as a change of the
    # counter (it drops the partition's near copies, and counts them).
    copies = [("a", 1), ("a", 2), ("b", 1)]
    for args in copies:
        report(*args)
    assert report.shared_backend().near_sync()
    for args in copies:
        report(*args)  # read from Redis, kept near
    hits = near_hits(report)
    for args in copies:
        report.get_with_metadata(*args)
    assert near_hits(report) == hits + 3, "all three held near"
    before = near_invalidations(report)
    assert other_process(redis_server.url, "delete_by_prefix") == "done"  # tenant "a"
    assert report.shared_backend().near_sync()
    assert near_invalidations(report) - before == 2


def test_another_entry_written_in_a_partition_keeps_its_near_copies(near):
    """A write in a partition made its counter live as long as the entry
    (``PEXPIRE``), which Redis reports as a change of the counter: every
    process dropped every near copy of the partition at each write in it.
    The counter is now given room to spare, so writes close together leave
    it alone."""
    kept = warm(report, "a", 1)
    before = near_invalidations(report)
    for item in range(2, 6):
        report("a", item)  # MISS: written under partition "a"
    assert report.shared_backend().near_sync()
    hits = near_hits(report)
    assert report("a", 1) == kept
    assert (near_hits(report) - hits, near_invalidations(report) - before) == (1, 0)


def test_this_process_s_own_write_counts_its_dropped_copy_once(near):
    """Forgotten at once by the write, then reported by Redis: one copy,
    one count (the store-level ``near_stats()["invalidations"]`` counts
    the names each time they are reported)."""
    warm(value, "k")
    before = near_invalidations(value)
    value.refresh("k")
    assert near_invalidations(value) - before == 1, "before Redis's message"
    assert value.shared_backend().near_sync()
    assert near_invalidations(value) - before == 1, "the message found nothing more"


def test_a_partition_dropped_by_another_process_is_never_served_once_received(near, redis_server):
    old_a = warm(report, "a", 1)
    old_b = warm(report, "b", 1)
    assert other_process(redis_server.url, "delete_by_prefix") == "done"
    assert report.shared_backend().near_sync()
    hits = near_hits(report)
    assert report.get_with_metadata("b", 1) == (old_b, report.get_cached_metadata("b", 1))
    assert near_hits(report) == hits + 1, "another partition stays near"
    served, meta = report.get_with_metadata("a", 1)
    assert (served != old_a, meta["cache_status"]) == (True, CacheStatus.MISS)


def test_a_version_dropped_by_another_process_is_never_served_once_received(near, redis_server):
    old = warm(versioned, "k")
    assert other_process(redis_server.url, "delete_previous_versions") == "done"
    assert versioned.shared_backend().near_sync()
    hits = near_hits(versioned)
    served, meta = versioned.get_with_metadata("k")
    assert (served != old, meta["cache_status"]) == (True, CacheStatus.MISS)
    assert near_hits(versioned) == hits


def test_a_model_save_rule_fired_by_another_process_is_never_served_once_received(
    near, redis_server
):
    old = warm(article, 1)
    other = warm(article, 2)
    assert other_process(redis_server.url, "model_save") == "saved"
    assert article.shared_backend().near_sync()
    hits = near_hits(article)
    assert article.get_with_metadata(2)[0] == other
    assert near_hits(article) == hits + 1, "another article's entry stays near"
    served, meta = article.get_with_metadata(1)
    assert (served != old, meta["cache_status"]) == (True, CacheStatus.MISS)
    assert near_hits(article) == hits + 1


def test_this_process_reads_its_own_writes_at_once(near):
    old = warm(value, "k")
    new = value.refresh("k")
    assert new != old
    assert value("k") == new, "no wait for the invalidation message"
    value.invalidate_all()
    assert value.get_with_metadata("k")[1]["cache_status"] is CacheStatus.MISS


def test_a_stale_near_entry_goes_through_the_stale_path(near):
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)) as clock:
        old = warm(value, "k")
        kept = value("k")
        clock.advance(59.999)
        hits = near_hits(value)
        assert value.get_with_metadata("k")[0] is kept, "still fresh: served hot"
        assert near_hits(value) == hits + 1
        clock.advance(1.001)  # past ttl=60, inside stale_while_revalidate=60
        hits = near_hits(value)
        served, meta = value.get_with_metadata("k")
        assert (served, meta["cache_status"]) == (old, CacheStatus.STALE)
        assert near_hits(value) == hits
        wait_for_refreshes()
        refreshed, meta = value.get_with_metadata("k")
        assert (refreshed != old, meta["cache_status"]) == (True, CacheStatus.HIT)


@pytest.mark.parametrize(
    "flush", [["FLUSHALL"], ["FLUSHALL", "ASYNC"], ["FLUSHDB"], ["FLUSHDB", "ASYNC"]]
)
def test_a_flush_empties_it(near, flush):
    """Redis reports a flush as one invalidation message without keys (a
    null): the near cache, hot layer included, is emptied at once."""
    old = warm(value, "k")
    backend = value.shared_backend()
    flushes = backend.near_stats()["flushes"]
    near.execute_command(*flush)
    near.set("near:computations", 1000)  # new values differ from the old
    assert backend.near_sync()
    assert backend.near_stats()["flushes"] == flushes + 1
    served, meta = value.get_with_metadata("k")
    assert (served != old, meta["cache_status"]) == (True, CacheStatus.MISS)


def test_swapdb_is_not_reported_until_the_channels_are_reset(near):
    """SWAPDB sends no invalidation message (Redis 6 and 7, Valkey 9), and
    nothing else tells a process its database was swapped: copies read
    before it are served until their keys change (the documented limit,
    README "Near cache"). Killing the invalidation channels (``CLIENT KILL
    TYPE pubsub``, the documented remedy) empties every near cache: each
    reconnects and starts empty."""
    old = warm(value, "k")
    backend = value.shared_backend()
    flushes = backend.near_stats()["flushes"]
    try:
        near.swapdb(0, 1)
        near.set("near:computations", 1000)  # new values differ from the old
        assert backend.near_sync()
        assert backend.near_stats()["flushes"] == flushes
        served, meta = value.get_with_metadata("k")
        assert (served, meta["cache_status"]) == (old, CacheStatus.HIT)
        assert near.client_kill_filter(_type="pubsub") == 1
        assert backend.near_sync(), "tracking again"
        served, meta = value.get_with_metadata("k")
        assert (served != old, meta["cache_status"]) == (True, CacheStatus.MISS)
    finally:
        near.flushdb()
        near.swapdb(0, 1)


def test_a_killed_channel_serves_nothing_until_tracking_again(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, NEAR_CACHE=True)):
        old = warm(value, "k")
        backend = value.shared_backend()
        flushes = backend.near_stats()["flushes"]
        client = own_redis.client()
        # The invalidation channel (the one connection whose tracking
        # matters: see restflow_cache::shared::tracking).
        assert client.client_kill_filter(_type="pubsub") == 1
        # A change while the channel is down is never seen as a message.
        client.delete(value.get_cache_key("k"))
        assert backend.near_sync(), "tracking again"
        assert backend.near_stats()["flushes"] >= flushes + 2, "down, then up: emptied"
        hits = near_hits(value)
        served, meta = value.get_with_metadata("k")
        assert (served != old, meta["cache_status"]) == (True, CacheStatus.MISS)
        assert near_hits(value) == hits
        # The MISS's own write is invalidated by a message too: once it has
        # arrived, the next read is kept (one that overlaps it is not, as
        # it may have been answered before the write).
        assert backend.near_sync()
        assert value("k") == served  # read from Redis again, kept near
        assert value.get_with_metadata("k")[0] == served
        assert near_hits(value) == hits + 1, "serving near again"


def test_a_restarted_server_is_tracked_again(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, NEAR_CACHE=True)):
        old = warm(value, "k")
        own_redis.stop()
        own_redis.start()
        own_redis.client().set("near:computations", 1000)
        backend = value.shared_backend()
        assert backend.near_sync(timeout=20), "tracking the new server"
        hits = near_hits(value)
        # The old server's lookup connection fails once (BYPASS), then the
        # value is computed again: never the old one, never served near.
        statuses = []
        while not statuses or statuses[-1] is CacheStatus.BYPASS:
            assert len(statuses) < 5, statuses
            served, meta = value.get_with_metadata("k")
            assert served != old
            statuses.append(meta["cache_status"])
        assert statuses[-1] is CacheStatus.MISS
        assert near_hits(value) == hits


def test_a_process_forked_after_first_use_has_its_own(redis, redis_server):
    assert other_process(redis_server.url, "fork") == "forked ok"


def test_async_callers_are_served_near(near):
    @cache_result(ttl=60)
    async def loaded(x):
        return [x, value("inner")]

    async def scenario():
        first = await loaded(1)
        assert loaded._engine.shared_backend().near_sync()
        assert await loaded(1) == first  # read from Redis through the engine
        hits = loaded._engine.shared_backend().near_stats()["hits"]
        served, meta = await loaded.aget_with_metadata(1)
        assert (served, meta["cache_status"]) == (first, CacheStatus.HIT)
        assert loaded._engine.shared_backend().near_stats()["hits"] == hits + 1
        # Later hits are served from the hot layer: the same object.
        again, meta = await loaded.aget_with_metadata(1)
        assert (again is served, meta["cache_status"]) == (True, CacheStatus.HIT)
        assert loaded._engine.shared_backend().near_stats()["hits"] == hits + 2

    asyncio.run(scenario())


def test_later_near_hits_serve_one_object_with_the_stored_metadata(near):
    """The hot layer: a near hit after the first serves the object the
    first deserialized (no key strings, lock, copy or unpickling), with
    the same status and metadata as any near hit."""
    first, stored = value.get_with_metadata("k")
    assert value.shared_backend().near_sync()
    kept, from_redis = value.get_with_metadata("k")
    assert kept == first
    counted = value.stats()
    hits = near_hits(value)
    for _ in range(3):
        served, meta = value.get_with_metadata("k")
        assert served is kept
        assert meta == from_redis == {**stored, "cache_status": CacheStatus.HIT}
    assert near_hits(value) == hits + 3
    after = value.stats()
    assert (after["hit"] - counted["hit"], after["near_hits"] - counted["near_hits"]) == (3, 3)


def test_the_hot_layer_is_bounded_by_the_setting_and_frees_what_it_evicts(redis, redis_server):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, NEAR_CACHE=40)):
        boxed("k0")
        assert boxed.shared_backend().near_sync()
        held = weakref.ref(boxed("k0"))  # read from Redis, kept hot
        gc.collect()
        assert held() is not None, "the hot layer holds it"
        # Others read again and again, so that they, not it, stay.
        for i in range(1, 400):
            for _ in range(4):
                boxed(f"k{i}")
        gc.collect()
        assert held() is None, "evicted from the hot layer, and freed"
        assert boxed.shared_backend().near_stats()["entries"] <= 40
