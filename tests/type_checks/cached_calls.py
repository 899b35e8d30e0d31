"""Checked by mypy in tests/test_typing.py, never run: what a type checker
sees of cached functions. Each ``reveal_type`` line's expected output is in
the test; the lines marked ``E:`` must be errors."""

from __future__ import annotations

from typing import reveal_type

from restflow.caching import cache_result


@cache_result(ttl=60)
def profile(user_id: int, *, full: bool = False) -> dict[str, int]:
    return {"id": user_id}


@cache_result(ttl=60)
async def aprofile(user_id: int) -> list[str]:
    return [str(user_id)]


reveal_type(profile(1))
reveal_type(profile.get_with_metadata(1, full=True))
reveal_type(profile.refresh(2))


async def use_async() -> None:
    reveal_type(await aprofile(1))
    reveal_type(await aprofile.aget_with_metadata(1))
    await aprofile("1")  # E: a str where the function takes an int


profile("1")  # E: a str where the function takes an int
profile(1, fully=True)  # E: no such keyword
