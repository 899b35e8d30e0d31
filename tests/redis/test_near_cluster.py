"""The near cache (NEAR_CACHE) on a Redis Cluster: one invalidation channel
per master, an L1 entry served only while the channel of its slot's master
is live (restflow_cache::shared::cluster_near).

A three-master cluster for the module (tests/redis/cluster.py), two
processes sharing keys on all three masters; the last test kills a master
and starts it again. ``near_sync()`` waits until every master's channel is
up and has delivered every change made before the call.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from restflow.caching import CacheStatus
from tests.redis.cluster import wait_for
from tests.redis.conftest import redis_settings
from tests.redis.near_functions import report, value
from tests.redis.test_cluster import (  # noqa: F401 (this module's own cluster, per server kind)
    cluster_kind,
    cluster_nodes,
)
from tests.redis.test_near_cache import near_hits, other_process

#: Enough keys that each master holds some (checked).
KEYS = [f"k{i}" for i in range(24)]


@pytest.fixture
def cluster(cluster_nodes):  # noqa: F811
    """An empty cluster, and NEAR_CACHE on over it."""
    cluster_nodes.flush()
    settings = redis_settings(cluster_nodes.url, NEAR_CACHE=True)
    with override_settings(RESTFLOW_SETTINGS=settings):
        yield cluster_nodes
    cluster_nodes.flush()


def warm_all(cluster) -> tuple[dict[str, str], dict[str, int]]:
    """Stores every key, reads each into the near cache, checks each is then
    served near; returns the values, and the master each key is on (every
    master holds some)."""
    values, where = {}, {}
    for key in KEYS:
        before = {port: set(cluster.keys(port)) for port in cluster.processes}
        values[key] = value(key)
        grown = {p: set(cluster.keys(p)) - before[p] for p in before}
        ours = {p for p, new in grown.items() if new - {b"near:computations"}}
        [where[key]] = [p for p in ours if any(b"near-sync" not in k for k in grown[p])]
    assert set(where.values()) == set(cluster.ports)
    assert value.shared_backend().near_sync(timeout=20), "every master's channel came up"
    for key in KEYS:
        assert value(key) == values[key]  # read from Redis, kept near
    before = near_hits(value)
    assert {key: value(key) for key in KEYS} == values
    assert near_hits(value) == before + len(KEYS), "all served near"
    return values, where


def test_near_hits_on_every_master(cluster):
    warm_all(cluster)
    stats = value.shared_backend().near_stats()
    assert (stats["live"], stats["entries"]) == (True, len(KEYS))


@pytest.mark.parametrize("operation", ["refresh", "delete", "invalidate_all"])
def test_a_change_by_another_process_is_never_served_once_received(cluster, operation):
    old, _ = warm_all(cluster)
    dropped = value.stats()["near_invalidations"]
    printed = other_process(cluster.url, operation, str(len(KEYS)))
    assert value.shared_backend().near_sync(timeout=20)
    # Every master's messages: each near copy dropped, and counted, once.
    assert value.stats()["near_invalidations"] - dropped == len(KEYS)
    hits = near_hits(value)
    served = {key: value.get_with_metadata(key) for key in KEYS}
    assert near_hits(value) == hits, "nothing served near"
    assert all(served[key][0] != old[key] for key in KEYS)
    statuses = {meta["cache_status"] for _, meta in served.values()}
    if operation == "refresh":
        # The other process's new values, read from Redis.
        assert [served[key][0] for key in KEYS] == printed.split(",")
        assert statuses == {CacheStatus.HIT}
    else:
        assert statuses == {CacheStatus.MISS}


def test_a_partition_dropped_by_another_process_is_never_served_once_received(cluster):
    old_a, old_b = report("a", 1), report("b", 1)
    assert report.shared_backend().near_sync(timeout=20)
    assert (report("a", 1), report("b", 1)) == (old_a, old_b)  # kept near
    assert other_process(cluster.url, "delete_by_prefix") == "done"
    assert report.shared_backend().near_sync(timeout=20)
    hits = near_hits(report)
    assert report("b", 1) == old_b
    assert near_hits(report) == hits + 1, "another partition stays near"
    served, meta = report.get_with_metadata("a", 1)
    assert (served != old_a, meta["cache_status"]) == (True, CacheStatus.MISS)


def test_a_process_forked_after_first_use_has_its_own(cluster):
    # Its channels and slot map thread are the parent's: the child starts
    # its own (tests/redis/near_worker.py, "fork").
    assert other_process(cluster.url, "fork") == "forked ok"


def test_a_dead_master_stops_near_hits_for_its_keys_only(cluster):
    old, where = warm_all(cluster)
    # Not the master of the computations counter (tests.redis.near_functions).
    [victim] = [p for p in set(where.values()) if b"near:computations" not in cluster.keys(p)][:1]
    lost = {key for key in KEYS if where[key] == victim}
    kept = set(KEYS) - lost
    backend = value.shared_backend()
    try:
        cluster.kill(victim)
        # Its channel reads the end of the connection: its slots go down.
        wait_for(lambda: not backend.near_stats()["live"], "the channel saw the kill", 20)
        hits = near_hits(value)
        statuses = {key: value.get_with_metadata(key) for key in KEYS}
        assert {k for k, (_, m) in statuses.items() if m["cache_status"] is CacheStatus.BYPASS} == (
            lost
        )
        assert {k: statuses[k][0] for k in kept} == {k: old[k] for k in kept}
        assert {statuses[k][1]["cache_status"] for k in kept} == {CacheStatus.HIT}
        assert near_hits(value) == hits + len(kept), "the other masters' keys are served near"
    finally:
        cluster.restart(victim)
    # Its channel back: near again (its data is gone: computed again once).
    wait_for(lambda: backend.near_stats()["live"], "the channel came back", 20)
    assert backend.near_sync(timeout=20)
    wait_for(
        lambda: cluster.client(victim).cluster("info")["cluster_state"] == "ok",
        "the restarted master rejoined",
    )
    for key in sorted(lost):
        seen = []

        def answered(key=key, seen=seen):
            # BYPASS until the slot's breaker lets a call probe the master.
            served, meta = value.get_with_metadata(key)
            assert served != old[key]
            seen.append(meta["cache_status"])
            return seen[-1] is not CacheStatus.BYPASS

        wait_for(answered, "the restarted master's keys are served", 20)
        assert seen[-1] is CacheStatus.MISS
    hits = near_hits(value)
    again = {key: value(key) for key in lost}  # read from Redis, kept near
    assert {key: value(key) for key in lost} == again
    assert near_hits(value) == hits + len(lost), "its keys are served near again"
