"""Single-flight on misses and one background refresh per stale entry."""

import logging
import threading

import pytest

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.parking import wait_until_waiting


def run_threads(count, target, release=None):
    """Runs ``target`` on ``count`` threads; their results and errors.

    With ``release`` (an Event the computation waits on), it is set once
    all but one thread (the leader) wait on the leader's computation."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(target())
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    if release is not None:
        wait_until_waiting(count - 1)
        release.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return results, errors


def test_32_threads_on_a_cold_key_compute_once():
    calls = []
    release = threading.Event()

    @cache_result(ttl=60)
    def slow(x):
        calls.append(x)
        assert release.wait(30)  # in flight until the 31 others wait on it
        return {"x": x}

    results, errors = run_threads(32, lambda: slow.get_with_metadata(1), release)
    assert errors == []
    assert calls == [1]
    assert len(results) == 32
    assert all(value == {"x": 1} for value, _ in results)
    # Every caller that waited on the computation reports MISS.
    assert {meta["cache_status"] for _, meta in results} == {CacheStatus.MISS}
    assert len({meta["cached_at"] for _, meta in results}) == 1


def test_32_threads_on_a_raising_key_share_one_exception():
    calls = []
    release = threading.Event()

    class Boom(Exception):
        pass

    @cache_result(ttl=60)
    def failing(x):
        calls.append(x)
        assert release.wait(30)  # in flight until the 31 others wait on it
        raise Boom("backend down")

    results, errors = run_threads(32, lambda: failing(1), release)
    assert results == []
    assert len(errors) == 32
    assert all(isinstance(error, Boom) for error in errors)
    assert calls == [1]
    assert failing.get_cache_only(1) is CACHE_MISSING


def test_stale_window_under_16_threads_runs_one_refresh_and_nobody_waits():
    calls = []
    refresh_started, release_refresh = threading.Event(), threading.Event()

    @cache_result(ttl=10, stale_while_revalidate=60)
    def payload(x):
        calls.append(x)
        if len(calls) > 1:
            refresh_started.set()
            # The refresh blocks until every caller has returned: a caller
            # that waited on it would never return, and the test would fail.
            assert release_refresh.wait(30)
        return len(calls)

    with frozen_clock() as clock:
        assert payload(1) == 1
        clock.advance(11)
        results, errors = run_threads(16, lambda: payload.get_with_metadata(1))
        assert errors == []
        assert [value for value, _ in results] == [1] * 16
        assert {meta["cache_status"] for _, meta in results} == {CacheStatus.STALE}
        assert refresh_started.wait(10)
        release_refresh.set()
        wait_for_refreshes()
        assert calls == [1, 1]
        value, meta = payload.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)


def test_a_failed_background_refresh_keeps_the_old_value_and_logs(caplog):
    calls = []

    @cache_result(ttl=10, stale_while_revalidate=60)
    def payload(x):
        calls.append(x)
        if len(calls) > 1:
            raise RuntimeError("refresh failed")
        return "old"

    with frozen_clock() as clock, caplog.at_level(logging.ERROR, logger="restflow.caching"):
        payload(1)
        clock.advance(11)
        assert payload.get_with_metadata(1)[1]["cache_status"] is CacheStatus.STALE
        wait_for_refreshes()
        assert payload.get_with_metadata(1)[0] == "old"
        wait_for_refreshes()
    records = [r for r in caplog.records if r.name == "restflow.caching"]
    assert records, "the failure is logged"
    assert "background refresh" in records[0].getMessage()
    assert records[0].exc_info and records[0].exc_info[0] is RuntimeError
    # The claim was released, so the second stale read retried the refresh.
    assert len(calls) == 3


def test_past_the_stale_window_is_a_miss_computed_inline():
    calls = []

    @cache_result(ttl=10, stale_while_revalidate=5)
    def payload(x):
        calls.append(x)
        return len(calls)

    with frozen_clock() as clock:
        payload(1)
        clock.advance(15)
        value, meta = payload.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.MISS)


@pytest.mark.parametrize("workers", [8])
def test_distinct_keys_do_not_wait_on_each_other(workers):
    started = threading.Barrier(workers, timeout=10)

    @cache_result(ttl=60)
    def rendezvous(x):
        # Every computation waits for all the others: only possible if
        # different keys run at the same time.
        started.wait()
        return x

    results, errors = run_threads(workers, lambda: rendezvous(threading.get_ident()))
    assert errors == []
    assert len(results) == workers


def test_stale_if_error_serves_the_kept_value_on_the_memory_store():
    attempts = []

    @cache_result(ttl=10, stale_while_revalidate=5, stale_if_error=60)
    def flaky(x):
        attempts.append(x)
        if len(attempts) > 1:
            raise ConnectionError("upstream down")
        return "old"

    with frozen_clock() as clock:
        assert flaky(1) == "old"
        clock.advance(20)  # past ttl and stale window, inside stale-if-error
        value, meta = flaky.get_with_metadata(1)
        assert (value, meta["cache_status"]) == ("old", CacheStatus.STALE)
        clock.advance(60)  # past stale-if-error too: the error surfaces
        with pytest.raises(ConnectionError):
            flaky(1)
    assert len(attempts) == 3


def test_stale_if_error_setting_applies_to_functions_without_their_own():
    from django.test import override_settings

    attempts = []

    @cache_result(ttl=1)
    def flaky(x):
        attempts.append(x)
        if len(attempts) > 1:
            raise ConnectionError("upstream down")
        return "old"

    settings = {"CACHE_SETTINGS": {"STALE_IF_ERROR": 30}}
    with override_settings(RESTFLOW_SETTINGS=settings), frozen_clock() as clock:
        flaky(1)
        clock.advance(5)
        assert flaky.get_with_metadata(1)[1]["cache_status"] is CacheStatus.STALE
