"""The engine crate's memory example runs and walks a key through its
lifecycle: MISS, HIT, STALE with one background refresh, HIT on the
refreshed value, MISS after invalidation. (The Redis example is run in
tests/redis/test_crate_examples_redis.py.)"""

from __future__ import annotations

from tests.crate_examples import run_example


def test_the_memory_example_prints_each_status_of_the_lifecycle():
    # The example runs on a frozen clock, so its output is exact.
    assert run_example("memory") == [
        'first call: MISS "user 7 (computed by call 1)"',
        'second call: HIT "user 7 (computed by call 1)"',
        '70 s later: STALE "user 7 (computed by call 1)"',
        'after the refresh: HIT "user 7 (computed by call 2)"',
        'after invalidation: MISS "user 7 (computed by call 3)"',
    ]
