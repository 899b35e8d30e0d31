"""Values that used to key wrongly: aware datetimes and times that print the
same but carry different zones (issue 10, item 12), ints past Python's digit
limit and arguments over 4 GiB (item 17). Memory store; the Redis versions
are in tests/redis/test_key_values_redis.py."""

from __future__ import annotations

import enum
import logging
import sys
import zoneinfo
from collections import OrderedDict
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from tests.interrupting_values import (
    check_an_interrupt_while_pickling_reaches_the_caller,
    check_an_interrupt_while_unpickling_reaches_the_caller,
    check_an_interrupted_recompute_is_not_answered_with_the_stale_value,
)
from tests.stores import on

LONDON = ZoneInfo("Europe/London")
GMT = timezone(timedelta(0), "GMT")
# One instant, printed identically by isoformat() in every zone below.
WINTER = (2026, 1, 15, 12, 0)

computed: list = []


class Tier(enum.IntEnum):
    GOLD = 1


@cache_result(ttl=60)
def zone_of(moment):
    """What a function may read off its argument besides its isoformat()."""
    computed.append(moment)
    return moment.tzname(), repr(moment.tzinfo), moment.fold


@pytest.fixture(autouse=True)
def _reset():
    computed.clear()


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


# -- item 12: datetimes and times keep their zone and fold --------------------


ALIKE = [
    # (left, right): equal isoformat(), different values for the function.
    (datetime(*WINTER, tzinfo=UTC), datetime(*WINTER, tzinfo=LONDON)),
    (datetime(*WINTER, tzinfo=UTC), datetime(*WINTER, tzinfo=GMT)),
    (datetime(*WINTER, tzinfo=GMT), datetime(*WINTER, tzinfo=LONDON)),
    (
        datetime(*WINTER, tzinfo=LONDON),
        datetime(*WINTER, tzinfo=ZoneInfo("Europe/Dublin")),
    ),
    # Naive: fold changes what astimezone() makes of it.
    (datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 1, 30, fold=1)),
    # A zone's fold outside a transition keeps the offset, not the value.
    (datetime(*WINTER, tzinfo=LONDON), datetime(*WINTER, tzinfo=LONDON, fold=1)),
    (time(1, tzinfo=UTC), time(1, tzinfo=GMT)),
    # A ZoneInfo time has no offset to print: it looked naive.
    (time(1), time(1, tzinfo=LONDON)),
    (time(1, tzinfo=LONDON), time(1, tzinfo=ZoneInfo("Europe/Paris"))),
    (time(1), time(1, fold=1)),
]


@pytest.mark.parametrize(("left", "right"), ALIKE, ids=repr)
def test_datetimes_that_print_alike_are_different_entries(store, left, right):
    assert left.isoformat() == right.isoformat()
    first, second = zone_of(left), zone_of(right)
    assert computed == [left, right]
    assert zone_of.get_cache_key(left) != zone_of.get_cache_key(right)
    if store.shared:
        assert store.holds(zone_of.get_cache_key(left), zone_of.get_cache_key(right)) == 2
    # Each is served its own value later (from the store).
    assert zone_of.get_with_metadata(left) == (first, zone_of.get_cached_metadata(left))
    assert (zone_of(left), zone_of(right)) == (first, second)
    assert status(zone_of, left) is status(zone_of, right) is CacheStatus.HIT
    assert len(computed) == 2


def test_values_that_behave_alike_share_an_entry():
    # The UTC singleton, an unnamed zero offset and one named like the
    # default are one zone; so are two ZoneInfo objects of one key.
    same = [
        (datetime(*WINTER, tzinfo=UTC), datetime(*WINTER, tzinfo=timezone(timedelta(0)))),
        (datetime(*WINTER, tzinfo=UTC), datetime(*WINTER, tzinfo=timezone(timedelta(0), "UTC"))),
        (
            datetime(*WINTER, tzinfo=timezone(timedelta(hours=2))),
            datetime(*WINTER, tzinfo=timezone(timedelta(hours=2), "UTC+02:00")),
        ),
        (datetime(*WINTER, tzinfo=LONDON), datetime(*WINTER, tzinfo=ZoneInfo.no_cache(LONDON.key))),
    ]
    for left, right in same:
        assert zone_of.get_cache_key(left) == zone_of.get_cache_key(right)


def test_the_common_keys_are_unchanged_and_zones_are_named():
    moment = datetime(*WINTER, tzinfo=UTC)
    # UTC and naive values key as before: their isoformat() says everything.
    assert zone_of.get_cache_key(moment).endswith(f"x8:datetime(s25:{moment.isoformat()})")
    assert zone_of.get_cache_key(time(4, 5)).endswith("x4:time(s8:04:05:00)")
    # A zone is keyed by its name, the same in every process.
    london = zone_of.get_cache_key(datetime(*WINTER, tzinfo=LONDON))
    assert "zoneinfo.ZoneInfo(s13:Europe/London)" in london
    gmt = zone_of.get_cache_key(datetime(*WINTER, tzinfo=GMT))
    assert "s3:GMT" in gmt


def test_a_zone_without_a_name_to_key_is_refused():
    class Shifted(tzinfo):
        def utcoffset(self, dt):
            return timedelta(hours=1)

        def dst(self, dt):
            return timedelta(0)

        def tzname(self, dt):
            return "X"

    with pytest.raises(TypeError) as error:
        zone_of(datetime(*WINTER, tzinfo=Shifted()))
    message = str(error.value)
    assert "argument 'moment'" in message and "Shifted" in message
    assert "zoneinfo.ZoneInfo or datetime.timezone" in message
    with open(_tz_file("Europe/London"), "rb") as data:
        unnamed = ZoneInfo.from_file(data)
    with pytest.raises(TypeError, match="no key"):
        zone_of(datetime(*WINTER, tzinfo=unnamed))
    assert computed == []


def _tz_file(key: str) -> Path:
    """The system's tz database file of ``key`` (a ZoneInfo made from a
    file has no key)."""
    for root in zoneinfo.TZPATH:
        if (Path(root) / key).is_file():
            return Path(root) / key
    pytest.skip("no system tz database to read a ZoneInfo file from")


# -- item 17: ints of any size, arguments over 4 GiB ---------------------------


@cache_result(ttl=60)
def echo(x):
    computed.append(x)
    return x


def test_an_int_past_the_digit_limit_is_keyed():
    huge = 10**5000
    assert echo(huge) == huge and echo(huge + 1) == huge + 1
    assert status(echo, huge) is CacheStatus.HIT
    assert len(computed) == 2
    assert echo.get_cache_key(huge) != echo.get_cache_key(huge + 1)
    # Past 64 bits an int is keyed by its hex digits, which no digit limit
    # restricts, so the key is the same whatever the limit is set to.
    assert echo.get_cache_key(2**70).endswith(f"arguments.x=i{hex(2**70)}")
    assert echo.get_cache_key(-(2**70)).endswith(f"arguments.x=i{hex(-(2**70))}")
    key = echo.get_cache_key(10**1000)
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        assert echo.get_cache_key(10**1000) == key
    finally:
        sys.set_int_max_str_digits(limit)


def test_an_argument_over_4_gib_is_a_type_error_not_a_panic():
    # bytes(n) is calloc'd: the pages are never touched, the length check
    # refuses it before anything reads them.
    big = bytes(2**32)
    with pytest.raises(TypeError) as error:
        echo(big)
    message = str(error.value)
    assert "argument 'x'" in message and "4 GiB" in message
    assert "no canonical encoding" not in message
    with pytest.raises(TypeError, match="4 GiB"):
        echo.get_cache_key(big)
    del big
    assert computed == []


@pytest.mark.parametrize("value", [v for pair in ALIKE for v in pair], ids=repr)
def test_a_broker_job_keeps_the_zone_and_fold_its_key_needs(value):
    # An invalidation sent through a broker must drop the entry its value
    # keys, so the value comes back with its zone and fold, not an offset.
    import json

    from restflow.caching.dispatchers.jobs import decode, encode

    back = decode(json.loads(json.dumps(encode(value))))
    assert (back, type(back), back.fold) == (value, type(value), value.fold)
    assert zone_of.get_cache_key(back) == zone_of.get_cache_key(value)


def test_an_interrupted_recompute_is_not_answered_with_the_stale_value(store):
    check_an_interrupted_recompute_is_not_answered_with_the_stale_value()


SHARED = on("django", "django-db", "redis")


@pytest.mark.parametrize("store", SHARED, indirect=True)
def test_an_interrupt_while_pickling_reaches_the_caller(store):
    check_an_interrupt_while_pickling_reaches_the_caller()


@pytest.mark.parametrize("store", SHARED, indirect=True)
def test_an_interrupt_while_unpickling_reaches_the_caller_and_keeps_the_entry(store):
    check_an_interrupt_while_unpickling_reaches_the_caller(store.holds)


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
@pytest.mark.parametrize("store", SHARED, indirect=True)
def test_json_refuses_a_value_it_would_change_and_logs_once(store, caplog, value, path, kind):
    @cache_result(ttl=30)
    def give(n):
        computed.append(n)
        return value

    with store.configured(SERIALIZER="json"):
        with caplog.at_level(logging.ERROR, logger="restflow.caching"):
            for n in (1, 1, 2):
                got, meta = give.get_with_metadata(n)
                # What the function returned, never a JSON look-alike.
                assert got is value and meta["cache_status"] is CacheStatus.MISS
        assert computed == [1, 1, 2]
        assert give.get_cache_only(1) is CACHE_MISSING
        assert not store.holds(give.get_cache_key(1))
    records = json_records(caplog)
    assert len(records) == 1, [r.message for r in records]
    message = records[0].message
    assert give.function_id in message and path in message and kind in message
    assert 'SERIALIZER="pickle"' in message


@pytest.mark.parametrize("store", SHARED, indirect=True)
def test_json_stores_plain_json_values_exactly(store):
    value = {"id": 1, "name": "é", "ok": True, "none": None, "ratio": 0.5, "rows": [[1, "a"]]}

    @cache_result(ttl=30)
    def give(n):
        computed.append(n)
        return value

    with store.configured(SERIALIZER="json"):
        give(1)
        got, meta = give.get_with_metadata(1)
    assert (got, meta["cache_status"], computed) == (value, CacheStatus.HIT, [1])
