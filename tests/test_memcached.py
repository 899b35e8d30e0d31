"""What differs on memcached (Django's ``PyMemcacheCache`` on a real
memcached, ``tests/memcached.py``): whole-second timeouts, the 1 MB item
limit, keys near 250 bytes, a server restarted mid-run, two processes.

The suites that take the ``store`` fixture run on memcached too (store id
``django-memcached``); these are the attacks on what only memcached does.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow.caching import ArgsKeyField, CacheStatus, KeyConstructor, cache_result
from tests.memcached import ITEM_LIMIT, MemcachedServer
from tests.stores import MEMCACHED_OPTIONS, memcached_caches, on

ROOT = Path(__file__).resolve().parents[1]

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
