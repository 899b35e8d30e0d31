"""Values whose (un)pickling is interrupted, and the checks every shared
store (Redis, the Django cache) must pass with them: a ``KeyboardInterrupt``
raised while a value is written or read reaches the caller, never logged
and skipped as a bad value (issue 10, item 17)."""

from __future__ import annotations

import pytest

from restflow.caching import CACHE_MISSING, cache_result


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
