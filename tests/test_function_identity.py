"""Functions whose dotted path repeats (issue 10, item 11): closures made by
one factory, lambdas, methods of local classes. Each gets entries of its own
in memory, and key strings of their own or a refusal on a shared store;
never a silent share. The shared-store tests run on the Django cache and on
Redis (``store``, tests/stores.py): key strings every process agrees on,
never shared by two live functions that may behave differently."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from restflow.caching import (
    CACHE_MISSING,
    ArgsKeyField,
    CacheStatus,
    KeyConstructor,
    cache_result,
    reset_stats,
    stats,
)
from tests.stores import on

calls: list = []


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()


def rates(currency, scale=1):
    """A factory of cached functions, as a user writes one."""

    @cache_result(ttl=60)
    def rate(day):
        calls.append((currency, day))
        return f"{currency}:{day * scale}"

    return rate


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def test_closures_over_plain_values_get_their_own_entries():
    usd, eur = rates("USD"), rates("EUR")
    assert (usd(1), eur(1)) == ("USD:1", "EUR:1")
    assert (usd(1), eur(1)) == ("USD:1", "EUR:1")
    assert status(usd, 1) is status(eur, 1) is CacheStatus.HIT
    assert calls == [("USD", 1), ("EUR", 1)]
    # Their key strings differ too, by a digest of the closure's values.
    assert usd.function_id != eur.function_id
    assert usd.function_id.startswith(f"{__name__}.rates.<locals>.rate[")
    assert usd.get_cache_key(1) != eur.get_cache_key(1)
    assert rates("USD", scale=2).function_id not in (usd.function_id, eur.function_id)
    # The same factory call made again has the same name.
    assert rates("USD").function_id == usd.function_id


def test_a_closure_is_named_the_same_in_every_process():
    script = textwrap.dedent(
        """
        from tests.test_function_identity import rates

        print(rates("USD").function_id)
        """
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == rates("USD").function_id


class Client:
    """Something a closure holds that has no key: a connection, a service."""

    def __init__(self, name):
        self.name = name


def clients(client):
    @cache_result(ttl=60)
    def fetch(item):
        calls.append((client.name, item))
        return f"{client.name}:{item}"

    return fetch


def views(prefix):
    class View:
        @cache_result(ttl=60)
        def get(self, item):
            calls.append((prefix, item))
            return f"{prefix}:{item}"

    return View


def test_in_memory_every_function_object_has_entries_of_its_own():
    # Closures over objects, two lambdas of one name, two local classes:
    # nothing names them apart across processes, but memory needs no name.
    a, b = clients(Client("a")), clients(Client("b"))
    assert (a(1), b(1), a(1), b(1)) == ("a:1", "b:1", "a:1", "b:1")
    first = cache_result(ttl=60)(lambda x: ("first", x))
    second = cache_result(ttl=60)(lambda x: ("second", x))
    assert (first(1), second(1), first(1)) == (("first", 1), ("second", 1), ("first", 1))
    view_a, view_b = views("a"), views("b")
    assert (view_a().get(1), view_b().get(1), view_a().get(1)) == ("a:1", "b:1", "a:1")
    assert calls == [("a", 1), ("b", 1), ("a", 1), ("b", 1)]
    # Each is still dropped on its own.
    a.invalidate_all()
    assert (a(1), b(1)) == ("a:1", "b:1")
    assert calls[-1] == ("a", 1) and len(calls) == 5


# -- shared stores: key strings of their own, or a refusal -----------------------

ON_SHARED_STORES = pytest.mark.parametrize("store", on("django", "redis"), indirect=True)


@ON_SHARED_STORES
def test_closures_over_plain_values_have_key_strings_of_their_own(store):
    usd, eur = rates("USD"), rates("EUR")
    assert (usd(1), eur(1)) == ("USD:1", "EUR:1")
    assert store.holds(usd.get_cache_key(1), eur.get_cache_key(1)) == 2
    assert status(usd, 1) is status(eur, 1) is CacheStatus.HIT
    assert (usd(1), eur(1)) == ("USD:1", "EUR:1")
    # Another mk("USD") (here, or in another process) reads USD's entries.
    again = rates("USD")
    assert again.get_with_metadata(1) == ("USD:1", usd.get_cached_metadata(1))


@ON_SHARED_STORES
def test_a_second_live_closure_over_an_object_is_refused(store):
    first = clients(Client("a"))
    assert first(1) == "a:1"
    second = clients(Client("b"))
    with pytest.raises(TypeError) as error:
        second(1)
    message = str(error.value)
    assert "tests.test_function_identity.clients.<locals>.fetch()" in message
    assert "key_identifier" in message
    # Refused before anything was read or computed; the first is untouched.
    with pytest.raises(TypeError):
        second.get_with_metadata(1)
    assert first(1) == "a:1" and status(first, 1) is CacheStatus.HIT


@ON_SHARED_STORES
def test_lambdas_and_local_classes_under_one_name_are_refused(store):
    first = cache_result(ttl=60)(lambda x: ("first", x))
    second = cache_result(ttl=60)(lambda x: ("second", x))
    assert first(1) == ("first", 1)
    with pytest.raises(TypeError, match="would serve each other's"):
        second(1)
    view_a, view_b = views("a"), views("b")
    assert view_a().get(1) == "a:1"
    with pytest.raises(TypeError, match=r"views\.<locals>\.View\.get\(\)"):
        view_b().get(1)


@ON_SHARED_STORES
def test_interchangeable_functions_share_key_strings(store):
    def plain(x):
        calls.append(x)
        return x

    # One function decorated twice, and one lambda made twice in a loop.
    a, b = cache_result(ttl=60)(plain), cache_result(ttl=60)(plain)
    assert (a(1), b(1), calls) == (1, 1, [1])
    doubles = [cache_result(ttl=60)(lambda x: x * 2) for _ in range(2)]
    assert (doubles[0](2), status(doubles[1], 2)) == (4, CacheStatus.HIT)


@ON_SHARED_STORES
def test_naming_the_entries_lets_closures_over_objects_coexist(store):
    def named(client):
        @cache_result(
            ttl=60,
            key_constructor={
                "fields": {"args": ArgsKeyField("*")},
                "key_identifier": f"fetch.{client.name}",
            },
        )
        def fetch(item):
            calls.append((client.name, item))
            return f"{client.name}:{item}"

        return fetch

    a, b = named(Client("a")), named(Client("b"))
    assert (a(1), b(1), a(1), b(1)) == ("a:1", "b:1", "a:1", "b:1")
    assert calls == [("a", 1), ("b", 1)]


@ON_SHARED_STORES
def test_a_dead_holder_frees_the_name(store):
    first = clients(Client("a"))
    first(1)
    key = first.get_cache_key(1)
    alive = weakref.ref(first.__wrapped__)  # what holds the name
    del first
    gc.collect()
    assert alive() is None
    # Taken again without a TypeError: the name, and the entries stored
    # under it, pass to the next function of that name, as they would to
    # the same closure in another process (key strings name a function
    # across processes and restarts; only two live at once are refused).
    second = clients(Client("b"))
    assert second.get_cache_key(1) == key
    assert second(1) == "a:1"


@ON_SHARED_STORES
def test_reading_statistics_claims_no_name(store):
    # Reading the counters (stats(), reset_stats(), a Prometheus scrape)
    # is no use of the store: a live function never called there claims
    # nothing, so its namesake that is called works, and is counted under
    # the store it uses.
    unused = clients(Client("a"))
    reset_stats()
    stats()
    used = clients(Client("b"))
    assert used(1) == "b:1"
    assert stats()["functions"][used.function_id]["backend"] == store.label
    with pytest.raises(TypeError, match="would serve each other's"):
        unused(1)  # the name is taken now, by the function that used it


class ItemKey(KeyConstructor):
    """The constructor of :func:`cycled` alone (what its ``wipe`` touches)."""

    item = ArgsKeyField("item")


def cycled(client):
    """A closure over ``client`` that ``client`` holds back: dropped, only
    the collector frees it (a reference cycle, as a bound cache or a
    registry of callbacks makes one)."""

    @cache_result(ttl=60, key_constructor=ItemKey)
    def fetch(item):
        calls.append((client.name, item))
        return f"{client.name}:{item}"

    client.fetch = fetch
    return fetch


@ON_SHARED_STORES
def test_wipe_passes_over_a_dropped_namesake_the_collector_has_not_freed(store):
    """A function dropped but not yet collected is not live: wiping its key
    constructor drops its live namesake's entries and fails on nothing. (It
    raised the TypeError of two live functions under one name: the wipe
    held the dropped function while claiming its name, so the claim's own
    collection could not free it.)"""
    gc.collect()
    gc.disable()  # the dropped function stays until collected
    try:
        dropped = cycled(Client("a"))
        del dropped
        live = cycled(Client("b"))
        assert live(1) == "b:1"
        ItemKey.wipe()
        assert live.get_cache_only(1) is CACHE_MISSING
        assert live(1) == "b:1"
        assert calls == [("b", 1), ("b", 1)]
    finally:
        gc.enable()
