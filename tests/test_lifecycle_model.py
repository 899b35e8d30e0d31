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

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheStatus,
    KeyConstructor,
    cache_result,
)
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


#: Set while ``picky``'s policy turns every value away (served, not stored).
turning_away = False


def refused(value, *call) -> bool:
    return turning_away


@cache_result(**LIFETIMES, key_constructor=TenantKey)
def report(tenant, item):
    return read_source(tenant, item)


@cache_result(**LIFETIMES, key_constructor=TenantKey)
async def areport(tenant, item):
    await asyncio.sleep(0)  # a real suspension point
    return read_source(tenant, item)


@cache_result(**LIFETIMES, key_constructor=TenantKey, cache_unless=refused)
def picky(tenant, item):
    return read_source(tenant, item)


@cache_result(**LIFETIMES, key_constructor=TenantKey, cache_unless=refused)
async def apicky(tenant, item):
    await asyncio.sleep(0)
    return read_source(tenant, item)


Expected = tuple[CacheStatus, tuple] | None


@dataclass
class Model:
    """What the cache holds for each key: the value and when it was stored
    (on the engine clock), or nothing. ``policy``: whether the function
    turns some values away (``refused``)."""

    policy: bool
    now: float = 0.0
    held: dict[tuple[str, int], tuple[tuple, float]] = field(default_factory=dict)

    def age(self, key) -> float | None:
        return None if key not in self.held else self.now - self.held[key][1]

    def expected(self, key: tuple[str, int]) -> Expected:
        """The status and value a read of ``key`` must be served now;
        ``None``: the function's error must be raised."""
        age = self.age(key)
        if age is not None and age < TTL:
            return CacheStatus.HIT, self.held[key][0]
        if age is not None and age < TTL + STALE:
            return CacheStatus.STALE, self.held[key][0]
        if down:
            # Kept for stale-if-error until that window ends too.
            if age is not None and age < TTL + STALE + IF_ERROR:
                return CacheStatus.STALE, self.held[key][0]
            return None
        return CacheStatus.MISS, (*key, versions[key])

    def peeked(self, key: tuple[str, int]) -> Expected:
        """What ``get_cached_metadata`` finds: a fresh or stale entry; an
        expired one (even kept for stale-if-error) is not served."""
        age = self.age(key)
        if age is None or age >= TTL + STALE:
            return None
        status = CacheStatus.HIT if age < TTL else CacheStatus.STALE
        return status, self.held[key][0]

    def computed(self, key: tuple[str, int]) -> None:
        """The function ran for ``key`` (a miss, a stale read's background
        refresh, a forced refresh): its value replaces the entry, or, when
        the policy turns it away, the entry goes."""
        if down:
            return  # it raised: the entry stays as it was
        if self.policy and turning_away:
            self.held.pop(key, None)
        else:
            self.held[key] = ((*key, versions[key]), self.now)

    def invalidate(self, keys) -> None:
        for key in list(keys):
            self.held.pop(key, None)


@dataclass
class SyncApi:
    """The wrapper's methods a run calls."""

    wrapper: object

    def call(self, name, *args):
        return getattr(self.wrapper, name)(*args)


@dataclass
class AsyncApi:
    """An async wrapper's methods, each awaited on ``loop`` (and a stale
    read's background refresh, a task there, awaited too)."""

    wrapper: object
    loop: asyncio.AbstractEventLoop

    def call(self, name, *args):
        async def called():
            try:
                if name == "get_cache_key":
                    return self.wrapper.get_cache_key(*args)
                return await getattr(self.wrapper, "a" + name)(*args)
            finally:
                await wait_for_async_refreshes()

        return self.loop.run_until_complete(called())


def run_model(seed: int, api, policy: bool = False, steps: int = 250) -> None:
    """Runs ``steps`` seeded operations through ``api`` and checks each
    answer against the model."""
    global down, turning_away
    rng = random.Random(seed)
    model = Model(policy)
    down = turning_away = False
    versions.clear()
    versions.update({(t, i): 0 for t in TENANTS for i in ITEMS})
    with frozen_clock() as clock:
        for step in range(steps):
            op = rng.random()
            key = (rng.choice(TENANTS), rng.choice(ITEMS))
            where = f"seed {seed}, step {step}: {key}"
            if op < 0.45:
                expected = model.expected(key)
                if expected is None:
                    with pytest.raises(SourceDown):
                        api.call("get_with_metadata", *key)
                else:
                    value, meta = api.call("get_with_metadata", *key)
                    assert (meta["cache_status"], value) == expected, f"read {where}"
                wait_for_refreshes()
                if expected is None or expected[0] is not CacheStatus.HIT:
                    # A miss computes; a stale read refreshes in the
                    # background; a kept value's read computed and failed.
                    model.computed(key)
            elif op < 0.5:
                if down:
                    with pytest.raises(SourceDown):
                        api.call("refresh_with_metadata", *key)
                else:
                    value, meta = api.call("refresh_with_metadata", *key)
                    expected = (CacheStatus.REFRESH, (*key, versions[key]))
                    assert (meta["cache_status"], value) == expected, f"refresh {where}"
                    model.computed(key)
            elif op < 0.58:
                peeked = model.peeked(key)
                meta = api.call("get_cached_metadata", *key)
                value = api.call("get_cache_only", *key)
                if peeked is None:
                    assert (meta, value) == (None, CACHE_MISSING), f"peek {where}"
                else:
                    assert (meta["cache_status"], value) == peeked, f"peek {where}"
            elif op < 0.6:
                if down:
                    with pytest.raises(SourceDown):
                        api.call("bypass_cache_with_metadata", *key)
                else:
                    value, meta = api.call("bypass_cache_with_metadata", *key)
                    expected = (CacheStatus.BYPASS, (*key, versions[key]))
                    assert (meta["cache_status"], value) == expected, f"bypass {where}"
            elif op < 0.64:
                down = not down
            elif op < 0.68:
                turning_away = not turning_away
            elif op < 0.87:
                versions[key] += 1
                how = rng.choice(("key", "tenant", "all"))
                if how == "key":
                    api.call("delete_cache", *key)
                    model.invalidate([key])
                elif how == "tenant":
                    api.call("delete_by_prefix", key[0])
                    model.invalidate(k for k in model.held if k[0] == key[0])
                else:
                    api.call("invalidate_all")
                    model.invalidate(list(model.held))
            else:
                seconds = rng.choice((1, 5, 10, 25, 40, 70))
                clock.advance(seconds)
                model.now += seconds


@pytest.mark.parametrize("seed", range(1, 7))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_sync_calls_follow_the_model(store, seed):
    with store.configured(MAX_ENTRIES=100_000):
        run_model(seed, SyncApi(report))


@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_a_policy_that_turns_values_away_follows_the_model(store, seed):
    with store.configured(MAX_ENTRIES=100_000):
        run_model(seed, SyncApi(picky), policy=True, steps=500)


@pytest.mark.parametrize("seed", range(7, 13))
@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_calls_through_the_near_cache_follow_the_model(store, seed):
    """This process's own invalidations reach its near cache before the
    call that made them returns."""
    with store.configured(NEAR_CACHE=True):
        run_model(seed, SyncApi(report))


#: Each store, and the Redis servers again with the event loop's own
#: sockets off (every lookup on a worker thread).
ASYNC_CONFIGS = [(kind, {}) for kind in ALL] + [
    (kind, {"LOOP_SOCKET": False}) for kind in on("redis")
]


@pytest.mark.parametrize("seed", range(13, 19))
@pytest.mark.parametrize(("store", "options"), ASYNC_CONFIGS, indirect=["store"])
def test_async_calls_follow_the_model(store, options, seed):
    loop = asyncio.new_event_loop()
    try:
        with store.configured(MAX_ENTRIES=100_000, **options):
            run_model(seed, AsyncApi(areport, loop))
    finally:
        loop.close()


@pytest.mark.parametrize("seed", range(19, 23))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_an_async_policy_that_turns_values_away_follows_the_model(store, seed):
    loop = asyncio.new_event_loop()
    try:
        with store.configured(MAX_ENTRIES=100_000):
            run_model(seed, AsyncApi(apicky, loop), policy=True, steps=500)
    finally:
        loop.close()
