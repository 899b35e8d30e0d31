"""Values on the Django database cache (issue 10, items 13 and 17): with
SERIALIZER="json" a value is stored exactly or not at all, and an interrupt
raised while a value is (un)pickled reaches the caller. The same on the
locmem Django cache and on Redis: tests/test_key_values.py (``store``)."""

from __future__ import annotations

import logging

import pytest
from django.core.cache import caches
from django.test import override_settings

from restflow.caching import CACHE_MISSING, CacheStatus, cache_result
from tests.interrupting_values import (
    check_an_interrupt_while_pickling_reaches_the_caller,
    check_an_interrupt_while_unpickling_reaches_the_caller,
)
from tests.test_django_backend import CACHES, alias, settings_for  # noqa: F401 - a fixture

calls: list = []

#: The locmem alias runs these checks as the ``django`` store of
#: tests/test_key_values.py; the database cache here.
ON_THE_DATABASE = pytest.mark.parametrize("alias", ["db"], indirect=True)


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


@ON_THE_DATABASE
def test_json_refuses_a_tuple_and_logs_once(alias, caplog):  # noqa: F811
    @cache_result(ttl=30)
    def pair(n):
        calls.append(n)
        return (n, {"when": None})

    with override_settings(RESTFLOW_SETTINGS=settings_for(alias, SERIALIZER="json")):
        with caplog.at_level(logging.ERROR, logger="restflow.caching"):
            for n in (1, 1, 2):
                value, meta = pair.get_with_metadata(n)
                assert value == (n, {"when": None}) and type(value) is tuple
                assert meta["cache_status"] is CacheStatus.MISS
        assert pair.get_cache_only(1) is CACHE_MISSING
    assert calls == [1, 1, 2]
    records = [r for r in caplog.records if 'SERIALIZER="json"' in r.message]
    assert len(records) == 1
    assert "the value is a 'builtins.tuple'" in records[0].message


@ON_THE_DATABASE
def test_json_keeps_plain_values(alias):  # noqa: F811
    @cache_result(ttl=30)
    def plain(n):
        calls.append(n)
        return {"n": n, "rows": [1, 2.5, "x", None, True]}

    with override_settings(RESTFLOW_SETTINGS=settings_for(alias, SERIALIZER="json")):
        first = plain(1)
        value, meta = plain.get_with_metadata(1)
    assert (value, meta["cache_status"], calls) == (first, CacheStatus.HIT, [1])


@ON_THE_DATABASE
def test_an_interrupt_while_pickling_reaches_the_caller(alias):  # noqa: F811
    check_an_interrupt_while_pickling_reaches_the_caller()


@ON_THE_DATABASE
def test_an_interrupt_while_unpickling_reaches_the_caller(alias):  # noqa: F811
    check_an_interrupt_while_unpickling_reaches_the_caller(
        lambda key: bool(caches[alias].get_many([key]))
    )


def test_an_interrupt_in_the_django_cache_reaches_the_caller(db):
    @cache_result(ttl=30)
    def lookup(n):
        calls.append(n)
        return n

    caches_setting = {
        **CACHES,
        "interrupted": {"BACKEND": "tests.interrupting_values.InterruptedCache"},
    }
    with override_settings(CACHES=caches_setting, RESTFLOW_SETTINGS=settings_for("interrupted")):
        calls_that_reach_the_store = (
            lambda: lookup(1),
            lambda: lookup.get_cache_only(1),
            lambda: lookup.refresh(1),
            lookup.invalidate_all,
        )
        for call in calls_that_reach_the_store:
            with pytest.raises(KeyboardInterrupt):
                call()
    # Interrupted: the function never ran live in its place.
    assert calls == []
