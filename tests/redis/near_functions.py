"""Cached functions the near cache tests share between processes: each
computation takes the next number of a counter in Redis, so every value
tells which computation made it."""

from __future__ import annotations

import os

import redis as redis_py
import redis.cluster

from restflow.caching import ArgsKeyField, KeyConstructor, cache_result
from restflow.caching.settings import cache_settings


def _next() -> int:
    url = cache_settings()["BACKEND"]
    if url.startswith("redis+cluster://"):
        seeds = [seed.rsplit(":", 1) for seed in url.removeprefix("redis+cluster://").split(",")]
        nodes = [redis_py.cluster.ClusterNode(host, int(port)) for host, port in seeds]
        client = redis_py.cluster.RedisCluster(startup_nodes=nodes)
    else:
        client = redis_py.Redis.from_url(url)
    return client.incr("near:computations")


@cache_result(ttl=60, stale_while_revalidate=60)
def value(key):
    return f"{key}:{_next()}"


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")

    class Meta:
        namespace = "near"


@cache_result(ttl=60, key_constructor=TenantKey)
def report(tenant, item):
    return f"{tenant}/{item}/{_next()}"


class Boxed:
    """A value that can be weakly referenced (the hot layer's tests)."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, Boxed) and other.text == self.text

    __hash__ = None


@cache_result(ttl=60)
def boxed(key):
    return Boxed(f"{key}:{_next()}")


class VersionedKey(KeyConstructor):
    """Version 1 here; version 2 in a worker run for ``delete_previous_versions``
    (``NEAR_KEY_VERSION``), which retires version 1's entries everywhere."""

    item = ArgsKeyField("item")

    class Meta:
        namespace = "near-versioned"
        version = int(os.environ.get("NEAR_KEY_VERSION", "1"))


@cache_result(ttl=60, key_constructor=VersionedKey)
def versioned(item):
    return f"{item}:{_next()}"


@cache_result(ttl=60)
def article(article_id):
    """Keyed by an Article's pk: the second process (near_worker's
    ``model_save``) attaches a save rule on Article to it and saves one."""
    return f"article {article_id}:{_next()}"
