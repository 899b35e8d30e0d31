"""Probabilistic early refresh (XFetch, issue 15 item 5) on the memory
store: a hit before expiry refreshes in the background with a probability
that grows as expiry nears, weighted by the measured compute time, and the
caller still gets HIT. ``store`` runs each scenario on every store
(tests/stores.py), with the same seeded draws and the same outcome, since
the decision is the engine's whatever the store; on Redis every read decodes
the entry, so an early refresh at all shows the payload kept the measured
compute time and beta, and the refresh is claimed through the store's
refresh lock, as a stale entry's is.

Exact outcomes: the engine clock is frozen, the function advances it by
``COMPUTE`` seconds (its measured compute time, the paper's delta), and the
draws are seeded. The engine refreshes when
``now - delta * beta * ln(u) >= expiry``; with ``SEED`` the first read whose
draw passes is read ``FIRST_EARLY`` (see ``run_scenario``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import struct
import threading

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from restflow.caching import CacheStatus, cache_response, cache_result
from restflow.caching.asynchronous import _refreshes
from restflow.caching.settings import signing_key
from restflow.caching.testing import frozen_clock, seeded_early_refresh, wait_for_refreshes
from tests.stores import on

TTL = 100
COMPUTE = 10
STEP = 5
SEED = 2015
#: With SEED: the 1-based read (every STEP seconds after the value was
#: stored) that refreshes early. Reads are 95, 90, ... seconds from expiry.
FIRST_EARLY = 14
#: The same with beta=3.
FIRST_EARLY_BETA_3 = 6

MASK = (1 << 64) - 1


def draws(seed: int):
    """The engine's draws for ``seed``, written out independently:
    SplitMix64, top 53 bits, in (0, 1]."""
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        yield ((z >> 11) + 1) / 2**53


def first_early_read(beta: float) -> int:
    """The read the paper's rule picks with SEED: the first with
    ``delta * beta * -ln(u) >= expiry - now`` (each read draws once)."""
    for read, u in enumerate(draws(SEED), start=1):
        gap = TTL - read * STEP
        if COMPUTE * beta * -math.log(u) >= gap:
            return read
    raise AssertionError("unreachable")


def counted(clock, computed: list, *, hold=None, **options):
    """A cached function that takes COMPUTE seconds on the engine clock and
    returns how many times it ran; ``hold(runs)`` runs first, if given."""

    @cache_result(ttl=TTL, stale_while_revalidate=0, **options)
    def report(n):
        computed.append(n)
        if hold is not None:
            hold(len(computed))
        clock.advance(COMPUTE)
        return len(computed)

    return report


def run_scenario(**options) -> list[tuple[int, str, int]]:
    """Reads a value every STEP seconds until one read refreshes it early;
    returns ``(read, status, computations)`` after each read, the refresh
    (if any) having run."""
    with frozen_clock() as clock, seeded_early_refresh(SEED):
        computed = []
        report = counted(clock, computed, **options)
        value, meta = report.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (1, CacheStatus.MISS)
        seen = []
        for read in range(1, TTL // STEP):
            clock.advance(STEP)
            value, meta = report.get_with_metadata(1)
            wait_for_refreshes()
            seen.append((read, meta["cache_status"], len(computed)))
            if len(computed) > 1:
                break
        return seen


def check_refreshes_once_at_first_early(seen) -> None:
    # Every read is a HIT; reads before FIRST_EARLY computed nothing, and
    # read FIRST_EARLY ran exactly one background refresh.
    assert [status for _, status, _ in seen] == [CacheStatus.HIT] * FIRST_EARLY
    assert seen[FIRST_EARLY - 2] == (FIRST_EARLY - 1, CacheStatus.HIT, 1)
    assert seen[FIRST_EARLY - 1] == (FIRST_EARLY, CacheStatus.HIT, 2)


def test_the_expected_reads_follow_the_papers_rule():
    assert first_early_read(1.0) == FIRST_EARLY
    assert first_early_read(3.0) == FIRST_EARLY_BETA_3


def test_a_hit_refreshes_early_at_the_seeded_read(store):
    check_refreshes_once_at_first_early(run_scenario(early_refresh=True))


def test_the_refreshed_value_is_served_as_a_hit(store):
    with frozen_clock() as clock, seeded_early_refresh(SEED):
        report = counted(clock, [], early_refresh=True)
        report(1)
        for _ in range(FIRST_EARLY):
            clock.advance(STEP)
            report(1)
        wait_for_refreshes()
        value, meta = report.get_with_metadata(1)
        assert (value, meta["cache_status"]) == (2, CacheStatus.HIT)
        counts = report.stats()
        assert (counts["early_refreshes"], counts["background_refreshes"]) == (1, 1)
        assert counts["hit"] == FIRST_EARLY + 1


def test_without_early_refresh_nothing_runs_before_expiry(store):
    seen = run_scenario()
    assert seen == [(read, CacheStatus.HIT, 1) for read in range(1, TTL // STEP)]


def test_a_larger_beta_refreshes_earlier(store):
    # The same draws, weighted three times as much: the first read whose
    # draw passes comes sooner.
    seen = run_scenario(early_refresh=True, beta=3.0)
    assert len(seen) == FIRST_EARLY_BETA_3 < FIRST_EARLY
    assert seen[-2:] == [
        (FIRST_EARLY_BETA_3 - 1, CacheStatus.HIT, 1),
        (FIRST_EARLY_BETA_3, CacheStatus.HIT, 2),
    ]


def test_a_function_that_takes_no_time_never_refreshes_early(store):
    # delta = 0 (the clock does not move while it computes): nothing to
    # weigh, so every read before expiry is a plain hit.
    with frozen_clock() as clock, seeded_early_refresh(SEED):
        computed = []

        @cache_result(ttl=TTL, stale_while_revalidate=0, early_refresh=True)
        def instant(n):
            computed.append(n)
            return n

        instant(1)
        for _ in range(TTL - 1):
            clock.advance(1)
            assert instant.get_with_metadata(1)[1]["cache_status"] == CacheStatus.HIT
        wait_for_refreshes()
        assert computed == [1]


@pytest.mark.parametrize("decorator", [cache_result, cache_response])
@pytest.mark.parametrize("beta", [0, -1.0, math.nan, math.inf])
def test_a_beta_that_cannot_work_is_refused(decorator, beta):
    with pytest.raises(ValueError, match="beta must be a finite number greater than 0"):
        decorator(ttl=60, early_refresh=True, beta=beta)(lambda request: None)


@pytest.mark.parametrize("decorator", [cache_result, cache_response])
def test_beta_without_early_refresh_says_what_to_add(decorator):
    with pytest.raises(ValueError, match="add early_refresh=True"):
        decorator(ttl=60, beta=2.0)(lambda request: None)


def test_a_beta_that_is_not_a_number_is_refused():
    with pytest.raises(TypeError, match="beta must be a number"):
        cache_result(ttl=60, early_refresh=True, beta="2")


def check_one_refresh_across_threads(readers: int = 8) -> None:
    """Every reader's draw passes (a huge beta), all at once: exactly one
    claims the refresh, every one of them is served HIT."""
    with frozen_clock() as clock:
        computed = []
        refreshing = threading.Event()
        release = threading.Event()

        def hold(runs):
            if runs > 1:  # the refresh: held until every reader is done
                refreshing.set()
                assert release.wait(30), "hang guard"

        report = counted(clock, computed, hold=hold, early_refresh=True, beta=1e9)
        report(1)
        clock.advance(STEP)
        start = threading.Barrier(readers)
        statuses = []

        def read():
            start.wait(30)
            statuses.append(report.get_with_metadata(1)[1]["cache_status"])

        threads = [threading.Thread(target=read) for _ in range(readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert refreshing.wait(30), "hang guard"
        release.set()
        wait_for_refreshes()
        assert statuses == [CacheStatus.HIT] * readers
        assert len(computed) == 2


def test_one_refresh_however_many_threads_draw_it(store):
    check_one_refresh_across_threads()


def run_async_scenario() -> list[tuple[int, str, int]]:
    """``run_scenario`` for an ``async def`` (reads up to FIRST_EARLY)."""

    async def scenario():
        with frozen_clock() as clock, seeded_early_refresh(SEED):
            computed = []

            @cache_result(ttl=TTL, stale_while_revalidate=0, early_refresh=True)
            async def report(n):
                computed.append(n)
                clock.advance(COMPUTE)
                return len(computed)

            await report(1)
            seen = []
            for read in range(1, FIRST_EARLY + 1):
                clock.advance(STEP)
                _, meta = await report.aget_with_metadata(1)
                # The refresh, if any, has run: a task on this loop, on
                # every store (and the engine's threads, waited for off it).
                await asyncio.gather(*_refreshes)
                await asyncio.to_thread(wait_for_refreshes)
                seen.append((read, meta["cache_status"], len(computed)))
            return seen

    return asyncio.run(scenario())


def test_an_async_function_refreshes_early_at_the_seeded_read(store):
    # The event loop's computation is timed on the engine clock too.
    check_refreshes_once_at_first_early(run_async_scenario())


def test_cache_response_refreshes_a_hot_view_early():
    # A DRF view under cache_response: the request at FIRST_EARLY is
    # answered from the cache (HIT) and re-renders the view in the
    # background, as for cache_result.
    with frozen_clock() as clock, seeded_early_refresh(SEED):
        rendered = []

        class Report(APIView):
            @cache_response(ttl=TTL, early_refresh=True, set_cache_headers=True)
            def get(self, request):
                rendered.append(request.path)
                clock.advance(COMPUTE)
                return Response({"n": len(rendered)})

        view = Report.as_view()
        assert view(APIRequestFactory().get("/report/"))["X-Cache-status"] == "MISS"
        seen = []
        for read in range(1, FIRST_EARLY + 1):
            clock.advance(STEP)
            response = view(APIRequestFactory().get("/report/"))
            wait_for_refreshes()
            seen.append((read, response["X-Cache-status"], len(rendered)))
        check_refreshes_once_at_first_early(seen)
        assert view(APIRequestFactory().get("/report/")).content == b'{"n":2}'


#: The version 2 header: magic, flags, three instants, three generations.
V2_HEADER = 4 + 1 + 3 * 8 + 3 * 8


@pytest.mark.parametrize("store", on("redis"), indirect=True)
def test_an_entry_of_payload_version_2_is_still_a_hit(store):
    # Entries written before early refresh existed (format RFC2: the RFC3
    # header without its delta and beta) are read, not recomputed, so an
    # upgrade keeps the cache.
    computed = []

    @cache_result(ttl=300)
    def profile(user_id):
        computed.append(user_id)
        return {"id": user_id}

    profile(1)
    key = profile.get_cache_key(1)
    stored = store.client.get(key)
    assert stored.startswith(b"RFC3")
    body = b"RFC2" + stored[4:V2_HEADER] + stored[V2_HEADER + 16 : -32]
    signed = struct.pack("<Q", len(key.encode())) + key.encode() + body
    store.client.set(key, body + hmac.new(signing_key(), signed, hashlib.sha256).digest())
    value, meta = profile.get_with_metadata(1)
    assert (value, meta["cache_status"], computed) == ({"id": 1}, CacheStatus.HIT, [1])
