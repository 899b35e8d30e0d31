"""Keys and values on Redis (issue 10, items 12 and 17): zones and folds
keep entries apart across processes' key strings, and an interrupt raised
while a value is (un)pickled reaches the caller."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result

WINTER = (2026, 1, 15, 12, 0)
calls: list = []


@cache_result(ttl=30)
def zone_of(moment):
    calls.append(moment)
    return moment.tzname(), moment.fold


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (datetime(*WINTER, tzinfo=UTC), datetime(*WINTER, tzinfo=ZoneInfo("Europe/London"))),
        (datetime(*WINTER, tzinfo=UTC), datetime(*WINTER, tzinfo=timezone(timedelta(0), "GMT"))),
        (datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 1, 30, fold=1)),
        (time(1), time(1, tzinfo=ZoneInfo("Europe/London"))),
    ],
    ids=["utc-london", "utc-gmt", "fold", "time-zone"],
)
def test_datetimes_that_print_alike_are_different_entries(redis, left, right):
    assert zone_of(left) == (left.tzname(), left.fold)
    assert zone_of(right) == (right.tzname(), right.fold)
    assert calls == [left, right]
    assert redis.exists(zone_of.get_cache_key(left), zone_of.get_cache_key(right)) == 2
    # Each is served its own value later, from Redis.
    assert zone_of.get_with_metadata(left) == (
        (left.tzname(), left.fold),
        zone_of.get_cached_metadata(left),
    )
    assert zone_of(right) == (right.tzname(), right.fold)
    assert status(zone_of, left) is status(zone_of, right) is CacheStatus.HIT
    assert len(calls) == 2


class InterruptsWhenPickled:
    """A value whose pickling is interrupted (Ctrl-C while it is written)."""

    def __reduce__(self):
        raise KeyboardInterrupt


def _interrupt():
    raise KeyboardInterrupt


class InterruptsWhenUnpickled:
    """A value whose unpickling is interrupted (Ctrl-C while it is read)."""

    def __reduce__(self):
        return (_interrupt, ())


def test_an_interrupt_while_pickling_reaches_the_caller(redis):
    @cache_result(ttl=30)
    def make(x):
        calls.append(x)
        return InterruptsWhenPickled()

    with pytest.raises(KeyboardInterrupt):
        make(1)
    assert calls == [1]
    assert make.get_cache_only(1) is CACHE_MISSING
    # A refresh stores too: the same.
    with pytest.raises(KeyboardInterrupt):
        make.refresh(1)


def test_an_interrupt_while_unpickling_reaches_the_caller_and_keeps_the_entry(redis):
    @cache_result(ttl=30)
    def make(x):
        calls.append(x)
        return InterruptsWhenUnpickled()

    make(1)  # stored: pickling it works, loading it raises
    key = make.get_cache_key(1)
    assert redis.exists(key)
    with pytest.raises(KeyboardInterrupt):
        make(1)
    with pytest.raises(KeyboardInterrupt):
        make.get_cache_only(1)
    # Interrupted, not corrupt: the entry stays and nothing was recomputed.
    assert redis.exists(key) and calls == [1]
