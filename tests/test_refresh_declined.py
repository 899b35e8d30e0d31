"""A background refresh may decline: ``RefreshDeclined`` keeps the stale entry.

``in_background_refresh()`` is true exactly while a function runs as a stale
entry's background refresh (a sync one on a refresh worker, an async one in
its task), and false for a miss computed inside one. A refresh that raises
``RefreshDeclined`` gives its claim back and leaves the stale entry, with
nothing logged and no error counted (``cache_response`` declines a refresh
whose render is private to the request that claimed it). Raised anywhere
else, it is an ordinary exception.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync

from restflow._engine import RefreshDeclined
from restflow.caching import cache_result
from restflow.caching.asynchronous import in_background_refresh, wait_for_async_refreshes
from restflow.caching.testing import frozen_clock, wait_for_refreshes

#: (function, x, in_background_refresh()) per run, in order.
SEEN: list[tuple[str, int, bool]] = []
#: Whether the outer functions decline when refreshing.
DECLINE = [False]
N = [0]


@pytest.fixture(autouse=True)
def _reset():
    SEEN.clear()
    DECLINE[0] = False
    N[0] = 0
    yield


@cache_result(ttl=60)
def inner(x: int, n: int) -> int:
    SEEN.append(("inner", x, in_background_refresh()))
    return n


@cache_result(ttl=60, stale_while_revalidate=30)
def outer(x: int) -> int:
    N[0] += 1
    refreshing = in_background_refresh()
    SEEN.append(("outer", x, refreshing))
    inner(x, N[0])  # a miss of its own each run
    if refreshing and DECLINE[0]:
        raise RefreshDeclined("not this one")
    return N[0]


@cache_result(ttl=60)
async def ainner(x: int, n: int) -> int:
    SEEN.append(("inner", x, in_background_refresh()))
    return n


@cache_result(ttl=60, stale_while_revalidate=30)
async def aouter(x: int) -> int:
    N[0] += 1
    refreshing = in_background_refresh()
    SEEN.append(("outer", x, refreshing))
    await ainner(x, N[0])
    if refreshing and DECLINE[0]:
        raise RefreshDeclined("not this one")
    return N[0]


def scenario(call, settle, caplog, wrapper):
    wrapper.reset_stats()  # the functions are shared by each store's run
    with frozen_clock(datetime(2026, 1, 1, tzinfo=UTC)) as clock:
        answers = [call(1)]
        clock.advance(70)
        DECLINE[0] = True
        answers.append(call(1))  # STALE; its refresh declines
        settle()
        DECLINE[0] = False
        answers.append(call(1))  # still STALE: the entry stayed; this refresh stores
        settle()
        answers.append(call(1))
    assert [(value, metadata["cache_status"]) for value, metadata in answers] == [
        (1, "MISS"),
        (1, "STALE"),
        (1, "STALE"),
        (3, "HIT"),
    ]
    assert SEEN == [
        ("outer", 1, False),
        ("inner", 1, False),
        ("outer", 1, True),  # the declined refresh
        ("inner", 1, False),  # a miss inside it: no refresh
        ("outer", 1, True),
        ("inner", 1, False),
    ]
    counters = wrapper.counters()
    assert (counters["errors"], counters["computations"]) == (0, 3)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("restflow")] == []


def test_a_sync_refresh_that_declines_keeps_the_stale_entry(store, caplog):
    scenario(outer.get_with_metadata, wait_for_refreshes, caplog, outer)


def test_an_async_refresh_that_declines_keeps_the_stale_entry(store, caplog):
    async def call(x):
        answer = await aouter.aget_with_metadata(x)
        await wait_for_async_refreshes()
        return answer

    scenario(lambda x: async_to_sync(call)(x), wait_for_refreshes, caplog, aouter._engine)


def test_declined_outside_a_background_refresh_is_an_ordinary_exception(store):
    @cache_result(ttl=60)
    def declining(x: int) -> int:
        raise RefreshDeclined("raised on a miss")

    with pytest.raises(RefreshDeclined, match="raised on a miss"):
        declining(1)
    assert declining.counters()["errors"] == 1  # a failure like any other
    assert not in_background_refresh()
