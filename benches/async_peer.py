"""One package's async hit latency, for benches/async_peers.sh.

    python benches/async_peer.py <restflow|drf-restflow|cashews> <redis url>

Prints one JSON line of medians in microseconds per awaited hit: the memory
(or LocMem) store and the Redis store, and for restflow the sync path too.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

PAYLOAD = {
    **{f"field_{n}": f"value {n}" for n in range(15)},
    "items": [{"id": n, "name": f"item {n}"} for n in range(10)],
}


async def per_await_us(call, number: int = 2000, rounds: int = 9) -> float:
    await call()  # warm: every timed call is a hit
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            await call()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def configure_django(url: str, redis_backend: str | None) -> None:
    import django
    from django.conf import settings

    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    if redis_backend:
        caches["redis"] = {"BACKEND": redis_backend, "LOCATION": url}
    settings.configure(SECRET_KEY="bench", CACHES=caches)
    django.setup()


async def restflow(url: str) -> dict:
    configure_django(url, None)
    from restflow.caching import cache_result

    @cache_result(ttl=3600)
    async def memory(n):
        return PAYLOAD

    @cache_result(ttl=3600, backend=url)
    async def shared(n):
        return PAYLOAD

    @cache_result(ttl=3600)
    def memory_sync(n):
        return PAYLOAD

    @cache_result(ttl=3600, backend=url)
    def shared_sync(n):
        return PAYLOAD

    async def sync_memory():
        return memory_sync(5)

    async def sync_shared():
        return shared_sync(5)

    return {
        "memory_us": await per_await_us(lambda: memory(5)),
        "redis_us": await per_await_us(lambda: shared(5), number=300),
        "sync_memory_us": await per_await_us(sync_memory),
        "sync_redis_us": await per_await_us(sync_shared, number=300),
    }


async def drf_restflow(url: str) -> dict:
    configure_django(url, "django_redis.cache.RedisCache")
    from restflow.caching import cache_result

    @cache_result(ttl=3600)
    async def memory(n):
        return PAYLOAD

    results = {"memory_us": await per_await_us(lambda: memory(5), number=500)}
    from django.conf import settings

    settings.CACHES["default"] = settings.CACHES["redis"]
    from django.core.cache import caches

    caches._settings = caches.settings = caches.configure_settings(None)

    @cache_result(ttl=3600)
    async def shared(n):
        return PAYLOAD

    results["redis_us"] = await per_await_us(lambda: shared(5), number=300)
    return results


async def cashews(url: str) -> dict:
    from cashews import Cache

    memory_cache = Cache()
    memory_cache.setup("mem://")
    redis_cache = Cache()
    redis_cache.setup(url)

    @memory_cache(ttl=3600)
    async def memory(n):
        return PAYLOAD

    @redis_cache(ttl=3600)
    async def shared(n):
        return PAYLOAD

    return {
        "memory_us": await per_await_us(lambda: memory(5)),
        "redis_us": await per_await_us(lambda: shared(5), number=300),
    }


def main() -> int:
    kind, url = sys.argv[1], sys.argv[2]
    run = {"restflow": restflow, "drf-restflow": drf_restflow, "cashews": cashews}[kind]
    print(json.dumps({"package": kind, **asyncio.run(run(url))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
