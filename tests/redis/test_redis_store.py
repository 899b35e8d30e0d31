"""The Redis store: shared entries, signatures, faults, and computing once
across processes (what every store does alike:
tests/test_store_contract.py). A real redis-server runs on a free
127.0.0.1 port for these tests (see conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow.caching import (
    CACHE_MISSING,
    CacheBackendError,
    CacheStatus,
    cache_result,
)
from tests.parking import wait_until
from tests.redis.conftest import redis_settings
from tests.test_store_contract import calls, profile
from tests.timeouts import PAUSED, PAUSED_CALL_LIMIT

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def test_entries_are_shared_with_other_processes(redis, redis_server):
    profile(7)
    script = (
        "import django\nfrom django.conf import settings\n"
        "settings.configure(SECRET_KEY='restflow-tests-only', "
        f"RESTFLOW_SETTINGS={redis_settings(redis_server.url)!r})\n"
        "django.setup()\n"
        "from tests.redis.test_redis_store import profile\n"
        "value, meta = profile.get_with_metadata(7)\n"
        "print(meta['cache_status'], value['n'])\n"
        "profile.invalidate_all()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["HIT", "1"]
    # ... and the other process's invalidate_all reached this one.
    assert profile.get_cache_only(7) is CACHE_MISSING


def test_a_flipped_byte_is_a_miss_never_an_unpickle(redis, tmp_path):
    profile(1)
    key = profile.get_cache_key(1)
    payload = bytearray(redis.get(key))
    payload[len(payload) // 2] ^= 0x01
    redis.set(key, bytes(payload))
    value, meta = profile.get_with_metadata(1)
    assert meta["cache_status"] is CacheStatus.MISS and value["n"] == 2
    # A foreign value that would run code if unpickled.
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    redis.set(key, evil)
    value, meta = profile.get_with_metadata(1)
    assert meta["cache_status"] is CacheStatus.MISS and value["n"] == 3
    assert not marker.exists()
    # The right header with a wrong signature is refused too.
    redis.set(key, b"RFC3" + b"\x00" * 100)
    assert status(profile, 1) is CacheStatus.MISS


def test_values_the_serializer_refuses_are_served_uncached(redis, caplog):
    @cache_result(ttl=30)
    def unpicklable(x):
        return lambda: x

    value = unpicklable(1)
    assert callable(value)
    assert unpicklable.get_cache_only(1) is CACHE_MISSING


def test_json_serializer(redis_server, redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, SERIALIZER="json")):
        profile(3)
        assert redis.get(profile.get_cache_key(3))[69:-32] == b'{"id": 3, "n": 1}'
        assert profile.get_with_metadata(3) == ({"id": 3, "n": 1}, profile.get_cached_metadata(3))


def test_killed_redis_bypasses_and_caching_resumes(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        profile(1)
        assert status(profile, 1) is CacheStatus.HIT
        own_redis.stop()
        statuses, errors = [], []

        def load():
            for _ in range(20):
                try:
                    statuses.append(status(profile, 1))
                except Exception as error:
                    errors.append(error)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert statuses == [CacheStatus.BYPASS] * (4 * 20)
        own_redis.start()
        # The breaker's cooldown is on the real clock (Instant): its probe
        # is polled for, a state and not a time.
        wait_until(
            lambda: status(profile, 1) is not CacheStatus.BYPASS, "caching resumed", every=0.1
        )
        assert status(profile, 1) is CacheStatus.HIT


def test_a_paused_redis_costs_at_most_the_timeouts(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, **PAUSED)):
        profile(1)
        own_redis.pause()
        try:
            started = time.monotonic()
            _, meta = profile.get_with_metadata(1)
            elapsed = time.monotonic() - started
        finally:
            own_redis.resume()
    assert meta["cache_status"] is CacheStatus.BYPASS
    # The read timeout (plus the live computation): never a hang.
    assert elapsed < PAUSED_CALL_LIMIT, elapsed


def test_failure_mode_raise(own_redis):
    own_redis.stop()
    with (
        override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url, FAILURE_MODE="raise")),
        pytest.raises(CacheBackendError),
    ):
        profile(1)
    assert calls == []


INT_REPLICAS = r'\["INVALIDATION_REPLICAS"\] must be an int >= 0 \(the replicas'
NO_REPLICAS = (
    r'\["INVALIDATION_REPLICAS"\] must be 0 with BACKEND .*: restflow waits for replicas '
    "only on Redis; got 1"
)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"BACKEND": "mysql://x"}, "BACKEND"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "SERIALIZER": "yaml"}, "SERIALIZER"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "FAILURE_MODE": "ignore"}, "FAILURE_MODE"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "READ_TIMEOUT": 0}, "READ_TIMEOUT"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "READ_SPIN": -1}, "READ_SPIN"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "READ_SPIN": 50}, "READ_SPIN.*in seconds"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "READ_SPIN": "fast"}, "READ_SPIN"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "LOOP_SOCKET": "yes"}, "LOOP_SOCKET"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "KEY_PREFIX": "a::b"}, "KEY_PREFIX"),
        ({"BACKEND": "redis://127.0.0.1:1/0", "POOL_SIZE": 0}, "POOL_SIZE"),
        *(
            ({"BACKEND": "redis://127.0.0.1:1/0", "INVALIDATION_REPLICAS": bad}, INT_REPLICAS)
            for bad in (-1, True, "1", 1.0, 2**32)
        ),
        *(
            ({"BACKEND": backend, "INVALIDATION_REPLICAS": 1}, NO_REPLICAS)
            for backend in ("django", "django:default")
        ),
    ],
)
def test_settings_validation(setting, match):
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": setting}):
        with pytest.raises(ImproperlyConfigured, match=match):
            profile(1)


def test_a_backend_parameter_without_replicas_to_wait_for_is_refused():
    """INVALIDATION_REPLICAS set for a Redis backend, and a function whose
    backend= is a Django cache: refused when the function is first used
    (the engine's check), saying which setting to change."""

    @cache_result(ttl=30, backend="django")
    def local(x):
        return x

    settings = redis_settings("redis://127.0.0.1:1/0", INVALIDATION_REPLICAS=1)
    with override_settings(RESTFLOW_SETTINGS=settings):
        with pytest.raises(ValueError) as refused:
            local(1)
    assert str(refused.value) == (
        "backend= 'django' cannot be used: invalidation_replicas must be 0 for \"django\": "
        "restflow waits for replicas only on Redis (redis://, rediss://, unix://, "
        "redis+sentinel://, redis+cluster://), not on a Django cache."
    )


def test_a_bad_backend_parameter_fails_at_decoration():
    with pytest.raises(ValueError, match="backend"):
        cache_result(backend="memcached://x")


def test_the_memory_backend_parameter_overrides_the_setting(redis):
    @cache_result(ttl=30, backend="memory")
    def local(x):
        return x

    local(1)
    assert redis.keys("*") == []


def worker(*args, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.redis.worker", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_together(processes):
    """Starts workers that each printed "ready" at once, with a "go" line."""
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()


def finish(process, timeout=60):
    [out] = finish_all([process], timeout)
    return out


def finish_all(processes, timeout=60):
    """Every worker's output, once all ended; a worker that failed or hung
    (killed at the deadline) fails the test with what every worker said,
    since the cause of a cross-process failure may be in another one."""
    deadline = time.monotonic() + timeout
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += f"\n(still running after {timeout} s: killed)"
        results.append((process.returncode, out, err))
    if any(code != 0 for code, _, _ in results):
        raise AssertionError(
            "\n".join(f"worker {n}: exit {c}\n{o}\n{e}" for n, (c, o, e) in enumerate(results))
        )
    return [out.strip() for _, out, _ in results]


def test_a_cold_key_computes_once_across_4_processes_of_8_threads(redis, redis_server):
    processes = [worker("cold", redis_server.url, 0, 60, 4) for _ in range(4)]
    start_together(processes)
    outputs = finish_all(processes)
    # The computation lasts until all 32 callers wait on it (tests/redis/worker.py):
    # in its process, or on the lock from the others. Every one reports MISS.
    # One assertion, so a failure shows what every caller was served too.
    statuses = [s for out in outputs for s in out.split(",")]
    assert (int(redis.get("computations")), statuses) == (1, ["MISS"] * 32)


def test_the_stale_refresh_runs_once_across_processes(redis, redis_server):
    frozen = time.time()
    assert finish(worker("prime", redis_server.url, 0, 10, frozen)) == "MISS"
    # LOCK_TIMEOUT 60 s: a loaded machine must not let a second process
    # claim the refresh the first one holds for the test.
    processes = [worker("stale", redis_server.url, 0, 60, frozen + 11) for _ in range(4)]
    start_together(processes)
    # The refresh one process claimed waits for "release": every read is STALE.
    outputs = [p.stdout.readline().strip() for p in processes]
    redis.set("release", 1)
    assert finish_all(processes) == [""] * 4
    assert [s for out in outputs for s in out.split(",")] == ["STALE"] * 20
    # One prime, one refresh: never one refresh per process.
    assert int(redis.get("computations")) == 2


def test_a_dead_lock_holder_is_taken_over_after_its_lock_expires(redis, redis_server):
    holder = worker("hold", redis_server.url, 30, 1)
    assert holder.stdout.readline().strip() == "computing"  # under the lock
    holder.kill()
    holder.wait(10)
    started = time.monotonic()
    status_and_pid = finish(worker("get", redis_server.url, 0, 1))
    waited = time.monotonic() - started
    status_word, pid = status_and_pid.split()
    assert status_word == "MISS"
    assert int(pid) != holder.pid
    assert int(redis.get("computations")) == 2
    # A hang guard (the wait is the holder's 1 s lock, plus a process's
    # start-up, which a loaded machine makes several seconds).
    assert waited < 30


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_forked_after_first_use_gets_its_own_connections(redis):
    profile(1)  # the parent's pool now holds a connection
    pid = os.fork()
    if pid == 0:
        status_code = 1
        try:
            assert status(profile, 1) is CacheStatus.HIT
            assert status(profile, 2) is CacheStatus.MISS
            status_code = 0
        finally:
            os._exit(status_code)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    # The parent's connections still work after the child used its own.
    assert status(profile, 1) is CacheStatus.HIT
    assert status(profile, 2) is CacheStatus.HIT
