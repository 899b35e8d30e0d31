"""An interrupt raised inside a Django cache's own call reaches the caller
(issue 10, item 17). The checks every shared store passes (SERIALIZER="json"
stores a value exactly or not at all, an interrupt while a value is
(un)pickled reaches the caller) run on the Django caches, locmem and
database, and on Redis in tests/test_key_values.py."""

from __future__ import annotations

import pytest
from django.test import override_settings

from restflow.caching import cache_result
from tests.test_django_backend import CACHES, settings_for

calls: list = []


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


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
