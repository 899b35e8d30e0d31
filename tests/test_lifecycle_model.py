"""The lifecycle against a model of it, on every store, sync and async, in
one process and in two.

A seeded run of random operations (reads, data changes each followed by the
invalidation a rule would make, clock moves through the ttl and the stale
window and the stale-if-error window, a function that starts and stops
failing) is checked step by step against a small model of what the cache
must answer: the exact status of every read (or the function's error), and
that a served value is never older than the last invalidation of its key
("nothing wrong"): not even the value kept for stale-if-error.

Operations: reads, forced refreshes, peeks (``get_cache_only``,
``get_cached_metadata``), bypasses, data changes each followed by the
invalidation a rule would make (one key, a partition, the function), clock
moves, the source going down and up, and (for ``picky``) a policy that
starts and stops turning values away.

The memory store's bound is set far above what a run stores, so nothing is
evicted and every status is exact; eviction has tests of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.test import override_settings

from restflow import _engine
from restflow._engine import CacheBackendError
from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheStatus,
    KeyConstructor,
    cache_result,
)
from restflow.caching.asynchronous import wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.stores import ALL, Store, on

ROOT = Path(__file__).resolve().parents[1]

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


#: The ttl ``varying``'s callable ttl answers with now (seconds, or None:
#: never expires); the run changes it.
next_ttl: float | None = TTL


def chosen_ttl(value, *call):
    return next_ttl


VARYING = dict(ttl=chosen_ttl, stale_while_revalidate=STALE, stale_if_error=IF_ERROR)


@cache_result(**VARYING, key_constructor=TenantKey)
def varying(tenant, item):
    return read_source(tenant, item)


@cache_result(**VARYING, key_constructor=TenantKey)
async def avarying(tenant, item):
    await asyncio.sleep(0)
    return read_source(tenant, item)


Expected = tuple[CacheStatus, tuple] | None


@dataclass
class Model:
    """What the cache holds for each key: the value and when it was stored
    (on the engine clock), or nothing. ``policy``: whether the function
    turns some values away (``refused``)."""

    policy: bool
    #: Whether the function's ttl is ``next_ttl`` (``varying``), else TTL.
    varies: bool = False
    now: float = 0.0
    #: key -> (value, stored at, its ttl).
    held: dict[tuple[str, int], tuple[tuple, float, float | None]] = field(default_factory=dict)

    def phase(self, key) -> str | None:
        """Where ``key``'s entry is in its life: ``fresh``, ``stale``,
        ``kept`` (for stale-if-error), ``gone``; ``None`` without one."""
        if key not in self.held:
            return None
        _, stored_at, ttl = self.held[key]
        if ttl is None:
            return "fresh"
        age = self.now - stored_at
        if age < ttl:
            return "fresh"
        if age < ttl + STALE:
            return "stale"
        return "kept" if age < ttl + STALE + IF_ERROR else "gone"

    def expected(self, key: tuple[str, int]) -> Expected:
        """The status and value a read of ``key`` must be served now;
        ``None``: the function's error must be raised."""
        phase = self.phase(key)
        if phase == "fresh":
            return CacheStatus.HIT, self.held[key][0]
        if phase == "stale" or (phase == "kept" and down):
            return CacheStatus.STALE, self.held[key][0]
        return None if down else (CacheStatus.MISS, (*key, versions[key]))

    def peeked(self, key: tuple[str, int]) -> Expected:
        """What ``get_cached_metadata`` finds: a fresh or stale entry; an
        expired one (even kept for stale-if-error) is not served."""
        phase = self.phase(key)
        if phase == "fresh":
            return CacheStatus.HIT, self.held[key][0]
        return (CacheStatus.STALE, self.held[key][0]) if phase == "stale" else None

    def computed(self, key: tuple[str, int]) -> None:
        """The function ran for ``key`` (a miss, a stale read's background
        refresh, a forced refresh): its value replaces the entry, or, when
        the policy turns it away, the entry goes."""
        if down:
            return  # it raised: the entry stays as it was
        if self.policy and turning_away:
            self.held.pop(key, None)
        else:
            ttl = next_ttl if self.varies else TTL
            self.held[key] = ((*key, versions[key]), self.now, ttl)

    def invalidate(self, keys) -> None:
        for key in list(keys):
            self.held.pop(key, None)


@contextmanager
def new_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for one run's async calls, closed after it."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@dataclass
class SyncApi:
    """The wrapper's methods a run calls. ``near``: wait, before each call,
    until every change made before it reached this process's near cache."""

    wrapper: object
    near: bool = False

    def start(self, now: float) -> None:
        pass

    def advance(self, seconds: float) -> None:
        pass  # this process's clock is the one the run moves

    def call(self, name, *args):
        if self.near:
            assert self.wrapper.shared_backend().near_sync()
        return getattr(self.wrapper, name)(*args)


@dataclass
class AsyncApi(SyncApi):
    """An async wrapper's methods, each awaited on ``loop`` (and a stale
    read's background refresh, a task there, awaited too)."""

    loop: asyncio.AbstractEventLoop | None = None

    def call(self, name, *args):
        if self.near:
            assert self.wrapper.shared_backend().near_sync()

        async def called():
            try:
                return await getattr(self.wrapper, "a" + name)(*args)
            finally:
                await wait_for_async_refreshes()

        return self.loop.run_until_complete(called())


class PeerApi:
    """The same functions in a second process on the same shared store
    (tests/model_peer.py), called with this process's data and clock."""

    def __init__(
        self, function: str, settings: dict, near: bool = False, caches: dict | None = None
    ) -> None:
        self.function, self.near = function, near
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        extra = [json.dumps(caches)] if caches else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.model_peer", json.dumps(settings), *extra],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the peer process ended ({self.process.wait()})"
        return json.loads(line)

    def start(self, now: float) -> None:
        self.ask({"start": now})

    def advance(self, seconds: float) -> None:
        self.ask({"advance": seconds})

    def call(self, name, *args):
        data = {
            "versions": [[t, i, v] for (t, i), v in versions.items()],
            "down": down,
            "away": turning_away,
        }
        command = {"function": self.function, "call": name, "args": list(args)}
        answer = self.ask({**command, "data": data, "near_sync": self.near})
        if "raised" in answer:
            raise SourceDown(answer["raised"])
        if "missing" in answer:
            return CACHE_MISSING
        if "plain" in answer:
            return answer["plain"]
        if "metadata_status" in answer:
            return {"cache_status": CacheStatus(answer["metadata_status"])}
        if "status" in answer:
            return tuple(answer["value"]), {"cache_status": CacheStatus(answer["status"])}
        return tuple(answer["value"])

    def close(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


def run_model(
    seed: int,
    *apis,
    policy: bool = False,
    varies: bool = False,
    steps: int = 250,
    forks: Store | None = None,
    outages: object | None = None,
) -> None:
    """Runs ``steps`` seeded operations, each through one of ``apis`` (the
    processes, when there are several), and checks each answer against the
    model. ``forks``: now and then a child forked from this process makes a
    few reads of its own, checked against its copy of the model (``forks``
    is the store, whose entries the child's reads add to on Redis).
    ``outages``: the Redis server, which now and then stops (every call
    then runs the function live, BYPASS, and an invalidation raises) and
    starts again empty (restflow reconfigured, as after a deploy)."""
    global down, turning_away, next_ttl
    rng = random.Random(seed)
    model = Model(policy, varies)
    down = turning_away = store_down = False
    next_ttl = TTL
    versions.clear()
    versions.update({(t, i): 0 for t in TENANTS for i in ITEMS})
    # One process's statistics are checked step by step against the tally.
    counted = apis[0].wrapper if len(apis) == 1 else None
    tally = Tally()
    with frozen_clock() as clock:
        for api in apis:
            api.start(_engine.now())
        # Whatever an earlier test left on a long-lived store is not this
        # run's (the model starts empty).
        apis[0].call("invalidate_all")
        if counted is not None:
            counted.reset_stats()
        for step in range(steps):
            op = rng.random()
            key = (rng.choice(TENANTS), rng.choice(ITEMS))
            api = apis[0] if len(apis) == 1 else rng.choice(apis)
            if forks is not None and rng.random() < 0.03:
                keys = [(rng.choice(TENANTS), rng.choice(ITEMS)) for _ in range(4)]
                read_in_a_child(model, api, keys, where=f"seed {seed}, step {step}")
                # What the child stored, this process finds on Redis or
                # memcached (in LocMem the child's entries are its copy's).
                if forks.across_processes:
                    for key in keys:
                        expected = model.expected(key)
                        if expected is None or expected[0] is not CacheStatus.HIT:
                            model.computed(key)
            where = f"seed {seed}, step {step}: {key}"
            if outages is not None and rng.random() < 0.03:
                if store_down:
                    outages.start()
                    _engine.reconfigure()  # a closed breaker, new connections
                    model.held.clear()
                else:
                    outages.stop()
                store_down = not store_down
                continue
            if store_down and op < 0.6:
                # Reads, refreshes, peeks and bypasses with the store down:
                # the function runs live (its error raised), nothing is
                # read or kept.
                if 0.5 <= op < 0.58:
                    meta = api.call("get_cached_metadata", *key)
                    value = api.call("get_cache_only", *key)
                    assert (meta, value) == (None, CACHE_MISSING), f"peek {where}"
                    continue
                tally.ran("bypass")
                name = "refresh_with_metadata" if 0.45 <= op < 0.5 else "get_with_metadata"
                if 0.58 <= op:
                    name = "bypass_cache_with_metadata"
                check_call(api, name, key, live(CacheStatus.BYPASS, key), where)
                continue
            if op < 0.45:
                expected, phase = model.expected(key), model.phase(key)
                tally.read(phase, expected)
                check_call(api, "get_with_metadata", key, expected, where)
                wait_for_refreshes()
                if expected is None or expected[0] is not CacheStatus.HIT:
                    # A miss computes; a stale read refreshes in the
                    # background; a kept value's read computed and failed.
                    model.computed(key)
            elif op < 0.5:
                tally.ran("refresh")
                expected = live(CacheStatus.REFRESH, key)
                check_call(api, "refresh_with_metadata", key, expected, where)
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
                tally.ran("bypass")
                expected = live(CacheStatus.BYPASS, key)
                check_call(api, "bypass_cache_with_metadata", key, expected, where)
            elif op < 0.64:
                down = not down
            elif op < 0.68:
                turning_away = not turning_away
                next_ttl = rng.choice((0, 5, TTL, None))
            elif op < 0.87:
                versions[key] += 1
                how = rng.choice(("key", "tenant", "all"))
                if store_down:  # an invalidation that did not happen says so
                    calls = {"key": "delete_cache", "tenant": "delete_by_prefix"}
                    args = {"key": key, "tenant": key[:1], "all": ()}[how]
                    with pytest.raises(CacheBackendError):
                        api.call(calls.get(how, "invalidate_all"), *args)
                elif how == "key":
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
                for api in apis:
                    api.advance(seconds)
                model.now += seconds
            if counted is not None:
                assert tally.of(counted.counters()) == tally.counts, f"counters {where}"


def live(status: CacheStatus, key) -> Expected:
    """What a call that runs the function now answers: the current value
    as ``status``, or (``None``) the function's error while the source is
    down."""
    return None if down else (status, (*key, versions[key]))


def check_call(api, name: str, key, expected: Expected, where: str) -> None:
    """Calls ``name`` for ``key`` through ``api``: it must answer
    ``expected`` exactly (``None``: raise the function's error)."""
    if expected is None:
        with pytest.raises(SourceDown):
            api.call(name, *key)
        return
    value, meta = api.call(name, *key)
    assert (meta["cache_status"], value) == expected, f"{name} {where}"


class Tally:
    """The statistics a run must have counted (README, Observability): a
    status for each call that served a value, a computation for each run
    of the function, an error for each that raised, and how stale values
    came to be served."""

    NAMES = (
        "hit",
        "miss",
        "stale",
        "bypass",
        "refresh",
        "computations",
        "errors",
        "stale_if_error",
        "background_refreshes",
    )

    def __init__(self) -> None:
        self.counts = dict.fromkeys(self.NAMES, 0)

    def of(self, counters: dict) -> dict:
        return {name: counters[name] for name in self.NAMES}

    def ran(self, status: str) -> None:
        """The function ran for a call answered ``status`` (its error
        raised instead while the source is down)."""
        self.counts["computations"] += 1
        self.counts["errors" if down else status] += 1

    def read(self, phase: str | None, expected: Expected) -> None:
        counts = self.counts
        if phase == "fresh":
            counts["hit"] += 1
        elif phase == "stale":  # served, and refreshed in the background
            counts["stale"] += 1
            counts["background_refreshes"] += 1
            counts["computations"] += 1
            counts["errors"] += down
        elif expected is not None and expected[0] is CacheStatus.STALE:  # kept for it
            counts["stale"] += 1
            counts["stale_if_error"] += 1
            counts["computations"] += 1
            counts["errors"] += 1
        else:
            self.ran("miss")


def read_in_a_child(model: Model, api, keys, where: str) -> None:
    """Forks; the child reads ``keys`` through ``api``, checking each answer
    against its copy of ``model``, and exits 0 only if every one matched."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            for key in keys:
                expected = model.expected(key)
                if expected is None:
                    try:
                        api.call("get_with_metadata", *key)
                    except SourceDown:
                        pass
                    else:
                        raise AssertionError(f"{key} did not raise")
                else:
                    value, meta = api.call("get_with_metadata", *key)
                    assert (meta["cache_status"], value) == expected, f"{key}: {meta}, {value}"
                wait_for_refreshes()
                if expected is None or expected[0] is not CacheStatus.HIT:
                    model.computed(key)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"{where}: the forked child's reads (stderr)"


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
        run_model(seed, SyncApi(report, near=True))


#: Each store, and the Redis servers again with the event loop's own
#: sockets off (every lookup on a worker thread) and with a near cache.
ASYNC_CONFIGS = [
    *[(kind, {}) for kind in ALL],
    *[(kind, {"LOOP_SOCKET": False}) for kind in on("redis")],
    *[(kind, {"NEAR_CACHE": True}) for kind in on("redis")],
]


@pytest.mark.parametrize("seed", range(13, 19))
@pytest.mark.parametrize(("store", "options"), ASYNC_CONFIGS, indirect=["store"])
def test_async_calls_follow_the_model(store, options, seed):
    with store.configured(MAX_ENTRIES=100_000, **options), new_loop() as loop:
        run_model(seed, AsyncApi(areport, near=bool(options.get("NEAR_CACHE")), loop=loop))


@pytest.mark.parametrize("seed", range(19, 23))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_an_async_policy_that_turns_values_away_follows_the_model(store, seed):
    with store.configured(MAX_ENTRIES=100_000), new_loop() as loop:
        run_model(seed, AsyncApi(apicky, loop=loop), policy=True, steps=500)


@pytest.mark.parametrize("seed", range(23, 27))
@pytest.mark.parametrize("near", [False, True], ids=["store", "near"])
@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_two_processes_follow_the_model(store, near, seed):
    """Each operation in one of two processes on one Redis store: what one
    stores, invalidates or refreshes, the other sees, also through the near
    caches of both."""
    settings = store.settings(NEAR_CACHE=near)
    peer = PeerApi("report", settings, near=near)
    try:
        with override_settings(RESTFLOW_SETTINGS=settings):
            run_model(seed, SyncApi(report, near=near), peer)
    finally:
        peer.close()


@pytest.mark.parametrize("seed", range(27, 31))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_a_ttl_chosen_per_value_follows_the_model(store, seed):
    """A callable ttl answering 0 (stored, never fresh), 5, 30 or None (never
    expires), changing as the run goes."""
    with store.configured(MAX_ENTRIES=100_000):
        run_model(seed, SyncApi(varying), varies=True, steps=400)


@pytest.mark.parametrize("seed", range(31, 35))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_an_async_ttl_chosen_per_value_follows_the_model(store, seed):
    with store.configured(MAX_ENTRIES=100_000), new_loop() as loop:
        run_model(seed, AsyncApi(avarying, loop=loop), varies=True, steps=400)


@pytest.mark.parametrize("seed", range(35, 39))
@pytest.mark.parametrize("store", ALL, indirect=True)
def test_children_forked_mid_run_follow_the_model(store, seed):
    """A child forked between any two steps serves what its parent's cache
    holds (the memory store's and LocMem's entries copied; Redis's,
    shared), with a refresh worker and connections of its own."""
    with store.configured(MAX_ENTRIES=100_000):
        run_model(seed, SyncApi(report), forks=store, steps=400)


@pytest.mark.parametrize("seed", range(39, 43))
@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_children_forked_from_a_process_with_a_near_cache_follow_the_model(store, seed):
    """The child inherits its parent's near cache mid-run: it may serve
    those entries only while its own invalidation channel says they hold."""
    with store.configured(NEAR_CACHE=True):
        run_model(seed, SyncApi(report, near=True), forks=store, steps=400)


@pytest.mark.parametrize("seed", range(43, 47))
def test_two_processes_on_a_django_file_cache_follow_the_model(tmp_path, seed):
    """Two processes sharing a Django FileBasedCache (the Django store's
    locks are the cache's ``add``, its counters ``incr``)."""
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "files": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        },
    }
    settings = {"CACHE_SETTINGS": {"BACKEND": "django:files"}}
    peer = PeerApi("report", settings, caches=caches)
    try:
        with override_settings(CACHES=caches, RESTFLOW_SETTINGS=settings):
            run_model(seed, SyncApi(report), peer)
    finally:
        peer.close()
