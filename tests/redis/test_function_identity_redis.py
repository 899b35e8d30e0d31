"""Functions whose dotted path repeats, on Redis (issue 10, item 11): key
strings every process agrees on, never shared by two live functions that
may behave differently."""

from __future__ import annotations

import gc
import weakref

import pytest

from restflow.caching import ArgsKeyField, CacheStatus, cache_result
from tests.test_function_identity import Client, clients, rates, views

calls: list = []


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def status(wrapper, *args):
    return wrapper.get_with_metadata(*args)[1]["cache_status"]


def test_closures_over_plain_values_have_key_strings_of_their_own(redis):
    usd, eur = rates("USD"), rates("EUR")
    assert (usd(1), eur(1)) == ("USD:1", "EUR:1")
    assert redis.exists(usd.get_cache_key(1), eur.get_cache_key(1)) == 2
    assert status(usd, 1) is status(eur, 1) is CacheStatus.HIT
    assert (usd(1), eur(1)) == ("USD:1", "EUR:1")
    # Another mk("USD") (here, or in another process) reads USD's entries.
    again = rates("USD")
    assert again.get_with_metadata(1) == ("USD:1", usd.get_cached_metadata(1))


def test_a_second_live_closure_over_an_object_is_refused(redis):
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


def test_lambdas_and_local_classes_under_one_name_are_refused(redis):
    first = cache_result(ttl=60)(lambda x: ("first", x))
    second = cache_result(ttl=60)(lambda x: ("second", x))
    assert first(1) == ("first", 1)
    with pytest.raises(TypeError, match="would serve each other's"):
        second(1)
    view_a, view_b = views("a"), views("b")
    assert view_a().get(1) == "a:1"
    with pytest.raises(TypeError, match=r"views\.<locals>\.View\.get\(\)"):
        view_b().get(1)


def test_interchangeable_functions_share_key_strings(redis):
    def plain(x):
        calls.append(x)
        return x

    # One function decorated twice, and one lambda made twice in a loop.
    a, b = cache_result(ttl=60)(plain), cache_result(ttl=60)(plain)
    assert (a(1), b(1), calls) == (1, 1, [1])
    doubles = [cache_result(ttl=60)(lambda x: x * 2) for _ in range(2)]
    assert (doubles[0](2), status(doubles[1], 2)) == (4, CacheStatus.HIT)


def test_naming_the_entries_lets_closures_over_objects_coexist(redis):
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


def test_a_dead_holder_frees_the_name(redis):
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
