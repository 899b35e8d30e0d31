"""What every store does alike (tests/stores.py: memory, a Django cache, the
Redis servers; the Django database cache where its engine threads are not
needed): every wrapper method, partitions and wipes, versions, the
stale window and stale-if-error. Each store's own behaviour (faults, the
signature, processes) stays in tests/redis/test_redis_store.py and
tests/test_django_backend.py."""

from __future__ import annotations

import asyncio

import pytest

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheStatus,
    KeyConstructor,
    cache_result,
)
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.redis.conftest import versioned_constructor
from tests.stores import ALL

calls: list = []


@cache_result(ttl=30)
def profile(user_id, verbose=False):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=30, key_constructor=TenantKey)
def report(tenant, item):
    calls.append((tenant, item))
    return f"{tenant}/{item}/{len(calls)}"


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


@pytest.mark.parametrize("store", [*ALL, "django-db"], indirect=True)
def test_every_wrapper_method(store):
    value, meta = profile.get_with_metadata(1)
    assert meta["cache_status"] is CacheStatus.MISS
    assert set(meta) == {"cache_status", "cached_at", "reset_at"}
    again, meta2 = profile.get_with_metadata(1)
    assert (again, meta2["cache_status"], meta2["cached_at"]) == (
        value,
        CacheStatus.HIT,
        meta["cached_at"],
    )
    assert meta2 == {**meta, "cache_status": CacheStatus.HIT}
    assert profile(1) == value
    assert calls == [1]
    if store.shared:
        # The entry is in the store, under the key string, signed.
        assert store.raw(profile.get_cache_key(1)).startswith(b"RFC3")
    assert profile.get_cache_only(1) == value
    assert profile.get_cache_only(2) is CACHE_MISSING
    assert profile.get_cached_metadata(1) == meta2
    assert profile.get_cached_metadata(2) is None
    refreshed, meta3 = profile.refresh_with_metadata(1)
    assert meta3["cache_status"] is CacheStatus.REFRESH and refreshed["n"] == 2
    assert profile(1) == refreshed
    bypassed, meta4 = profile.bypass_cache_with_metadata(1)
    assert meta4 == {"cache_status": CacheStatus.BYPASS} and bypassed["n"] == 3
    assert profile.get_cached_metadata(1)["cache_status"] is CacheStatus.HIT
    assert profile(1) == refreshed
    assert profile.delete_cache(1) is True
    assert profile.delete_cache(1) is False
    assert profile.get_cache_only(1) is CACHE_MISSING
    profile(1)
    profile(2)
    profile.invalidate_all()
    assert profile.get_cache_only(1) is CACHE_MISSING
    assert profile.get_cache_only(2) is CACHE_MISSING


@pytest.mark.parametrize("store", [*ALL, "django-db"], indirect=True)
def test_partitions_wipe_and_versions(store):
    report("a", 1)
    report("a", 2)
    report("b", 1)
    report.delete_by_prefix(tenant="a")
    assert report.get_cache_only("a", 1) is CACHE_MISSING
    assert report.get_cache_only("a", 2) is CACHE_MISSING
    assert report.get_cache_only("b", 1) == "b/1/3"
    report.delete_by_prefix(tenant="a*")  # data, not a pattern
    assert report.get_cache_only("b", 1) == "b/1/3"
    TenantKey.wipe()
    assert report.get_cache_only("b", 1) is CACHE_MISSING


@pytest.mark.parametrize("store", [*ALL, "django-db"], indirect=True)
def test_delete_cache_reports_no_entry_once_it_was_invalidated(store):
    # delete_cache returns whether there was an entry. One that
    # invalidate_all, delete_by_prefix or wipe already dropped is none
    # (reads miss it), though a shared store still holds its bytes until
    # they expire: found by tests/test_cache_response_model.py.
    report("a", 1)
    report("b", 1)
    report("c", 1)
    report.invalidate_all()
    report("b", 1)  # stored again, under the new generation
    report.delete_by_prefix(tenant="b")
    report("c", 2)
    TenantKey.wipe()
    assert report.get_cache_only("a", 1) is CACHE_MISSING
    assert [report.delete_cache(t, 1) for t in "abc"] == [False, False, False]
    assert report.delete_cache("c", 2) is False
    report("a", 1)
    assert [report.delete_cache("a", 1), report.delete_cache("a", 1)] == [True, False]


def test_delete_previous_versions_reaches_the_store(store):
    v1, v2 = versioned_constructor("versions", 1), versioned_constructor("versions", 2)

    @cache_result(ttl=30, key_constructor=v1)
    def old(x):
        return ("old", x)

    @cache_result(ttl=30, key_constructor=v2)
    def new(x):
        return ("new", x)

    old(1)
    new(1)
    assert v1.delete_previous_versions() == 0
    v2.delete_previous_versions()
    assert old.get_cache_only(1) is CACHE_MISSING
    assert new.get_cache_only(1) == ("new", 1)


def test_stale_window_refreshes_once_and_stale_if_error(store):
    failing = {"on": False}

    @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
    def fragile(x):
        calls.append(x)
        if failing["on"]:
            raise ConnectionError("upstream down")
        return len(calls)

    with frozen_clock() as clock:
        assert fragile(1) == 1
        clock.advance(11)
        value, meta = fragile.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
        wait_for_refreshes()
        value, meta = fragile.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
        # Past ttl and stale window, the recompute fails: the old value is
        # served as STALE (stale-if-error) instead of the exception.
        failing["on"] = True
        clock.advance(16)
        value, meta = fragile.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.STALE)
        # Every read inside the window while the source stays down, not only
        # the first (the memory store's first fallback used to drop it).
        for _ in range(2):
            assert fragile(1) == 2
            value, meta = fragile.get_with_metadata(1)
            assert (value, meta["cache_status"]) == (2, CacheStatus.STALE)
        clock.advance(61)
        with pytest.raises(ConnectionError):
            fragile(1)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refresh_whose_value_the_policy_turns_away_drops_the_stale_entry(store, kind):
    """As a forced refresh does on every store: the stale value that the
    refresh superseded is not served again; the next read computes. (Shared
    stores kept serving it after a background refresh until the stale window
    ended, while the memory store dropped it.)"""
    turned_away = {"on": False}

    def refuse(value, *args):
        return turned_away["on"]

    if kind == "sync":

        @cache_result(ttl=10, stale_while_revalidate=20, cache_unless=refuse)
        def counter(x):
            calls.append(x)
            return len(calls)

        read = counter.get_with_metadata
    else:

        @cache_result(ttl=10, stale_while_revalidate=20, cache_unless=refuse)
        async def acounter(x):
            calls.append(x)
            return len(calls)

        async def aread(x):
            served = await acounter.aget_with_metadata(x)
            await wait_for_async_refreshes()  # the stale read's refresh task
            return served

        def read(x):
            return asyncio.run(aread(x))

    with frozen_clock() as clock:
        assert read(1)[1]["cache_status"] is CacheStatus.MISS
        clock.advance(15)
        turned_away["on"] = True
        value, meta = read(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
        wait_for_refreshes()
        assert len(calls) == 2  # the refresh ran, and its value was turned away
        turned_away["on"] = False
        value, meta = read(1)
        assert (value, meta["cache_status"]) == (3, CacheStatus.MISS)
