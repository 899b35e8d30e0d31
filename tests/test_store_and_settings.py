"""The memory store's bound, settings, the testing helpers and fork safety."""

import ast
import gc
import os
import subprocess
import sys
import threading
import weakref
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from restflow import _engine
from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from restflow.caching.settings import cache_settings
from restflow.caching.testing import clear_caches, frozen_clock, wait_for_refreshes
from tests.stores import DJANGO_CACHES, on


class Payload:
    """A value that can be weakly referenced, to watch it being freed."""

    def __init__(self, n):
        self.n = n


def test_max_entries_bounds_the_store_and_frees_evicted_values():
    bound = 200
    refs = []

    @cache_result(ttl=600)
    def make(n):
        payload = Payload(n)
        refs.append(weakref.ref(payload))
        return payload

    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"MAX_ENTRIES": bound}}):
        for n in range(bound * 10):
            make(n)
            assert _engine.entry_count() <= bound
        assert _engine.max_entries() <= bound
        gc.collect()
        alive = sum(1 for ref in refs if ref() is not None)
        # Exactly the stored values are alive: evicted ones were released.
        assert alive == _engine.entry_count()
        assert 0 < alive <= bound
    assert _engine.max_entries() == 10_000


def test_clear_caches_releases_every_value():
    @cache_result(ttl=600)
    def make(n):
        return Payload(n)

    refs = [weakref.ref(make(n)) for n in range(10)]
    assert clear_caches() == 10  # the conftest emptied the cache before the test
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert make.get_cache_only(1) is CACHE_MISSING


@pytest.mark.parametrize(
    ("cache_settings_value", "match"),
    [
        ({"NOPE": 1}, "Unknown .*NOPE.*Allowed keys: .*MAX_ENTRIES.*STALE_WHILE_REVALIDATE"),
        ({"MAX_ENTRIES": 0}, "MAX_ENTRIES.*int >= 1"),
        ({"MAX_ENTRIES": "10"}, "MAX_ENTRIES.*int >= 1"),
        ({"STALE_WHILE_REVALIDATE": -1}, "STALE_WHILE_REVALIDATE"),
        ({"STALE_WHILE_REVALIDATE": "soon"}, "STALE_WHILE_REVALIDATE"),
        # Past what the engine's integers hold: said, not "int too big to convert".
        ({"MAX_ENTRIES": 2**64}, r"MAX_ENTRIES.*int >= 1 \(at most 18446744073709551615\)"),
        ({"MAX_KEY_PART_LENGTH": 2**64}, r"MAX_KEY_PART_LENGTH.*at most 18446744073709551615"),
        ({"POOL_SIZE": 2**32}, r"POOL_SIZE.*int >= 1 \(at most 4294967295\)"),
        ({"NEAR_CACHE": 2**64}, r"NEAR_CACHE.*at most 18446744073709551615"),
        # Past a day is a unit mistake; past ~1.8e19 s the engine panicked.
        (
            {"BACKEND": "redis://127.0.0.1:1/0", "LOCK_TIMEOUT": 1e30},
            r"LOCK_TIMEOUT.*in seconds and must be at most 86400",
        ),
        ({"READ_TIMEOUT": 100_000}, r"READ_TIMEOUT.*in seconds and must be at most 86400"),
        # A Redis URL that does not parse names the setting, not a server's "garbage".
        (
            {"BACKEND": "redis://"},
            r'\["BACKEND"\] \'redis://\' cannot be used: '
            r'bad Redis URL "redis://": Missing hostname',
        ),
        (
            {"BACKEND": "redis+sentinel://h:1"},
            r'\["BACKEND"\] \'redis\+sentinel://h:1\' cannot be used: bad Redis Sentinel URL '
            r'"redis\+sentinel://h:1": no service name',
        ),
    ],
)
def test_bad_settings_raise_improperly_configured(cache_settings_value, match):
    @cache_result(ttl=60)
    def f(x):
        return x

    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": cache_settings_value}):
        with pytest.raises(ImproperlyConfigured, match=match):
            f(1)
    assert f(1) == 1  # valid again once the override ends


def test_a_backend_parameter_that_does_not_parse_is_a_value_error_naming_it():
    @cache_result(ttl=60, backend="redis://")
    def f(x):
        return x

    with pytest.raises(
        ValueError,
        match=r"backend= 'redis://' cannot be used: bad Redis URL \"redis://\": Missing hostname",
    ):
        f(1)


def test_settings_follow_override_settings():
    @cache_result(ttl=10)
    def f(x):
        return x

    window = {"CACHE_SETTINGS": {"STALE_WHILE_REVALIDATE": timedelta(seconds=30)}}
    with override_settings(RESTFLOW_SETTINGS=window), frozen_clock() as clock:
        assert cache_settings()["STALE_WHILE_REVALIDATE"] == 30
        f(1)
        clock.advance(20)
        assert f.get_with_metadata(1)[1]["cache_status"] is CacheStatus.STALE
        wait_for_refreshes()
    assert cache_settings()["STALE_WHILE_REVALIDATE"] == 60


def test_defaults_apply_outside_django():
    script = (
        "from restflow.caching import cache_result\n"
        "from restflow.caching.settings import cache_settings\n"
        "@cache_result(ttl=1)\n"
        "def f(x): return x\n"
        "assert f(2) == 2\n"
        "print(cache_settings())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    from restflow.caching.settings import DEFAULTS

    printed = ast.literal_eval(out.stdout.strip())
    assert printed == {
        **DEFAULTS,
        "STALE_WHILE_REVALIDATE": 0.0,
        "STALE_IF_ERROR": 0.0,
        "CONNECT_TIMEOUT": 0.5,
        "READ_TIMEOUT": 0.1,
        "LOCK_TIMEOUT": 10.0,
    }


def test_frozen_clock_helpers():
    moment = datetime(2030, 1, 1, tzinfo=UTC)

    @cache_result(ttl=5)
    def f(x):
        return x

    with frozen_clock(moment) as clock:
        assert clock.now() == moment
        _, meta = f.get_with_metadata(1)
        assert meta["cached_at"] == "2030-01-01T00:00:00+00:00"
        assert meta["reset_at"] == "2030-01-01T00:00:05+00:00"
        assert clock.advance(timedelta(seconds=1.5)) == moment + timedelta(seconds=1.5)
        _, meta = f.get_with_metadata(2)
        assert meta["cached_at"] == "2030-01-01T00:00:01.500000+00:00"
        clock.set(datetime(2031, 1, 1, tzinfo=UTC))
        assert clock.now().year == 2031
        with pytest.raises(ValueError, match="aware"):
            clock.set(datetime(2031, 1, 1))
    assert not _engine.clock_is_frozen()
    with pytest.raises(ValueError, match="forward"):
        _engine.advance_clock(-1)


def test_freezing_the_clock_at_nan_is_refused():
    """NaN froze the clock at the epoch, silently."""
    _engine.freeze_clock(100.0)
    try:
        with pytest.raises(
            ValueError, match="freeze the clock at a number of seconds since the epoch, got NaN"
        ):
            _engine.freeze_clock(float("nan"))
        assert _engine.now() == 100.0
    finally:
        _engine.unfreeze_clock()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_forked_after_first_use_works():
    calls = []

    @cache_result(ttl=10, stale_while_revalidate=60)
    def payload(x):
        calls.append(x)
        return len(calls)

    with frozen_clock() as clock:
        payload(1)
        clock.advance(11)
        payload(1)  # starts the refresh workers in the parent
        wait_for_refreshes()
        clock.advance(11)
        pid = os.fork()
        if pid == 0:  # the child: fresh workers, the parent's entries kept
            status = 1
            try:
                value, meta = payload.get_with_metadata(1)
                assert meta["cache_status"] is CacheStatus.STALE
                wait_for_refreshes(5)
                value2, meta2 = payload.get_with_metadata(1)
                assert meta2["cache_status"] is CacheStatus.HIT and value2 == value + 1
                assert payload(2) == value2 + 1
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("store", on("django", "redis"), indirect=True)
def test_threads_that_first_use_a_store_together_share_one_backend(store, monkeypatch):
    """Two threads whose first calls meet while the store's backend is being
    made both make one; before, each then used its own for its call (its own
    single-flight, pools and near cache), so one cold key had two leaders in
    one process (seen as tests/redis/test_cluster.py's cold-key test hanging:
    two callers polled the lock, and only six of eight followed)."""
    from restflow.caching import settings as restflow_settings

    both_making = threading.Barrier(2, timeout=30)
    made_by_settings = restflow_settings.signing_key

    def signing_key_once_both_make_a_backend():
        both_making.wait()
        return made_by_settings()

    @cache_result(ttl=60)
    def value(n):
        return n

    with store.configured():
        monkeypatch.setattr(restflow_settings, "signing_key", signing_key_once_both_make_a_backend)
        used = [None, None]

        def first_use(index):
            used[index] = value.shared_backend()

        threads = [threading.Thread(target=first_use, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        monkeypatch.undo()
        assert used[0] is not None
        assert used[0] is used[1]
        assert value.shared_backend() is used[0]


def test_a_backend_made_across_a_settings_change_is_not_kept_for_the_new_settings(monkeypatch):
    """A first call that is making its backend when the settings change
    (``override_settings``, ``reload()``) made it from the old settings; it
    must not be kept once the change emptied the engine's backends, or every
    later call would use the old store."""
    from restflow.caching import settings as restflow_settings

    making, go_on = threading.Event(), threading.Event()
    made_by_settings = restflow_settings.signing_key

    def signing_key_held_once():
        if threading.current_thread() is not threading.main_thread() and not making.is_set():
            making.set()
            assert go_on.wait(30)
        return made_by_settings()

    @cache_result(ttl=60)
    def value(n):
        return n

    old = {"CACHE_SETTINGS": {"BACKEND": "django:locmem"}}
    new = {"CACHE_SETTINGS": {"BACKEND": "django:default"}}
    with override_settings(CACHES=DJANGO_CACHES, RESTFLOW_SETTINGS=old):
        monkeypatch.setattr(restflow_settings, "signing_key", signing_key_held_once)
        thread = threading.Thread(target=value.shared_backend)
        thread.start()
        assert making.wait(30)
        with override_settings(RESTFLOW_SETTINGS=new):
            go_on.set()
            thread.join(30)
            assert value.shared_backend().url == "django:default"


def test_wait_for_refreshes_takes_any_timeout_and_refuses_nan():
    # An infinite timeout, or one too large for the engine's clock, waits
    # until the refreshes are done (both raised PanicException before);
    # NaN is no number of seconds: a clear ValueError.
    @cache_result(ttl=10, stale_while_revalidate=60)
    def doubled(n):
        return n * 2

    with frozen_clock() as clock:
        doubled(1)
        clock.advance(11)
        doubled(1)  # STALE: a refresh is queued, so the refresh pool runs
        wait_for_refreshes(float("inf"))
        assert _engine.wait_for_refreshes(1e300) is True
        assert doubled.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT
    with pytest.raises(ValueError, match="timeout must be a number of seconds, got NaN"):
        _engine.wait_for_refreshes(float("nan"))
