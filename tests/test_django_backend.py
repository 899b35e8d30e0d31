"""The Django adapter: any CACHES alias as a shared store, with the same
semantics as Redis (signed entries, generations, locks via cache.add)."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from restflow.caching import (
    ArgsKeyField,
    CacheStatus,
    KeyConstructor,
    cache_result,
)
from restflow.caching.testing import wait_for_refreshes
from tests.refresh_claim_race import (
    DJANGO_GATE,
    check_an_overtaken_stale_read_does_not_refresh_again,
)
from tests.refresh_race import check_an_invalidation_during_a_refresh_is_kept
from tests.stores import DJANGO_CACHES

calls: list = []

#: The aliases of the ``store`` fixture (tests/stores.py), and a broken one.
CACHES = {**DJANGO_CACHES, "broken": {"BACKEND": "tests.broken_cache.BrokenCache"}}


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=30)
def profile(user_id):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


@cache_result(ttl=30, key_constructor=TenantKey)
def report(tenant, item):
    calls.append((tenant, item))
    return f"{tenant}/{item}/{len(calls)}"


def settings_for(alias: str, **extra):
    return {"CACHE_SETTINGS": {"BACKEND": f"django:{alias}", "STALE_WHILE_REVALIDATE": 60, **extra}}


@pytest.fixture(params=["locmem", "db"])
def alias(request):
    calls.clear()
    if request.param == "db":
        request.getfixturevalue("db")
    with override_settings(CACHES=CACHES):
        if request.param == "db":
            call_command("createcachetable", "rf_store", verbosity=0)
        caches[request.param].clear()
        with override_settings(RESTFLOW_SETTINGS=settings_for(request.param)):
            yield request.param
        caches[request.param].clear()


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def test_foreign_and_tampered_values_are_misses(alias):
    profile(1)
    cache = caches[alias]
    key = profile.get_cache_key(1)
    stored = bytearray(cache.get(key))
    stored[-1] ^= 1
    cache.set(key, bytes(stored))
    assert status(profile, 1) is CacheStatus.MISS
    cache.set(key, {"not": "ours"})
    assert status(profile, 1) is CacheStatus.MISS
    assert calls == [1, 1, 1]


def test_a_failing_cache_is_bypassed(db):
    with override_settings(CACHES=CACHES, RESTFLOW_SETTINGS=settings_for("broken")):
        value, meta = profile.get_with_metadata(9)
        assert meta["cache_status"] is CacheStatus.BYPASS
        assert value["id"] == 9


def test_an_unknown_alias_is_refused():
    with override_settings(CACHES=CACHES, RESTFLOW_SETTINGS=settings_for("nope")):
        with pytest.raises(ImproperlyConfigured, match="nope"):
            profile(1)


def stored_keys(alias: str, kind: str) -> list[str]:
    """The restflow keys of one kind (gen, pgen, vgen) in the alias's cache,
    as restflow names them (without Django's version prefix)."""
    cache = caches[alias]
    if alias == "db":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT cache_key FROM rf_store")
            made = [row[0] for row in cursor.fetchall()]
    else:
        made = list(cache._cache)
    names = [key.split(":", 2)[2] for key in made]
    return sorted(name for name in names if name.startswith(f"restflow:{kind}:"))


def test_an_entry_copied_onto_another_key_is_a_miss(alias):
    profile(1)
    profile(2)
    cache = caches[alias]
    cache.set(profile.get_cache_key(2), cache.get(profile.get_cache_key(1)))
    value, meta = profile.get_with_metadata(2)
    assert (value["id"], meta["cache_status"]) == (2, CacheStatus.MISS)


def test_a_lost_counter_never_brings_back_retired_entries(alias):
    cache = caches[alias]
    report("a", 1)
    report.delete_by_prefix(tenant="a")
    report.invalidate_all()
    for kind in ("gen", "pgen"):
        for name in stored_keys(alias, kind):
            cache.delete(name)
    assert status(report, "a", 1) is CacheStatus.MISS
    assert status(report, "a", 1) is CacheStatus.HIT


@pytest.mark.parametrize("garbage", ["abc", -1, 10**20, 2**64 - 1, "18446744073709551615"])
def test_a_corrupt_counter_heals_on_its_own(alias, garbage):
    cache = caches[alias]
    report.invalidate_all()
    report("a", 1)
    names = stored_keys(alias, "gen")
    assert names
    for name in names:
        cache.set(name, garbage, None)
    assert report.get_with_metadata("a", 1)[1]["cache_status"] is CacheStatus.MISS
    assert report.get_with_metadata("a", 1)[1]["cache_status"] is CacheStatus.HIT
    report.invalidate_all()
    assert report.get_with_metadata("a", 1)[1]["cache_status"] is CacheStatus.MISS


def test_dropped_partitions_leave_no_counters_behind(alias):
    report("a", 1)
    for tenant in range(200):
        report.delete_by_prefix(tenant=f"t{tenant}")
    report.delete_by_prefix(tenant="a")
    assert stored_keys(alias, "pgen") == []


def test_an_invalidation_during_a_stale_refresh_is_kept(alias):
    if alias == "db":
        pytest.skip("background refresh needs a database other threads can see")
    check_an_invalidation_during_a_refresh_is_kept()


def test_a_partition_counter_expires_with_its_entries(alias):
    if alias != "locmem":
        pytest.skip("reads LocMem's expiry table")
    import time

    cache = caches[alias]
    report("b", 1)
    (name,) = stored_keys(alias, "pgen")
    left = cache._expire_info[cache.make_key(name)] - time.time()
    # ttl 30 s + the stale window's 60 s, as the entry.
    assert left == pytest.approx(90, abs=2)


def test_a_stale_read_overtaken_by_a_whole_refresh_does_not_refresh_again():
    gated = {"BACKEND": "tests.refresh_claim_race.GatedLocMemCache", "LOCATION": "rf-gated"}
    with override_settings(CACHES={**CACHES, "gated": gated}):
        caches["gated"].clear()
        try:
            check_an_overtaken_stale_read_does_not_refresh_again(
                DJANGO_GATE, backend="django:gated"
            )
        finally:
            DJANGO_GATE.release.set()
            caches["gated"].clear()


@pytest.fixture
def flaky():
    """A Django cache whose methods a test breaks (tests/flaky_cache.py)."""
    from tests.flaky_cache import FlakyCache

    calls.clear()
    flaky_caches = {**CACHES, "flaky": {"BACKEND": "tests.flaky_cache.FlakyCache"}}
    with override_settings(CACHES=flaky_caches, RESTFLOW_SETTINGS=settings_for("flaky")):
        caches["flaky"].clear()
        yield FlakyCache.broken
        FlakyCache.broken.clear()
        # A lock release the test made fail is owed (given back by a job on
        # the refresh workers, with backoff): given back here, while the
        # alias exists. Left to the autouse fixture's wait, after the alias
        # is gone, it was tried until the lock expired, 10 s, as long as
        # that wait (it timed out there once).
        wait_for_refreshes()
        caches["flaky"].clear()


def served(wrapper, *args):
    value, meta = wrapper.get_with_metadata(*args)
    return value, meta["cache_status"]


def test_a_cache_that_refuses_writes_still_serves_what_it_holds(flaky):
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
    flaky["set"] = ConnectionError("out of memory")
    flaky["add"] = ConnectionError("out of memory")
    assert served(profile, 2) == ({"id": 2, "n": 2}, CacheStatus.BYPASS)
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT)
    flaky.clear()
    assert served(profile, 2) == ({"id": 2, "n": 3}, CacheStatus.MISS)
    assert served(profile, 2) == ({"id": 2, "n": 3}, CacheStatus.HIT)


@pytest.mark.parametrize("garbage", [None, [], "abc", 7])
def test_a_get_many_that_answers_garbage_is_a_failing_store(flaky, garbage):
    flaky["get_many"] = garbage
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.BYPASS)
    flaky.clear()
    assert served(profile, 1) == ({"id": 1, "n": 2}, CacheStatus.MISS)


def test_a_lock_release_that_fails_is_not_the_callers_problem(flaky):
    flaky["delete"] = ConnectionError("gone")
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.MISS)
    flaky.clear()
    assert served(profile, 1) == ({"id": 1, "n": 1}, CacheStatus.HIT)


def test_a_lock_timeout_under_a_second_stores_on_djangos_redis_backend(server_pool):
    """Django's own Redis backend drops a timeout's fraction and deletes a
    key given 0: a 0.5 s computation lock was gone at once, and nothing was
    ever stored. Timeouts given to a Django cache are whole seconds,
    rounded up, plus one (tests/test_memcached.py: memcached alike)."""
    server = server_pool.get("redis")
    djredis = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url}
    calls.clear()
    settings = settings_for("djredis", LOCK_TIMEOUT=0.5)
    with override_settings(CACHES={**CACHES, "djredis": djredis}, RESTFLOW_SETTINGS=settings):
        caches["djredis"].clear()
        try:
            assert status(profile, 1) is CacheStatus.MISS
            assert status(profile, 1) is CacheStatus.HIT
        finally:
            caches["djredis"].clear()
    assert calls == [1]
