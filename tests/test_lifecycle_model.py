"""The lifecycle against a model of it, on every store, sync and async.

A seeded run of random operations (reads, data changes each followed by the
invalidation a rule would make, clock moves through the ttl and the stale
window and the stale-if-error window, a function that starts and stops
failing) is checked step by step against a small model of what the cache
must answer: the exact status of every read (or the function's error), and
that a served value is never older than the last invalidation of its key
("nothing wrong"): not even the value kept for stale-if-error.

The memory store's bound is set far above what a run stores, so nothing is
evicted and every status is exact; eviction has tests of its own.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from restflow.caching import ArgsKeyField, CacheStatus, KeyConstructor, cache_result
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.stores import ALL, on

TTL, STALE, IF_ERROR = 30, 20, 60
TENANTS, ITEMS = ("a", "b"), (1, 2, 3)

#: The data the cached functions read: a version per (tenant, item),
#: bumped by every change.
versions: dict[tuple[str, int], int] = {}

#: Set while the data source is down: the functions raise ``SourceDown``.
down = False


class SourceDown(Exception):
    pass


def read_source(tenant, item):
    if down:
        raise SourceDown(f"{tenant}/{item}")
    return (tenant, item, versions[tenant, item])


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


LIFETIMES = dict(ttl=TTL, stale_while_revalidate=STALE, stale_if_error=IF_ERROR)


@cache_result(**LIFETIMES, key_constructor=TenantKey)
def report(tenant, item):
    return read_source(tenant, item)


@cache_result(**LIFETIMES, key_constructor=TenantKey)
async def areport(tenant, item):
    await asyncio.sleep(0)  # a real suspension point
    return read_source(tenant, item)


@dataclass
class Model:
    """What the cache holds for each key: the value and when it was stored
    (on the engine clock), or nothing."""

    now: float = 0.0
    held: dict[tuple[str, int], tuple[tuple, float]] = field(default_factory=dict)

    def expected(self, key: tuple[str, int]) -> tuple[CacheStatus, tuple] | None:
        """The status and value a read of ``key`` must be served now;
        ``None``: the function's error must be raised."""
        current = None if down else (*key, versions[key])
        if key not in self.held:
            return None if down else (CacheStatus.MISS, current)
        value, stored_at = self.held[key]
        age = self.now - stored_at
        if age < TTL:
            return CacheStatus.HIT, value
        if age < TTL + STALE:
            return CacheStatus.STALE, value
        if down:
            # Kept for stale-if-error until that window ends too.
            return (CacheStatus.STALE, value) if age < TTL + STALE + IF_ERROR else None
        return CacheStatus.MISS, current

    def served(self, key: tuple[str, int], status: CacheStatus) -> None:
        """What the read leaves in the cache: a miss stores the current
        value; a stale read's background refresh stores it too, unless the
        source is down (then the stale value stays, as stored)."""
        if status in (CacheStatus.MISS, CacheStatus.STALE) and not down:
            self.held[key] = ((*key, versions[key]), self.now)

    def invalidate(self, keys) -> None:
        for key in list(keys):
            self.held.pop(key, None)


def run_model(seed: int, read, invalidate_key, invalidate_tenant, invalidate_all, steps=250):
    """Runs ``steps`` seeded operations through the given callables and
    checks each read against the model."""
    global down
    rng = random.Random(seed)
    model = Model()
    down = False
    versions.clear()
    versions.update({(t, i): 0 for t in TENANTS for i in ITEMS})
    with frozen_clock() as clock:
        for step in range(steps):
            op = rng.random()
            key = (rng.choice(TENANTS), rng.choice(ITEMS))
            where = f"seed {seed}, step {step}: read {key}"
            if op < 0.5:
                expected = model.expected(key)
                if expected is None:
                    with pytest.raises(SourceDown):
                        read(*key)
                    wait_for_refreshes()
                    continue
                value, meta = read(*key)
                wait_for_refreshes()
                assert (meta["cache_status"], value) == expected, where
                model.served(key, expected[0])
            elif op < 0.6:
                down = not down
            elif op < 0.85:
                versions[key] += 1
                how = rng.choice(("key", "tenant", "all"))
                if how == "key":
                    invalidate_key(*key)
                    model.invalidate([key])
                elif how == "tenant":
                    invalidate_tenant(key[0])
                    model.invalidate(k for k in model.held if k[0] == key[0])
                else:
                    invalidate_all()
                    model.invalidate(list(model.held))
            else:
                seconds = rng.choice((1, 5, 10, 25, 40, 70))
                clock.advance(seconds)
                model.now += seconds


@pytest.mark.parametrize("seed", range(1, 7))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_sync_reads_follow_the_model(store, seed):
    with store.configured(MAX_ENTRIES=100_000):
        run_model(
            seed,
            report.get_with_metadata,
            report.delete_cache,
            report.delete_by_prefix,
            report.invalidate_all,
        )


@pytest.mark.parametrize("seed", range(7, 13))
@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_reads_through_the_near_cache_follow_the_model(store, seed):
    """This process's own invalidations reach its near cache before the
    call that made them returns."""
    with store.configured(NEAR_CACHE=True):
        run_model(
            seed,
            report.get_with_metadata,
            report.delete_cache,
            report.delete_by_prefix,
            report.invalidate_all,
        )


#: Each store, and the Redis servers again with the event loop's own
#: sockets off (every lookup on a worker thread).
ASYNC_CONFIGS = [(kind, {}) for kind in ALL] + [
    (kind, {"LOOP_SOCKET": False}) for kind in on("redis")
]


@pytest.mark.parametrize("seed", range(13, 19))
@pytest.mark.parametrize(("store", "options"), ASYNC_CONFIGS, indirect=["store"])
def test_async_reads_follow_the_model(store, options, seed):
    loop = asyncio.new_event_loop()

    def on_loop(method):
        return lambda *args: loop.run_until_complete(method(*args))

    async def read(*key):
        served = await areport.aget_with_metadata(*key)
        # A stale read's refresh runs as a task on this loop: let it end
        # before the model reads the next step.
        await wait_for_async_refreshes()
        return served

    try:
        with store.configured(MAX_ENTRIES=100_000, **options):
            run_model(
                seed,
                on_loop(read),
                on_loop(areport.adelete_cache),
                on_loop(areport.adelete_by_prefix),
                on_loop(areport.ainvalidate_all),
            )
    finally:
        loop.close()
