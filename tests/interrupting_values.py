"""Interrupts in the store path, and the checks every store must pass with
them: a ``KeyboardInterrupt`` raised while a value is computed, written or
read reaches the caller, never logged and skipped as a bad value nor
answered with an older one (issue 10, item 17)."""

from __future__ import annotations

import pytest
from django.core.cache.backends.base import BaseCache

from restflow.caching import CACHE_MISSING, cache_result
from restflow.caching.testing import frozen_clock


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


def check_an_interrupt_while_pickling_reaches_the_caller():
    calls = []

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


def check_an_interrupt_while_unpickling_reaches_the_caller(stored) -> None:
    """``stored(key)``: whether the store still holds ``key``."""
    calls = []

    @cache_result(ttl=30)
    def make(x):
        calls.append(x)
        return InterruptsWhenUnpickled()

    make(1)  # stored: pickling it works, loading it raises
    key = make.get_cache_key(1)
    assert stored(key)
    with pytest.raises(KeyboardInterrupt):
        make(1)
    with pytest.raises(KeyboardInterrupt):
        make.get_cache_only(1)
    # Interrupted, not corrupt: the entry stays and nothing was recomputed.
    assert stored(key) and calls == [1]


class InterruptedCache(BaseCache):
    """A Django cache whose every call is interrupted (Ctrl-C during a slow
    memcached or database round trip)."""

    def __init__(self, location=None, params=None):
        super().__init__(params or {})

    def _interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    add = get = set = delete = get_many = incr = clear = touch = has_key = _interrupt


def check_an_interrupted_recompute_is_not_answered_with_the_stale_value():
    calls = []

    @cache_result(ttl=10, stale_while_revalidate=0, stale_if_error=100)
    def flaky(x):
        if calls:
            raise KeyboardInterrupt
        calls.append(x)
        return x

    with frozen_clock() as clock:
        assert flaky(1) == 1
        clock.advance(11)
        # stale-if-error serves the old value for an error, never for Ctrl-C.
        with pytest.raises(KeyboardInterrupt):
            flaky(1)
        with pytest.raises(KeyboardInterrupt):
            flaky.get_with_metadata(1)
