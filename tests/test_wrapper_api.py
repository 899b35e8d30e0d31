"""Every method of CachedWrapper, on functions and on methods."""

import functools
import threading
from datetime import timedelta

import pytest

from restflow.caching import CACHE_MISSING, CachedWrapper, CacheStatus, cache_result
from restflow.caching.testing import frozen_clock

calls: list[tuple] = []


@cache_result(ttl=60)
def lookup(user_id, verbose=False):
    """Looks a user up."""
    calls.append((user_id, verbose))
    return {"id": user_id, "n": len(calls)}


@cache_result(ttl=60)
def maybe_none(x):
    calls.append(("none", x))
    return None


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def test_call_caches_per_distinct_call():
    assert lookup(1) == {"id": 1, "n": 1}
    assert lookup(1) == {"id": 1, "n": 1}
    assert lookup(2) == {"id": 2, "n": 2}
    assert calls == [(1, False), (2, False)]


def test_get_with_metadata_miss_then_hit():
    value, meta = lookup.get_with_metadata(1)
    assert meta["cache_status"] is CacheStatus.MISS
    value2, meta2 = lookup.get_with_metadata(1)
    assert value2 == value
    assert meta2["cache_status"] is CacheStatus.HIT
    assert meta2["cached_at"] == meta["cached_at"]
    assert meta2["reset_at"] == meta["reset_at"]


def test_metadata_dicts_are_the_callers_own():
    lookup.get_with_metadata(1)
    _, first = lookup.get_with_metadata(1)
    first["cache_status"] = "tampered"
    first["extra"] = 1
    _, second = lookup.get_with_metadata(1)
    assert second["cache_status"] is CacheStatus.HIT
    assert "extra" not in second


def test_refresh_recomputes_and_overwrites():
    lookup(1)
    assert lookup.refresh(1) == {"id": 1, "n": 2}
    value, meta = lookup.refresh_with_metadata(1)
    assert value == {"id": 1, "n": 3}
    assert meta["cache_status"] is CacheStatus.REFRESH
    assert lookup.get_with_metadata(1) == (value, {**meta, "cache_status": CacheStatus.HIT})


def test_bypass_neither_reads_nor_writes():
    lookup(1)
    assert lookup.bypass_cache(1) == {"id": 1, "n": 2}
    value, meta = lookup.bypass_cache_with_metadata(2)
    assert meta == {"cache_status": CacheStatus.BYPASS}
    assert value == {"id": 2, "n": 3}
    assert lookup.get_cache_only(2) is CACHE_MISSING
    assert lookup(1) == {"id": 1, "n": 1}


def test_get_cache_only_never_computes():
    assert lookup.get_cache_only(1) is CACHE_MISSING
    assert calls == []
    lookup(1)
    assert lookup.get_cache_only(1) == {"id": 1, "n": 1}
    assert maybe_none.get_cache_only(3) is CACHE_MISSING
    assert maybe_none(3) is None
    assert maybe_none.get_cache_only(3) is None


def test_cache_missing_is_a_falsy_singleton():
    import copy
    import pickle

    assert not CACHE_MISSING
    assert repr(CACHE_MISSING) == "CACHE_MISSING"
    assert copy.deepcopy(CACHE_MISSING) is CACHE_MISSING
    assert pickle.loads(pickle.dumps(CACHE_MISSING)) is CACHE_MISSING


def test_get_cached_metadata():
    assert lookup.get_cached_metadata(1) is None
    with frozen_clock() as clock:
        _, meta = lookup.get_with_metadata(1)
        cached = lookup.get_cached_metadata(1)
        assert cached == {**meta, "cache_status": CacheStatus.HIT}
        clock.advance(61)
        # The test project's STALE_WHILE_REVALIDATE is 60 s.
        assert lookup.get_cached_metadata(1) == {**meta, "cache_status": CacheStatus.STALE}
        clock.advance(60)
        assert lookup.get_cached_metadata(1) is None


def test_delete_cache_drops_one_entry():
    lookup(1)
    lookup(2)
    assert lookup.delete_cache(1) is True
    assert lookup.delete_cache(1) is False
    assert lookup.get_cache_only(1) is CACHE_MISSING
    assert lookup.get_cache_only(2) == {"id": 2, "n": 2}


def test_invalidate_all_drops_every_entry_of_the_function_only():
    lookup(1)
    lookup(2)
    maybe_none(1)
    lookup.invalidate_all()
    assert lookup.get_cache_only(1) is CACHE_MISSING
    assert lookup.get_cache_only(2) is CACHE_MISSING
    assert maybe_none.get_cache_only(1) is None
    assert lookup(1)["n"] == 4


def test_keeps_the_functions_identity():
    assert lookup.__name__ == "lookup"
    assert lookup.__qualname__ == "lookup"
    assert lookup.__doc__ == "Looks a user up."
    assert lookup.__module__ == __name__
    assert lookup.__wrapped__ is lookup.func
    assert lookup.func(5) == {"id": 5, "n": 1}
    assert lookup.is_cached_function is True
    assert isinstance(lookup, CachedWrapper)
    assert lookup.function_id == f"{__name__}.lookup"


def test_get_cache_key_layout():
    key = lookup.get_cache_key(1)
    namespace, function_id, partition, suffix = key.split("::")
    assert (namespace, function_id, partition) == ("default", f"{__name__}.lookup", "")
    assert suffix == "arguments.user_id=i1,arguments.verbose=F"
    assert lookup.get_cache_key(user_id=1) == key


class Profile:
    def __init__(self, name):
        self.name = name
        self.computed = 0

    @cache_result(ttl=60)
    def greeting(self, punctuation="!"):
        """Says hello."""
        self.computed += 1
        return f"hello {self.name}{punctuation}"


class LoudProfile(Profile):
    pass


def test_binds_as_a_method():
    alice = Profile("alice")
    assert alice.greeting() == "hello alice!"
    value, meta = alice.greeting.get_with_metadata()
    assert (value, meta["cache_status"]) == ("hello alice!", CacheStatus.HIT)
    assert alice.computed == 1
    assert alice.greeting.__name__ == "greeting"
    assert alice.greeting.__doc__ == "Says hello."
    assert alice.greeting.__self__ is alice
    # Called through the class with the instance first: the same entry.
    assert Profile.greeting(alice) == "hello alice!"
    assert alice.computed == 1


def test_self_is_not_part_of_the_key_but_its_class_is():
    # Two instances of one class share entries (self is not encoded).
    a, b = Profile("a"), Profile("b")
    assert a.greeting() == "hello a!"
    assert b.greeting() == "hello a!"
    # A subclass never shares its parent's entries.
    loud = LoudProfile("loud")
    assert loud.greeting() == "hello loud!"
    assert loud.greeting.get_cache_key() != a.greeting.get_cache_key()
    assert loud.greeting.get_cache_key().split("::")[1] == f"{__name__}.LoudProfile.greeting"


def test_works_as_an_apiview_method():
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    computed = []

    class View(APIView):
        @cache_result(ttl=60)
        def payload(self, pk):
            computed.append(pk)
            return {"pk": pk}

        def get(self, request, pk):
            value, meta = self.payload.get_with_metadata(pk)
            return Response({**value, "status": meta["cache_status"]})

    view = View.as_view()
    factory = APIRequestFactory()
    assert view(factory.get("/"), pk=3).data == {"pk": 3, "status": "MISS"}
    assert view(factory.get("/"), pk=3).data == {"pk": 3, "status": "HIT"}
    assert computed == [3]


@cache_result(ttl=60, cache_if=lambda result, x: result is not None)
def only_some(x):
    calls.append(x)
    return None if x < 0 else x


@cache_result(ttl=60, cache_unless=lambda result, x: result == "error")
def unless_error(x):
    calls.append(x)
    return "error" if x == 0 else "ok"


def test_cache_if_and_cache_unless_decide_what_is_stored():
    only_some(-1)
    value, meta = only_some.get_with_metadata(-1)
    assert value is None
    # Computed and served, not stored: MISS without timestamps.
    assert meta == {"cache_status": CacheStatus.MISS}
    assert only_some.get_cache_only(-1) is CACHE_MISSING
    only_some(2)
    assert only_some.get_with_metadata(2)[1]["cache_status"] is CacheStatus.HIT
    unless_error(0)
    assert unless_error.get_cache_only(0) is CACHE_MISSING
    unless_error(1)
    assert unless_error.get_cache_only(1) == "ok"
    assert calls == [-1, -1, 2, 0, 1]


@cache_result(ttl=lambda result, x: 10 if x == "short" else None)
def chosen_ttl(x):
    return x


@cache_result(ttl=timedelta(minutes=2))
def delta_ttl(x):
    return x


@cache_result(ttl=None)
def forever(x):
    return x


def test_ttl_forms():
    with frozen_clock() as clock:
        _, short = chosen_ttl.get_with_metadata("short")
        _, long = chosen_ttl.get_with_metadata("long")
        assert "reset_at" not in long
        _, delta = delta_ttl.get_with_metadata(1)
        _, never = forever.get_with_metadata(1)
        assert "reset_at" not in never
        from datetime import datetime

        def seconds_between(meta):
            start = datetime.fromisoformat(meta["cached_at"])
            return (datetime.fromisoformat(meta["reset_at"]) - start).total_seconds()

        assert seconds_between(short) == 10
        assert seconds_between(delta) == 120
        clock.advance(10 * 365 * 24 * 3600)
        assert forever.get_with_metadata(1)[1]["cache_status"] is CacheStatus.HIT
        assert chosen_ttl.get_with_metadata("short")[1]["cache_status"] is CacheStatus.MISS


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl": -1}, ValueError, "ttl must be a finite number of seconds >= 0"),
        ({"ttl": timedelta(seconds=-1)}, ValueError, "ttl"),
        ({"ttl": "300"}, TypeError, "ttl must be seconds"),
        ({"ttl": True}, TypeError, "ttl must be seconds"),
        ({"stale_while_revalidate": -5}, ValueError, "stale_while_revalidate"),
        ({"cache_if": bool, "cache_unless": bool}, ValueError, "not both"),
        ({"cache_if": 3}, TypeError, "cache_if must be a callable"),
    ],
)
def test_bad_parameters_fail_at_decoration(kwargs, error, match):
    with pytest.raises(error, match=match):
        cache_result(**kwargs)


def test_async_policies_on_sync_targets_and_misplaced_targets_are_refused():
    async def predicate(result, x):
        return True

    async def ttl(result, x):
        return 5

    def target(x):
        return x

    with pytest.raises(TypeError, match="async predicate"):
        cache_result(cache_if=predicate)(target)
    with pytest.raises(TypeError, match="async ttl"):
        cache_result(ttl=ttl)(target)
    with pytest.raises(TypeError, match="beneath @staticmethod"):
        cache_result()(staticmethod(lambda x: x))


def test_a_bad_ttl_from_a_callable_raises_on_the_call():
    @cache_result(ttl=lambda result, x: -1)
    def bad(x):
        return x

    with pytest.raises(ValueError, match="ttl returned for"):
        bad(1)
    assert bad.get_cache_only(1) is CACHE_MISSING


def test_wrong_call_signatures_raise_like_the_function_would():
    lookup(1)  # a cached entry must not make a wrong call succeed
    with pytest.raises(TypeError, match="missing required argument: 'user_id'"):
        lookup()
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        lookup(1, nope=2)
    with pytest.raises(TypeError, match="multiple values for argument 'user_id'"):
        lookup(1, user_id=1)
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        lookup(1, 2, 3)


def test_a_function_calling_itself_with_the_same_arguments_fails_clearly():
    @cache_result(ttl=60)
    def recursive(x):
        return recursive(x)

    with pytest.raises(RuntimeError, match="called itself with the same arguments"):
        recursive(1)


def test_exceptions_are_not_cached():
    attempts = []

    @cache_result(ttl=60)
    def flaky(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise ConnectionError("first try fails")
        return x

    with pytest.raises(ConnectionError):
        flaky(1)
    assert flaky.get_cache_only(1) is CACHE_MISSING
    assert flaky(1) == 1
    assert attempts == [1, 1]


def test_waiters_release_the_gil():
    """A caller waiting on another's computation lets other threads run."""
    started, release = threading.Event(), threading.Event()

    @cache_result(ttl=60)
    def slow(x):
        started.set()
        assert release.wait(10)
        return x

    results = []
    leader = threading.Thread(target=lambda: results.append(slow(1)))
    leader.start()
    assert started.wait(10)
    follower = threading.Thread(target=lambda: results.append(slow(1)))
    follower.start()
    # If the follower held the GIL while waiting, this thread could not run.
    ticks = sum(1 for _ in range(100_000))
    release.set()
    leader.join(10)
    follower.join(10)
    assert ticks == 100_000
    assert results == [1, 1]


def test_functools_wraps_compatible():
    @functools.wraps(lookup)
    def outer(*args):
        return lookup(*args)

    assert outer.__name__ == "lookup"
    assert outer(9) == {"id": 9, "n": 1}
