"""The Redis Sentinel store (``redis+sentinel://``): a master, a replica and
three sentinels on free 127.0.0.1 ports (the system redis-server; started
for the module, stopped after). A failover while connections are pooled on
the old master, which stays up as a replica: writes answer READONLY, and
the store moves to the new master. Killing the master: calls BYPASS, then
resume on the promoted replica without a restart. Which server is the
master changes from test to test: the tests ask the sentinels."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis as redis_py
from django.test import override_settings

from restflow.caching import CacheBackendError, CacheStatus, cache_result
from restflow.caching.settings import validate_backend
from tests.redis.cluster import wait_for
from tests.redis.conftest import RedisServer, free_port, redis_settings, system_redis_server
from tests.test_delete_fence import (
    check_a_delete_during_a_background_refresh,
    check_a_delete_during_a_computation,
    check_a_delete_during_a_forced_refresh,
)
from tests.test_fork import run_forks
from tests.test_lifecycle_model import SyncApi, run_model
from tests.test_lifecycle_model import report as model_report
from tests.test_store_contract import calls, profile
from tests.timeouts import PAUSED

SERVICE = "restflow-test"


@cache_result(ttl=60, near_cache=True)
def near_value(key):
    calls.append(key)
    return f"{key}:{len(calls)}"


def status(*args):
    return profile.get_with_metadata(*args)[1]["cache_status"]


class Sentinels:
    """The two data servers, the sentinels' ports and the store's URL."""

    def __init__(self, servers: list[RedisServer], ports: list[int], url: str) -> None:
        self.servers, self.ports, self.url = servers, ports, url

    def sentinel(self, index: int = 0) -> redis_py.Redis:
        return redis_py.Redis(port=self.ports[index], socket_timeout=5)

    def named_master(self) -> RedisServer | None:
        """The server every sentinel names as the master now; None while
        they disagree (a failover spreading)."""
        ports = {
            int(self.sentinel(i).sentinel_get_master_addr_by_name(SERVICE)[1])
            for i in range(len(self.ports))
        }
        servers = [s for s in self.servers if s.port in ports]
        return servers[0] if len(ports) == 1 else None

    def master(self) -> RedisServer:
        """The master, once the sentinels agree on it."""
        wait_for(lambda: self.named_master() is not None, "the sentinels never agreed")
        return self.named_master()

    def other(self, server: RedisServer) -> RedisServer:
        [other] = [s for s in self.servers if s is not server]
        return other


def role(server: RedisServer) -> str:
    return server.client().info("replication")["role"]


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sentinel")
    # Replication writes snapshots to the servers' directory: not ours.
    # (Given at start: Redis 7 refuses CONFIG SET dir.)
    master = RedisServer(directory=directory).start()
    replica = RedisServer(directory=directory)
    replica.start()
    replica.client().replicaof("127.0.0.1", master.port)
    ports = [free_port() for _ in range(3)]
    processes = []
    for port in ports:
        conf = directory / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        processes.append(
            subprocess.Popen(
                [system_redis_server(), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def ready() -> bool:
        for port in ports:
            known = redis_py.Redis(port=port, socket_timeout=2).sentinel_master(SERVICE)
            if known["num-other-sentinels"] < 2 or known["num-slaves"] < 1:
                return False
        return replica.client().info("replication")["master_link_status"] == "up"

    wait_for(ready, "the sentinels did not find each other and the replica")
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + f"/{SERVICE}/0"
    try:
        yield Sentinels([master, replica], ports, url)
    finally:
        for process in processes:
            process.kill()
            process.wait(10)
        master.stop()
        replica.stop()


def test_the_sentinel_schemes_are_backends():
    for url in ("redis+sentinel://a:1,b:2/main", "rediss+sentinel://a:1/main/0"):
        assert validate_backend(url) == url


def test_a_delete_is_not_undone_by_a_computation_under_way(sentinels):
    """Through the master the sentinels name (tests/test_delete_fence.py)."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(sentinels.url)):
        check_a_delete_during_a_computation()
        check_a_delete_during_a_background_refresh()
        check_a_delete_during_a_forced_refresh()


@pytest.mark.parametrize("seed", [33, 34])
def test_calls_follow_the_lifecycle_model(sentinels, seed):
    """tests/test_lifecycle_model.py's model, through the master the
    sentinels name."""
    with override_settings(RESTFLOW_SETTINGS=redis_settings(sentinels.url)):
        run_model(seed, SyncApi(model_report))


def test_children_forked_from_a_busy_sentinel_cache_work(sentinels):
    # Each child asks the sentinels and connects itself (tests/test_fork.py).
    run_forks(sentinels.url, "threads", 10)


def test_invalidations_wait_for_the_replicas_the_setting_names(sentinels):
    """INVALIDATION_REPLICAS through the master the sentinels name: one
    replica acknowledges (a plain invalidation), two cannot (it raises,
    made on the master all the same). The failover it guards against:
    tests/redis/test_replication.py."""
    master = sentinels.master()
    replica = sentinels.other(master)
    wait_for(
        lambda: replica.client().info("replication")["master_link_status"] == "up",
        "the replica follows the master",
    )
    calls.clear()
    with override_settings(
        RESTFLOW_SETTINGS=redis_settings(sentinels.url, INVALIDATION_REPLICAS=1)
    ):
        assert status(1) is CacheStatus.MISS
        profile.invalidate_all()
        assert status(1) is CacheStatus.MISS
        assert profile.delete_cache(1) is True
    settings = redis_settings(sentinels.url, INVALIDATION_REPLICAS=2, **PAUSED)
    with override_settings(RESTFLOW_SETTINGS=settings):
        assert status(1) is CacheStatus.MISS
        with pytest.raises(CacheBackendError, match="only 1 of the 2 replicas"):
            profile.invalidate_all()
        assert status(1) is CacheStatus.MISS


def test_a_demoted_master_with_pooled_connections_hands_over_to_the_new_one(sentinels):
    old = sentinels.master()
    new = sentinels.other(old)
    calls.clear()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(sentinels.url)):
        first = profile(1)
        assert status(1) is CacheStatus.HIT  # the connections are pooled on `old`
        old.client().wait(1, 5000)
        # A failover with the old master up: the sentinels promote `new`,
        # and `old` is made its replica by hand (the sentinels do that
        # later, and also kill its clients: by hand the store's
        # connections stay open, to a replica now).
        assert sentinels.sentinel().sentinel_failover(SERVICE)

        def switched() -> bool:
            return sentinels.named_master() is new and role(new) == "master"

        wait_for(switched, "the sentinels did not promote the replica")
        old.client().replicaof("127.0.0.1", new.port)
        wait_for(
            lambda: old.client().info("replication")["master_link_status"] == "up",
            "the old master did not follow the new one",
        )
        # The first write on the open connections is an invalidation: it
        # answers READONLY there, and must reach the new master all the
        # same. Then every call goes to the new master: nothing raises,
        # nothing old is served.
        profile.invalidate_all()
        value, meta = profile.get_with_metadata(1)
        assert (value != first, meta["cache_status"]) == (True, CacheStatus.MISS)
        assert status(1) is CacheStatus.HIT
        # The computed entry, its lock and counters went to the new master.
        assert new.client().get(profile.get_cache_key(1)) is not None
        refreshed = profile.refresh(1)
        assert profile(1) == refreshed
        assert profile.delete_cache(1) is True
        assert new.client().get(profile.get_cache_key(1)) is None
        assert role(old) == "slave"


def near_status(key):
    return near_value.get_with_metadata(key)[1]["cache_status"]


def test_a_failover_is_followed_without_a_restart(sentinels):
    # One failover (they are slow): the plain store and the near cache
    # (``near_value``, NEAR_CACHE on) both follow it.
    master = sentinels.master()
    replica = sentinels.other(master)
    calls.clear()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(sentinels.url)):
        assert status(1) is CacheStatus.MISS
        assert status(1) is CacheStatus.HIT
        assert master.client().get(profile.get_cache_key(1)) is not None
        old = {key: near_value(key) for key in ("kept", "changed")}
        backend = near_value.shared_backend()
        assert backend.near_sync(timeout=20), "the channel to the master came up"
        assert {key: near_value(key) for key in old} == old  # kept near
        hits = backend.near_stats()["hits"]
        assert {key: near_value(key) for key in old} == old
        assert backend.near_stats()["hits"] == hits + 2, "served near"
        master.client().wait(1, 5000)  # the replica has the entries too
        master.process.kill()
        master.process.wait(10)
        # The master is gone: BYPASS (no exception), until the sentinels
        # promote the replica; then the entry is served from it.
        statuses = [status(1)]
        while statuses[-1] is CacheStatus.BYPASS:
            assert len(statuses) < 600, "no failover within a minute"
            time.sleep(0.1)  # the sentinels' failover takes seconds
            statuses.append(status(1))
        assert statuses[0] is CacheStatus.BYPASS
        assert statuses[-1] is CacheStatus.HIT
        assert role(replica) == "master"
        # A change on the promoted master: never the old value from L1.
        replica.client().delete(near_value.get_cache_key("changed"))
        wait_for(lambda: near_status("kept") is not CacheStatus.BYPASS, "the near function follows")
        served, meta = near_value.get_with_metadata("changed")
        assert (served != old["changed"], meta["cache_status"]) == (True, CacheStatus.MISS)
        # Near hits resume on the promoted master, once its channel is up.
        assert backend.near_sync(timeout=20), "the channel to the new master came up"
        again = {key: near_value(key) for key in old}  # read from it, kept near
        assert again["kept"] == old["kept"]
        hits = backend.near_stats()["hits"]
        assert {key: near_value(key) for key in old} == again
        assert backend.near_stats()["hits"] == hits + 2, "served near again"
