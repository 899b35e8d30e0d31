"""Issue 10 on a real Redis: values are freed at once (item 2), ``ttl=0``
is never fresh (item 10) and the interpreter exits with an async
computation in flight (item 5). tests/test_value_lifetimes.py,
tests/test_ttl_zero.py and tests/test_async_exit.py have the memory side."""

from __future__ import annotations

import weakref

import pytest

from restflow.caching import cache_result

#: Every `Tracked` object alive, made by a call or by unpickling.
ALIVE: weakref.WeakSet = weakref.WeakSet()


class Tracked:
    """A value that registers itself however it was made (unpickling does
    not call ``__init__``, but does call ``__new__``)."""

    def __new__(cls, *args):
        obj = super().__new__(cls)
        ALIVE.add(obj)
        return obj

    def __init__(self, n):
        self.n = n


@cache_result(ttl=600)
def tracked(n):
    return Tracked(n)


@pytest.mark.parametrize("entry_point", ["call", "keyword", "get_with_metadata"])
def test_values_served_from_redis_are_freed_at_once(redis, entry_point):
    call = {
        "call": lambda n: tracked(n),
        "keyword": lambda n: tracked(n=n),
        "get_with_metadata": lambda n: tracked.get_with_metadata(n),
    }[entry_point]
    for _ in range(2):  # misses, then hits
        for n in range(200):
            call(n)
    # Nothing holds a value: none may be alive, with no other engine call
    # made in between.
    assert len(ALIVE) == 0
