"""Values and wrappers are freed when nothing needs them any more (issue 10,
items 2 and 3).

* Every value the memory store lets go of (evicted, expired, replaced, or
  never stored) is released at once, whatever entry point served the call:
  the number of live values never exceeds the entries in the store.
  Between the calls and the count no other engine method runs, since any
  engine method would release values that were merely held back.
* A value a shared store serves (unpickled on every hit) is freed as soon
  as the caller drops it, on the Django cache and Redis (``store``).
* Decorated functions, methods and views are garbage-collected like the
  plain functions they wrap.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from django.test import override_settings

from restflow import _engine
from restflow.caching import cache_result
from tests.stores import on

BOUND = 64
CALLS = BOUND * 20


class Payload:
    """A value the tests watch through a weak reference."""

    def __init__(self, n):
        self.n = n


def _watched():
    """A set of the payloads alive now, and a function making new ones."""
    alive = weakref.WeakSet()

    def make(n):
        payload = Payload(n)
        alive.add(payload)
        return payload

    return alive, make


@pytest.fixture
def small_store():
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"MAX_ENTRIES": BOUND}}):
        yield


def _sync_entry_points():
    """(name, make a wrapper around `make`, call it once for `n`)."""

    def plain(make):
        @cache_result(ttl=600)
        def f(n):
            return make(n)

        return lambda n: f(n)

    def keyword(make):
        @cache_result(ttl=600)
        def f(n):
            return make(n)

        return lambda n: f(n=n)

    def with_metadata(make):
        @cache_result(ttl=600)
        def f(n):
            return make(n)

        return lambda n: f.get_with_metadata(n)

    def method(make):
        class Service:
            @cache_result(ttl=600)
            def load(self, n):
                return make(n)

        service = Service()
        return lambda n: service.load(n)

    def not_stored(make):
        @cache_result(ttl=600, cache_if=lambda result, n: False)
        def f(n):
            return make(n)

        return lambda n: f(n)

    def callable_ttl(make):
        @cache_result(ttl=lambda result, n: 600)
        def f(n):
            return make(n)

        return lambda n: f(n)

    def expired(make):
        # ttl=0: every call finds the entry expired and replaces it.
        @cache_result(ttl=0)
        def f(n):
            return make(n)

        return lambda n: f(n % 8)

    return [plain, keyword, with_metadata, method, not_stored, callable_ttl, expired]


@pytest.mark.parametrize("entry_point", _sync_entry_points(), ids=lambda f: f.__name__)
def test_values_the_store_lets_go_are_freed_at_once(small_store, entry_point):
    alive, make = _watched()
    call = entry_point(make)
    for n in range(CALLS):
        call(n)
    # Counted before any other engine method runs: the values alive are
    # exactly the ones in the store.
    live = len(alive)
    entries = _engine.entry_count()
    assert live == entries
    assert live <= BOUND


def test_replaced_values_are_freed_at_once(small_store):
    alive, make = _watched()

    @cache_result(ttl=600)
    def f(n):
        return make(n)

    for _ in range(50):
        f.refresh(1)
    assert len(alive) == 1


def test_values_of_async_functions_are_freed_at_once(small_store):
    alive, make = _watched()

    @cache_result(ttl=600)
    async def f(n):
        return make(n)

    async def main():
        for n in range(CALLS):
            await f(n)
        for n in range(CALLS):
            await f.aget_with_metadata(-n)

    asyncio.run(main())
    live = len(alive)
    assert live == _engine.entry_count()
    assert live <= BOUND


def _collected(make_one, count=50):
    """How many of the wrappers (and the engine wrappers inside them) made by
    `count` calls of `make_one` survive gc.collect() once nothing refers to
    them."""
    refs = []
    for n in range(count):
        wrapper = make_one(n)
        refs.append(weakref.ref(wrapper))
        inner = getattr(wrapper, "cached_render", wrapper)  # cache_response's
        inner = getattr(inner, "_engine", inner)  # an async function's
        refs.append(weakref.ref(inner))
        del wrapper, inner
    gc.collect()
    return sum(1 for ref in refs if ref() is not None)


def _sync_function(n):
    @cache_result(ttl=60)
    def f(x):
        return x + n

    f(1)  # used: entries, metadata helpers and all
    f.get_with_metadata(2)
    return f


def _recursive_function(n):
    # Refers to itself through its closure: a cycle through the function.
    @cache_result(ttl=60)
    def fib(x):
        return x if x < 2 else fib(x - 1) + fib(x - 2)

    fib(10)
    return fib


def _method(n):
    class Service:
        @cache_result(ttl=60)
        def load(self, x):
            return x + n

    service = Service()
    service.load(1)
    service.load.get_with_metadata(2)
    return Service.__dict__["load"]


def _async_function(n):
    @cache_result(ttl=60)
    async def f(x):
        return x + n

    async def use():
        await f(1)
        await f.aget_with_metadata(2)

    asyncio.run(use())
    return f


def _response_view(n):
    from rest_framework.response import Response

    from restflow.caching.cache_response import cache_response

    @cache_response(ttl=60)
    def view(self, request):
        return Response({"n": n})

    return view


def _async_response_view(n):
    from rest_framework.response import Response

    from restflow.caching.cache_response import cache_response

    @cache_response(ttl=60)
    async def view(self, request):
        return Response({"n": n})

    return view


@pytest.mark.parametrize(
    "make_one",
    [
        _sync_function,
        _recursive_function,
        _method,
        _async_function,
        _response_view,
        _async_response_view,
    ],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_wrappers_nothing_refers_to_are_garbage_collected(make_one):
    assert _collected(make_one) == 0


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


@pytest.mark.parametrize("store", on("django", "redis"), indirect=True)
@pytest.mark.parametrize("entry_point", ["call", "keyword", "get_with_metadata"])
def test_values_served_from_a_shared_store_are_freed_at_once(store, entry_point):
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
