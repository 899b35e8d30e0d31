"""An invalidation and Redis's asynchronous replication.

A master acknowledges a write as soon as it made it; its replicas get it
later. Should the master die before a replica received an invalidation
(the DEL of a generation counter or of an entry), and that replica be
promoted (by Sentinel, or by hand), the promoted master still holds the
counter and the entries written under it: every process serves the
invalidated values again, until their TTL. ``INVALIDATION_REPLICAS``
makes every invalidation wait (``WAIT``) until that many replicas
acknowledged it, and report one they did not acknowledge in time as a
failure (``CacheBackendError``): the caller learns it may be lost.

Here a master and a replica run on free 127.0.0.1 ports, the replica's
link to the master through a :class:`GateProxy`: holding it cuts the link
(the master's stream stops reaching the replica) while both stay up. The
failover is made by hand: the master is killed, the replica promoted
(``REPLICAOF NO ONE``), and the backend pointed at it."""

from __future__ import annotations

import pytest
from django.test import override_settings

from restflow.caching import (
    ArgsKeyField,
    CacheBackendError,
    CacheStatus,
    KeyConstructor,
    cache_result,
)
from tests.redis.cluster import wait_for
from tests.redis.conftest import SERVERS, RedisServer, redis_settings
from tests.redis.gate_proxy import GateProxy
from tests.timeouts import PAUSED

calls: list = []


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")

    class Meta:
        namespace = "replication"


@cache_result(ttl=600, key_constructor=TenantKey)
def report(tenant, item):
    calls.append((tenant, item))
    return f"{tenant}/{item}/{len(calls)}"


#: Each invalidation a caller can ask for, by name: what it retires on
#: Redis (a function's counters, a partition's counter, one entry).
INVALIDATIONS = {
    "invalidate_all": lambda: report.invalidate_all(),
    "delete_by_prefix": lambda: report.delete_by_prefix(tenant="acme"),
    "delete_cache": lambda: report.delete_cache("acme", 1),
}


class Replicated:
    """A master, its replica, and the gate on the link between them."""

    def __init__(self, master: RedisServer, replica: RedisServer, gate: GateProxy) -> None:
        self.master, self.replica, self.gate = master, replica, gate

    def synced(self) -> None:
        """Returns once the replica acknowledged every write made so far."""
        assert self.master.client().wait(1, 30_000) == 1

    def fail_over(self) -> None:
        """The master dies (killed: a crash, no shutdown that would wait
        for the replica); the replica is promoted."""
        self.master.process.kill()
        self.master.process.wait(10)
        self.replica.client().replicaof("NO", "ONE")
        assert self.replica.client().info("replication")["role"] == "master"


@pytest.fixture
def replicated(server_kind):
    binary = SERVERS[server_kind][0]
    master = RedisServer(binary=binary).start()
    # The replica's full sync starts at once, not after 5 s (the default).
    master.client().config_set("repl-diskless-sync-delay", 0)
    gate = GateProxy(master.port)
    replica = RedisServer(binary=binary).start()
    replica.client().replicaof("127.0.0.1", gate.port)
    try:
        wait_for(
            lambda: replica.client().info("replication")["master_link_status"] == "up",
            "the replica did not sync through the gate",
        )
        calls.clear()
        yield Replicated(master, replica, gate)
    finally:
        gate.close()
        replica.stop()
        master.stop()


def cached(replicated: Replicated, **settings) -> str:
    """Caches report("acme", 1) on the master, and waits until the replica
    has it."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(replicated.master.url, **settings)):
        value, meta = report.get_with_metadata("acme", 1)
        assert meta["cache_status"] is CacheStatus.MISS
        assert report.get_with_metadata("acme", 1)[1]["cache_status"] is CacheStatus.HIT
    replicated.synced()
    return value


def after_failover(replicated: Replicated):
    """report("acme", 1) read from the promoted replica: (value, status)."""
    replicated.fail_over()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(replicated.replica.url)):
        value, meta = report.get_with_metadata("acme", 1)
    return value, meta["cache_status"]


def test_without_the_setting_an_invalidation_the_replica_missed_is_lost(replicated):
    """The known behaviour the setting exists for (INVALIDATION_REPLICAS
    0, the default): the master acknowledges the invalidation, the replica
    never receives it, and once promoted serves the invalidated value."""
    old = cached(replicated)
    replicated.gate.hold()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(replicated.master.url)):
        report.invalidate_all()  # acknowledged: no error
        assert report.get_with_metadata("acme", 1)[1]["cache_status"] is CacheStatus.MISS
    assert after_failover(replicated) == (old, CacheStatus.HIT)


def test_an_invalidation_no_replica_acknowledged_raises(replicated):
    """INVALIDATION_REPLICAS=1 and the link cut: the invalidation waits
    READ_TIMEOUT for the replica, then raises, saying it may be lost."""
    old = cached(replicated, INVALIDATION_REPLICAS=1)
    replicated.gate.hold()
    settings = redis_settings(replicated.master.url, INVALIDATION_REPLICAS=1, **PAUSED)
    with override_settings(RESTFLOW_SETTINGS=settings):
        with pytest.raises(CacheBackendError) as raised:
            report.invalidate_all()
        message = str(raised.value)
        assert "0 of the 1 replicas" in message, message
        assert "invalidation_replicas" in message.lower(), message
    # It was made on the master, and lost with it, as the error warned.
    assert after_failover(replicated) == (old, CacheStatus.HIT)


def test_an_invalidation_the_replica_acknowledged_survives_the_failover(replicated):
    old = cached(replicated, INVALIDATION_REPLICAS=1)
    settings = redis_settings(replicated.master.url, INVALIDATION_REPLICAS=1)
    with override_settings(RESTFLOW_SETTINGS=settings):
        report.invalidate_all()
    # Cut the link at once: only what WAIT had confirmed reached the replica.
    replicated.gate.hold()
    value, status = after_failover(replicated)
    assert (value != old, status) == (True, CacheStatus.MISS)


@pytest.mark.parametrize("server_kind", ["redis"])
@pytest.mark.parametrize("name", list(INVALIDATIONS))
def test_every_invalidation_waits_for_the_replicas(replicated, name):
    """Each kind of invalidation (a function's counters, a partition's
    counter, one entry): raises with the link cut, and is not counted as
    the store being down (the breaker, opened by 3 failures to reach the
    store, stays closed: the next call is served by the store); with the
    link back, it is confirmed and survives a failover."""
    invalidate = INVALIDATIONS[name]
    old = cached(replicated)
    replicated.gate.hold()
    settings = redis_settings(replicated.master.url, INVALIDATION_REPLICAS=1, **PAUSED)
    with override_settings(RESTFLOW_SETTINGS=settings):
        for _ in range(3):
            with pytest.raises(CacheBackendError, match="0 of the 1 replicas"):
                invalidate()
        assert report.get_with_metadata("acme", 2)[1]["cache_status"] is CacheStatus.MISS
        replicated.gate.release()
        report("acme", 1)  # cached again (the invalidation held on the master)
        invalidate()
    replicated.gate.hold()
    value, status = after_failover(replicated)
    assert (value != old, status) == (True, CacheStatus.MISS)
