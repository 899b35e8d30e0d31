"""Generation counters and signed keys on Redis: an invalidation is never
undone (by a background refresh, by an evicted or corrupt counter), the
counters stay few and expire, and an entry is only ever served under the
key it was written for."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from django.test import override_settings

from restflow.caching import ArgsKeyField, CacheStatus, KeyConstructor, cache_result
from restflow.caching.settings import signing_key
from tests.redis.conftest import redis_settings, versioned_constructor
from tests.refresh_race import check_an_invalidation_during_a_refresh_is_kept

calls: list = []


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")

    class Meta:
        namespace = "generations"


@cache_result(ttl=30, key_constructor=TenantKey)
def report(tenant, item):
    calls.append((tenant, item))
    return f"{tenant}/{item}/{len(calls)}"


@cache_result(ttl=None)
def forever(user_id):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def served(wrapper, *args, **kwargs):
    value, meta = wrapper.get_with_metadata(*args, **kwargs)
    return value, meta["cache_status"]


def counters(redis, kind):
    """The names of the counters of one kind (gen, pgen, vgen) in the store."""
    return sorted(redis.keys(f"*restflow:{kind}:*"))


def test_an_invalidation_during_a_stale_refresh_is_kept(redis):
    check_an_invalidation_during_a_refresh_is_kept()


def test_an_invalidation_during_a_stale_refresh_is_kept_on_the_memory_store():
    # The behaviour the Redis store must agree with.
    check_an_invalidation_during_a_refresh_is_kept(backend="memory")


@pytest.mark.parametrize(
    ("kind", "drop"),
    [
        ("gen", lambda: report.invalidate_all()),
        ("pgen", lambda: report.delete_by_prefix(tenant="a")),
        ("vgen", None),
    ],
)
def test_a_lost_counter_never_brings_back_retired_entries(redis, kind, drop):
    # An eviction, simulated exactly: the counter that retired the entries
    # is deleted. The retired entry stays retired, and a lost counter also
    # retires what was written under it.
    if kind == "vgen":
        versioned = _versioned_pair()
        old, new, v2 = versioned
        old(1)
        new(1)
        v2.delete_previous_versions()
        target = old
    else:
        report("a", 1)
        drop()
        target = report
    args = (1,) if kind == "vgen" else ("a", 1)
    for name in counters(redis, kind):
        redis.delete(name)
    assert served(target, *args)[1] is CacheStatus.MISS
    assert served(target, *args)[1] is CacheStatus.HIT
    for name in counters(redis, kind):
        redis.delete(name)
    assert served(target, *args)[1] is CacheStatus.MISS


def _versioned_pair():
    v1, v2 = versioned_constructor("lost-versions", 1), versioned_constructor("lost-versions", 2)

    @cache_result(ttl=30, key_constructor=v1)
    def old(x):
        calls.append(x)
        return ("old", x, len(calls))

    @cache_result(ttl=30, key_constructor=v2)
    def new(x):
        return ("new", x)

    return old, new, v2


def test_a_lost_counter_never_revives_entries_without_expiry(redis):
    first = forever(1)
    forever.invalidate_all()
    (name,) = counters(redis, "gen") or [None]
    if name is not None:
        redis.delete(name)
    value, status = served(forever, 1)
    assert status is CacheStatus.MISS and value != first


def _read(client, keys, times):
    """Reads `keys` `times` times each (raw GETs: restflow's counters are
    not touched), so an LFU policy ranks them above a counter read rarely."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        for _ in range(times):
            pipe.get(key)
    pipe.execute()


@pytest.mark.parametrize("policy", ["allkeys-random", "allkeys-lfu"])
def test_real_eviction_never_undoes_an_invalidation(own_redis, policy):
    # Entries written, invalidated, then Redis runs out of memory and evicts
    # by `policy` until the function's counter is gone. No entry written
    # before the invalidation may come back. For LFU the entries and the
    # other keys are read often and the counter rarely (lfu-log-factor 0
    # counts every read), as for a function whose old entries are still
    # requested: the counter is the coldest key.
    client = own_redis.client()
    client.config_set("lfu-log-factor", 0)
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):

        @cache_result(ttl=None)
        def big(x):
            return "v" * 2000 + str(x)

        survivors = []
        for attempt in range(5):
            client.config_set("maxmemory", 0)
            client.flushdb()
            for x in range(400):
                big(x)
            big.invalidate_all()
            big(-1)  # the counter exists again, as on a live site
            (counter,) = counters(client, "gen")
            entries = [big.get_cache_key(x) for x in range(400)]
            _read(client, entries, 50)
            client.config_set("maxmemory-policy", policy)
            client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 64 * 1024)
            junk = 0
            while client.exists(counter):  # EXISTS does not count as a read
                name = f"junk:{attempt}:{junk}"
                client.set(name, b"j" * 4096)
                _read(client, [name], 20)
                junk += 1
                assert junk < 20_000, "the counter was never evicted"
            client.config_set("maxmemory", 0)
            survivors = [x for x, key in enumerate(entries) if client.exists(key)]
            if survivors:
                break
        assert survivors, "no entry outlived the counter in 5 runs"
        statuses = {big.get_with_metadata(x)[1]["cache_status"] for x in survivors}
        assert statuses == {CacheStatus.MISS}


def _counted(redis, kind):
    """Calls a function so that a counter of `kind` exists (before and after
    the fix: a bump made one then, a computation makes one now); returns the
    function and its arguments."""
    if kind == "vgen":
        old, _, v2 = _versioned_pair()
        v2.delete_previous_versions()
        old(1)
        target, args = old, (1,)
    else:
        if kind == "gen":
            report.invalidate_all()
        else:
            report.delete_by_prefix(tenant="a")
        report("a", 1)
        target, args = report, ("a", 1)
    assert counters(redis, kind)
    return target, args


@pytest.mark.parametrize(
    "garbage",
    [b"abc", b"-1", b"100000000000000000000", b"9223372036854775807", b"18446744073709551615"],
)
def test_a_corrupt_counter_heals_on_its_own(redis, garbage):
    _counted(redis, "gen")
    for name in counters(redis, "gen"):
        redis.set(name, garbage)
    # The entry is retired (its counter is gone), never BYPASS: the counter
    # is replaced by the next computation, and caching goes on.
    assert served(report, "a", 1) == ("a/1/2", CacheStatus.MISS)
    assert served(report, "a", 1) == ("a/1/2", CacheStatus.HIT)
    report.invalidate_all()
    assert served(report, "a", 1) == ("a/1/3", CacheStatus.MISS)
    assert served(report, "a", 1) == ("a/1/3", CacheStatus.HIT)


@pytest.mark.parametrize("kind", ["pgen", "vgen"])
def test_every_corrupt_counter_heals(redis, kind):
    target, args = _counted(redis, kind)
    for name in counters(redis, kind):
        redis.set(name, b"abc")
    first, status = served(target, *args)
    assert status is CacheStatus.MISS
    assert served(target, *args) == (first, CacheStatus.HIT)


def test_dropped_partitions_leave_no_counters_behind(redis):
    report("a", 1)
    for tenant in range(2_000):
        report.delete_by_prefix(tenant=f"t{tenant}")
    report.delete_by_prefix(tenant="a")
    assert counters(redis, "pgen") == []
    # A partition in use has a counter, which outlives its entries (ttl
    # 30 s + the stale window's 60 s) by as long again, so that the writes
    # that follow need not lengthen it (see PUT_CURRENT).
    report("b", 1)
    (name,) = counters(redis, "pgen")
    assert redis.pttl(name) == pytest.approx(180_000, abs=2_000)
    assert redis.pttl(report.get_cache_key("b", 1)) == pytest.approx(90_000, abs=2_000)


def test_an_entry_copied_onto_another_key_is_a_miss(redis):
    forever(1)
    forever(2)
    one, two = forever.get_cache_key(1), forever.get_cache_key(2)
    redis.set(two, redis.get(one))
    value, status = served(forever, 2)
    assert (value["id"], status) == (2, CacheStatus.MISS)
    # Onto a key that never had an entry, too.
    three = forever.get_cache_key(3)
    redis.set(three, redis.get(one))
    value, status = served(forever, 3)
    assert (value["id"], status) == (3, CacheStatus.MISS)


def test_an_entry_of_the_previous_payload_version_is_a_miss(redis):
    # A payload the previous version (RFC1) signed correctly: its tag did not
    # cover the key, so it is refused, whatever it says.
    forever(1)
    key = forever.get_cache_key(1)
    stored = redis.get(key)
    body = b"RFC1" + stored[4:-32]
    tag = hmac.new(signing_key(), body, hashlib.sha256).digest()
    redis.set(key, body + tag)
    assert struct.unpack("<q", body[5:13])[0] > 0  # a real header was copied
    value, status = served(forever, 1)
    assert (value["n"], status) == (2, CacheStatus.MISS)


def test_dropping_more_partitions_than_remembered_on_the_memory_store():
    # The memory store remembers at most MAX_DROPPED_PARTITIONS dropped
    # partitions per function; one more drops all the function's entries
    # once, and never brings a dropped partition back.
    @cache_result(ttl=30, key_constructor=TenantKey, backend="memory")
    def local(tenant, item):
        calls.append((tenant, item))
        return len(calls)

    local("a", 1)
    local.delete_by_prefix(tenant="a")
    assert served(local, "a", 1) == (2, CacheStatus.MISS)
    local.delete_by_prefix(tenant="a")
    for tenant in range(10_001):
        local.delete_by_prefix(tenant=f"t{tenant}")
    assert served(local, "a", 1) == (3, CacheStatus.MISS)
    assert served(local, "a", 1) == (3, CacheStatus.HIT)


def test_a_partition_counter_lives_as_long_as_its_entries(redis):
    @cache_result(ttl=None, key_constructor=TenantKey)
    def kept(tenant, item):
        return item

    @cache_result(ttl=30, key_constructor=TenantKey)
    def failing(tenant, item):
        raise ValueError("upstream down")

    kept("a", 1)
    (name,) = counters(redis, "pgen")
    assert redis.pttl(name) == -1  # its entry never expires either
    redis.delete(name)
    with pytest.raises(ValueError):
        failing("a", 1)
    # Nothing was written under it: it lives LOCK_TIMEOUT + WAIT_TIMEOUT
    # (10 s + 11 s by default), the longest a computation may use it.
    (name,) = counters(redis, "pgen")
    assert redis.pttl(name) == pytest.approx(21_000, abs=2_000)
