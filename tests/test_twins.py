"""The drivers that run one step function for sync and async callers
(restflow.caching.twins): what the folded twins rely on."""

import asyncio

import pytest

from restflow.caching.twins import arun, run


def steps(first, second, seen):
    """Yields two calls' answers; records how its ``finally`` ran."""
    try:
        total = (yield first()) + (yield second())
        return total
    except ValueError as error:
        seen.append(f"caught {error}")
        return -1
    finally:
        seen.append("finally")


async def later(value):
    await asyncio.sleep(0)
    return value


async def fails():
    await asyncio.sleep(0)
    raise ValueError("awaited")


def test_run_sends_each_value_back():
    seen = []
    assert run(steps(lambda: 1, lambda: 2, seen)) == 3
    assert seen == ["finally"]


def test_arun_awaits_awaitables_and_passes_plain_values():
    seen = []
    assert asyncio.run(arun(steps(lambda: later(1), lambda: 2, seen))) == 3
    assert seen == ["finally"]


def test_arun_raises_an_awaited_error_at_the_yield():
    seen = []
    assert asyncio.run(arun(steps(lambda: later(1), fails, seen))) == -1
    assert seen == ["caught awaited", "finally"]


def test_an_error_the_steps_do_not_catch_reaches_the_caller_after_their_finally():
    seen = []

    async def cancelled():
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(arun(steps(lambda: later(1), cancelled, seen)))
    assert seen == ["finally"]
