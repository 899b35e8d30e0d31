"""Cached functions the near cache tests share between processes: each
computation takes the next number of a counter in Redis, so every value
tells which computation made it."""

from __future__ import annotations

import redis as redis_py

from restflow.caching import ArgsKeyField, KeyConstructor, cache_result
from restflow.caching.settings import cache_settings


def _next() -> int:
    return redis_py.Redis.from_url(cache_settings()["BACKEND"]).incr("near:computations")


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


@cache_result(ttl=60)
def article(article_id):
    """Keyed by an Article's pk: the second process (near_worker's
    ``model_save``) attaches a save rule on Article to it and saves one."""
    return f"article {article_id}:{_next()}"
