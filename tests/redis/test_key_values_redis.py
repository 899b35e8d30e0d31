"""Keys and values on Redis (issue 10, items 12, 13 and 17): zones and folds
keep entries apart in the store, SERIALIZER="json" stores a value exactly or
not at all, and an interrupt raised while a value is (un)pickled reaches the
caller."""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from tests.interrupting_values import (
    check_an_interrupt_while_pickling_reaches_the_caller,
    check_an_interrupt_while_unpickling_reaches_the_caller,
    check_an_interrupted_recompute_is_not_answered_with_the_stale_value,
)
from tests.redis.conftest import redis_settings

WINTER = (2026, 1, 15, 12, 0)
calls: list = []


class Tier(enum.IntEnum):
    GOLD = 1


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


def test_an_interrupt_while_pickling_reaches_the_caller(redis):
    check_an_interrupt_while_pickling_reaches_the_caller()


def test_an_interrupt_while_unpickling_reaches_the_caller_and_keeps_the_entry(redis):
    check_an_interrupt_while_unpickling_reaches_the_caller(redis.exists)


# -- item 13: SERIALIZER="json" stores a value exactly, or not at all ----------

# Values JSON would hand back changed (a tuple as a list, int keys as
# strings) or cannot write at all; the path is what the log names.
UNFAITHFUL = [
    ((1, 2), "the value", "builtins.tuple"),
    ({"rows": [(1, "a")]}, "the value['rows'][0]", "builtins.tuple"),
    ({1: "one"}, "a key of the value", "builtins.int"),
    ({None: 1}, "a key of the value", "builtins.NoneType"),
    ({"tags": {"a"}}, "the value['tags']", "builtins.set"),
    ([Decimal("1.10")], "the value[0]", "decimal.Decimal"),
    ({"at": datetime(*WINTER, tzinfo=UTC)}, "the value['at']", "datetime.datetime"),
    (b"raw", "the value", "builtins.bytes"),
    (OrderedDict(a=1), "the value", "collections.OrderedDict"),
    (Tier.GOLD, "the value", "Tier"),
]


def json_records(caplog):
    return [r for r in caplog.records if r.name == "restflow.caching" and "json" in r.message]


@pytest.mark.parametrize(
    ("value", "path", "kind"), UNFAITHFUL, ids=[repr(v[0])[:30] for v in UNFAITHFUL]
)
def test_json_refuses_a_value_it_would_change_and_logs_once(
    redis_server, redis, caplog, value, path, kind
):
    @cache_result(ttl=30)
    def give(n):
        calls.append(n)
        return value

    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, SERIALIZER="json")):
        with caplog.at_level(logging.ERROR, logger="restflow.caching"):
            for n in (1, 1, 2):
                got, meta = give.get_with_metadata(n)
                # What the function returned, never a JSON look-alike.
                assert got is value and meta["cache_status"] is CacheStatus.MISS
        assert calls == [1, 1, 2]
        assert give.get_cache_only(1) is CACHE_MISSING
        assert not redis.exists(give.get_cache_key(1))
    records = json_records(caplog)
    assert len(records) == 1, [r.message for r in records]
    message = records[0].message
    assert give.function_id in message and path in message and kind in message
    assert 'SERIALIZER="pickle"' in message


def test_json_stores_plain_json_values_exactly(redis_server, redis):
    value = {"id": 1, "name": "é", "ok": True, "none": None, "ratio": 0.5, "rows": [[1, "a"]]}

    @cache_result(ttl=30)
    def give(n):
        calls.append(n)
        return value

    with override_settings(RESTFLOW_SETTINGS=redis_settings(redis_server.url, SERIALIZER="json")):
        give(1)
        got, meta = give.get_with_metadata(1)
    assert (got, meta["cache_status"], calls) == (value, CacheStatus.HIT, [1])


def test_an_interrupted_recompute_is_not_answered_with_the_stale_value(redis):
    check_an_interrupted_recompute_is_not_answered_with_the_stale_value()
